"""The JVM command line: capped heap, C1, user options last, and the class data sharing archive's life cycle."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kcl_relay.kcl import daemon
from kcl_relay.kcl.daemon import CDS_ENV, DAEMON_CLASS, JVM_OPTIONS_ENV, ClassDataArchive, jvm_command


@pytest.fixture
def jars(tmp_path: Path) -> Path:
    folder = tmp_path / "jars"
    folder.mkdir()
    (folder / "amazon-kinesis-client-multilang-3.1.3.jar").write_bytes(b"x" * 10)
    return folder


@pytest.fixture
def java17(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(daemon, "java_major", lambda java: 17)
    monkeypatch.delenv(CDS_ENV, raising=False)
    monkeypatch.delenv(JVM_OPTIONS_ENV, raising=False)
    return "/usr/bin/java"


def test_command_line(java17: str, jars: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(JVM_OPTIONS_ENV, "-Xmx2g -XX:TieredStopAtLevel=4")
    command = jvm_command(java17, jars, tmp_path / "kcl.properties")
    assert command[0] == java17
    assert command[-3:] == [DAEMON_CLASS, "--properties-file", str(tmp_path / "kcl.properties")]
    assert "-Daws.cborEnabled=false" in command
    # The defaults come first, the user's options after them: for the JVM the last -Xmx / -XX wins.
    assert command.index("-Xmx512m") < command.index("-Xmx2g")
    assert command.index("-XX:TieredStopAtLevel=1") < command.index("-XX:TieredStopAtLevel=4")


def test_java_17_writes_an_archive_once_then_maps_it(java17: str, jars: Path, tmp_path: Path) -> None:
    archive = ClassDataArchive(java17, jars, folder=tmp_path / "cache")
    (option,) = archive.options()
    assert option.startswith("-XX:ArchiveClassesAtExit=") and option.endswith(f".{os.getpid()}.tmp")
    assert archive.pending is not None
    archive.pending.write_bytes(b"archive")  # what the JVM writes when it exits
    archive.finish()
    assert archive.path.read_bytes() == b"archive"
    assert ClassDataArchive(java17, jars, folder=tmp_path / "cache").options() == [
        f"-XX:SharedArchiveFile={archive.path}"
    ]


def test_a_run_that_wrote_no_archive_leaves_nothing_behind(java17: str, jars: Path, tmp_path: Path) -> None:
    archive = ClassDataArchive(java17, jars, folder=tmp_path / "cache")
    archive.options()
    archive.finish()  # killed: the JVM wrote nothing
    assert list((tmp_path / "cache").iterdir()) == []


def test_the_archive_belongs_to_one_java_and_jar_set(java17: str, jars: Path, tmp_path: Path) -> None:
    first = ClassDataArchive(java17, jars, folder=tmp_path)
    (jars / "amazon-kinesis-client-3.1.3.jar").write_bytes(b"y")
    assert ClassDataArchive(java17, jars, folder=tmp_path).path != first.path
    assert ClassDataArchive("/opt/other/java", jars, folder=tmp_path).path != first.path


def test_java_19_and_later_keep_the_archive_themselves(
    jars: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon, "java_major", lambda java: 21)
    monkeypatch.delenv(CDS_ENV, raising=False)
    archive = ClassDataArchive("/usr/bin/java", jars, folder=tmp_path)
    assert archive.options() == ["-XX:+AutoCreateSharedArchive", f"-XX:SharedArchiveFile={archive.path}"]


def test_switched_off_or_nowhere_to_write(
    java17: str, jars: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CDS_ENV, "off")
    assert ClassDataArchive(java17, jars, folder=tmp_path).options() == []
    monkeypatch.delenv(CDS_ENV)
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert ClassDataArchive(java17, jars, folder=blocked / "cache").options() == []
