"""What the relay creates in a target, as one plan: `kcl-relay ddl` prints it (`--apply` runs it), and the writer
runs only the steps whose object is missing. So once an admin created them, the relay runs as a user without DDL
privileges (CrateDB: DQL and DML; PostgreSQL: SELECT, INSERT, UPDATE, DELETE and USAGE on the schema): before,
every start ran CREATE ... IF NOT EXISTS, which both databases refuse without the privilege to create, even when the
object exists.

The statements themselves are the dialect's (create_tables, create_dead_letter_table, create_settings_table); this
module only names the object each one creates, asks the database which exist, and turns a refused privilege into one
line that names the privilege and the object.

Measured on CrateDB 6.4.3: writing a new attribute into `data` (OBJECT(DYNAMIC)) adds sub-columns with DML alone;
a table the user holds no privilege on is invisible to it (information_schema, and "RelationUnknown" or
"SchemaUnknown" in statements), so a missing object may also be one the user may not see.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from kcl_relay.cdc.event import KeyType
from kcl_relay.mapping.spec import TableMapping
from kcl_relay.sink.dialect import Dialect, quote_ident
from kcl_relay.sink.target import TargetError, TargetSpec

__all__ = ["MissingPrivilege", "Step", "access_problem", "check_access", "ensure", "existing", "plan"]

# The names in a dialect's CREATE ... IF NOT EXISTS: [schema.]name, each a quoted identifier (quote_ident).
_IDENT = r'"(?:[^"]|"")*"'
_CREATE = re.compile(rf"^\s*CREATE (SCHEMA|TABLE|INDEX) IF NOT EXISTS (?:({_IDENT})\.)?({_IDENT})", re.IGNORECASE)
PLACEHOLDER_KEY: Mapping[str, KeyType] = {"id": "S"}  # object names never depend on the key
LEAST = "docs/deploy.md#least-privilege"
HINT = f"an admin creates them with `kcl-relay ddl --apply` ({LEAST})"


class MissingPrivilege(TargetError):
    """The target user lacks a privilege the relay needs; one line naming the privilege and the object."""


def _unquote(ident: str) -> str:
    return ident[1:-1].replace('""', '"')


@dataclass(frozen=True)
class Step:
    kind: str  # "schema", "table" or "index"
    name: str  # the object's own name (unquoted)
    shown: str  # as a person reads it: schema.name
    sql: str


def step_of(sql: str, schema: str | None) -> Step:
    match = _CREATE.match(sql)
    if match is None:  # a statement this module cannot name: a bug of ours, never run blindly
        raise ValueError(f"not a CREATE ... IF NOT EXISTS statement: {sql[:80]}")
    kind, qualifier, ident = match.group(1).lower(), match.group(2), _unquote(match.group(3))
    owner = _unquote(qualifier) if qualifier else schema
    shown = ident if kind == "schema" or not owner else f"{owner}.{ident}"
    return Step(kind=kind, name=ident, shown=shown, sql=sql)


def plan(
    dialect: Dialect,
    key_types: Mapping[str, KeyType] | None,
    settings: bool = True,
    mapping: TableMapping | None = None,
) -> list[Step]:
    """Every statement the relay runs to create what it needs, in order: the target (with a mapping's columns and
    table options) and its tombstones (when the key is known), the dead letters, and the relay's settings
    (`settings`: the claim of the source table, the mapping kept beside the table)."""
    from kcl_relay.sink.admin import create_statements

    if key_types is not None:
        statements = create_statements(dialect, key_types, mapping)  # ends with the dead letters
    else:
        statements = [dialect.create_dead_letter_table()]
    if settings:
        statements.append(dialect.create_settings_table())
    return [step_of(sql, dialect.schema) for sql in statements]


def existing_sql(dialect: Dialect, steps: Sequence[Step]) -> tuple[str, list[Any]]:
    """One query of the names among `steps` that exist (and, on CrateDB, that this user can see)."""
    return dialect.existing_sql(sorted({step.name for step in steps if step.kind != "schema"}))


def stored_name(dialect: Dialect, name: str) -> str:
    """The name as the database keeps it: PostgreSQL cuts identifiers to 63 bytes (NAMEDATALEN - 1)."""
    limit = dialect.features.identifier_bytes
    if limit is None:
        return name
    return name.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def existing(executor: Any, cursor: Any, steps: Sequence[Step]) -> set[str]:
    """The names of `steps` whose object exists."""
    dialect = executor.dialect
    stored = [replace(step, name=stored_name(dialect, step.name)) for step in steps]
    sql, params = existing_sql(dialect, stored)
    found = {str(row[0]) for row in executor.fetch(cursor, sql, params)}
    return {step.name for step, kept in zip(steps, stored, strict=True) if kept.name in found}


def missing(executor: Any, steps: Sequence[Step]) -> list[Step]:
    found = executor.transaction(lambda cursor: existing(executor, cursor, steps))
    return [step for step in steps if step.name not in found]


def check_access(target: TargetSpec, route_tables: bool = False) -> None:
    """Before a relay starts: MissingPrivilege (one line) when its user lacks a privilege access_problem() finds."""
    from kcl_relay.sink.executor import StatementExecutor
    from kcl_relay.sink.retry import RetryPolicy
    from kcl_relay.sink.writer import dialect_for

    executor = StatementExecutor(target, dialect_for(target), RetryPolicy())
    try:
        line = access_problem(executor, route_tables)
    finally:
        executor.close()
    if line is not None:
        raise MissingPrivilege(line)


def ensure(executor: Any, steps: Sequence[Step]) -> list[Step]:
    """Create what is missing of `steps` (nothing runs when everything exists); returns the steps that ran.

    A refused privilege raises MissingPrivilege at once, never retried: a relay without the right to create what is
    missing waits for nothing that would change by itself."""
    todo = missing(executor, steps)
    if not todo:
        return []
    user = executor.spec.url.username

    refused: list[tuple[BaseException, Step]] = []

    def create(cursor: Any) -> None:
        for step in todo:
            try:
                executor.execute(cursor, step.sql)
            except Exception as error:
                if privilege_line(executor.dialect, error, [step], user) is None:
                    raise
                refused.append((error, step))
                raise MissingPrivilege("refused") from None  # not retried; worded below, outside the transaction

    try:
        executor.transaction(create, ddl=True)
    except MissingPrivilege:
        error, step = refused[0]
        # Everything still missing, not only this call's part (the settings table is claimed first, say).
        rest = [
            other for other in missing(executor, plan(executor.dialect, PLACEHOLDER_KEY)) if other.name != step.name
        ]
        raise MissingPrivilege(privilege_line(executor.dialect, error, [step, *rest], user) or "") from None
    return todo


def privilege_line(dialect: Dialect, error: BaseException, todo: Sequence[Step], user: str | None) -> str | None:
    """The one line for the CREATE of todo[0] refused for want of a privilege (`todo`: what is still missing),
    else None."""
    step = todo[0]
    schema = dialect.schema or ""
    refused = dialect.refused_privilege(error)
    if refused is None:
        return None
    privilege, named = refused
    user = named if named is not None else user  # CrateDB names the user in its message
    on = "the database" if step.kind == "schema" else f"schema {schema}"
    who = f" for user {user!r}" if user else ""
    return (
        f"missing privilege {privilege} on {on}{who}: needed to create {_listed(todo)}, missing (or not visible to "
        f"this user); {HINT}"
    )


def _listed(steps: Sequence[Step]) -> str:
    return ", ".join(step.shown for step in steps if step.kind != "index")


def access_problem(executor: Any, route_tables: bool = False) -> str | None:
    """At start, before anything runs: the one line for a privilege the relay will need on what exists (DQL and
    DML), or to create what is missing (PostgreSQL tells; CrateDB only when a CREATE is refused), else None.

    With route-tables the target tables are named by the records: only the dead letters are known."""
    steps = plan(executor.dialect, None if route_tables else PLACEHOLDER_KEY, settings=not route_tables)
    dialect = executor.dialect
    if not dialect.features.users:
        return None
    found = executor.transaction(lambda cursor: existing(executor, cursor, steps))
    tables = [step for step in steps if step.kind == "table"]
    present = [step for step in tables if step.name in found]
    absent = [step for step in steps if step.name not in found and step.kind != "index"]
    user = executor.spec.url.username
    who = f" for user {user!r}" if user else ""
    if dialect.features.own_privileges:
        return executor.transaction(lambda cursor: _postgres_access(executor, cursor, present, absent, who))
    return executor.transaction(lambda cursor: _crate_access(executor, cursor, present, who))


def _crate_access(executor: Any, cursor: Any, present: list[Step], who: str) -> str | None:
    """CrateDB shows no user its own privileges (sys.privileges is the superuser's): a read and a write that touch
    no row tell instead. Caught here, so the executor does not retry them as an outage."""
    dialect = executor.dialect
    for step in present:
        relation = _relation(dialect, step)
        for privilege, sql in (
            ("DQL", f"SELECT 1 FROM {relation} LIMIT 0"),
            ("DML", f"DELETE FROM {relation} WHERE false"),
        ):
            try:
                executor.execute(cursor, sql)
            except Exception as error:
                if dialect.refused_privilege(error) is None:
                    raise
                return (
                    f"missing privilege {privilege} on table {step.shown}{who}: the relay reads and writes it "
                    f"(GRANT DQL, DML ON SCHEMA {dialect.schema}; see {LEAST})"
                )
    return None


def _relation(dialect: Dialect, step: Step) -> str:
    return f"{quote_ident(dialect.schema)}.{quote_ident(step.name)}" if dialect.schema else quote_ident(step.name)


def _postgres_access(executor: Any, cursor: Any, present: list[Step], absent: list[Step], who: str) -> str | None:
    dialect = executor.dialect
    schema = dialect.schema or "public"
    p = dialect.param
    checks: list[tuple[str, str, list[Any]]] = []
    if any(step.kind == "schema" for step in absent):
        checks.append(("CREATE on the database", "SELECT has_database_privilege(current_database(), 'CREATE')", []))
    elif absent:
        checks.append((f"USAGE on schema {schema}", f"SELECT has_schema_privilege({p}, 'USAGE')", [schema]))
        checks.append((f"CREATE on schema {schema}", f"SELECT has_schema_privilege({p}, 'CREATE')", [schema]))
    elif present:
        checks.append((f"USAGE on schema {schema}", f"SELECT has_schema_privilege({p}, 'USAGE')", [schema]))
    for step in present:
        relation = f"{quote_ident(schema)}.{quote_ident(step.name)}"
        for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            checks.append(
                (f"{privilege} on table {step.shown}", f"SELECT has_table_privilege({p}, {p})", [relation, privilege])
            )
    for what, sql, params in checks:
        if not executor.fetch(cursor, sql, params)[0][0]:
            if "CREATE" in what:
                return f"missing privilege {what}{who}: needed to create {_listed(absent)}, missing; {HINT}"
            grant = f"GRANT USAGE ON SCHEMA {schema}, SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema}"
            return f"missing privilege {what}{who}: the relay reads and writes it ({grant}; see {LEAST})"
    return None
