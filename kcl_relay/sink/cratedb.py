"""CrateDB: pk OBJECT(STRICT) with one TEXT PRIMARY KEY sub-column per key attribute, data OBJECT(DYNAMIC),
aux OBJECT(IGNORED). Statements go through the crate DBAPI driver (HTTP); bulk writes use cursor.executemany,
which CrateDB runs as one bulk_args request answering one rowcount per row (-2: that row was rejected).

What this relies on, from CrateDB's documentation and source (crate/crate):

* A PRIMARY KEY may sit on an object sub-column (``o OBJECT AS (id INT PRIMARY KEY)``, CreateAlterTableStatement
  analyzer tests), and ``ON CONFLICT`` takes subscripts as its target (SqlBaseParser.g4 ``conflictTarget:
  subscriptSafe``; fixed for object sub-columns by crate#10197), listing exactly the primary key columns.
  A table partitioned by a key attribute's timestamp (mapping partition-by) has its generated partition column
  in the primary key: the target lists it too; the key Gets below stay Gets, CrateDB deriving the partition
  value from the key (``DocKeys{$1, $2, date_trunc('month', cast($2 AS BIGINT))}``, test_partition_sink.py).
* ``ON CONFLICT ... DO UPDATE SET`` has no WHERE (crate#9724); its assignments may use CASE and read both the
  stored row (plain column names) and ``excluded.*``. Every assignment is evaluated against the stored document,
  not against earlier assignments (UpdateToInsert.convert), so one guard may be repeated per column. SET must
  not assign the primary key, even to the same value (crate#17834). A guarded no-op would still report rowcount
  1, so the target's upsert makes a stale row fail instead: the ELSE branch of cdc_version's CASE casts a text
  holding STALE_MARK to BIGINT, which CrateDB evaluates only for that row (CASE evaluates the branch it takes;
  the text depends on ``excluded.cdc_order``, so it cannot be folded at analysis), and the bulk answers that row
  with rowcount -2 and "Cannot cast value `kcl-relay: stale ...`". The row is left as it was (the update of a
  row is atomic), and the writer counts it as stale: no read before the upsert is needed to tell (measured:
  that read was a composite-key Get of 10 keys a statement, the most expensive read of the apply).
  tests/integration/test_cratedb_behaviour.py pins this on the real server.
* Reads see the last refresh (refresh_interval, 1 s by default) unless CrateDB plans them as a real-time
  primary-key ``Get``; the apply's reads must be, or a row written a moment ago looks missing (a REMOVE right after
  an INSERT would leave the row behind). Measured with EXPLAIN on CrateDB 6.4 (and pinned by
  tests/integration/test_cratedb_plans.py): ``k IN (?, ...)`` and ``k = ANY(?)`` with parameters are a Collect;
  ``k = ? OR k = ? ...`` is a Get; on a composite key ``(a = ? AND b = ?) OR ...`` is a Get up to 98 terms and a
  Collect from 99. Hence OR chains. A Get's planning cost grows faster than its key count, so the chunk sizes are
  where planning and the number of requests balance best on 6.4 (measured, keys/s): single keys 9,600 at 25, 12,700
  at 50 and 100, 9,000 at 200, 2,200 at 1,000; composite keys 3,600 at 5, 4,700 at 10, 3,200 at 20, 660 at 60,
  265 at 98.
* A DELETE is a real-time primary key operation only if its WHERE names nothing but primary key columns,
  ``_seq_no`` and ``_primary_term`` (WhereClauseOptimizer.queryHasPkSymbolsOnly); with any other condition it runs
  as a query against the last refresh and misses rows written since. So a guarded delete first reads the row (Get)
  and then deletes it by key + ``_seq_no`` + ``_primary_term`` (optimistic concurrency control): if the row changed
  in between, nothing is deleted and the writer looks again.
* Bulk requests execute every row even when some fail; failed rows report rowcount -2 with the error message
  (docs interfaces/http.rst "Bulk errors"). Analysis errors (a value that cannot be cast to the type an earlier row
  fixed for a dynamic sub-column) fail the whole request instead; the executor then splits it to find the row.
* Writes are durable when acknowledged (translog); no REFRESH is needed for durability, and none is issued.
* There are no transactions, so the writer re-reads the tombstones after an upsert to undo a write that a
  concurrent worker's newer REMOVE overtook (strategy/optimistic.py explains why that suffices).

Numeric key attributes are stored as TEXT holding the canonical decimal text (jsonenc): DynamoDB numbers carry up
to 38 significant digits between 1E-130 and 1E+126, which neither BIGINT nor DOUBLE holds exactly (two keys could
collide), and NUMERIC has a fixed precision and scale per column. Text keeps every key exact and distinct; cast in
queries when numeric order is wanted (``pk['id']::NUMERIC``). Binary keys are TEXT too (base64, as DynamoDB has it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar

from crate.client import exceptions as crate_errors

from kcl_relay.cdc.event import ChangeEvent, KeyType
from kcl_relay.cdc.jsonenc import decimal_text
from kcl_relay.cdc.layout import Row, valid_object_key
from kcl_relay.cdc.values import parse_number
from kcl_relay.sink.crate_types import LIMIT_ROW
from kcl_relay.sink.dialect import (
    DEADLETTERS_SUFFIX,
    ROW_COLUMNS,
    SOFT_REMOVED,
    TOMBSTONES_SUFFIX,
    BulkOutcome,
    Dialect,
    Driver,
    Features,
    RowIdentity,
    RowState,
    quote_ident,
)
from kcl_relay.sink.retry import is_transient

__all__ = ["CrateDBDialect", "key_text"]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
GET_KEYS_SINGLE = 100
GET_KEYS_COMPOSITE = 10  # far below the 98 that CrateDB 6.4 still plans as a Get: see the module doc
# Errors about the statement or the table, never about one row's values: these must raise, not dead-letter.
_STATEMENT_ERRORS = re.compile(
    r"RelationUnknown|SchemaUnknown|ColumnUnknown|Conflict target|line \d+:\d+|Unauthorized|MissingPrivilege"
    r"|UnsupportedFeature|ReadOnly|ClusterBlock|OperationOnInaccessibleRelation|RelationValidation"
    r"|AmbiguousColumn|InvalidSchemaName|InvalidRelationName|PartitionUnknown|UnsupportedOperation",
    re.IGNORECASE,
)
# Of those, the ones about the database's state rather than our SQL: a table or schema that is missing or was changed
# (dropped, recreated without a column, its primary key changed), the user's authentication and privileges, a
# read-only table. Someone can fix them while the relay waits, so they are retried like an outage. Messages seen
# from CrateDB 6.4 (tests/integration/test_cratedb_behaviour.py provokes them on the real server):
#   RelationUnknown[Relation 'doc.t' unknown]
#   MissingPrivilegeException[Missing 'DML' privilege for user 'u']
#   401 Client Error: Unauthorized ... (a user that does not exist or a wrong password)
_OUTAGE_ERRORS = re.compile(
    r"RelationUnknown|SchemaUnknown|ColumnUnknown|PartitionUnknown|Conflict target|Unauthorized|MissingPrivilege"
    r"|\b401\b|\b403\b|ReadOnly|OperationOnInaccessibleRelation",
    re.IGNORECASE,
)
# A CREATE refused: "MissingPrivilegeException[Missing 'DDL' privilege for user 'u']" (ddl.privilege_line).
_MISSING_PRIVILEGE = re.compile(r"Missing '(\w+)' privilege for user '([^']*)'")
# Another worker created the same table at the same moment (CREATE TABLE IF NOT EXISTS is not atomic across nodes).
_DDL_RACE = re.compile(r"RelationAlreadyExists|already exists", re.IGNORECASE)
# What CrateDB says when one row's values cannot be stored (dynamic mapping, casts, limits). Messages seen from
# CrateDB 6.4 (tests/integration/test_cratedb_behaviour.py feeds them through the real server):
#   SQLParseException[Cannot cast object element `n` with value `x` to type `bigint`]
#   SQLParseException[Document contains at least one immense term in field="2" (whose UTF8 encoding is longer ...
#   SQLParseException[Limit of total columns [1000] in table [doc.t] exceeded]
#   SQLParseException[Cannot detect the type of the value: 1180591620717411303424]
#   SQLParseException[A primary key value must not be NULL]
#   InvalidColumnNameException["a.b" contains a dot]
#   SQLParseException[Cannot add column `b` to strict object `data`] (a table changed to strict: aux holds them)
_ROW_ERRORS = re.compile(
    r"ColumnValidation|Validation failed|Conversion|Cannot cast|Cannot detect the type|Cannot add column|MapperParsing"
    r"|DocumentParsing|IllegalArgument|InvalidColumnName|Mixed ?data ?types|nested arrays?|immense term"
    r"|out of range|too large|exceed|must not be NULL",
    re.IGNORECASE,
)
# The one TypeError that is about a row: text the driver's JSON encoder (orjson) refuses, a lone surrogate.
# Any other TypeError is a fault of the relay or the driver, which must stop the batch, not dead-letter it.
_ROW_TYPE_ERROR = "surrogates not allowed"
_NEWER = (
    "excluded.cdc_version > cdc_version OR (excluded.cdc_version = cdc_version AND excluded.cdc_order >= cdc_order)"
)
STALE_MARK = "kcl-relay: stale "
# The ELSE of the target upsert's cdc_version guard: fails the row (see the module doc), naming STALE_MARK.
_STALE = f"CAST('{STALE_MARK}' || excluded.cdc_order AS BIGINT)"


def key_text(value: Any) -> str:
    """A key attribute's value as stored in pk: S and B (base64) as is, N as canonical decimal text."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, Decimal):
        return decimal_text(value)
    raise TypeError(f"not a key attribute value: {type(value).__name__}")


