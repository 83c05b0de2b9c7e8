"""Secrets never in repr, str, a log record or an assertion diff: every value of ours that can carry one."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kcl_relay.kcl.config import ProcessorConfig
from kcl_relay.kcl.supervisor import WorkerPlan
from kcl_relay.masking import mask_env, mask_secrets
from kcl_relay.sink.target import parse_target
from kcl_relay.source.table_url import parse_table
from kcl_relay.source.url import Credentials, parse_source

# Two different secrets, so that an assertion diff has something to show.
ONE, OTHER = "Pw1-a9Xk2mQ7", "Pw2-b8Yj3nR6"


def plan(secret: str) -> WorkerPlan:
    processor = ProcessorConfig(target_url=f"crate://crate:{secret}@localhost:4200", table="t", state_dir="s")
    aws_env = {"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": secret}
    return WorkerPlan("java", Path("jars"), {"applicationName": "app"}, processor, aws_env)


# Every type of ours that holds a secret: how to make one with a given secret.
MAKERS: dict[str, Callable[[str], Any]] = {
    "Credentials": lambda secret: Credentials("AKIDEXAMPLE", secret),
    "SourceSpec": lambda secret: parse_source(f"kinesis+dynamodb+cdc://AKIDEXAMPLE:{secret}@localhost:4566/s"),
    "TableSpec": lambda secret: parse_table(f"dynamodb://AKIDEXAMPLE:{secret}@localhost:4566/orders?stream=s"),
    "TargetSpec": lambda secret: parse_target(f"crate://crate:{secret}@localhost:4200/doc/t", None),
    "TargetSpec, password option": lambda secret: parse_target(
        f"postgresql://relay@localhost:5432/db?password={secret}&sslmode=disable", "t"
    ),
    "TargetSpec, sslpassword option": lambda secret: parse_target(
        f"postgresql://relay@localhost:5432/db?sslpassword={secret}", "t"
    ),
    "TargetSpec, jwt_token option": lambda secret: parse_target(
        f"crate://localhost:4200/doc/t?jwt_token={secret}", None
    ),
    "ProcessorConfig": lambda secret: ProcessorConfig(
        target_url=f"postgresql+psycopg://relay:{secret}@db.internal:5432/app", table="public.t", state_dir="s"
    ),
    "ProcessorConfig, password option": lambda secret: ProcessorConfig(
        target_url=f"postgresql+psycopg://db:5432/app?password={secret}", table="public.t", state_dir="s"
    ),
    "WorkerPlan": plan,
}


@pytest.fixture(params=list(MAKERS))
def make(request: pytest.FixtureRequest) -> Callable[[str], Any]:
    return MAKERS[request.param]


def test_repr_and_str_hide_the_secret(make: Callable[[str], Any]) -> None:
    value = make(ONE)
    for shown in (repr(value), str(value), f"{value}", f"{value!r}", repr([value]), repr({"v": value})):
        assert ONE not in shown
    assert "***" in repr(value)


def test_a_log_record_hides_the_secret(make: Callable[[str], Any], caplog: pytest.LogCaptureFixture) -> None:
    value = make(ONE)
    with caplog.at_level(logging.INFO):
        logging.getLogger("kcl_relay.test").info("starting with %s and %r", value, value)
    assert len(caplog.records) == 1
    assert ONE not in caplog.text


def test_an_assertion_diff_hides_the_secret(make: Callable[[str], Any], pytestconfig: pytest.Config) -> None:
    """pytest's own explanation of a failed ==, in full (untruncated, as in CI): nothing of either secret."""
    left, right = make(ONE), make(OTHER)
    assert left != right, "different secrets are different values"
    assert make(ONE) == left, "equal fields: equal values, as with the generated __eq__"
    explanations = pytestconfig.hook.pytest_assertrepr_compare(config=pytestconfig, op="==", left=left, right=right)
    text = "\n".join(line for explanation in explanations for line in explanation)
    assert ONE not in text and OTHER not in text
    with pytest.raises(AssertionError) as failed:  # the rewritten assert of a test module, as a test would write it
        assert left == right
    assert ONE not in str(failed.value) and OTHER not in str(failed.value)


def test_the_real_values_stay_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    config = MAKERS["ProcessorConfig"](ONE)
    assert ONE in config.target_url, "the processor needs it"
    monkeypatch.setenv(*config.to_env().popitem())
    assert ProcessorConfig.from_env() == config
    worker = plan(ONE)
    assert worker.aws_env["AWS_SECRET_ACCESS_KEY"] == ONE
    assert {MAKERS["SourceSpec"](ONE)} == {MAKERS["SourceSpec"](ONE)}, "specs stay hashable (lru_cache keys)"


def test_mask_secrets_in_urls_and_text() -> None:
    assert mask_secrets("crate://u:p%40w@h:4200/doc?x=1&password=abc&sslpassword=q") == (
        "crate://u:***@h:4200/doc?x=1&password=***&sslpassword=***"
    )
    assert mask_secrets("postgresql+psycopg://u:p@ss@h/db") == "postgresql+psycopg://u:***@h/db"
    assert mask_secrets("failed: could not reach crate://crate:hunter2@localhost:4200 (refused)") == (
        "failed: could not reach crate://crate:***@localhost:4200 (refused)"
    )
    for plain in ("http://localhost:4200/x?u=a@b", "sqlite:///tmp/x.db", "crate://crate@h:4200", "a: b@c"):
        assert mask_secrets(plain) == plain, "nothing secret: unchanged"


def test_mask_env_keeps_only_what_is_known_public() -> None:
    env = {"AWS_REGION": "eu-west-1", "AWS_SECRET_ACCESS_KEY": ONE, "AWS_SESSION_TOKEN": OTHER, "X": "y"}
    assert mask_env(env) == {
        "AWS_REGION": "eu-west-1",
        "AWS_SECRET_ACCESS_KEY": "***",
        "AWS_SESSION_TOKEN": "***",
        "X": "***",
    }


def test_a_targets_log_line_hides_a_password_given_as_an_option() -> None:
    # describe() names the target in the processor's log lines (e.g. "cannot connect to ...").
    spec = MAKERS["TargetSpec, password option"](ONE)
    assert ONE not in spec.describe()
    assert "password=***" in spec.describe()
