"""The sink interface: what the pipeline needs from a database, whatever its dialect."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kcl_relay.cdc.event import ChangeEvent, DeadLetter, KeyType


@dataclass
class ApplyResult:
    """What one apply() did. Dead letters are already written when apply() returns."""

    upserted: int = 0
    deleted: int = 0
    skipped_stale: int = 0  # older than what the table (or a tombstone) already holds
    misfits: int = 0  # mapped attribute values that did not fit their column's type: stored in aux instead
    dead_letters: list[DeadLetter] = field(default_factory=list)

    @property
    def applied(self) -> int:
        return self.upserted + self.deleted


class Sink(ABC):
    """A target table plus its tombstones and dead letters.

    Contract: when apply() returns, its writes (and dead letters) are durable, so the caller may checkpoint.
    Transient failures are retried inside; a failure that outlasts the retries raises, so nothing is checkpointed.
    """

    @abstractmethod
    def ensure_table(self, key_types: Mapping[str, KeyType]) -> None:
        """Create the target, tombstone and dead-letter tables when missing."""

    @abstractmethod
    def apply(self, events: Sequence[ChangeEvent]) -> ApplyResult:
        """Apply events already coalesced to at most one per key."""

    @abstractmethod
    def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        """Store records that could not be decoded."""

    def claim_source_table(self, dynamodb_table: str) -> str:
        """The DynamoDB table this target carries: the first claim wins, for every processor and worker."""
        return dynamodb_table

    @property
    def retries(self) -> int:
        """Writes retried after transient failures so far (a sink that never retries: 0)."""
        return 0

    @abstractmethod
    def close(self) -> None: ...