def _doubles(value: Any) -> Any:
    """data values for the driver: layout.split only lets through Decimals that a DOUBLE holds exactly, and the
    driver would send a Decimal as a string (creating a TEXT sub-column), so they travel as floats."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {name: _doubles(child) for name, child in value.items()}
    if isinstance(value, list):
        return [_doubles(child) for child in value]
    return value


# CrateDB 6.4.3 breaks rows whose OBJECT(IGNORED) column holds a key with a character beyond U+FFFF: once stored,
# every later UPDATE or ON CONFLICT update of the row fails with "JsonParseException: Invalid UTF-8: Illegal
# surrogate character" (measured: 56 failures in 90 writes of 30 such rows; none for the same keys in
# OBJECT(DYNAMIC) `data`, none for such characters in values). A row the relay cannot update again would stall its
# shard, so in aux's names (at any depth) each such character is stored as the marker U+FDD0, "u" and its code point
# in six upper-case hex digits, and the marker itself as U+FDD0 "m". Unambiguous: after escaping, every marker
# starts one of those two forms, so unescaping reads each back as the one character it stood for; names without
# either character (all ASCII names among them) are stored as they are. load_document() undoes it.
AUX_NAME_MARK = "\ufdd0"
_AUX_NAME_ESCAPED = re.compile("\ufdd0(?:m|u([0-9A-F]{6}))")


def _escape_char(char: str) -> str:
    if char == AUX_NAME_MARK:
        return AUX_NAME_MARK + "m"
    return f"{AUX_NAME_MARK}u{ord(char):06X}" if ord(char) > 0xFFFF else char


def aux_name(name: str) -> str:
    """An attribute name as aux stores it on CrateDB (see above)."""
    if name.isascii() or (AUX_NAME_MARK not in name and max(name) <= "\uffff"):
        return name
    return "".join(_escape_char(char) for char in name)


def _unescape_match(match: re.Match[str]) -> str:
    code = match.group(1)
    return AUX_NAME_MARK if code is None else chr(int(code, 16))


def stored_aux_name(name: str) -> str:
    """aux_name() undone."""
    return _AUX_NAME_ESCAPED.sub(_unescape_match, name) if AUX_NAME_MARK in name else name


# A number JSON cannot carry exactly through the driver (beyond 64-bit integers, decimals no double equals) is stored
# in aux as text: the marker U+FDD0, "n" and its exact decimal text, so that it reads back as the number it was (show
# table, verify) and never as a string. A string value that starts with the marker is stored as U+FDD0 "s" and the
# string; any other string as it is. Unambiguous the same way as the names' escape. Rows written before the mark
# hold such numbers as plain decimal text, and still read back as that text.
AUX_NUMBER = AUX_NAME_MARK + "n"
AUX_STRING = AUX_NAME_MARK + "s"


def _aux_value_restored(value: str) -> Any:
    if value.startswith(AUX_NUMBER):
        return parse_number(value[len(AUX_NUMBER) :])
    return value[len(AUX_STRING) :] if value.startswith(AUX_STRING) else value


def _aux_names_restored(value: Any) -> Any:
    if isinstance(value, dict):
        return {stored_aux_name(name): _aux_names_restored(child) for name, child in value.items()}
    if isinstance(value, list):
        return [_aux_names_restored(child) for child in value]
    if isinstance(value, str) and value.startswith(AUX_NAME_MARK):
        return _aux_value_restored(value)
    return value


def _verbatim(value: Any) -> Any:
    """aux values for the driver: numbers JSON cannot carry exactly through it become marked exact decimal text
    (AUX_NUMBER), strings starting with the marker are marked as strings; names are escaped as aux_name() says;
    everything else is kept as is."""
    if isinstance(value, str):
        return AUX_STRING + value if value.startswith(AUX_NAME_MARK) else value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if INT64_MIN <= value <= INT64_MAX else AUX_NUMBER + str(value)
    if isinstance(value, Decimal):
        as_float = float(value)
        exact = math.isfinite(as_float) and Decimal(repr(as_float)) == value
        return as_float if exact else AUX_NUMBER + decimal_text(value)
    if isinstance(value, dict):
        return {aux_name(name): _verbatim(child) for name, child in value.items()}
    if isinstance(value, list):
        return [_verbatim(child) for child in value]
    return value


def _subscript(name: str) -> str:
    return "pk['" + name.replace("'", "''") + "']"


class CrateDBDriver(Driver):
    """No transactions: each statement is durable on its own when acknowledged, so commit and rollback do nothing."""

    def commit(self, connection: Any) -> None:
        pass

    def rollback(self, connection: Any) -> None:
        pass

    def run_many(self, cursor: Any, sql: str, rows: Sequence[tuple[Any, ...]]) -> BulkOutcome:
        results = cursor.executemany(sql, list(rows))
        counts = [int(result.get("rowcount", -2)) for result in results]
        errors = {
            index: str(result["error"].get("message", ""))
            for index, result in enumerate(results)
            if isinstance(result.get("error"), dict) and result["error"].get("message")
        }
        return BulkOutcome(counts=counts, total=sum(count for count in counts if count > 0), errors=errors)


class CrateDBDialect(Dialect):
    name: ClassVar[str] = "cratedb"
    features: ClassVar[Features] = Features(transactions=False, savepoints=False, parallel_reads=4, partitions=True)
    driver: ClassVar[Driver] = CrateDBDriver()
    keys_per_select: ClassVar[int] = GET_KEYS_SINGLE
    row_identity: ClassVar[RowIdentity] = RowIdentity("_id", "_id", "?")  # a DELETE by _id is real-time

    def refresh_sql(self, relation: str) -> str | None:
        return f"REFRESH TABLE {relation}"

    def check_key(self, key_types: Mapping[str, KeyType]) -> None:
        super().check_key(key_types)
        for name in key_types:
            if not valid_object_key(name):
                raise ValueError(f"key attribute {name!r:.60} cannot be a CrateDB sub-column name")

    def create_tables(self, key_types: Mapping[str, KeyType]) -> list[str]:
        self.check_key(key_types)
        subcolumns = ", ".join(f"{quote_ident(name)} TEXT PRIMARY KEY" for name in sorted(key_types))
        return [
            f"CREATE TABLE IF NOT EXISTS {self.relation()} (pk OBJECT(STRICT) AS ({subcolumns}), "
            "data OBJECT(DYNAMIC), aux OBJECT(IGNORED), cdc_version BIGINT NOT NULL, cdc_order TEXT NOT NULL, "
            "cdc_event TEXT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {self.relation(TOMBSTONES_SUFFIX)} (key_id TEXT PRIMARY KEY, "
            "cdc_version BIGINT NOT NULL, cdc_order TEXT NOT NULL, deleted_at TIMESTAMP WITH TIME ZONE NOT NULL)",
        ]

    def column_types_sql(self) -> str | None:
        # Every column (they all count toward the table's column limit), and the limit itself: one statement.
        schema, table = (self.schema or "doc").replace("'", "''"), self.table.replace("'", "''")
        where = f"WHERE table_schema = '{schema}' AND table_name = '{table}'"
        return (
            f"SELECT column_name, data_type FROM information_schema.columns {where} UNION ALL "
            f"SELECT '{LIMIT_ROW}', settings['mapping']['total_fields']['limit']::TEXT FROM information_schema.tables "
            f"{where}"
        )

    def create_dead_letter_table(self) -> str:
        unindexed = "TEXT INDEX OFF STORAGE WITH (columnstore = false)"  # no 32 KB limit for long raw records
        return (
            f"CREATE TABLE IF NOT EXISTS {self.relation(DEADLETTERS_SUFFIX)} (raw {unindexed}, "
            f"reason {unindexed}, shard_id TEXT, sequence_number TEXT, failed_at TIMESTAMP WITH TIME ZONE)"
        )

    def _guarded_upsert(
        self,
        relation: str,
        columns: Sequence[str],
        keys: Sequence[str],
        conflict: str,
        fail_stale: bool = False,
        kept: Sequence[str] = (),
    ) -> str:
        # The key columns are left out of SET: CrateDB refuses to update a primary key, even to the same value.
        def otherwise(column: str) -> str:
            return _STALE if fail_stale and column == "cdc_version" else column

        def guard(column: str) -> str:  # `kept` columns: a soft REMOVE leaves them as they are (delete-mode=soft)
            return f"({_NEWER}) AND excluded.cdc_event <> '{SOFT_REMOVED}'" if column in kept else _NEWER

        updates = ", ".join(
            f"{column} = CASE WHEN {guard(column)} THEN excluded.{column} ELSE {otherwise(column)} END"
            for column in columns
            if column not in keys
        )
        return (
            f"INSERT INTO {relation} ({', '.join(columns)}) VALUES ({self.placeholders(len(columns))}) "
            f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
        )

    def upsert_sql(
        self,
        key_names: Sequence[str],
        mapped: Sequence[tuple[str, str]] = (),
        soft: bool = False,
        partition: str | None = None,
    ) -> str:
        conflict = ", ".join(_subscript(name) for name in sorted(key_names))
        if partition is not None:  # generated from pk, so never in SET; ON CONFLICT must list the whole primary key
            conflict += f", {quote_ident(partition)}"
        columns = (*ROW_COLUMNS, *(name for name, _ in mapped))
        # A soft REMOVE leaves the stored item as it is: data, aux and the mapped columns.
        kept = ("data", "aux", *(name for name, _ in mapped)) if soft else ()
        return self._guarded_upsert(self.relation(), columns, ("pk",), conflict, fail_stale=True, kept=kept)

    def upsert_params(self, event: ChangeEvent, row: Row) -> tuple[Any, ...]:
        pk = {name: key_text(value) for name, value in row.pk.items()}
        order = event.position.order_token
        return (pk, _doubles(row.data), _verbatim(row.aux), event.version, order, event.op)

    def keys_per_read(self, key_names: Sequence[str]) -> int:
        return GET_KEYS_SINGLE if len(key_names) == 1 else GET_KEYS_COMPOSITE

    def _key_match(self, key_names: Sequence[str]) -> str:
        return " AND ".join(f"{_subscript(name)} = ?" for name in sorted(key_names))

    def _get_where(self, match: str, count: int) -> str:
        """`count` keys as an OR chain: the only shape CrateDB plans as a real-time Get (see the module doc)."""
        return " OR ".join([f"({match})" if " AND " in match else match] * count)

    def state_sql(self, key_names: Sequence[str], count: int) -> str:
        names = sorted(key_names)
        outputs = ", ".join(_subscript(name) for name in names)
        where = self._get_where(self._key_match(names), count)
        return f"SELECT {outputs}, cdc_version, cdc_order, _seq_no, _primary_term FROM {self.relation()} WHERE {where}"

    def tombstone_select_sql(self, count: int) -> str:
        where = self._get_where("key_id = ?", count)
        return f"SELECT key_id, cdc_version, cdc_order FROM {self.relation(TOMBSTONES_SUFFIX)} WHERE {where}"

    def key_params(self, event: ChangeEvent) -> tuple[Any, ...]:
        return tuple(key_text(event.key[name]) for name in sorted(event.key))

    def state_key(self, event: ChangeEvent) -> Hashable:
        return self.key_params(event)

    def load_document(self, value: Any, column: str = "data") -> Any:
        value = super().load_document(value, column)
        return _aux_names_restored(value) if column == "aux" else value

    def read_state(self, record: Sequence[Any]) -> RowState:
        *key, version, order, seq_no, primary_term = record
        return RowState(key=tuple(key), order=(int(version), str(order)), token=(seq_no, primary_term))

    def delete_sql(self, key_names: Sequence[str]) -> str:
        return f"DELETE FROM {self.relation()} WHERE {self._key_match(key_names)} AND _seq_no = ? AND _primary_term = ?"

    def delete_params(self, event: ChangeEvent, state: RowState, order: tuple[int, str]) -> tuple[Any, ...]:
        # Optimistic concurrency: deletes only the version read (which the writer compared with `order`).
        return (*self.key_params(event), *state.token)

    def tombstone_upsert_sql(self) -> str:
        columns = ("key_id", "cdc_version", "cdc_order", "deleted_at")
        return self._guarded_upsert(self.relation(TOMBSTONES_SUFFIX), columns, ("key_id",), "key_id")

    def row_rejection(self, message: str) -> Exception:
        return crate_errors.ProgrammingError(message)

    def is_column_type_race(self, exc: BaseException) -> bool:
        # "SQLParseException[Column `data['note']` already exists with type `boolean`. Cannot add same column with
        # type `text`]": two writers added the same new sub-column at once, with different types.
        return isinstance(exc, crate_errors.ProgrammingError) and "Cannot add same column with type" in str(exc)

    def is_stale(self, message: str) -> bool:
        # "SQLParseException[Cannot cast value `kcl-relay: stale 000...` to type `bigint`]": see _guarded_upsert
        return f"`{STALE_MARK}" in message

    def is_version_conflict(self, message: str) -> bool:
        # e.g. "VersionConflictEngineException[[a]: version conflict, required seqNo [5], primary term [1]. ..."
        return message.startswith("VersionConflictEngineException[")

    def is_outage(self, exc: BaseException) -> bool:
        return isinstance(exc, crate_errors.DatabaseError) and bool(_OUTAGE_ERRORS.search(str(exc)))

    def refused_privilege(self, exc: BaseException) -> tuple[str, str | None] | None:
        found = _MISSING_PRIVILEGE.search(str(getattr(exc, "orig", None) or exc))
        return (found.group(1), found.group(2)) if found else None

    def is_ddl_race(self, exc: BaseException) -> bool:
        return isinstance(exc, crate_errors.DatabaseError) and bool(_DDL_RACE.search(str(exc)))

    def is_row_error(self, exc: BaseException) -> bool:
        """Only errors known to be about a row's values: anything else raises, so it is retried, never skipped."""
        if isinstance(exc, UnicodeEncodeError):
            return True
        if isinstance(exc, TypeError):
            return _ROW_TYPE_ERROR in str(exc)
        if not isinstance(exc, crate_errors.DatabaseError) or is_transient(exc):
            return False
        message = str(exc)
        return bool(_ROW_ERRORS.search(message)) and not _STATEMENT_ERRORS.search(message)
