"""`pip install` of a wheel gives a working kcl-relay: built from a copy of the checkout as git sees it, installed
into a fresh virtualenv, the KCL jars fetched by `kcl-relay setup-kcl` from the local Maven repository (offline: no
network, seconds) and the launcher built from the wheel's Java sources, then a relay (once=true) through the real KCL
on the emulators with nothing from this checkout.

The virtualenv sees the dependencies of the Python running the tests (installed there already: pip installs the wheel
alone, with --no-deps, in seconds and offline); its own kcl-relay comes first on its path, and the jars are looked
for in KCL_RELAY_JARS alone, so neither this checkout nor amazon-kclpy's jars can stand in for what was installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from kcl_relay.localaws.server import LocalAws
from tests.support.checkout import REPO, copy_checkout
from tests.support.e2e import ENV, app_name, cdc_record, new_stream, put_records, source_url

M2 = Path.home() / ".m2" / "repository"

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the git checkout to copy"),
    pytest.mark.skipif(shutil.which("mvn") is None, reason="needs Maven (mvn) for setup-kcl"),
    pytest.mark.skipif(not M2.is_dir(), reason="needs a local Maven repository (~/.m2) holding the KCL jars"),
]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with kcl-relay installed from a freshly built wheel; its bin folder."""
    work = tmp_path_factory.mktemp("install")
    checkout, dist, venv = work / "kcl-relay", work / "dist", work / "venv"
    checkout.mkdir()
    copy_checkout(checkout)
    # The PEP 517 build python -m build runs, without its isolated environment (no download: setuptools is here).
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), "."],
        cwd=checkout,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    wheel = next(dist.glob("kcl_relay-*.whl"))
    with zipfile.ZipFile(wheel) as archive:  # complete without the checkout: the data setup-kcl and `run` need
        names = set(archive.namelist())
    assert "kcl_relay/kcl/kcl-jars.txt" in names
    assert {f"{p.name}" for p in (REPO / "properties").glob("*.properties")} == {
        Path(name).name for name in names if "/share/kcl-relay/properties/" in name
    }
    java = {p.relative_to(checkout).as_posix() for p in (checkout / "kcl_relay" / "java").glob("**/*") if p.is_file()}
    assert {name for name in java if "/target/" not in name} <= names
    # Without its own pip (ensurepip costs ~15 s): the system's, seen through --system-site-packages, installs into it.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    see_dependencies(venv)
    # --ignore-installed: the tests' Python may hold kcl-relay too (an editable install): never count it nor touch it
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed"]
    subprocess.run([*pip, str(wheel)], check=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    return venv / "bin"


def see_dependencies(venv: Path) -> None:
    """The dependencies of the Python running the tests (itself often a virtualenv: then --system-site-packages shows
    only its base interpreter's, which may have none), as plain path entries after the virtualenv's own: their .pth
    files are not run, so an editable install of this checkout there cannot stand in for the wheel."""
    paths = dict.fromkeys(sysconfig.get_paths()[name] for name in ("purelib", "platlib"))
    (site_packages,) = venv.glob("lib/python*/site-packages")
    (site_packages / "zz_test_dependencies.pth").write_text("".join(f"{path}\n" for path in paths))


def _env(tmp_path: Path) -> dict[str, str]:
    """No PYTHONPATH (the installed package, not this checkout), jars only where setup-kcl puts them."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, **ENV, "KCL_RELAY_JARS": str(tmp_path / "jars")}


def test_wheel_then_setup_kcl_then_a_relay(installed: Path, tmp_path: Path) -> None:
    env = _env(tmp_path)
    where = subprocess.run(
        [str(installed / "python"), "-c", "import kcl_relay; print(kcl_relay.__file__)"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(installed.parent)), where  # the wheel's package, not the checkout's

    with LocalAws() as aws:
        stream = new_stream(aws)
        put_records(aws.client("kinesis"), stream, [cdc_record("INSERT", f"k{n}", 1_000 + n) for n in range(5)])
        url = source_url(aws.endpoint_url, stream, once="true", app=app_name())
        database = tmp_path / "target.db"
        relay = [str(installed / "kcl-relay"), "load", "table", url, "--target", f"sqlite:///{database}"]
        relay += ["--table", "items"]

        missing = subprocess.run(relay, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert missing.returncode == 2
        assert missing.stderr.splitlines() == [
            "kcl-relay: error: KCL jars not found: run `kcl-relay setup-kcl` (fetches them with mvn; --maven-repo "
            "PATH for an offline local repository)"
        ]

        setup = subprocess.run(
            [str(installed / "kcl-relay"), "setup-kcl", "--maven-repo", str(M2)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert setup.returncode == 0, setup.stderr[-3000:]
        assert len(list((tmp_path / "jars").glob("*.jar"))) == 79
        built = re.search(r"KCL launcher: (\S+\.jar)", setup.stderr)  # from the wheel's Java sources
        assert built and Path(built.group(1)).is_file(), setup.stderr[-3000:]

        done = subprocess.run(relay, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    with sqlite3.connect(database) as connection:
        keys = connection.execute("SELECT pk FROM items ORDER BY pk").fetchall()
    assert [json.loads(pk)["id"] for (pk,) in keys] == [f"k{n}" for n in range(5)]
