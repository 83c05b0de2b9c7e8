"""CrateDB's aux name escape (kcl_relay/sink/cratedb.py): reversible, injective, nothing beyond U+FFFF stored."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kcl_relay.sink.cratedb import AUX_NAME_MARK, CrateDBDialect, _verbatim, aux_name, stored_aux_name

names = st.text(st.sampled_from(["a", ".", "u", "m", "0", "F", AUX_NAME_MARK, "\uffff", "\U0001f511", "\U0010ffff"]))


@given(names)
def test_the_escape_round_trips_and_leaves_nothing_beyond_u_ffff(name: str) -> None:
    stored = aux_name(name)
    assert stored_aux_name(stored) == name
    assert all(ord(char) <= 0xFFFF for char in stored)


@given(names, names)
def test_two_names_never_share_a_stored_name(one: str, other: str) -> None:
    if one != other:
        assert aux_name(one) != aux_name(other)


def test_plain_names_are_stored_as_they_are() -> None:
    for name in ("id", "Größe", "東京", "\uffff"):
        assert aux_name(name) is name


def test_the_dialect_escapes_aux_at_any_depth_and_the_reader_hook_undoes_it() -> None:
    dialect = CrateDBDialect("doc", "t")
    aux = {"k\U0001f511": {"x\U0001f600": [{"\U0001f600": 1}]}, "v": "value \U0001f511"}
    sent = _verbatim(aux)
    assert sent == {"k\ufdd0u01F511": {"x\ufdd0u01F600": [{"\ufdd0u01F600": 1}]}, "v": "value \U0001f511"}
    assert dialect.load_document(sent, "aux") == aux
    assert dialect.load_document(sent, "data") == sent  # data's names are never escaped
