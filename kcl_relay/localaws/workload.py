"""Tables, streams and a seeded workload of real item writes on the emulated DynamoDB, plus the scan oracle.

The workload knows, per key, which stream events its calls must produce (INSERT/MODIFY/REMOVE), so tests can
check the Kinesis side against it. Every write changes the item (a version counter always moves), because AWS
writes no stream record for a write that changes nothing, while moto writes one anyway.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from kcl_relay.localaws.pump import VIEW_TYPE, jsonable, typed_key_id

__all__ = [
    "WorkloadCounts",
    "create_stream",
    "create_table",
    "fill_table",
    "normalize_sets",
    "run_workload",
    "scan_items",
    "write_until",
]

KeySchema = Sequence[tuple[str, str]]  # (attribute name, "S" | "N" | "B"): the hash key, then an optional range key
DEFAULT_KEY_SCHEMA: KeySchema = (("pk", "S"),)
RANGE_VALUES_PER_HASH = 3

# Values chosen to be in DynamoDB's canonical form (no trailing zeros, no exponent), since moto stores numbers as
# given and AWS normalizes them: canonical input keeps the two alike.
BIG_NUMBERS = ["12345678901234567890123456789012345678", "-98765432109876543210987654321098765432", "0"]
DECIMALS = ["3.14159", "-0.000001", "0.5", "123456789.123456789", "-2.75"]
TEXTS = ["plain", "ünïcødé", "emoji 🦆🔑", 'quote " and \\ backslash', "line\nbreak\ttab", "", "ключ"]


def create_table(
    ddb: Any,
    name: str,
    key_schema: KeySchema = DEFAULT_KEY_SCHEMA,
    *,
    stream: bool = True,
    exist_ok: bool = False,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Create a PAY_PER_REQUEST table (stream NEW_AND_OLD_IMAGES unless stream=False); wait until ACTIVE.

    With exist_ok, an existing table is kept as it is.
    """
    if not 1 <= len(key_schema) <= 2:
        raise ValueError("key_schema: a hash key and an optional range key")
    kwargs: dict[str, Any] = {
        "TableName": name,
        "KeySchema": [
            {"AttributeName": attr, "KeyType": "RANGE" if i else "HASH"} for i, (attr, _) in enumerate(key_schema)
        ],
        "AttributeDefinitions": [{"AttributeName": attr, "AttributeType": kind} for attr, kind in key_schema],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if stream:
        kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": VIEW_TYPE}
    try:
        ddb.create_table(**kwargs)
    except ddb.exceptions.ResourceInUseException:
        if not exist_ok:
            raise
    waiter_config = {"Delay": 0.2, "MaxAttempts": int(timeout / 0.2) + 1}
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig=waiter_config)
    described: dict[str, Any] = ddb.describe_table(TableName=name)["Table"]
    return described


def create_stream(kinesis: Any, name: str, shards: int = 2, *, exist_ok: bool = False, timeout: float = 30.0) -> str:
    """Create a provisioned Kinesis stream; wait until ACTIVE; return its ARN. exist_ok keeps an existing one."""
    try:
        kinesis.create_stream(StreamName=name, ShardCount=shards)
    except kinesis.exceptions.ResourceInUseException:
        if not exist_ok:
            raise
    deadline = time.monotonic() + timeout
    while True:
        summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if summary["StreamStatus"] == "ACTIVE":
            arn: str = summary["StreamARN"]
            return arn
        if time.monotonic() > deadline:
            raise TimeoutError(f"stream {name} not ACTIVE after {timeout:.0f} s")
        time.sleep(0.2)


@dataclass
class WorkloadCounts:
    """What run_workload did and which stream events it must have caused, per key in order."""

    puts: int = 0
    updates: int = 0
    deletes: int = 0  # DeleteItem calls; those on absent keys cause no event
    events: dict[str, list[str]] = field(default_factory=dict)  # typed_key_id -> event names in order

    def count(self, event_name: str) -> int:
        return sum(names.count(event_name) for names in self.events.values())

    @property
    def inserts(self) -> int:
        return self.count("INSERT")

    @property
    def modifies(self) -> int:
        return self.count("MODIFY")

    @property
    def removes(self) -> int:
        return self.count("REMOVE")

    @property
    def total_events(self) -> int:
        return sum(len(names) for names in self.events.values())


def _key_value(kind: str, index: int) -> dict[str, Any]:
    if kind == "S":
        return {"S": f"{TEXTS[index % len(TEXTS)][:5]}#{index:04d}"}
    if kind == "N":  # negative, big and fractional numbers too
        return {"N": [str(index), f"-{index}", f"{index}12345678901234567890123456789", f"{index}.5"][index % 4]}
    if kind == "B":
        return {"B": index.to_bytes(2, "big") + b"\x00\xff"}
    raise ValueError(f"key attribute type must be S, N or B, not {kind!r}")


