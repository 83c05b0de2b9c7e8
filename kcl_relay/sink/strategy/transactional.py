"""The transactional strategy (PostgreSQL, SQLite): the whole apply in one transaction on one connection.

The transaction's isolation (PostgreSQL: SERIALIZABLE; SQLite: one writer at a time, BEGIN IMMEDIATE) is the guard
against concurrent writers, so the tombstones are read once, before the upsert, and every write is guarded in SQL
(ON CONFLICT ... DO UPDATE ... WHERE, DELETE ... WHERE the row is not newer). A row error inside the transaction is
kept to its statement by a savepoint where the database needs one (executor.py). The algorithm is the shared one
(base.py) as it is.
"""

from __future__ import annotations

from kcl_relay.sink.strategy.base import ApplyStrategy

__all__ = ["TransactionalStrategy"]


class TransactionalStrategy(ApplyStrategy):
    name = "transactional"
