"""The sink's options reach it from every way of relaying: the source URL, the processor's config, a redrive."""

from __future__ import annotations

import pytest

from kcl_relay.kcl.config import ProcessorConfig
from kcl_relay.redrive import _Settings
from kcl_relay.sink.options import sink_options
from kcl_relay.source.url import parse_source


def test_delete_mode_from_the_url_and_the_processor_config(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parse_source("kinesis+dynamodb+cdc://aws/orders?delete-mode=soft")
    assert sink_options(spec)["delete_mode"] == "soft"
    config = ProcessorConfig(target_url="sqlite:///x.db", table="t", state_dir="/tmp", delete_mode=spec.delete_mode)
    monkeypatch.setenv(*next(iter(config.to_env().items())))
    assert sink_options(ProcessorConfig.from_env())["delete_mode"] == "soft"  # what a KCL processor gets
    assert sink_options(parse_source("kinesis+dynamodb+cdc://aws/orders"))["delete_mode"] == "hard"


def test_a_redrive_takes_the_tables_own_delete_mode() -> None:
    assert sink_options(_Settings())["delete_mode"] is None  # TableWriter then reads the table's (writer.py)


def test_delete_mode_as_properties_key() -> None:
    from kcl_relay.kcl.properties import spec_from_properties

    props = {"streamName": "s", "applicationName": "app1", "regionName": "us-east-1", "kclrelay.delete-mode": "soft"}
    spec, _, _ = spec_from_properties(props)
    assert sink_options(spec)["delete_mode"] == "soft"
