"""A reproducible stream of realistic CDC records, with the delivery faults the relay must survive.

Records look as Kinesis Data Streams for DynamoDB publishes them (NEW_AND_OLD_IMAGES) for one table with a
composite key: `tenant` (S, hash) and `id` (N, range, some with 38 digits or a fraction). Items carry every
DynamoDB type, including values that CrateDB's dynamic objects cannot hold (so they exercise the aux column).
Delivery order then deviates from the true order: local reordering, redelivered duplicates, an older MODIFY
arriving after the REMOVE that superseded it, and TTL expiries by the DynamoDB service.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

KEY_TYPES = {"tenant": "S", "id": "N"}
TABLE_NAME = "orders"
TTL_IDENTITY = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
_EPOCH_MICROS = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z
_TENANTS = ("acme", "globex", "initech", "umbrella", "ünïcödé-tenant", "東京", "with space", "a.b")
_IDS = (
    "0",
    "1",
    "-7",
    "42",
    "2.5",
    "-0.125",
    "9223372036854775807",
    "9223372036854775808",
    "12345678901234567890123456789012345678",
    "-99999999999999999999999999999999999999",
    "1E-130",
)

Typed = dict[str, Any]
Attributes = Callable[[random.Random, int], dict[str, Typed]]


def _s(value: str) -> Typed:
    return {"S": value}


def _n(value: str) -> Typed:
    return {"N": value}


def _b(value: bytes) -> Typed:
    return {"B": base64.b64encode(value).decode("ascii")}


def _number(rng: random.Random) -> str:
    return rng.choice(
        (
            str(rng.randint(-1000, 1000)),
            f"{rng.randint(0, 10**6)}.{rng.randint(0, 99):02d}",  # "12.50" decodes to Decimal("12.5")
            str(rng.randint(10**37, 10**38 - 1)),  # 38 digits: beyond BIGINT, goes to aux in CrateDB
            "-1.5E-130",
            "1E+2",
            "0.1",
            "3.141592653589793238462643383279502884",  # 37 decimals: DOUBLE would alter it
        )
    )


def _scalar(rng: random.Random) -> Typed:
    kind = rng.randrange(6)
    if kind == 0:
        return _s(rng.choice(("", "plain", "ünïcödé ✓", 'quote " and \\ backslash', "line\nbreak")))
    if kind == 1:
        return _n(_number(rng))
    if kind == 2:
        return _b(rng.randbytes(rng.randrange(0, 12)))
    if kind == 3:
        return {"BOOL": rng.random() < 0.5}
    if kind == 4:
        return {"NULL": True}
    return _s(f"text-{rng.randrange(1000)}")


def _attributes(rng: random.Random, revision: int) -> dict[str, Typed]:
    """The non-key attributes of one item revision; a random subset of every shape DynamoDB allows."""
    item: dict[str, Typed] = {
        "status": _s(rng.choice(("new", "paid", "shipped", "cancelled"))),
        "revision": _n(str(revision)),
        "amount": _n(f"{rng.randint(0, 10**5)}.{rng.randint(0, 99):02d}"),
    }
    optional: dict[str, Any] = {
        "note": lambda: _scalar(rng),
        "empty_string": lambda: _s(""),
        "flag": lambda: {"BOOL": rng.random() < 0.5},
        "nothing": lambda: {"NULL": True},
        "blob": lambda: _b(rng.randbytes(rng.randrange(0, 40))),
        "big_number": lambda: _n(str(rng.randint(10**37, 10**38 - 1))),
        "tags": lambda: {"SS": sorted({f"tag{rng.randrange(9)}" for _ in range(rng.randrange(1, 4))})},
        "scores": lambda: {"NS": sorted({_number(rng) for _ in range(rng.randrange(1, 4))})},
        "blobs": lambda: {"BS": [_b(bytes([i]))["B"] for i in rng.sample(range(256), rng.randrange(1, 4))]},
        "address": lambda: {
            "M": {
                "street": _s("Main St"),
                "zip": _n(str(rng.randint(10000, 99999))),
                "geo": {"M": {"lat": _n("52.52"), "lon": _n("13.405")}},
            }
        },
        "empty_map": lambda: {"M": {}},
        "empty_list": lambda: {"L": []},
        "lines": lambda: {
            "L": [{"M": {"sku": _s(f"sku-{i}"), "qty": _n(str(i + 1))}} for i in range(rng.randrange(3))]
        },
        "mixed": lambda: {"L": [_s("a"), _n("1"), {"BOOL": True}]},  # mixed kinds: aux
        "deep": lambda: {"M": {"level1": {"L": [{"M": {"level3": {"L": [_n("1"), _s("x")]}}}]}}},  # aux at depth
        "matrix": lambda: {"L": [{"L": [_n("1"), _n("2")]}, {"L": [_n("3")]}]},  # nested list: aux
        "odd_keys": lambda: {"M": {"a.b": _s("dot"), "_hidden": _s("underscore"), "[x]": _s("bracket")}},
        "a.dotted.name": lambda: _s("top-level name with dots: aux"),
        "_private": lambda: _n("7"),
        "huge_text": lambda: _s("x" * 40_000),  # beyond CrateDB's 32766-byte indexed text limit
    }
    names = list(optional)
    weights = [1.0 if name != "huge_text" else 0.02 for name in names]
    for name in dict.fromkeys(rng.choices(names, weights=weights, k=rng.randrange(2, 9))):  # no set: hash order varies
        item[name] = optional[name]()
    return item


def typical_attributes(rng: random.Random, revision: int) -> dict[str, Typed]:
    """An ordinary order item (about 300 bytes as typed JSON): mostly strings, plain numbers, a small map and list;
    now and then a 38-digit number, a binary, a number set or a null, so every type still turns up."""
    lines = [
        {"M": {"sku": _s(f"sku-{rng.randrange(10_000):05d}"), "qty": _n(str(rng.randint(1, 5))),
               "price": _n(f"{rng.randint(1, 500)}.{rng.randint(1, 99):02d}")}}
        for _ in range(1 if rng.random() < 0.8 else 2)
    ]  # fmt: skip
    item: dict[str, Typed] = {
        "status": _s(rng.choice(("new", "paid", "shipped", "cancelled"))),
        "revision": _n(str(revision)),
        "amount": _n(f"{rng.randint(0, 10**5)}.{rng.randint(1, 99):02d}"),
        "customer": {
            "M": {"name": _s(rng.choice(("Ada", "Grace", "Linus", "Zoë"))), "vip": {"BOOL": rng.random() < 0.2}}
        },
        "lines": {"L": lines},
        "tags": {"SS": sorted({f"tag{rng.randrange(9)}" for _ in range(rng.randrange(1, 3))})},
    }
    extra = rng.random()
    if extra < 0.05:
        item["ledger_id"] = _n(str(rng.randint(10**37, 10**38 - 1)))  # 38 digits: exact, to aux in CrateDB
    elif extra < 0.10:
        item["signature"] = _b(rng.randbytes(16))
    elif extra < 0.15:
        item["ratings"] = {"NS": sorted({str(rng.randint(1, 5)) for _ in range(3)})}
    elif extra < 0.20:
        item["note"] = {"NULL": True}
    return item


def _record(
    rng: random.Random,
    op: str,
    keys: dict[str, Typed],
    new: dict[str, Typed] | None,
    old: dict[str, Typed] | None,
    micros: int,
    precision: str,
    ttl: bool = False,
) -> dict[str, Any]:
    change: dict[str, Any] = {"Keys": keys}
    if precision == "MILLISECOND":
        change["ApproximateCreationDateTime"] = micros // 1000
    else:
        change["ApproximateCreationDateTime"] = micros
    if new is not None:
        change["NewImage"] = new
    if old is not None:
        change["OldImage"] = old
    change["SizeBytes"] = len(json.dumps([keys, new, old]))
    change["ApproximateCreationDateTimePrecision"] = precision
    record: dict[str, Any] = {
        "awsRegion": "us-east-1",
        "eventID": f"{rng.getrandbits(128):032x}",
        "eventName": op,
        "recordFormat": "application/json",
        "tableName": TABLE_NAME,
        "dynamodb": change,
        "eventSource": "aws:dynamodb",
    }
    if ttl:
        record["userIdentity"] = dict(TTL_IDENTITY)
    return record


def _timeline(
    rng: random.Random, n_events: int, n_keys: int, precision: str, attributes: Attributes, old_images: bool
) -> list[dict[str, Any]]:
    """Records in true order: per key INSERT, MODIFYs, sometimes REMOVE (user or TTL), then maybe INSERT again."""
    keys = [{"tenant": _s(rng.choice(_TENANTS)), "id": _n(rng.choice(_IDS))} for _ in range(n_keys // 4)]
    while len(keys) < n_keys:
        keys.append({"tenant": _s(rng.choice(_TENANTS)), "id": _n(str(rng.randint(1, 10**9)))})
    unique = {json.dumps(k, sort_keys=True): k for k in keys}  # drop accidental repeats
    keys = list(unique.values())
    state: dict[int, dict[str, Typed] | None] = {}
    revisions: dict[int, int] = {}
    micros = _EPOCH_MICROS
    records = []
    for _ in range(n_events):
        # 0 happens: two changes can share an ApproximateCreationDateTime; stream position then decides.
        micros += rng.choice((0, 1, 7, 350, 1000, 2500, 60_000_000))
        index = rng.randrange(len(keys))
        key = keys[index]
        current = state.get(index)
        revision = revisions[index] = revisions.get(index, 0) + 1
        if current is None:
            new = {**key, **attributes(rng, revision)}
            records.append(_record(rng, "INSERT", key, new, None, micros, precision))
            state[index] = new
        elif rng.random() < 0.2:
            ttl = rng.random() < 0.4
            old = current if old_images else None
            records.append(_record(rng, "REMOVE", key, None, old, micros, precision, ttl=ttl))
            state[index] = None
        else:
            new = {**key, **attributes(rng, revision)}
            records.append(_record(rng, "MODIFY", key, new, current if old_images else None, micros, precision))
            state[index] = new
    return records


def _deliver(rng: random.Random, timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The timeline as a consumer sees it: reordered, with duplicates and stale records arriving late."""
    delivered = list(timeline)
    for i in range(len(delivered) - 1):  # local reordering, as across shards or after a retry
        if rng.random() < 0.15:
            j = min(len(delivered) - 1, i + rng.randrange(1, 20))
            delivered[i], delivered[j] = delivered[j], delivered[i]
    extras: list[tuple[int, dict[str, Any]]] = []
    last_write: dict[str, tuple[int, dict[str, Any]]] = {}
    for i, record in enumerate(delivered):
        key_text = json.dumps(record["dynamodb"]["Keys"], sort_keys=True)
        if rng.random() < 0.05:  # at-least-once delivery: the same record again, a little later
            extras.append((i + rng.randrange(1, 50), record))
        if record["eventName"] == "REMOVE":
            earlier = last_write.get(key_text)
            if earlier is not None and rng.random() < 0.5:
                extras.append((i + rng.randrange(1, 30), earlier[1]))  # the superseded write, late
        else:
            last_write[key_text] = (i, record)
    for position, record in sorted(extras, key=lambda extra: extra[0], reverse=True):
        delivered.insert(min(position, len(delivered)), record)
    return delivered