def _keys(key_schema: KeySchema, n_keys: int) -> list[dict[str, Any]]:
    (hash_name, hash_kind), *range_part = key_schema
    if not range_part:
        return [{hash_name: _key_value(hash_kind, i)} for i in range(n_keys)]
    range_name, range_kind = range_part[0]
    return [
        {hash_name: _key_value(hash_kind, i // RANGE_VALUES_PER_HASH), range_name: _key_value(range_kind, i)}
        for i in range(n_keys)
    ]


def _decimal(rng: random.Random) -> str:
    return rng.choice([*DECIMALS, f"{rng.randint(-99999, 99999)}.{rng.choice('123456789')}"])


def _attributes(rng: random.Random) -> dict[str, Any]:
    """Every DynamoDB type, nested and mixed; some attributes left out so items differ in shape."""
    attrs: dict[str, Any] = {
        "name": {"S": rng.choice(TEXTS)},
        "amount": {"N": _decimal(rng)},
        "big": {"N": rng.choice(BIG_NUMBERS)},
        "active": {"BOOL": rng.random() < 0.5},
        "nothing": {"NULL": True},
        "blob": {"B": rng.randbytes(rng.randint(1, 16))},
        "doc": {
            "M": {
                "title": {"S": rng.choice(TEXTS)},
                "nested": {"M": {"level": {"N": "2"}, "flags": {"L": [{"BOOL": True}, {"NULL": True}]}}},
                "empty": {"M": {}},
            }
        },
        "mixed": {
            "L": [
                {"S": rng.choice(TEXTS)},
                {"N": _decimal(rng)},
                {"BOOL": False},
                {"NULL": True},
                {"B": rng.randbytes(4)},
                {"M": {"k": {"S": "v"}}},
                {"L": [{"N": "1"}, {"S": "two"}]},
                {"SS": ["x", "y"]},
            ]
        },
        "tags": {"SS": rng.sample(["red", "green", "blue", "ünï", "🦆"], rng.randint(1, 3))},
        "scores": {"NS": rng.sample(["1", "-2", "3.5", "12345678901234567890123456789012345678"], rng.randint(1, 3))},
        "blobs": {"BS": [b"\x00", b"\x01\x02", rng.randbytes(3) + b"\xff"][: rng.randint(1, 3)]},
    }
    for optional in rng.sample(["blob", "mixed", "blobs", "nothing", "doc"], rng.randint(0, 2)):
        del attrs[optional]
    return attrs


def _put(ddb: Any, table: str, key: dict[str, Any], rng: random.Random, version: int) -> None:
    item = {**_attributes(rng), **key, "version": {"N": str(version)}}
    ddb.put_item(TableName=table, Item=item)


def _update(ddb: Any, table: str, key: dict[str, Any], rng: random.Random) -> None:
    # ADD on version always changes the item; REMOVE drops attributes; an absent key makes UpdateItem an upsert.
    removed = rng.sample(["blob", "nothing", "mixed", "scores"], rng.randint(1, 2))
    names = ["name", "amount", "doc", "history", "version", "tags", *removed]
    ddb.update_item(
        TableName=table,
        Key=key,
        UpdateExpression=(
            "SET #name = :name, #amount = :amount, #doc = :doc, "
            "#history = list_append(if_not_exists(#history, :empty), :entry) "
            f"ADD #version :one, #tags :tags REMOVE {', '.join('#' + name for name in removed)}"
        ),
        ExpressionAttributeNames={f"#{name}": name for name in names},  # several are reserved words
        ExpressionAttributeValues={
            ":name": {"S": rng.choice(TEXTS)},
            ":amount": {"N": _decimal(rng)},
            ":doc": {"M": {"updated": {"BOOL": True}, "list": {"L": [{"N": _decimal(rng)}, {"NULL": True}]}}},
            ":empty": {"L": []},
            ":entry": {"L": [{"S": f"update {rng.randint(0, 10**6)}"}]},
            ":one": {"N": "1"},
            ":tags": {"SS": [rng.choice(["added", "extra", "ünï"])]},
        },
    )


def run_workload(
    ddb: Any,
    table: str,
    n_writes: int = 200,
    n_updates: int = 100,
    n_deletes: int = 50,
    seed: int = 0,
    n_keys: int = 200,
) -> WorkloadCounts:
    """Seeded, shuffled PutItem/UpdateItem/DeleteItem calls over n_keys keys of `table`, one call at a time."""
    rng = random.Random(seed)
    schema = ddb.describe_table(TableName=table)["Table"]
    types = {d["AttributeName"]: d["AttributeType"] for d in schema["AttributeDefinitions"]}
    key_schema = [(k["AttributeName"], types[k["AttributeName"]]) for k in schema["KeySchema"]]
    keys = _keys(key_schema, n_keys)
    operations = ["put"] * n_writes + ["update"] * n_updates + ["delete"] * n_deletes
    rng.shuffle(operations)
    counts = WorkloadCounts()
    present: dict[str, dict[str, Any]] = {}  # key id -> key, for the keys that exist now
    versions: dict[str, int] = {}
    for operation in operations:
        # Deletes pick present keys, so that they cause events; the rest any key.
        key = rng.choice(list(present.values())) if operation == "delete" and present else rng.choice(keys)
        key_id = typed_key_id(key)
        exists = key_id in present
        if operation == "put":
            versions[key_id] = versions.get(key_id, 0) + 1
            _put(ddb, table, key, rng, versions[key_id])
            counts.puts += 1
            event = "MODIFY" if exists else "INSERT"
        elif operation == "update":
            _update(ddb, table, key, rng)
            counts.updates += 1
            event = "MODIFY" if exists else "INSERT"
        else:
            ddb.delete_item(TableName=table, Key=key)
            counts.deletes += 1
            event = "REMOVE" if exists else ""
        if event == "REMOVE":
            del present[key_id]
        elif event:
            present[key_id] = key
        if event:
            counts.events.setdefault(key_id, []).append(event)
    return counts


def normalize_sets(value: Any) -> Any:
    """Wire JSON with SS/NS/BS members sorted: DynamoDB sets have no order, so compare them this way."""
    if isinstance(value, dict):
        return {k: sorted(v) if k in ("SS", "NS", "BS") else normalize_sets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize_sets(v) for v in value]
    return value


def scan_items(ddb: Any, table: str, *, decode: bool = False) -> dict[str, dict[str, Any]]:
    """The table now, as {typed_key_id: item}: the oracle for end-to-end tests.

    Items are typed wire JSON by default (binary as base64 text), i.e. exactly the form of an envelope's NewImage.
    With decode=True they are Python values through boto3's TypeDeserializer (N -> Decimal, B -> Binary,
    sets -> set).
    """
    described = ddb.describe_table(TableName=table)["Table"]
    key_names = [k["AttributeName"] for k in described["KeySchema"]]
    deserializer = TypeDeserializer()
    items: dict[str, dict[str, Any]] = {}
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = ddb.scan(**kwargs)
        for raw in page.get("Items", []):
            key_id = typed_key_id({name: raw[name] for name in key_names})
            items[key_id] = (
                {name: deserializer.deserialize(value) for name, value in raw.items()} if decode else jsonable(raw)
            )
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def write_until(
    ddb: Any,
    table: str,
    stop: threading.Event | None = None,
    *,
    limit: int | None = None,
    seed: int = 0,
    n_keys: int = 200,
    pause: float = 0.0,
    on_write: Callable[[], None] | None = None,
) -> int:
    """Random PutItem/UpdateItem/DeleteItem calls over n_keys keys of `table` until `stop` is set (or `limit`
    calls are made); return how many. For a table that changes while something else reads it (a full load): the
    keys are the ones run_workload uses with the same n_keys, so the writes hit existing items and new ones."""
    rng = random.Random(seed)
    schema = ddb.describe_table(TableName=table)["Table"]
    types = {d["AttributeName"]: d["AttributeType"] for d in schema["AttributeDefinitions"]}
    keys = _keys([(k["AttributeName"], types[k["AttributeName"]]) for k in schema["KeySchema"]], n_keys)
    calls = 0
    while not (stop is not None and stop.is_set()) and (limit is None or calls < limit):
        key = rng.choice(keys)
        operation = rng.choices(["put", "update", "delete"], weights=[3, 4, 3])[0]
        if operation == "put":
            _put(ddb, table, key, rng, rng.randint(1, 10**6))
        elif operation == "update":
            _update(ddb, table, key, rng)
        else:
            ddb.delete_item(TableName=table, Key=key)
        calls += 1
        if on_write is not None:
            on_write()
        if pause:
            time.sleep(pause)
    return calls


def fill_table(ddb: Any, table: str, n_keys: int, *, seed: int = 0) -> int:
    """Put one item (every DynamoDB type, like run_workload's) on each of n_keys keys, 25 per BatchWriteItem call:
    a table that holds data quickly. Returns the number of items."""
    rng = random.Random(seed)
    schema = ddb.describe_table(TableName=table)["Table"]
    types = {d["AttributeName"]: d["AttributeType"] for d in schema["AttributeDefinitions"]}
    keys = _keys([(k["AttributeName"], types[k["AttributeName"]]) for k in schema["KeySchema"]], n_keys)
    for start in range(0, len(keys), 25):
        requests = [
            {"PutRequest": {"Item": {**_attributes(rng), **key, "version": {"N": "1"}}}}
            for key in keys[start : start + 25]
        ]
        pending = {table: requests}
        while pending:
            pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
    return len(keys)
