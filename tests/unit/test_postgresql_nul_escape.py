"""The NUL escape PostgreSQL's JSONB needs (kcl_relay/sink/postgresql.py): reversible, injective, free for text
without NUL or the marker."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kcl_relay.cdc.jsonenc import dumps, loads
from kcl_relay.sink.postgresql import MARK, escape, item_document, stored_json, unescape

# Few characters, so that NULs, MARKs and the digits after them meet often.
tricky = st.text(alphabet=["\x00", MARK, "0", "1", "a", "\\", "u"], max_size=12)
documents = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**38), max_value=10**38)
    | st.decimals(min_value=-(10**20), max_value=10**20, places=4, allow_nan=False, allow_infinity=False)
    | tricky,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(tricky, children, max_size=4),
    max_leaves=12,
)


@given(tricky)
def test_escape_is_reversed_and_leaves_no_nul(text: str) -> None:
    escaped = escape(text)
    assert "\x00" not in escaped
    assert unescape(escaped) == text
    # every MARK in escaped text is followed by "0" or "1": the left-to-right reading is the only one
    assert all(escaped[index + 1 : index + 2] in ("0", "1") for index, char in enumerate(escaped) if char == MARK)


@given(tricky, tricky)
def test_escape_is_injective(one: str, other: str) -> None:
    assert (escape(one) == escape(other)) == (one == other)


@given(st.dictionaries(tricky, documents, max_size=5))
def test_stored_json_reads_back_exactly(document: dict[str, object]) -> None:
    text = dumps(document)
    stored = stored_json(text)
    assert "\\u0000" not in stored.replace("\\\\", "")  # no NUL escape left for JSONB to refuse
    assert item_document(stored) == document  # as JSONB's text
    assert item_document(loads(stored)) == document  # as the driver parses JSONB


def test_text_without_nul_or_marker_is_passed_through_untouched() -> None:
    text = dumps({"id": "ü-東京", "v": [1, 2.5, "x"]})
    assert stored_json(text) is text
    assert stored_json(dumps({"s": "\\u0000 as six characters"})) == dumps({"s": "\\u0000 as six characters"})


def test_a_marker_not_written_by_the_escape_is_left_alone() -> None:
    assert unescape(MARK + "2" + MARK) == MARK + "2" + MARK
    assert unescape(MARK + "10" + MARK + "0") == MARK + "0\x00"
