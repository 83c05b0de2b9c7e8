"""Database fixtures: a SQLite file per test, one PostgreSQL and one CrateDB server per session.

CrateDB: CRATEDB_SQLALCHEMY_URL points the tests at an existing server; without it a node is started from the
release tarball (tests/support/cratedb.py). A CrateDB case skips only when there is neither: when the tarball is
there but the node does not start, every CrateDB case errors, so CI cannot pass without CrateDB.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cratedb import CrateServer, CrateUnavailable, find_tarball, running_cratedb
from tests.support.postgres import PostgresUnavailable, running_postgres

CRATEDB_ENV = "CRATEDB_SQLALCHEMY_URL"
REQUIRE_CRATEDB_ENV = "KCL_RELAY_REQUIRE_CRATEDB"


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
def cratedb_server() -> Iterator[CrateServer]:
    """A CrateDB node started from the release tarball for this test session."""
    try:
        with running_cratedb(find_tarball()) as server:
            yield server
    except CrateUnavailable as missing:
        if os.environ.get(REQUIRE_CRATEDB_ENV):  # CI: a CrateDB case must run, never skip
            pytest.fail(f"{REQUIRE_CRATEDB_ENV} is set: {missing}")
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def cratedb_url(request: pytest.FixtureRequest) -> str:
    """CRATEDB_SQLALCHEMY_URL when set (an existing server), else the session's own node."""
    url = os.environ.get(CRATEDB_ENV)
    if url:
        return url
    server: CrateServer = request.getfixturevalue("cratedb_server")
    return server.url()
