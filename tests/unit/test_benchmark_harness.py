"""A tiny smoke run of the decode benchmark harness: it runs and writes its tables. No speed is asserted here;
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
