"""Database fixtures: a SQLite file per test, one PostgreSQL server per session, CrateDB from the environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import PostgresUnavailable, running_postgres

CRATEDB_ENV = "CRATEDB_SQLALCHEMY_URL"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'relay.db'}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database on a PostgreSQL server started for this test session (127.0.0.1, trust auth, temp dir)."""
    try:
        with running_postgres() as server:
            yield server.create_database("relay_test")
    except PostgresUnavailable as missing:
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def postgresql_url(postgres_url: str) -> str:
    """The same database under the dialect's name, for tests parametrized by dialect ("<dialect>_url")."""
    return postgres_url


@pytest.fixture(scope="session")
def cratedb_url() -> str:
    url = os.environ.get(CRATEDB_ENV)
    if not url:
        pytest.skip(f"{CRATEDB_ENV} not set: no CrateDB server on this machine")
    return url
