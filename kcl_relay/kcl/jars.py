"""The KCL MultiLangDaemon's jars: where they live, and fetching them through Maven (`kcl-relay setup-kcl`).

The set is the one amazon-kclpy 3.1.3 pins in its pom.xml (kcl-jars.txt, the same file names its own install
downloads), resolved by mvn from Maven Central or, offline, from a local Maven repository (~/.m2, or one copied to a
machine without network). Where they go: KCL_RELAY_JARS when set; else amazon-kclpy's own jars folder when writable
(what amazon-kclpy's install fills; it goes with the virtualenv); else the user's cache, ~/.cache/kcl-relay/jars-3.1.3.
Standard library only: scripts/install-kcl-jars imports it before anything else is installed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

KCL_VERSION = "3.1.3"
JARS_ENV = "KCL_RELAY_JARS"  # a folder of the jars: the only place looked at when set
DAEMON_JAR = "amazon-kinesis-client-multilang-*.jar"
ARTIFACTS_FILE = Path(__file__).with_name("kcl-jars.txt")
SETUP_HINT = "run `kcl-relay setup-kcl` (fetches them with mvn; --maven-repo PATH for an offline local repository)"


class JarsError(RuntimeError):
    """Fetching the jars failed: one line saying why."""


def artifacts() -> list[tuple[str, str, str]]:
    """(groupId, artifactId, version) of every jar, from kcl-jars.txt."""
    lines = ARTIFACTS_FILE.read_text().splitlines()
    found = [line.strip().split(":") for line in lines if line.strip() and not line.startswith("#")]
    return [(group, artifact, version) for group, artifact, version in found]


def has_jars(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob(DAEMON_JAR))


def kclpy_jars_folder() -> Path | None:
    """amazon-kclpy's own jars folder (found without importing it), or None when it is not installed."""
    spec = importlib.util.find_spec("amazon_kclpy")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "jars"


def cache_folder() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "kcl-relay" / f"jars-{KCL_VERSION}"


def search_path() -> list[Path]:
    """Where the daemon looks, in order: KCL_RELAY_JARS alone when set; else amazon-kclpy's folder, the cache."""
    if os.environ.get(JARS_ENV):
        return [Path(os.environ[JARS_ENV])]
    kclpy = kclpy_jars_folder()
    return [*([kclpy] if kclpy else []), cache_folder()]


def jar_dir() -> Path | None:
    """The folder of the KCL jars, or None when they are nowhere (the daemon then says: run setup-kcl)."""
    return next((folder for folder in search_path() if has_jars(folder)), None)


def install_folder() -> Path:
    """Where setup-kcl puts the jars: KCL_RELAY_JARS; amazon-kclpy's folder when writable; else the cache."""
    if os.environ.get(JARS_ENV):
        return Path(os.environ[JARS_ENV])
    kclpy = kclpy_jars_folder()
    if kclpy is not None and _writable(kclpy):
        return kclpy
    return cache_folder()


def _writable(folder: Path) -> bool:
    existing = folder if folder.exists() else folder.parent
    return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


def resolver_pom(wanted: list[tuple[str, str, str]]) -> str:
    """A pom whose dependencies are exactly `wanted` (mvn then resolves and copies them, nothing transitive)."""
    deps = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in wanted
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>kcl-relay</groupId><artifactId>kcl-jars</artifactId><version>1</version>"
        f"<packaging>pom</packaging><dependencies>{deps}</dependencies></project>"
    )


def mvn_command(goal: list[str], pom: Path, maven_repo: Path | None, offline: bool, mvn: str = "mvn") -> list[str]:
    command = [mvn, "-B", "-q", "-f", str(pom)]
    if maven_repo is not None:
        command.append(f"-Dmaven.repo.local={maven_repo}")
    if offline:
        command.append("--offline")
    return [*command, *goal]


def run_mvn(command: list[str]) -> None:
    """mvn, its output to stderr; JarsError (one line) when it is missing or fails."""
    if shutil.which(command[0]) is None:
        raise JarsError("Maven (mvn) not found: install it (apt-get install -y maven), then run setup-kcl again")
    print("+", " ".join(command), file=sys.stderr, flush=True)
    result = subprocess.run(command, stdout=sys.stderr, stderr=sys.stderr, check=False)
    if result.returncode != 0:
        where = "in the local Maven repository (offline)" if "--offline" in command else "through Maven"
        raise JarsError(f"mvn could not resolve the KCL {KCL_VERSION} jars {where}: see its output above")


def resolve(maven_repo: Path | None = None, offline: bool = False, mvn: str = "mvn") -> None:
    """Have mvn put every jar into the local Maven repository (scripts/install-kcl-jars builds amazon-kclpy from it)."""
    with tempfile.TemporaryDirectory(prefix="kcl-jars-") as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(resolver_pom(artifacts()))
        run_mvn(mvn_command(["dependency:resolve", "-DexcludeTransitive=true"], pom, maven_repo, offline, mvn))


def fetch(
    dest: Path | None = None,
    maven_repo: Path | None = None,
    offline: bool = False,
    force: bool = False,
    mvn: str = "mvn",
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> Path:
    """Copy the jars into `dest` (install_folder() by default) with mvn; the folder they are in.

    Jars already in place are kept unless `force`. The new set is copied beside `dest` first, so a failed fetch
    leaves what was there; then it is moved in, and old jars it does not hold are removed.
    """
    if not force and dest is None and (found := jar_dir()) is not None:
        say(f"KCL jars already there: {found} (--force fetches them again)")
        return found
    dest = dest or install_folder()
    if not force and has_jars(dest):
        say(f"KCL jars already there: {dest} (--force fetches them again)")
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    wanted = artifacts()
    with tempfile.TemporaryDirectory(prefix=".kcl-jars-", dir=dest.parent) as tmp:
        pom, staged = Path(tmp) / "pom.xml", Path(tmp) / "jars"
        pom.write_text(resolver_pom(wanted))
        goal = ["dependency:copy-dependencies", "-DexcludeTransitive=true", f"-DoutputDirectory={staged}"]
        run_mvn(mvn_command(goal, pom, maven_repo, offline, mvn))
        new = sorted(staged.glob("*.jar"))
        if len(new) != len(wanted):
            raise JarsError(f"mvn copied {len(new)} jars, {len(wanted)} expected: setup-kcl again with --force")
        # New jars in first (os.replace: a jar of the same name is never missing, for a worker starting meanwhile),
        # then the old ones that are not in the new set out.
        for jar in new:
            os.replace(jar, dest / jar.name)
        names = {jar.name for jar in new}
        for old in dest.glob("*.jar"):
            if old.name not in names:
                old.unlink()
    say(f"KCL {KCL_VERSION} jars: {len(new)} in {dest}")
    return dest
