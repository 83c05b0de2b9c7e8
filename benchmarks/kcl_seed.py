"""`kcl-relay` with the seed's KCL settings, for ratios taken side by side with the current ones in one run.

    python -m benchmarks.kcl_seed load table SOURCE --target ... --table ...

Everything is today's code except what the seed told the KCL: maxRecords = batch-size, idleTimeBetweenReadsInMillis =
idle-sleep (a pause before every GetRecords, backlog or not), the KCL's default lease assignment interval, no lease
table written before the daemon starts, and the seed's JVM options (no heap cap, C2, no class data sharing archive).
"""

from __future__ import annotations

import os

from kcl_relay import cli, relay
from kcl_relay.kcl import daemon
from kcl_relay.source.url import SourceSpec

SEED_JVM_OPTIONS = ["-Daws.cborEnabled=false", "-Xms64m"]
NOT_IN_SEED = (
    "millisBehindLatestThresholdForReducedTps",
    "leaseAssignmentIntervalMillis",
    "inMemoryWorkerMetricsCaptureFrequencyMillis",
    "varianceBalancingFrequency",
)


def seed_properties(spec: SourceSpec, application_name: str, _build=relay.build_properties) -> dict[str, str]:
    props = {key: value for key, value in _build(spec, application_name).items() if key not in NOT_IN_SEED}
    props["maxRecords"] = str(spec.batch_size)
    props["idleTimeBetweenReadsInMillis"] = str(round(spec.idle_sleep * 1000))
    return props


def main() -> None:
    relay.build_properties = seed_properties  # type: ignore[assignment]
    relay.prepare_lease_table = lambda spec, props: None  # type: ignore[assignment]
    daemon.JVM_OPTIONS[:] = SEED_JVM_OPTIONS
    os.environ[daemon.CDS_ENV] = "off"
    cli.main()


if __name__ == "__main__":
    main()
