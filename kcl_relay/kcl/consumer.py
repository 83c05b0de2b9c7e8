"""consumer=fanout: enhanced fan-out through the application's registered stream consumer, kept across restarts.

The consumer is named after the application (its lease table), so every worker of one relay, and every restart,
finds the same one: registered once, reused afterwards, deregistered by reset=true. The relay registers it before
the KCL starts and hands the KCL its ARN: a refused registration (a permission, the 20 consumers a
stream allows) is then one line before anything starts, instead of a KCL retry loop in kcl.log per shard. A
properties file's own consumer ARN is used as it is (neither registered nor ever deregistered by the relay), its
consumer name instead of the derived one (`fanoutConfig.consumerArn` / `fanoutConfig.consumerName`; the same
without the prefix, which the MultiLangDaemon ignores, is refused by the properties check).

An emulator endpoint is asked once whether it serves SubscribeToShard (moto does not: HTTP 500, which the KCL would
retry forever, delivering nothing); AWS always does.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kcl_relay.source.url import SourceError, SourceSpec

# botocore and the Kinesis source are imported where they are used: properties.py (and so `--help`) imports this
# module for consumer_name, and must not pay for boto3.

MAX_NAME = 128  # Kinesis: a consumer name is 1-128 of a-z A-Z 0-9 _ . - (an application name may be 255 long)
ACTIVE_TIMEOUT = 120.0  # AWS registers a consumer in seconds; kinesis-mock in its REGISTER_STREAM_CONSUMER_DURATION
POLL = 0.2
# What an endpoint answers for an API it does not implement (moto: HTTP 500; others name the operation).
UNSERVED_CODES = frozenset({"UnknownOperationException", "InvalidAction", "NotImplemented", "NotImplementedException"})
# The MultiLangDaemon 3.1.3 reads FanoutConfigBean only as a nested bean: `consumerArn` or `consumerName` at the top
# level of a properties file are silently ignored (BeanUtils finds no such setter; kcl/properties.py refuses them),
# so the relay writes and reads these.
CONSUMER_ARN_KEY = "fanoutConfig.consumerArn"
CONSUMER_NAME_KEY = "fanoutConfig.consumerName"
PROBE_CONFIG = {"connect_timeout": 5, "read_timeout": 15, "retries": {"max_attempts": 1}}  # a 500 is an answer


def consumer_name(application: str) -> str:
    """The stream consumer of an application: its name, or a shortened one with a hash when it is too long."""
    if len(application) <= MAX_NAME:
        return application
    digest = hashlib.sha256(application.encode()).hexdigest()[:8]
    return f"{application[: MAX_NAME - 9]}-{digest}"


def is_fanout(props: dict[str, str]) -> bool:
    return props.get("retrievalMode", "").upper() == "FANOUT"


def _given(props: dict[str, str], key: str) -> str:
    """A FanoutConfigBean key as the file gives it (nested: the check refused it at the top level)."""
    return props.get(key, "")


def processor_idle_sleep(spec: SourceSpec, props: dict[str, str]) -> float:
    """When the processor expects the next delivery after one at the tip of a shard (its buffer-time lookahead).

    Polling: idle-sleep later. Fan-out: whenever the next record is written (the KCL pushes each event as it comes,
    with an empty one now and then): unknown, so records that reached the tip are flushed at once.
    """
    return max(spec.idle_sleep, spec.buffer_time) if is_fanout(props) else spec.idle_sleep


@dataclass(frozen=True)
class Consumer:
    name: str
    arn: str
    reused: bool  # found registered (a restart, another worker), not registered now


def stream_arn(kinesis: Any, stream: str) -> str:
    return str(kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"])


def _code(error: Exception) -> str:
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


def _describe(kinesis: Any, arn: str, name: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return dict(kinesis.describe_stream_consumer(StreamARN=arn, ConsumerName=name)["ConsumerDescription"])
    except ClientError as error:
        if _code(error) == "ResourceNotFoundException":
            return None
        raise


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SourceError(f"consumer=fanout: {what} after {timeout:.0f} s")
        time.sleep(POLL)


def ensure_consumer(kinesis: Any, arn: str, name: str, timeout: float = ACTIVE_TIMEOUT) -> Consumer:
    """The stream consumer `name` of stream `arn`, ACTIVE: the registered one, else registered now."""
    from botocore.exceptions import ClientError

    found = _describe(kinesis, arn, name)
    reused = found is not None
    if found is None:
        try:
            kinesis.register_stream_consumer(StreamARN=arn, ConsumerName=name)
        except ClientError as error:
            if _code(error) != "ResourceInUseException":  # another worker of the relay registered it just now
                raise
            reused = True
    elif found["ConsumerStatus"] == "DELETING":
        raise SourceError(
            f"consumer=fanout: stream consumer {name} is being deregistered (a reset=true elsewhere?): start again "
            "once it is gone"
        )
    state: dict[str, Any] = {}

    def active() -> bool:
        state["description"] = _describe(kinesis, arn, name)
        return bool(state["description"]) and state["description"]["ConsumerStatus"] == "ACTIVE"

    _wait(active, timeout, f"stream consumer {name} not ACTIVE")
    return Consumer(name, str(state["description"]["ConsumerARN"]), reused)


def deregister(kinesis: Any, arn: str, name: str, timeout: float = ACTIVE_TIMEOUT) -> bool:
    """Deregister consumer `name` of stream `arn` and wait until it is gone; False when there was none."""
    from botocore.exceptions import ClientError

    found = _describe(kinesis, arn, name)
    if found is None:
        return False
    if found["ConsumerStatus"] != "DELETING":
        try:
            kinesis.deregister_stream_consumer(StreamARN=arn, ConsumerName=name, ConsumerARN=found["ConsumerARN"])
        except ClientError as error:
            if _code(error) != "ResourceNotFoundException":
                raise
    # Gone before the relay registers it again: a registration of a consumer still DELETING is refused.
    _wait(lambda: _describe(kinesis, arn, name) is None, timeout, f"stream consumer {name} still there")
    return True


class _EventStream(Exception):
    """The endpoint answered SubscribeToShard with an event stream: it serves the API."""


def check_subscribe(kinesis: Any, arn: str, name: str) -> None:
    """SourceError when the endpoint does not serve SubscribeToShard. Asked with a consumer that does not exist, so
    nothing is subscribed: an implementation answers ResourceNotFoundException, or (kinesis-mock) starts a stream."""
    from botocore.exceptions import ClientError

    def answered(response_dict: dict[str, Any], **_: Any) -> None:
        if response_dict.get("status_code") == 200:
            response_dict["body"].close()
            raise _EventStream

    event = "before-parse.kinesis.SubscribeToShard"
    kinesis.meta.events.register(event, answered)
    try:
        kinesis.subscribe_to_shard(
            ConsumerARN=f"{arn}/consumer/{name}-probe:0",
            ShardId="shardId-000000000000",
            StartingPosition={"Type": "LATEST"},
        )
    except _EventStream:
        return
    except ClientError as error:
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        if status >= 500 or _code(error) in UNSERVED_CODES:
            raise SourceError(
                f"consumer=fanout: {kinesis.meta.endpoint_url} does not serve SubscribeToShard (HTTP {status}, "
                f"{_code(error) or 'no error code'}; moto does not implement it): use consumer=polling, or an "
                "endpoint with enhanced fan-out (AWS, kinesis-mock)"
            ) from None
    finally:
        kinesis.meta.events.unregister(event, answered)


def prepare(spec: SourceSpec, props: dict[str, str], say: Callable[[str], None]) -> None:
    """retrievalMode FANOUT: the endpoint serves it, the consumer is ACTIVE, and `props` name its ARN for the KCL."""
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    from kcl_relay.source import kinesis as kinesis_source

    if not is_fanout(props):
        return
    given = _given(props, CONSUMER_ARN_KEY)
    if given:
        props[CONSUMER_ARN_KEY] = given
        say(f"consumer=fanout: stream consumer {given}, as the properties file says")
        return
    name = _given(props, CONSUMER_NAME_KEY) or consumer_name(props["applicationName"])
    kinesis = kinesis_source.client(spec, "kinesis")
    try:
        arn = stream_arn(kinesis, props["streamName"])
        if spec.endpoint_url:  # an emulator or LocalStack: AWS's own endpoints serve it
            probe = kinesis_source.session(spec).client(
                "kinesis", endpoint_url=spec.endpoint_url, config=Config(**PROBE_CONFIG)
            )
            check_subscribe(probe, arn, name)
        consumer = ensure_consumer(kinesis, arn, name)
    except (BotoCoreError, ClientError) as error:
        raise SourceError(f"consumer=fanout: stream consumer {name}: {_describe_error(error)}") from None
    props[CONSUMER_NAME_KEY], props[CONSUMER_ARN_KEY] = consumer.name, consumer.arn
    how = "reused (registered before)" if consumer.reused else "registered"
    say(f"consumer=fanout: stream consumer {consumer.name} {how}, {consumer.arn}")


def reset(spec: SourceSpec, props: dict[str, str], say: Callable[[str], None]) -> None:
    """reset=true: deregister the application's consumer, whatever the mode now (a relay back on polling would
    otherwise keep paying for it). A consumer the properties file names by ARN is not the relay's to remove."""
    from botocore.exceptions import BotoCoreError, ClientError

    from kcl_relay.source import kinesis as kinesis_source

    if _given(props, CONSUMER_ARN_KEY) or not props.get("streamName"):
        return
    name = _given(props, CONSUMER_NAME_KEY) or consumer_name(props["applicationName"])
    kinesis = kinesis_source.client(spec, "kinesis")
    try:
        gone = deregister(kinesis, stream_arn(kinesis, props["streamName"]), name)
    except (BotoCoreError, ClientError) as error:
        if is_fanout(props):
            raise SourceError(
                f"reset=true could not deregister stream consumer {name}: {_describe_error(error)}"
            ) from None
        return  # polling: an endpoint without consumers (moto answers; others may not) has nothing to reset
    if gone:
        say(f"reset=true: deregistered stream consumer {name}")


def _describe_error(error: Exception) -> str:
    if hasattr(error, "operation_name"):  # a botocore ClientError
        return f"{error.operation_name}: {_code(error)}"
    return f"{type(error).__name__}: {error}"
