"""Fixtures shared by the end-to-end modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kcl_relay.localaws.server import LocalAws
from tests.support.e2e import missing_kcl

HERE = Path(__file__).parent
MISSING_KCL = missing_kcl()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is end to end through the real KCL: marked e2e, and skipped, saying why, without Java/jars."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.e2e)
            if MISSING_KCL:
                item.add_marker(pytest.mark.skip(reason=f"needs Java and the KCL jars: {MISSING_KCL}"))


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    """The AWS emulators (moto under hypercorn) on a free loopback port, one per test module."""
    with LocalAws() as emulators:
        yield emulators
