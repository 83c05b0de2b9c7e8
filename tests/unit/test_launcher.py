"""kcl-relay's KCL launcher: built from source against the installed jars, cached, and refusing a KCL it was not
written for (it reaches into KCL 3.1.3 internals)."""

from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from kcl_relay.kcl import launcher
from kcl_relay.kcl.daemon import DAEMON_CLASS, LAUNCHER_CLASS, SetupError, find_jars, find_java, jvm_command

POM_PROPERTIES = "META-INF/maven/software.amazon.kinesis/amazon-kinesis-client/pom.properties"


def _jars() -> Path | None:
    try:
        return find_jars()
    except SetupError:
        return None


JARS = _jars()
needs_jdk = pytest.mark.skipif(
    JARS is None or shutil.which("javac") is None, reason="needs the JDK's javac and the KCL jars (scripts/setup)"
)


def test_the_pom_names_the_kcl_version_the_launcher_checks_for() -> None:
    pom = (launcher.SOURCE_DIR / "pom.xml").read_text()
    version_java = (launcher.SOURCES / "kclrelay" / "launcher" / "KclVersion.java").read_text()
    pom_version = re.search(r"<kcl.version>([^<]+)</kcl.version>", pom)
    expected = re.search(r'EXPECTED = "([^"]+)"', version_java)
    assert pom_version and expected
    assert pom_version.group(1) == expected.group(1) == "3.1.3"


@needs_jdk
def test_built_once_then_cached_and_rebuilt_when_a_source_changes(tmp_path: Path, monkeypatch) -> None:
    assert JARS is not None
    jar = launcher.ensure_built(JARS, folder=tmp_path)
    names = zipfile.ZipFile(jar).namelist()
    assert "kclrelay/launcher/Launcher.class" in names
    assert "software/amazon/kinesis/multilang/config/KclRelayConfigAccess.class" in names
    stamp = jar.stat().st_mtime_ns
    assert launcher.ensure_built(JARS, folder=tmp_path) == jar and jar.stat().st_mtime_ns == stamp
    # A cached build needs no javac (a JRE-only host runs what setup built).
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert launcher.ensure_built(JARS, folder=tmp_path) == jar
    # Another source: another build folder, and without javac a one-line error naming the setup.
    sources = tmp_path / "src"
    shutil.copytree(launcher.SOURCES, sources)
    (sources / "kclrelay" / "launcher" / "Extra.java").write_text("package kclrelay.launcher; class Extra {}\n")
    monkeypatch.setattr(launcher, "SOURCES", sources)
    with pytest.raises(SetupError, match=r"javac is not found .*kcl-relay setup-kcl.*scripts/setup"):
        launcher.ensure_built(JARS, folder=tmp_path)


@needs_jdk
def test_a_kcl_of_another_version_is_refused_with_one_line(tmp_path: Path) -> None:
    assert JARS is not None
    jar = launcher.ensure_built(JARS)  # the build setup made (or made now, once, in the user cache)
    core = next(JARS.glob("amazon-kinesis-client-3*.jar"))
    other = tmp_path / "amazon-kinesis-client-3.2.0.jar"
    with zipfile.ZipFile(core) as source, zipfile.ZipFile(other, "w") as copy:
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename == POM_PROPERTIES:
                data = data.replace(b"version=3.1.3", b"version=3.2.0")
            copy.writestr(entry, data)
    classpath = f"{jar}:{other}:{JARS}/*"  # the first jar holding Scheduler is the one the JVM loads
    done = subprocess.run(
        [find_java(), "-cp", classpath, launcher.MAIN_CLASS, "--properties-file", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "built for KCL 3.1.3" in lines[0] and "amazon-kinesis-client 3.2.0" in lines[0]
    # The real jars pass the check (and then stop at the missing properties file, exit code 2).
    done = subprocess.run(
        [find_java(), "-cp", f"{jar}:{JARS}/*", launcher.MAIN_CLASS, "--properties-file", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "built for KCL" not in done.stderr


def test_the_daemon_choice_is_checked(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(launcher.DAEMON_ENV, "multilang")
    assert launcher.for_run(tmp_path) is None
    monkeypatch.setenv(launcher.DAEMON_ENV, "stock")
    with pytest.raises(SetupError, match="KCL_RELAY_DAEMON='stock': expected one of launcher, multilang"):
        launcher.for_run(tmp_path)


def test_the_jvm_runs_the_launcher_jar_first_on_the_class_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KCL_RELAY_JVM_OPTIONS", "-Dkclrelay.leaderLeaseMillis=5000")
    jar = tmp_path / "kcl-relay-launcher.jar"
    command = jvm_command(
        "java", tmp_path / "jars", tmp_path / "kcl.properties", launcher=jar, settings={"handBack": "always"}
    )
    assert command[-3:] == [LAUNCHER_CLASS, "--properties-file", str(tmp_path / "kcl.properties")]
    assert command[command.index("-cp") + 1] == f"{jar}:{tmp_path / 'jars'}/*"
    # Our settings first, the user's JVM options after them (a later -D wins).
    assert command.index("-Dkclrelay.handBack=always") < command.index("-Dkclrelay.leaderLeaseMillis=5000")
    stock = jvm_command("java", tmp_path / "jars", tmp_path / "kcl.properties", settings={"handBack": "always"})
    assert stock[-3] == DAEMON_CLASS and "-Dkclrelay.handBack=always" not in stock
    assert stock[stock.index("-cp") + 1] == f"{tmp_path / 'jars'}/*"
