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


values = st.one_of(
    st.text(st.sampled_from(["a", "n", "s", "1", AUX_NAME_MARK])),
    st.integers(min_value=-(10**38), max_value=10**38),
    st.decimals(allow_nan=False, allow_infinity=False, places=30, min_value=-(10**8), max_value=10**8),
)


@given(st.dictionaries(names, values))
def test_aux_values_read_back_as_they_were_numbers_as_numbers(aux: dict[str, object]) -> None:
    """A number beyond what the driver carries exactly is stored as marked text, and reads back as that number; a
    string is never mistaken for one (a string that starts with the marker is marked too)."""
    from kcl_relay.cdc.values import parse_number
    from kcl_relay.sink.reader import comparable

    expected = {name: parse_number(str(v)) if not isinstance(v, str) else v for name, v in aux.items()}
    restored = CrateDBDialect("doc", "t").load_document(_verbatim(aux), "aux")
    assert comparable(restored) == comparable(expected)
    assert {name: type(value) is str for name, value in restored.items()} == {
        name: isinstance(value, str) for name, value in aux.items()
    }


def test_rows_written_before_the_number_mark_read_as_they_were_stored() -> None:
    old = {"big": "99999999999999999999999999999999999999", "s": "text"}
    assert CrateDBDialect("doc", "t").load_document(old, "aux") == old
