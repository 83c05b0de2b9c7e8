"""End to end, operations: the lease table's identity, and a target that lost what its checkpoints say was relayed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kcl_relay.localaws.server import LocalAws
from tests.support.e2e import cdc_record, ids_in, new_stream, put_records, run_relay, source_url, state_dir

pytestmark = pytest.mark.timeout(300)


def test_a_deleted_target_stops_the_relay_until_reset_relays_it_again(aws: LocalAws, tmp_path: Path) -> None:
    stream = new_stream(aws)
    put_records(aws.client("kinesis"), stream, [cdc_record("INSERT", str(n), 1_000_000 + n) for n in range(20)])
    # No app=: the derived name is what is tested. The default log level (the e2e helpers ask for info).
    url = source_url(aws.endpoint_url, stream, once="true", **{"log-level": "warn"})
    database = tmp_path / "relay.db"
    target = f"sqlite:///{database}"

    first = run_relay(url, target, "orders")
    assert first.returncode == 0, first.stderr[-3000:]
    named = re.search(r"application (kcl-relay-\S+) \(lease table (\S+)\), derived from (.+)", first.stderr)
    assert named, first.stderr[-3000:]
    application, lease_table, identity = named.groups()
    assert application == lease_table and application.startswith(f"kcl-relay-{stream}-orders-")
    assert identity == f"stream {stream} -> sqlite:///{database.resolve()} table orders"
    assert ids_in(target, "orders") == {str(n) for n in range(20)}
    worker = re.search(r"worker (\S+) of application", first.stderr)
    assert worker and worker.group(1).endswith("-0"), "the stable default id: host name and slot 0"
    assert f"kept the leases of worker {worker.group(1)}: no other worker is alive" in first.stderr
    assert_quiet_logs(state_dir(first.stderr))

    database.unlink()
    stopped = run_relay(url, target, "orders")
    assert stopped.returncode == 2, stopped.stderr[-3000:]
    assert (
        f"error: target table orders is missing, but lease table {lease_table} has checkpoints of 1 shard(s)"
        in stopped.stderr
    )
    assert "reset=true" in stopped.stderr
    assert "logs in" not in stopped.stderr, "stopped before the KCL started"

    again = run_relay(f"{url}&reset=true", target, "orders")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"reset=true: deleted {lease_table}" in again.stderr
    assert ids_in(target, "orders") == {str(n) for n in range(20)}


def assert_quiet_logs(folder: Path) -> None:
    """At the default log level: the KCL's log (written by logback, rotated by size) and the processors' hold only
    warnings and errors; a run without trouble leaves them (nearly) empty."""
    assert "RollingFileAppender" in (folder / "logback.xml").read_text()
    kcl_lines = (folder / "kcl.log").read_text().splitlines() if (folder / "kcl.log").exists() else []
    levels = {line.split()[3] for line in kcl_lines if line[:4].isdigit() and len(line.split()) > 3}
    assert levels <= {"WARN", "ERROR"}, kcl_lines[:20]
    assert not any("Writing ProcessRecordsMessage" in line for line in kcl_lines), "no line per delivery"
    processor_log = folder / "processor.log"
    text = processor_log.read_text() if processor_log.exists() else ""
    assert " INFO " not in text and " DEBUG " not in text, text[:2000]
    print(f"\n[logs] kcl.log {len(kcl_lines)} lines, processor.log {len(text.splitlines())} lines at log-level=warn")
