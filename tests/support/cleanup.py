"""Drop what a test created on a CrateDB server it shares (CRATEDB_SQLALCHEMY_URL): its shards count against the
cluster's limit of open shards (1,000 by default), which tests left behind by the hundred would reach."""

from __future__ import annotations

from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.dialect import DEADLETTERS_SUFFIX, SETTINGS_SUFFIX, TOMBSTONES_SUFFIX
from kcl_relay.sink.target import TargetSpec


def drop_target_tables(spec: TargetSpec) -> None:
    """CrateDB: the target table and the relay's tables beside it (the other databases live only as long as the
    test session's server or file)."""
    if spec.dialect != "cratedb":
        return
    for suffix in ("", TOMBSTONES_SUFFIX, DEADLETTERS_SUFFIX, SETTINGS_SUFFIX):
        table = f'"{spec.table}{suffix}"'
        run_sql(spec, "DROP TABLE IF EXISTS " + (f'"{spec.schema}".{table}' if spec.schema else table))