def make_corpus(
    n_events: int,
    seed: int,
    *,
    n_keys: int | None = None,
    precision: str = "MICROSECOND",
    attributes: Attributes | None = None,
    old_images: bool = True,
) -> list[dict[str, Any]]:
    """`n_events` CDC records (dicts, delivery order) over a few hundred keys; the same seed gives the same list.

    `attributes` makes an item's non-key attributes (default: every shape DynamoDB allows, see _attributes);
    old_images=False gives a NEW_IMAGE stream (no OldImage).
    """
    rng = random.Random(seed)
    keys = n_keys if n_keys is not None else max(5, min(300, n_events // 4))
    timeline = _timeline(rng, n_events, keys, precision, attributes or _attributes, old_images)
    delivered = _deliver(rng, timeline)
    return delivered[:n_events]


def _seconds(change: dict[str, Any]) -> float:
    scale = 1e3 if change.get("ApproximateCreationDateTimePrecision") == "MILLISECOND" else 1e6
    return change["ApproximateCreationDateTime"] / scale


def lambda_envelope(record: dict[str, Any], shard_id: str, sequence_number: str) -> dict[str, Any]:
    """`record` wrapped as an AWS Lambda Kinesis event record."""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": json.dumps(record["dynamodb"]["Keys"], sort_keys=True)[:256],
            "sequenceNumber": sequence_number,
            "data": base64.b64encode(json.dumps(record).encode("utf-8")).decode("ascii"),
            "approximateArrivalTimestamp": _seconds(record["dynamodb"]),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{sequence_number}",
        "eventName": "aws:kinesis:record",
        "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:kinesis:us-east-1:000000000000:stream/orders-cdc",
    }


def write_ndjson(
    path: Path, records: Iterable[dict[str, Any]], *, envelope: bool = False, compact: bool = False
) -> Path:
    """One record a line, bare or (envelope=True) as Lambda envelopes of shard 0 with increasing sequence numbers;
    compact=True without blanks after the separators."""
    separators = (",", ":") if compact else None
    with path.open("w", encoding="utf-8") as out:
        for number, record in enumerate(records, start=1):
            if envelope:
                record = lambda_envelope(record, "shardId-000000000000", f"49{number:054d}")
            out.write(json.dumps(record, ensure_ascii=False, separators=separators) + "\n")
    return path
