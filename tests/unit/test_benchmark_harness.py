"""Tiny smoke runs of the benchmark harnesses (decode, replay): they run and write their tables. No speed is asserted;
benchmarks/results/ holds the measured figures (python -m benchmarks.decode)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from benchmarks import decode as bench
from kcl_relay.cdc import speedups


@pytest.mark.skipif(speedups.available is None, reason="the C extension is not built: nothing to compare")
@pytest.mark.skipif(
    importlib.util.find_spec("commons_codec") is None,
    reason="commons-codec is not installed (pip install -e '.[bench]')",
)
def test_decode_benchmark_smoke(tmp_path: Path) -> None:
    bench.main(["--records", "30", "--repeat", "1", "--output", str(tmp_path)])
    document = json.loads((tmp_path / "decode.json").read_text())
    assert [result["corpus"] for result in document["results"]] == list(bench.CORPORA)
    for result in document["results"]:
        names = [side["name"] for side in result["sides"]]
        assert names[0] == "ours, C" and "commons-codec, dicts" in names
        assert all(side["records_per_s"] > 0 for side in result["sides"])
    table = (tmp_path / "decode.md").read_text()
    assert "| ours, C |" in table and "| commons-codec, json |" in table


@pytest.mark.postgres
def test_replay_benchmark_smoke(tmp_path: Path) -> None:
    from benchmarks import replay
    from tests.support.postgres import find_bindir

    if find_bindir() is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) on this machine")
    replay.main(
        ["--events", "60", "--keys", "20", "--repeat", "1", "--batch-sizes", "25", "--corpus", "typical",
         "--output", str(tmp_path)]
    )  # fmt: skip
    rows = json.loads((tmp_path / "replay.json").read_text())["rows"]
    assert {(row["target"], row["batch_size"]) for row in rows} == {("SQLite", 25), ("PostgreSQL", 25)}
    assert all(row["events_per_s"] > 0 for row in rows)
    assert "| typical (" in (tmp_path / "replay.md").read_text()
