"""The unit suite on every Python that setup.cfg declares: `nox` (all of them), `nox -s unit-3.12` (one).

Each session makes its own virtualenv (.nox/unit-3-12), installs amazon-kclpy with the KCL jars
(scripts/install-kcl-jars, from Maven's local repository once fetched) and kcl-relay[test,bench] editable, which
builds the C extension for that Python, says whether it did, and runs tests/unit. A Python not on this machine (nox
looks on PATH and in pyenv, asdf, mise and uv) is skipped with a message, never downloaded, never a failure. pip's
cache (~/.cache/pip) serves every session.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nox

# Every Python that setup.cfg's python_requires and classifiers name (tests/unit/test_python_versions.py checks).
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

nox.options.sessions = ["unit"]
nox.options.error_on_missing_interpreters = False  # nox's default turns True when CI is set: a skip, not a failure
nox.options.download_python = "never"
nox.options.reuse_venv = "yes"  # a second run only checks what is installed


def _pyenv_last_on_path() -> None:
    """pyenv's shims run only the versions `pyenv global` (or local) selects, and nox takes only those: the bin
    directory of each other pyenv Python named here goes last on PATH, so nox finds it and nothing else changes."""
    versions = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    extra = []
    for python in PYTHONS:
        patches = [p for p in versions.glob(f"{python}.*") if re.fullmatch(rf"{re.escape(python)}\.\d+", p.name)]
        if patches:
            newest = max(patches, key=lambda p: int(p.name.rsplit(".", 1)[1]))
            extra.append(str(newest / "bin"))
    if extra:
        os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), *extra])


_pyenv_last_on_path()

# Says which decoder a session tests: the C extension built for its Python, or the pure-Python fallback.
SPEEDUPS = (
    "import sys; from kcl_relay.cdc import speedups; m = speedups.available; "
    "print(f'Python {sys.version.split()[0]}: C extension', m.__file__ if m else 'MISSING: pure-Python fallback')"
)


@nox.session(python=PYTHONS)
def unit(session: nox.Session) -> None:
    """tests/unit on one Python (arguments after `--` go to pytest)."""
    session.install("setuptools>=64", "wheel")
    session.run("python", "scripts/install-kcl-jars", silent=True)
    session.install("-e", ".[test,bench]")  # bench: commons-codec, which a harness test compares against
    session.run("python", "-c", SPEEDUPS)
    # PYTHONPATH: every subprocess a test starts (the processor, python -m kcl_relay) runs this tree's code.
    env = {"PYTHONPATH": session.invoked_from}
    pytest = ["python", "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/unit"]
    session.run(*pytest, *session.posargs, env=env)
