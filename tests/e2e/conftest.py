"""Fixtures shared by the end-to-end modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kcl_relay.localaws.server import LocalAws


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    """The AWS emulators (moto under hypercorn) on a free loopback port, one per test module."""
    with LocalAws() as emulators:
        yield emulators
