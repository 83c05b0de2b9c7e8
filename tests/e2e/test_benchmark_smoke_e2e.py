"""The KCL benchmark's harness works: a tiny run writes its results. Speed is never asserted here (benchmarks/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(600)


def test_a_smoke_run_writes_markdown_and_json(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "benchmarks.kcl_speed", "--smoke", "--only", "backlog,components"]
    done = subprocess.run(
        [*command, "--out", str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))},
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "kcl_speed.json").read_text())
    assert results["smoke"] is True
    backlog = results["backlog"]["now"]
    assert backlog["rows_in_target"] == backlog["records"]  # every record reached the target
    assert backlog["exit_codes"] == [0]  # and the relay stopped gracefully
    assert {"jvm", "processors", "emulator"} <= set(backlog["usage"]["cpu_seconds"])
    assert results["components"]["decode_us"] > 0
    assert "| item | target | now | seed | verdict |" in (tmp_path / "kcl_speed.md").read_text()
