"""A C fast path that raises (other than its Fallback) is a fault: the reference decides, logged once, counted."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from kcl_relay.cdc import speedups
from kcl_relay.cdc.decode import DecodeError, decode
from kcl_relay.cdc.event import Position, RawRecord
from kcl_relay.cdc.jsonenc import dumps
from kcl_relay.cdc.layout import Row, split
from kcl_relay.cdc.values import AttributeValueError, from_item
from tests.support.records import cdc_record

pytestmark = pytest.mark.skipif(
    speedups.available is None, reason="the C extension is not built (python3 setup.py build_ext --inplace)"
)
POSITION = Position("shardId-000000000007", "4965", 3)
RECORD = RawRecord(json.dumps(cdc_record("INSERT", "a", 1_735_689_600_000_000, v="1")).encode(), POSITION)

# Each fast path: the C function's name and a call of its Python wrapper, with what the wrapper must return.
CALLS: dict[str, tuple[Callable[[], Any], Any]] = {
    "decode_record": (lambda: decode(RECORD).image, {"id": "a", "v": "1"}),
    "from_item": (lambda: from_item({"n": {"N": "1.5"}}), {"n": Decimal("1.5")}),
    "split": (lambda: split({"id": "a"}, {"id": "a", "v": 1}), Row(pk={"id": "a"}, data={"v": 1}, aux={})),
    "dumps": (lambda: dumps({"b": [1, "x"], "a": None}), '{"a":null,"b":[1,"x"]}'),
    "order_token": (lambda: Position("shardId-000000000001", "42", 7).order_token, f"{2:013d}.{42:064d}.{7:010d}"),
}


@pytest.fixture(autouse=True)
def fresh_counts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(speedups, "fallbacks", dict.fromkeys(speedups.PATHS, 0))
    monkeypatch.setattr(speedups, "_logged", set())
    speedups.use(True)
    yield
    speedups.use(True)


def native_where(monkeypatch: pytest.MonkeyPatch, name: str, fails: Callable[..., Any]) -> None:
    """The C module, but its function `name` replaced by `fails`."""
    module = speedups.available
    assert module is not None
    functions = {attribute: getattr(module, attribute) for attribute in dir(module) if not attribute.startswith("__")}
    monkeypatch.setattr(speedups, "native", SimpleNamespace(**{**functions, name: fails}))


def raising(error: Exception) -> Callable[..., Any]:
    def fail(*_args: Any) -> Any:
        raise error

    return fail


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "kcl_relay.cdc.speedups" and r.levelno == logging.WARNING]


@pytest.mark.parametrize("path", speedups.PATHS)
def test_a_raising_fast_path_is_logged_once_per_kind_and_counted(
    path: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    call, expected = CALLS[path]
    native_where(monkeypatch, path, raising(KeyError("bug")))
    for _ in range(3):
        assert call() == expected  # the reference decided
    native_where(monkeypatch, path, raising(MemoryError()))
    assert call() == expected
    assert speedups.fallbacks[path] == 4
    assert {p: n for p, n in speedups.fallbacks.items() if n} == {path: 4}
    logged = warnings_of(caplog)
    assert [(r.args[0], r.args[1]) for r in logged] == [(path, "KeyError"), (path, "MemoryError")]  # type: ignore[index]
    assert "pure-Python" in logged[0].getMessage() and logged[0].exc_info is not None


@pytest.mark.parametrize("path", speedups.PATHS)
def test_the_fallback_sentinel_is_no_fault(
    path: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    call, expected = CALLS[path]
    native_where(monkeypatch, path, raising(speedups.Fallback()))
    assert call() == expected
    assert speedups.fallbacks[path] == 0 and not warnings_of(caplog)


def test_a_hook_refusing_bad_input_is_no_fault(caplog: pytest.LogCaptureFixture) -> None:
    # The real C path: parse_number (a reference hook) raises for "1e999" and the reference refuses it too.
    with pytest.raises(AttributeValueError, match=r"^attribute n: number out of DynamoDB's range"):
        from_item({"n": {"N": "1e999"}})
    document = cdc_record("INSERT", "a", 1_735_689_600_000_000)
    document["dynamodb"]["NewImage"]["n"] = {"N": "1e999"}
    with pytest.raises(DecodeError, match=r"^attribute n: number out of DynamoDB's range"):
        decode(RawRecord(json.dumps(document).encode(), POSITION))
    assert set(speedups.fallbacks.values()) == {0} and not warnings_of(caplog)


def test_a_hook_refusing_a_value_decode_ignores_is_no_fault(caplog: pytest.LogCaptureFixture) -> None:
    """The C parser converts NewImage before it knows the record is a REMOVE, whose NewImage decode() ignores."""
    document = cdc_record("REMOVE", "a", 1_735_689_600_000_000)
    document["dynamodb"]["NewImage"] = {"n": {"N": "not a number"}}
    assert decode(RawRecord(json.dumps(document).encode(), POSITION)).image is None
    assert set(speedups.fallbacks.values()) == {0} and not warnings_of(caplog)


def test_a_value_error_on_input_the_reference_accepts_is_a_fault(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    native_where(monkeypatch, "from_item", raising(ValueError("wrongly refused")))
    assert from_item({"n": {"N": "1.5"}}) == {"n": Decimal("1.5")}
    assert speedups.fallbacks["from_item"] == 1
    assert [r.args[1] for r in warnings_of(caplog)] == ["ValueError"]  # type: ignore[index]


def test_a_fault_never_reaches_stdout(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    native_where(monkeypatch, "dumps", raising(RuntimeError("bug")))
    assert dumps([1]) == "[1]"
    assert capsys.readouterr().out == ""
