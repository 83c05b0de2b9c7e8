"""The launcher's DynamoDB Streams entry point: built only with the adapter's (pinned) jar, run by its own class."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from kcl_relay.kcl import adapter, launcher
from kcl_relay.kcl.daemon import SetupError, find_jars, jvm_command


def _adapter() -> Path | None:
    try:
        return adapter.find_adapter_jar(find_jars(), fetch=False)
    except SetupError:
        return None


ADAPTER = _adapter()
needs_adapter = pytest.mark.skipif(
    ADAPTER is None or shutil.which("javac") is None,
    reason=f"needs the JDK's javac, the KCL jars and the {adapter.ADAPTER} jar (mvn dependency:get)",
)


@needs_adapter
def test_the_streams_entry_point_is_built_only_with_the_adapter(tmp_path: Path) -> None:
    jars = find_jars()
    plain = launcher.ensure_built(jars, folder=tmp_path)
    with_adapter = launcher.ensure_built(jars, folder=tmp_path, adapter=ADAPTER)
    assert plain != with_adapter  # two builds side by side: a Kinesis relay never needs the adapter
    entry = launcher.STREAMS_MAIN_CLASS.replace(".", "/") + ".class"
    assert entry not in zipfile.ZipFile(plain).namelist()
    names = zipfile.ZipFile(with_adapter).namelist()
    assert entry in names and "kclrelay/launcher/Launcher.class" in names


def test_the_jvm_runs_the_entry_point_with_the_adapter_on_the_class_path(tmp_path: Path) -> None:
    jar, built = tmp_path / "adapter.jar", tmp_path / "launcher.jar"
    command = jvm_command(
        "java",
        tmp_path / "jars",
        tmp_path / "kcl.properties",
        launcher=built,
        main_class=launcher.STREAMS_MAIN_CLASS,
        extra_classpath=(jar,),
    )
    classpath = command[command.index("-cp") + 1]
    assert classpath.split(":") == [str(built), str(jar), f"{tmp_path / 'jars'}/*"]
    assert command[command.index("-cp") + 2 :] == [
        launcher.STREAMS_MAIN_CLASS,
        "--properties-file",
        str(tmp_path / "kcl.properties"),
    ]


def test_the_stock_multilang_daemon_cannot_read_a_dynamodb_stream(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(launcher.DAEMON_ENV, "multilang")
    with pytest.raises(SetupError, match="cannot read a DynamoDB stream"):
        launcher.for_run(tmp_path, adapter=tmp_path / "adapter.jar")


def test_an_adapter_jar_with_other_bytes_is_refused(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / adapter.JAR
    fake.write_bytes(b"PK not the adapter")
    monkeypatch.setenv(adapter.ENV, str(fake))
    with pytest.raises(SetupError, match="SHA-256 differs"):
        adapter.find_adapter_jar(tmp_path, fetch=False)
