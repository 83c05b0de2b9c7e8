"""kcl-relay's KCL launcher (kcl_relay/java): built from source with the JDK's javac against the KCL jars it runs on.

The launcher starts the KCL 3.1.3 Scheduler as the MultiLangDaemon does (same properties, same multilang record
processor factory, so the processor's protocol is unchanged) and sets what the properties cannot: the leader lock's
timing and the Scheduler's dispatch interval (docs/deploy.md, "The launcher"). Its classes are cached per source,
jar set and javac in the user's cache folder: a build is a couple of seconds, once; later runs find it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from kcl_relay.kcl.daemon import SetupError, cache_dir, find_jars, find_java, java_major

SOURCE_DIR = Path(__file__).resolve().parent.parent / "java"
SOURCES = SOURCE_DIR / "src" / "main" / "java"
MAIN_CLASS = "kclrelay.launcher.Launcher"
# The DynamoDB Streams entry point: compiled (and run) only with the adapter's jar (kcl_relay/kcl/adapter.py).
STREAMS_SOURCES = SOURCE_DIR / "src" / "streams" / "java"
STREAMS_MAIN_CLASS = "kclrelay.launcher.DynamoDbStreamsLauncher"
JAVAC_RELEASE = "17"
JAR_NAME = "kcl-relay-launcher.jar"
COMPLETE = ".complete"  # written last: a folder without it is a build that did not finish
SETUP_HINT = "run `kcl-relay setup-kcl` (or scripts/setup)"


def find_javac() -> str:
    """The JDK's javac: JAVA_HOME's, else on PATH; a JRE alone cannot build the launcher."""
    home = os.environ.get("JAVA_HOME")
    javac = str(Path(home) / "bin" / "javac") if home else shutil.which("javac")
    if not javac or not os.access(javac, os.X_OK):
        raise SetupError(
            f"the JDK's javac is not found (the KCL launcher is built from source): {SETUP_HINT}, "
            "or install openjdk-17-jdk-headless"
        )
    java = str(Path(javac).with_name("java"))
    if os.access(java, os.X_OK) and java_major(java) < int(JAVAC_RELEASE):
        raise SetupError(f"{javac} is older than Java {JAVAC_RELEASE}: install openjdk-17-jdk-headless")
    return javac


def sources(adapter: Path | None = None) -> list[Path]:
    found = sorted(SOURCES.rglob("*.java")) + (sorted(STREAMS_SOURCES.rglob("*.java")) if adapter else [])
    if not found:
        raise SetupError(f"the launcher's sources are missing from {SOURCES}: reinstall kcl-relay")
    return found


def build_key(jars: Path, files: list[Path], adapter: Path | None = None) -> str:
    """Changes with any source or the jar set (names and sizes); javac's --release fixes the class files' level."""
    digest = hashlib.sha256(f"release {JAVAC_RELEASE}\n".encode())
    for path in files:
        root = STREAMS_SOURCES if path.is_relative_to(STREAMS_SOURCES) else SOURCES
        name = f"{'streams:' if root == STREAMS_SOURCES else ''}{path.relative_to(root)}"
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    for jar in sorted([*jars.glob("*.jar"), *([adapter] if adapter else [])]):
        digest.update(f"{jar.name}:{jar.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def built_dir(jars: Path, folder: Path | None = None, adapter: Path | None = None) -> Path:
    """Where the classes of these sources and jars are (or go)."""
    return (folder or cache_dir()) / f"launcher-{build_key(jars, sources(adapter), adapter)}"


def ensure_built(jars: Path | None = None, folder: Path | None = None, adapter: Path | None = None) -> Path:
    """The launcher's jar (for -cp), compiled first when its sources or the jars changed.

    A jar, not a class folder: the JVM's class data sharing (daemon.ClassDataArchive) refuses a non-empty folder on
    the class path. A cached build needs no javac (a host with the JRE alone runs what setup built). Workers building
    at once each compile into a temporary folder; the first rename wins.
    """
    jars = jars or find_jars()
    target = built_dir(jars, folder, adapter)
    if (target / COMPLETE).is_file():
        return target / JAR_NAME
    javac = find_javac()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
    try:
        classes = staging / "classes"
        command = [javac, "--release", JAVAC_RELEASE, "-encoding", "UTF-8", "-nowarn", "-d", str(classes)]
        classpath = os.pathsep.join([f"{jars}/*", *([str(adapter)] if adapter else [])])
        command += ["-cp", classpath, *map(str, sources(adapter))]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            first = next((line for line in result.stderr.splitlines() if line.strip()), "no output")
            raise SetupError(f"building the KCL launcher failed ({first}); {SETUP_HINT} to reinstall the KCL jars")
        _write_jar(classes, staging / JAR_NAME)
        shutil.rmtree(classes)
        (staging / COMPLETE).write_text(f"{javac}\n")
        try:
            os.rename(staging, target)
        except OSError:  # another worker's build got there first: the same classes
            if not (target / COMPLETE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / JAR_NAME


def _write_jar(classes: Path, jar: Path) -> None:
    """A plain jar of the class files (a manifest is all `jar` would add; the JVM needs none on -cp)."""
    with zipfile.ZipFile(jar, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nCreated-By: kcl-relay\n\n")
        for path in sorted(classes.rglob("*.class")):
            archive.write(path, path.relative_to(classes).as_posix())


DAEMON_ENV = "KCL_RELAY_DAEMON"  # "multilang": the stock MultiLangDaemon instead of the launcher
DAEMON_CHOICES = ("launcher", "multilang")


def for_run(jars: Path, adapter: Path | None = None) -> Path | None:
    """The launcher's classes for a worker run (built when needed), or None for the stock MultiLangDaemon.

    `adapter`: the DynamoDB Streams adapter's jar; the build then holds STREAMS_MAIN_CLASS too, and the stock
    MultiLangDaemon cannot read a DynamoDB stream."""
    choice = os.environ.get(DAEMON_ENV, "launcher").strip().lower() or "launcher"
    if choice not in DAEMON_CHOICES:
        raise SetupError(f"{DAEMON_ENV}={choice!r}: expected one of {', '.join(DAEMON_CHOICES)}")
    if choice == "multilang" and adapter:
        raise SetupError(f"{DAEMON_ENV}=multilang: the stock MultiLangDaemon cannot read a DynamoDB stream")
    return None if choice == "multilang" else ensure_built(jars, adapter=adapter)


KCL_KEYS_FLAG = "--kcl-keys"
KCL_KEY_KINDS = ("version", "key", "nested", "builder", "daemon")


def kcl_keys(jars: Path | None = None) -> dict[str, set[str]]:
    """The properties keys the jars' multilang module reads, by kind (the launcher's --kcl-keys, KclKeys.java).

    `key`: top level; `nested`: BEAN.NAME of a config bean it does not flatten; `builder`: an AWS SDK builder whose
    settings are NAME.*; `daemon`: read by MultiLangDaemonConfig itself; `version`: the multilang jar's.
    """
    jars = jars or find_jars()
    jar = ensure_built(jars)
    command = [find_java(), "-cp", os.pathsep.join([str(jar), f"{jars}/*"]), MAIN_CLASS, KCL_KEYS_FLAG]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        first = next((line for line in done.stderr.splitlines() if line.strip()), f"exit code {done.returncode}")
        raise SetupError(f"the launcher cannot list the KCL's keys: {first}")
    found: dict[str, set[str]] = {kind: set() for kind in KCL_KEY_KINDS}
    for line in done.stdout.splitlines():  # anything else on stdout (a logger's line) is not ours
        kind, _, name = line.partition(" ")
        if kind in found and name:
            found[kind].add(name)
    return found
