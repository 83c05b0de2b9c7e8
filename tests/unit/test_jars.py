"""Where the KCL jars are looked for and put (kcl_relay.kcl.jars), fetching them with mvn, and the one line every
command that needs them prints when they are missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kcl_relay.kcl import jars
from kcl_relay.kcl.daemon import SetupError, find_jars

REPO = Path(__file__).resolve().parents[2]


def _jar_folder(folder: Path, names: tuple[str, ...] = ("amazon-kinesis-client-multilang-3.1.3.jar",)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"PK")
    return folder


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """amazon-kclpy's jars folder and the cache, both in tmp_path; no KCL_RELAY_JARS."""
    kclpy = tmp_path / "site" / "amazon_kclpy" / "jars"
    kclpy.parent.mkdir(parents=True)
    monkeypatch.delenv(jars.JARS_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(jars, "kclpy_jars_folder", lambda: kclpy)
    return {"kclpy": kclpy, "cache": tmp_path / "cache" / "kcl-relay" / f"jars-{jars.KCL_VERSION}"}


def test_the_daemon_finds_jars_in_kclpys_folder_then_the_cache(places: dict[str, Path]) -> None:
    with pytest.raises(SetupError) as missing:
        find_jars()
    assert "kcl-relay setup-kcl" in str(missing.value) and "\n" not in str(missing.value)
    _jar_folder(places["cache"])
    assert find_jars() == places["cache"]
    _jar_folder(places["kclpy"])
    assert find_jars() == places["kclpy"]


def test_kcl_relay_jars_is_the_only_place_when_set(
    places: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _jar_folder(places["kclpy"])
    monkeypatch.setenv(jars.JARS_ENV, str(tmp_path / "mine"))
    assert jars.jar_dir() is None  # not amazon-kclpy's: the user named another folder
    assert jars.install_folder() == tmp_path / "mine"
    _jar_folder(tmp_path / "mine")
    assert find_jars() == tmp_path / "mine"


def test_jars_go_to_the_cache_when_kclpys_folder_is_read_only(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert jars.install_folder() == places["kclpy"]
    site = places["kclpy"].parent
    real_access = os.access
    # a read-only site-packages (root writes anywhere, so chmod cannot show it): os.access says so
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != site and real_access(path, mode))
    assert jars.install_folder() == places["cache"]


def test_jars_go_to_the_cache_without_amazon_kclpy(places: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jars, "kclpy_jars_folder", lambda: None)
    assert jars.search_path() == [places["cache"]]
    assert jars.install_folder() == places["cache"]


def test_the_jar_list_is_amazon_kclpys(tmp_path: Path) -> None:
    """kcl-jars.txt names exactly the jars of the installed amazon-kclpy 3.1.3 (when it has them)."""
    wanted = jars.artifacts()
    assert ("software.amazon.kinesis", "amazon-kinesis-client-multilang", jars.KCL_VERSION) in wanted
    folder = jars.kclpy_jars_folder()
    if folder is None or not jars.has_jars(folder):
        pytest.skip("amazon-kclpy without its jars here: nothing to compare with")
    assert sorted(f"{a}-{v}.jar" for _, a, v in wanted) == sorted(p.name for p in folder.glob("*.jar"))


def _fake_mvn(tmp_path: Path, copies: int | None = None, code: int = 0) -> str:
    """An mvn that writes one jar per dependency of the pom (or `copies` of them) to -DoutputDirectory."""
    script = tmp_path / "mvn"
    script.write_text(
        f"#!{sys.executable}\n"
        "import re, sys, pathlib\n"
        "args = sys.argv[1:]\n"
        "out = next(a.split('=', 1)[1] for a in args if a.startswith('-DoutputDirectory='))\n"
        "pom = pathlib.Path(args[args.index('-f') + 1]).read_text()\n"
        "deps = re.findall(r'<artifactId>([^<]+)</artifactId><version>([^<]+)</version></dependency>', pom)\n"
        f"deps = deps[:{copies}] if {copies!r} is not None else deps\n"
        "pathlib.Path(out).mkdir(parents=True, exist_ok=True)\n"
        "for a, v in deps: (pathlib.Path(out) / f'{a}-{v}.jar').write_bytes(b'PK')\n"
        "pathlib.Path(out).parent.joinpath('argv').write_text(' '.join(args))\n"
        f"sys.exit({code})\n"
    )
    script.chmod(0o755)
    return str(script)


def test_fetch_replaces_the_jars_with_mavens(places: dict[str, Path], tmp_path: Path) -> None:
    dest = _jar_folder(tmp_path / "jars", ("amazon-kinesis-client-multilang-3.0.0.jar", "old-1.jar"))
    (dest / "__init__.py").write_text("")  # amazon-kclpy's folder is a package: only jars are replaced
    lines: list[str] = []
    assert jars.fetch(dest, mvn=_fake_mvn(tmp_path), say=lines.append) == dest  # jars there: kept
    assert (dest / "old-1.jar").exists() and "already there" in lines[-1]
    assert jars.fetch(dest, maven_repo=tmp_path / "m2", offline=True, force=True, mvn=_fake_mvn(tmp_path)) == dest
    assert sorted(p.name for p in dest.glob("*.jar")) == sorted(f"{a}-{v}.jar" for _, a, v in jars.artifacts())
    assert (dest / "__init__.py").exists()
    assert not list(dest.parent.glob(".kcl-jars-*"))  # the staging folder is gone


def test_a_failed_fetch_leaves_the_jars_that_were_there(places: dict[str, Path], tmp_path: Path) -> None:
    dest = _jar_folder(tmp_path / "jars")
    with pytest.raises(jars.JarsError, match="offline"):
        jars.fetch(dest, offline=True, force=True, mvn=_fake_mvn(tmp_path, code=1))
    with pytest.raises(jars.JarsError, match="jars, 79 expected"):
        jars.fetch(dest, force=True, mvn=_fake_mvn(tmp_path, copies=3))
    assert [p.name for p in dest.glob("*.jar")] == ["amazon-kinesis-client-multilang-3.1.3.jar"]


def test_fetch_without_maven_says_so(places: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(jars.JarsError, match=r"Maven \(mvn\) not found"):
        jars.fetch(tmp_path / "jars", mvn=str(tmp_path / "no-mvn"))


@pytest.mark.parametrize("command", ["load", "run"])
def test_commands_that_need_the_jars_say_setup_kcl_in_one_line(tmp_path: Path, command: str) -> None:
    args = {
        "load": ["load", "table", "kinesis+dynamodb+cdc://127.0.0.1:9/s", "--target", f"sqlite:///{tmp_path}/x.db"],
        "run": ["run", "--properties", str(REPO / "properties" / "local.properties"), "--target", "sqlite:///:memory:"],
    }[command]
    env = {**os.environ, jars.JARS_ENV: str(tmp_path / "none"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "kcl_relay", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "kcl-relay: error: KCL jars not found: run `kcl-relay setup-kcl` (fetches them with mvn; --maven-repo PATH "
        "for an offline local repository)"
    ], done.stderr


def test_setup_kcl_fetches_offline_from_a_local_repository(tmp_path: Path) -> None:
    """The command's wiring, with a stand-in mvn first on PATH: offline against --maven-repo, into KCL_RELAY_JARS."""
    tools = tmp_path / "bin"
    tools.mkdir()
    _fake_mvn(tools)
    (tmp_path / "m2").mkdir()
    env = {
        **os.environ,
        "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}",
        jars.JARS_ENV: str(tmp_path / "jars"),
        "PYTHONPATH": str(REPO),
        "KCL_RELAY_DAEMON": "multilang",  # no launcher build against these stand-in jars
    }
    command = [sys.executable, "-m", "kcl_relay", "setup-kcl", "--maven-repo", str(tmp_path / "m2")]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "jars").glob("*.jar"))) == len(jars.artifacts())
    assert f"KCL {jars.KCL_VERSION} jars: 79 in {tmp_path / 'jars'}" in done.stderr
    assert not list(tmp_path.glob(".kcl-jars-*"))  # the staging folder went with the fetch
    assert f"-Dmaven.repo.local={tmp_path / 'm2'} --offline" in done.stderr
    assert "kcl-relay: KCL launcher: not built (the stock MultiLangDaemon runs)" in done.stderr

    missing = subprocess.run([*command[:-1], str(tmp_path / "no-repo")], env=env, capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == [f"kcl-relay: error: no local Maven repository at {tmp_path / 'no-repo'}"]
    no_java = subprocess.run(
        command, env={**env, "JAVA_HOME": str(tmp_path / "no-jdk")}, capture_output=True, text=True
    )
    assert no_java.returncode == 2 and len(no_java.stderr.splitlines()) == 1
    assert "Java 17+ not found" in no_java.stderr
