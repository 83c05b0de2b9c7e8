"""The writer's side of a table's mapping (kcl_relay/mapping/table.py): settle it at start, add its columns.

Without `mapping=`, a table filled with one keeps it (read from its `__relay` settings): a relay, redrive or full
load started without the option writes rows the way the others did.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect
from sqlalchemy.pool import NullPool

from kcl_relay.mapping.spec import MappingError, TableMapping
from kcl_relay.mapping.table import MAPPING_SETTING, added_columns, from_stored, stored_text, update_setting_sql
from kcl_relay.sink.dialect import SETTINGS_SUFFIX
from kcl_relay.sink.target import TargetSpec

if TYPE_CHECKING:
    from kcl_relay.sink.writer import TableWriter

__all__ = ["check_mapping", "settle_mapping", "stored_mapping"]

log = logging.getLogger(__name__)


def _inspector(spec: TargetSpec) -> tuple[Any, Any]:
    engine = spec.create_engine(poolclass=NullPool)
    return engine, inspect(engine)


def _table_columns(spec: TargetSpec) -> set[str]:
    engine, inspector = _inspector(spec)
    try:
        return {str(column["name"]) for column in inspector.get_columns(spec.table, schema=spec.schema)}
    finally:
        engine.dispose()


def stored_text_of(spec: TargetSpec) -> str | None:
    """The mapping text kept beside the table, or None (no settings table, or no mapping in it)."""
    from kcl_relay.sink.admin import run_sql
    from kcl_relay.sink.writer import dialect_for

    engine, inspector = _inspector(spec)
    try:
        if not inspector.has_table(spec.table + SETTINGS_SUFFIX, schema=spec.schema):
            return None
    finally:
        engine.dispose()
    dialect = dialect_for(spec)
    refresh = dialect.refresh_sql(dialect.relation(SETTINGS_SUFFIX))
    if refresh is not None:
        run_sql(spec, refresh)
    name = MAPPING_SETTING.replace("'", "''")
    rows = run_sql(spec, f"SELECT value FROM {dialect.relation(SETTINGS_SUFFIX)} WHERE name = '{name}'")[1]
    return str(rows[0][0]) if rows else None


def stored_mapping(spec: TargetSpec) -> TableMapping | None:
    """The mapping the table was filled with (for readers: verify, show table), or None."""
    text = stored_text_of(spec)
    return from_stored(text) if text else None


def check_mapping(spec: TargetSpec, mapping: TableMapping) -> None:
    """Before anything starts: MappingError (one line) if the table was filled with a mapping this one changes."""
    text = stored_text_of(spec)
    if text is not None and text != stored_text(mapping):
        added_columns(spec.qualified_table, text, mapping)


def settle_mapping(writer: TableWriter, given: TableMapping | None) -> TableMapping | None:
    """The mapping the writer uses: the given one (claimed beside the table, checked against what was claimed
    before, its new columns added), else the one kept beside the table, else None."""
    dialect, executor, spec = writer.dialect, writer.executor, writer.spec
    if given is None:
        if not _settings_exist(writer):
            return None
        rows = executor.transaction(lambda cursor: executor.fetch(cursor, dialect.setting_sql(), (MAPPING_SETTING,)))
        return from_stored(str(rows[0][0])) if rows else None
    from kcl_relay.sink import ddl

    ddl.ensure(executor, ddl.plan(dialect, None, settings=True)[-1:])  # the settings table, unless it exists
    ours = stored_text(given)

    def claim(cursor: Any) -> str:
        executor.execute(cursor, dialect.claim_setting_sql(), (MAPPING_SETTING, ours))
        return str(executor.fetch(cursor, dialect.setting_sql(), (MAPPING_SETTING,))[0][0])

    stored = executor.transaction(claim)
    if stored != ours:
        added = added_columns(spec.qualified_table, stored, given)  # raises MappingError when it changes anything
        log.warning("%s: the mapping adds column(s) %s", spec.qualified_table, ", ".join(c.name for c in added))
        update = update_setting_sql(dialect.relation(SETTINGS_SUFFIX), dialect.param)
        executor.transaction(lambda cursor: executor.execute(cursor, update, (ours, MAPPING_SETTING)))
    _add_missing_columns(writer, given)
    return given


def _settings_exist(writer: TableWriter) -> bool:
    """Whether the table has its `__relay` settings table (asked through the writer's own connection)."""
    dialect, executor = writer.dialect, writer.executor
    name = writer.spec.table + SETTINGS_SUFFIX
    sql, params = dialect.table_exists_sql(name)
    return bool(executor.transaction(lambda cursor: executor.fetch(cursor, sql, params)))


def _add_missing_columns(writer: TableWriter, mapping: TableMapping) -> None:
    """ALTER TABLE ... ADD COLUMN for each mapped column the table lacks (a table made before the mapping, or by
    an older one). Another worker adding the same column at once is fine: what counts is that it is there."""
    from kcl_relay.sink.admin import add_column_statements

    existing = _table_columns(writer.spec)
    partition = mapping.partition
    if partition is not None and writer.dialect.features.partitions and partition.name not in existing:
        raise MappingError(
            f"the table {writer.spec.qualified_table} has no partition column {partition.name}: partition-by is set "
            "when the relay creates a table; relay into a new table, or leave partition-by out"
        )
    missing = [column for column in mapping.columns if column.name not in existing]
    executor = writer.executor
    for column, statement in zip(missing, add_column_statements(writer.dialect, missing), strict=True):

        def alter(cursor: Any, sql: str = statement) -> None:
            executor.execute_all(cursor, [sql])

        try:
            executor.transaction(alter, ddl=True)
        except Exception:
            if column.name not in _table_columns(writer.spec):
                raise
        log.warning("%s: added column %s", writer.spec.qualified_table, column.name)
