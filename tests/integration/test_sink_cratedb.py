"""The sink semantics against a real CrateDB (CRATEDB_SQLALCHEMY_URL), skipped with the reason when there is none.

CrateDB stores numeric key attributes as exact text, and sends through its driver only what JSON carries exactly
(see kcl_relay/sink/cratedb.py), so the expected items are normalised the same way before comparing.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import pytest

from kcl_relay.cdc.event import Item
from kcl_relay.cdc.layout import split
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.cratedb import _doubles, _verbatim, key_text
from kcl_relay.sink.target import TargetSpec
from kcl_relay.sink.writer import TableWriter
from tests.support.sink_suite import SinkSemantics, change, merge

pytestmark = pytest.mark.cratedb


class TestCrateDBSink(SinkSemantics):
    @pytest.fixture
    def target_url(self, cratedb_url: str) -> str:
        return cratedb_url

    def refresh(self, spec: TargetSpec, relation: str) -> None:
        run_sql(spec, f"REFRESH TABLE {relation}")  # test reads only: the relay never refreshes

    def read(self, spec: TargetSpec) -> dict[Hashable, Item]:
        relation = f'"{spec.schema}"."{spec.table}"'
        self.refresh(spec, relation)
        _, rows = run_sql(spec, f"SELECT pk, data, aux FROM {relation}")
        return {tuple(pk[name] for name in sorted(pk)): merge(pk, data or {}, aux or {}) for pk, data, aux in rows}

    def expected(self, items: Mapping[str, Item], key_names: Sequence[str]) -> dict[Hashable, Item]:
        result: dict[Hashable, Item] = {}
        for image in items.values():
            key = {name: image[name] for name in key_names}
            row = split(key, image)
            pk = {name: key_text(value) for name, value in key.items()}
            result[tuple(pk[name] for name in sorted(pk))] = merge(pk, _doubles(row.data), _verbatim(row.aux))
        return result

    def poison(self, sink: TableWriter, spec: TargetSpec) -> dict[str, object]:
        # data is OBJECT(DYNAMIC): the first row fixes data['n'] as BIGINT, so text there is refused.
        sink.apply([change("INSERT", "typed", 1, 1, n=1)])
        return {"n": "not a number"}
