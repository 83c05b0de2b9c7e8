"""The README's setup on a stock Debian: only /usr/bin/python3 on PATH (no pyenv), which refuses pip installs into
the system (PEP 668). scripts/setup must make the project's virtualenv from it, and the kcl-relay it installs there
must relay a file. The checkout is copied as git sees it (tracked and new files, no .venv), like a fresh clone.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.support.checkout import REPO, copy_checkout
from tests.support.records import cdc_record

DEBIAN_PYTHON = Path("/usr/bin/python3")
STOCK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not DEBIAN_PYTHON.exists(), reason="no /usr/bin/python3: not a Debian-like machine"),
    pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the git checkout to copy"),
]


def test_setup_with_debian_python_then_relay_a_file(tmp_path: Path) -> None:
    refused = subprocess.run(
        [str(DEBIAN_PYTHON), "-m", "pip", "install", "--dry-run", "six"], capture_output=True, text=True
    )
    checkout = tmp_path / "kcl-relay"
    checkout.mkdir()
    copy_checkout(checkout)
    env = {
        "HOME": os.environ.get("HOME", "/root"),
        "PATH": STOCK_PATH,
        "LANG": "C.UTF-8",
        "KCL_RELAY_SETUP_LOG": str(tmp_path / "setup.log"),
    }
    setup = subprocess.run(["scripts/setup"], cwd=checkout, env=env, capture_output=True, text=True, timeout=840)
    assert setup.returncode == 0, setup.stderr + (tmp_path / "setup.log").read_text()[-3000:]
    venv_python = checkout / ".venv" / "bin" / "python"
    base = subprocess.run(
        [str(venv_python), "-c", "import sys; print(sys.base_prefix)"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert base == "/usr", f"the virtualenv was made from {base}, not Debian's Python"
    if refused.returncode != 0:  # PEP 668 in force: the system's Python stays untouched
        assert "externally-managed-environment" in refused.stderr

    records = tmp_path / "changes.ndjson"
    events = [
        cdc_record("INSERT", "a", 1_000, name="first"),
        cdc_record("INSERT", "b", 2_000, name="second"),
        cdc_record("MODIFY", "a", 3_000, name="changed"),
        cdc_record("REMOVE", "b", 4_000),
    ]
    records.write_text("".join(json.dumps(event) + "\n" for event in events))
    database = tmp_path / "target.db"
    relay = subprocess.run(
        [
            str(checkout / ".venv" / "bin" / "kcl-relay"),
            "load",
            "table",
            f"kinesis+dynamodb+cdc://{records}",
            "--target",
            f"sqlite:///{database}",
            "--table",
            "items",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert relay.returncode == 0, relay.stderr
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT pk, data FROM items").fetchall()
    assert [(json.loads(pk), json.loads(data)) for pk, data in rows] == [({"id": "a"}, {"name": "changed"})]
