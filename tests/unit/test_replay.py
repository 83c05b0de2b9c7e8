import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kcl_relay.cdc.decode import DecodeError, decode
from kcl_relay.source.replay import batched, read_records
from tests.support.corpus import TTL_IDENTITY, lambda_envelope, make_corpus, write_ndjson

CDC = {
    "eventName": "INSERT",
    "eventSource": "aws:dynamodb",
    "tableName": "orders",
    "dynamodb": {
        "ApproximateCreationDateTime": 1735689600000,
        "ApproximateCreationDateTimePrecision": "MILLISECOND",
        "Keys": {"id": {"S": "a"}},
        "NewImage": {"id": {"S": "a"}, "n": {"N": "1"}},
    },
}


def test_bare_lines_blank_lines_and_garbage(tmp_path: Path) -> None:
    path = tmp_path / "cdc.ndjson"
    path.write_bytes(json.dumps(CDC).encode() + b"\n\n   \n" + b"this is not json\r\n" + b'{"half": \n' + b"\xff\xfe\n")
    records = list(read_records(path))
    assert [r.position.sequence_number for r in records] == ["1", "4", "5", "6"]  # line numbers
    assert {r.position.shard_id for r in records} == {"file:cdc.ndjson"}
    assert records[0].data == json.dumps(CDC).encode()
    assert records[1].data == b"this is not json"  # raw bytes kept, line ending stripped
    assert records[3].data == b"\xff\xfe"
    assert decode(records[0]).key == {"id": "a"}
    for bad in records[1:]:
        with pytest.raises(DecodeError):
            decode(bad)


def test_lambda_envelope_is_unwrapped(tmp_path: Path) -> None:
    sequence = "49590338271490256608559692538361571095921575989136588898"
    line = lambda_envelope(CDC, "shardId-000000000007", sequence)
    path = tmp_path / "lambda.ndjson"
    path.write_text(json.dumps(line) + "\n")
    (record,) = read_records(path)
    assert record.data == json.dumps(CDC).encode()
    assert record.position.shard_id == "shardId-000000000007"
    assert record.position.sequence_number == sequence
    assert record.partition_key == line["kinesis"]["partitionKey"]
    assert decode(record).version == 1735689600000000


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e["kinesis"].update(data="%%% not base64"),
        lambda e: e["kinesis"].update(sequenceNumber="abc"),
        lambda e: e["kinesis"].pop("sequenceNumber"),
        lambda e: e.update(eventID="no-shard-here"),
        lambda e: e.update(kinesis="text"),
    ],
)
def test_malformed_envelope_is_kept_raw(tmp_path: Path, mutate: Callable[[dict[str, Any]], object]) -> None:
    envelope = lambda_envelope(CDC, "shardId-000000000000", "1")
    mutate(envelope)
    line = json.dumps(envelope)
    path = tmp_path / "bad.ndjson"
    path.write_text(line + "\n")
    (record,) = read_records(path)
    assert record.data == line.encode()
    assert record.position.shard_id == "file:bad.ndjson"
    with pytest.raises(DecodeError, match="eventSource"):  # the envelope is no CDC record: dead-lettered
        decode(record)


def test_attribute_named_kinesis_is_not_an_envelope(tmp_path: Path) -> None:
    cdc = json.loads(json.dumps(CDC))
    cdc["dynamodb"]["NewImage"]["kinesis"] = {"S": "just an attribute"}
    path = tmp_path / "a.ndjson"
    path.write_text(json.dumps(cdc) + "\n")
    (record,) = read_records(path)
    assert decode(record).image == {"id": "a", "n": 1, "kinesis": "just an attribute"}


def test_corpus_round_trip_through_both_file_forms(tmp_path: Path) -> None:
    corpus = make_corpus(400, seed=5)
    bare = list(read_records(write_ndjson(tmp_path / "bare.ndjson", corpus)))
    wrapped = list(read_records(write_ndjson(tmp_path / "wrapped.ndjson", corpus, envelope=True)))
    assert len(bare) == len(wrapped) == 400
    assert [decode(r).key_id for r in bare] == [decode(r).key_id for r in wrapped]
    assert [r.position.sequence_number for r in wrapped] == sorted(r.position.sequence_number for r in wrapped)
    removes = [decode(r) for r in bare if json.loads(r.data).get("userIdentity") == TTL_IDENTITY]
    assert removes and all(e.is_ttl_expiry and e.op == "REMOVE" for e in removes)


def test_batched() -> None:
    assert [len(b) for b in batched(range(10), 4)] == [4, 4, 2]  # type: ignore[arg-type]
    assert list(batched([], 3)) == []
    with pytest.raises(ValueError):
        list(batched([], 0))


def test_envelope_base64_payload_is_exact_bytes(tmp_path: Path) -> None:
    payload = json.dumps(CDC, ensure_ascii=False).encode("utf-8") + b" "
    envelope = {
        "kinesis": {"data": base64.b64encode(payload).decode(), "sequenceNumber": "12", "partitionKey": "p"},
        "eventID": "shardId-000000000003:12",
    }
    path = tmp_path / "x.ndjson"
    path.write_text(json.dumps(envelope) + "\n")
    (record,) = read_records(path)
    assert record.data == payload
    assert record.position.order_token.startswith("0000000000004." + "0" * 62 + "12.")
