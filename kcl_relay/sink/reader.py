"""Read a target table back, as the relay stored it: for `verify`, and for the full load's prune.

Not the write path: on CrateDB every read here follows a REFRESH TABLE, so that rows written a moment ago are
seen (the writer never refreshes; a check may). Rows are read in key order, a page at a time (keyset paging), so
a big table never has to fit one response.

To compare a DynamoDB item with a row, both become the same *comparable item*: the key attributes plus the union
of data and aux, with every number as its exact canonical value (int when integral, else Decimal). The DynamoDB
side first goes through the target dialect's own upsert parameters (what the relay would send), so values a
database stores differently (CrateDB: numbers as doubles in `data`, big numbers as text in `aux`, key attributes
as text) are compared in the form that database holds them; its driver's floats and ints then compare by value.
A mapped table (kcl_relay/mapping) is read with the mapping kept beside it: each column's value goes back to its
attribute path, exactly as the item held it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.pool import NullPool

from kcl_relay.cdc.event import ChangeEvent, Item, KeyType, canonical_key
from kcl_relay.cdc.jsonenc import canonical_decimal, dumps, loads
from kcl_relay.cdc.layout import split
from kcl_relay.cdc.values import parse_number
from kcl_relay.mapping.shape import restore
from kcl_relay.mapping.spec import TableMapping
from kcl_relay.mapping.sql import read_value, select_expression
from kcl_relay.sink.dialect import SOFT_REMOVED
from kcl_relay.sink.mapped_table import stored_mapping
from kcl_relay.sink.target import TargetSpec
from kcl_relay.sink.writer import dialect_for

__all__ = ["StoredRow", "TargetReader", "comparable", "digest"]

PAGE_ROWS = 5000
KEYS_PER_READ = 100  # keys per lookup statement; after the refresh (CrateDB) any plan sees every row


def comparable(value: Any) -> Any:
    """A stored value with its numbers canonical: 2, 2.0 and Decimal("2.00") all become 2, 0.1 becomes
    Decimal("0.1") (a double's shortest text is the decimal it was made from)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return canonical_decimal(Decimal(repr(value)))
    if isinstance(value, Decimal):
        return canonical_decimal(value)
    if isinstance(value, dict):
        return {name: comparable(child) for name, child in value.items()}
    if isinstance(value, (list, tuple)):
        return [comparable(child) for child in value]
    return value


def digest(item: Item) -> bytes:
    """A short fingerprint of a comparable item: equal items, equal digests, whatever their key order."""
    return hashlib.blake2b(dumps(item).encode("utf-8", errors="surrogatepass"), digest_size=16).digest()


@dataclass(frozen=True)
class StoredRow:
    key: Item  # the item's key, decoded as the stream would have it
    key_id: str  # canonical_key(key): the same text the relay uses for this item
    item: Item  # the comparable item
    version: int  # cdc_version


def _document(value: Any, load: Callable[[Any], Any] = loads) -> dict[str, Any]:
    if value is None:
        return {}
    parsed = load(value)  # JSON text, or an object the driver parsed (CrateDB)
    return dict(parsed) if isinstance(parsed, dict) else {}


# Rows that hold an item: delete-mode=soft keeps removed items' rows, flagged in cdc_event (sink/dialect.py).
LIVE = f"cdc_event <> '{SOFT_REMOVED}'"


class TargetReader:
    """Reads one target table (not thread-safe: one reader per thread)."""

    def __init__(
        self,
        spec: TargetSpec,
        key_types: Mapping[str, KeyType],
        mapping: TableMapping | None = None,
        *,
        look_up_mapping: bool = True,
    ) -> None:
        self.spec = spec
        self.key_types = dict(key_types)
        self.key_names = tuple(sorted(key_types))  # the dialects order key columns by name
        self.dialect = dialect_for(spec)
        self.relation = self.dialect.relation()
        self._engine = spec.create_engine(poolclass=NullPool)
        self._crate = spec.dialect == "cratedb"
        # The mapping the table was filled with (kept beside it), unless the caller knows it (or knows there is none).
        if mapping is None and look_up_mapping:
            mapping = stored_mapping(spec)
        self.mapping: TableMapping | None = mapping
        self._mapped = self.mapping.columns if self.mapping is not None else ()

    def close(self) -> None:
        self._engine.dispose()

    # ---- the comparable form ----
    def stored_item(self, event: ChangeEvent) -> Item:
        """What this target would hold for an INSERT/MODIFY event, as a comparable item."""
        assert event.image is not None
        row = split(event.key, event.image, self.mapping)
        _pk, data, aux = self.dialect.upsert_params(event, row)[:3]
        return self._item(event.key, data, aux, row.columns)

    def _item(self, key: Item, data: Any, aux: Any, columns: dict[str, Any] | None = None) -> Item:
        load = self.dialect.load_document
        rest = {
            **_document(data, lambda value: load(value, "data")),
            **_document(aux, lambda value: load(value, "aux")),
        }
        if self.mapping is not None and columns:
            rest = restore(self.mapping, rest, columns)
        return comparable({**rest, **key})

    def _key(self, pk: Any) -> Item:
        if self._crate:  # pk holds TEXT sub-columns: numbers as their canonical decimal text
            return {
                name: parse_number(value) if self.key_types.get(name) == "N" else value
                for name, value in dict(pk).items()
            }
        return _document(pk, lambda value: self.dialect.load_document(value, "pk"))

    def _row(self, record: Sequence[Any]) -> StoredRow:
        pk, data, aux, version = record[:4]
        key = self._key(pk)
        load = self.dialect.load_document
        columns = {
            column.name: read_value(self.spec.dialect, column, value, lambda document: load(document, "data"))
            for column, value in zip(self._mapped, record[5 : 5 + len(self._mapped)], strict=True)  # after cdc_event
        }
        item = self._item(key, data, aux, columns)
        return StoredRow(key=key, key_id=canonical_key(key), item=item, version=int(version))

    # ---- SQL ----
    def _columns(self) -> str:
        mapped = "".join(f", {select_expression(self.spec.dialect, column)}" for column in self._mapped)
        if self.spec.dialect == "postgresql":  # as text: psycopg would turn JSONB numbers into floats
            # Named apart from the columns: ORDER BY pk must mean the JSONB column, not this text.
            return (
                "pk::text AS pk_text, data::text AS data_text, aux::text AS aux_text, cdc_version, cdc_event" + mapped
            )
        return "pk, data, aux, cdc_version, cdc_event" + mapped

    def _subscript(self, name: str) -> str:
        return "pk['" + name.replace("'", "''") + "']"

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._engine.connect() as connection:
            result = connection.exec_driver_sql(sql, tuple(params)) if params else connection.exec_driver_sql(sql)
            rows = [tuple(row) for row in result]
            connection.rollback()  # a read: nothing to keep
            return rows

    def refresh(self) -> None:
        """CrateDB: make every acknowledged write visible to the queries that follow."""
        statement = self.dialect.refresh_sql(self.relation)
        if statement is not None:
            self._query(statement)

    def exists(self) -> bool:
        return bool(inspect(self._engine).has_table(self.spec.table, schema=self.spec.schema))

    def count(self) -> int:
        self.refresh()
        return int(self._query(f"SELECT count(*) FROM {self.relation} WHERE {LIVE}")[0][0])

    def rows(self, page_rows: int = PAGE_ROWS) -> Iterator[StoredRow]:
        """Every row, in key order, a page at a time (refreshed once: the rows as of the start)."""
        self.refresh()
        for records in self._pages(self._columns(), LIVE, (), page_rows):
            for record in records:
                yield self._row(record)

    def _pages(
        self, columns: str, where: str, params: Sequence[Any], page_rows: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        """SELECT columns (pk first) WHERE `where`, in key order, `page_rows` at most per statement: each page
        continues after the last key of the one before (keyset paging), so memory holds one page, and rows
        deleted or added behind the cursor meanwhile neither repeat nor shift a row out of the pages."""
        after: tuple[Any, ...] | None = None
        while True:
            keyset, keyset_params = self._after(after)
            conditions = " AND ".join(f"({term})" for term in (where, keyset) if term)
            sql = f"SELECT {columns}{self._order_outputs()} FROM {self.relation}"
            sql += (f" WHERE {conditions}" if conditions else "") + f" ORDER BY {self._order()} LIMIT {int(page_rows)}"
            records = self._query(sql, [*params, *keyset_params])
            if records:
                yield records
            if len(records) < page_rows:
                return
            width = len(self.key_names)
            after = tuple(records[-1][-width:]) if self._crate else (records[-1][0],)

    def _order(self) -> str:
        if self._crate:
            return ", ".join(self._text(name) for name in self.key_names)
        return "pk"

    def _text(self, name: str) -> str:
        """CrateDB: a key sub-column as an expression, for ORDER BY and the keyset's `>`. On the column itself,
        6.4.3 sorts each shard's rows by UTF-8 bytes (Lucene) and merges the shards by UTF-16 units (Java), and
        `>` is a Lucene range: they disagree on characters above U+FFFF against U+E000..U+FFFF, and the pages
        skipped or repeated rows. An expression is sorted and compared one way, as Java strings, everywhere
        (tests/integration/test_memory_bounded.py)."""
        return f"({self._subscript(name)} || '')"

    def _order_outputs(self) -> str:
        """CrateDB: the key sub-columns once more, as the keyset cursor (compared as stored, as text)."""
        return "".join(f", {self._subscript(name)}" for name in self.key_names) if self._crate else ""

    def _after(self, after: tuple[Any, ...] | None) -> tuple[str, list[Any]]:
        """(key columns) > the last row's, spelled so every database can use its primary key index."""
        if after is None:
            return "", []
        p = self.dialect.param
        if not self._crate:
            key = f"{p}::jsonb" if self.spec.dialect == "postgresql" else p
            return f"pk > {key}", [after[0]]
        terms, params = [], []
        for index, name in enumerate(self.key_names):
            equal = [f"{self._subscript(prior)} = {p}" for prior in self.key_names[:index]]
            terms.append("(" + " AND ".join([*equal, f"{self._text(name)} > {p}"]) + ")")
            params.extend([*after[:index], after[index]])
        return " OR ".join(terms), params

    def rows_by_keys(self, keys: Sequence[Item]) -> dict[str, StoredRow]:
        """The rows of these keys that exist, by key_id."""
        self.refresh()
        found: dict[str, StoredRow] = {}
        p = self.dialect.param
        for start in range(0, len(keys), KEYS_PER_READ):
            chunk = keys[start : start + KEYS_PER_READ]
            if self._crate:
                from kcl_relay.sink.cratedb import key_text

                match = " AND ".join(f"{self._subscript(name)} = {p}" for name in self.key_names)
                where = " OR ".join([f"({match})"] * len(chunk))
                params = [key_text(key[name]) for key in chunk for name in self.key_names]
            else:
                key = f"{p}::jsonb" if self.spec.dialect == "postgresql" else p
                where = f"pk IN ({', '.join([key] * len(chunk))})"
                params = [self.dialect.stored_json(canonical_key(key)) for key in chunk]
            for record in self._query(f"SELECT {self._columns()} FROM {self.relation} WHERE {where}", params):
                if record[4] == SOFT_REMOVED:  # a row kept by delete-mode=soft: the item is gone
                    continue
                row = self._row(record)
                found[row.key_id] = row
        return found

    def sample(self, count: int) -> list[StoredRow]:
        """Up to `count` rows picked at random."""
        self.refresh()
        sql = f"SELECT {self._columns()} FROM {self.relation} WHERE {LIVE} ORDER BY random() LIMIT {int(count)}"
        return [self._row(record) for record in self._query(sql)]

    def keys_older_than(self, version: int, page_rows: int = PAGE_ROWS) -> Iterator[list[Item]]:
        """The keys of rows whose cdc_version is below `version` (the full load's prune), a page at a time in key
        order (refreshed once, before the first page: rows written since are newer than `version` anyway)."""
        self.refresh()
        pk = "pk::text AS pk_text" if self.spec.dialect == "postgresql" else "pk"
        where = f"cdc_version < {self.dialect.param} AND {LIVE}"  # a soft-removed row needs no prune
        for records in self._pages(pk, where, (version,), page_rows):
            yield [self._key(record[0]) for record in records]
