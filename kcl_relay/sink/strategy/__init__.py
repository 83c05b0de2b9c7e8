"""The two ways the writer guards an apply against concurrent writers, chosen once from the target's dialect:
transactional (PostgreSQL, SQLite) and optimistic (CrateDB). base.py holds what they share."""

from __future__ import annotations

from kcl_relay.sink.dialect import Dialect
from kcl_relay.sink.strategy.base import ApplyStrategy
from kcl_relay.sink.strategy.optimistic import OptimisticStrategy
from kcl_relay.sink.strategy.transactional import TransactionalStrategy

__all__ = ["ApplyStrategy", "OptimisticStrategy", "TransactionalStrategy", "strategy_for"]


def strategy_for(dialect: Dialect) -> type[ApplyStrategy]:
    return TransactionalStrategy if dialect.features.transactions else OptimisticStrategy
