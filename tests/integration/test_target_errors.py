"""A target that cannot be used is one line naming the cause, with the URL as typed (password masked): TLS (not
trusted, host name mismatch, no TLS on the port, plain HTTP to a TLS port), authentication, a refused option, an
unreachable host. TLS against a CrateDB node of this module with HTTPS on (a keystore made by keytool, its own CA);
PostgreSQL against a server of this module (one role with a password, scram); CrateDB's 401 against the shared
node."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from kcl_relay.cli import cli
from kcl_relay.sink.admin import check_reachable, run_sql
from kcl_relay.sink.target import TargetError, parse_target
from tests.support.cratedb import CrateServer, CrateUnavailable, Keystore, find_tarball, running_cratedb
from tests.support.postgres import PostgresServer, PostgresUnavailable, running_postgres

REQUIRE_CRATEDB_ENV = "KCL_RELAY_REQUIRE_CRATEDB"  # tests/conftest.py's: CI fails rather than skips
SECRET = "s3cret-pw"
OTHER_NAME = "127.0.0.2"  # the node listens there too; its certificate names localhost and 127.0.0.1 only


@dataclass(frozen=True)
class TlsNode:
    server: CrateServer
    keystore: Keystore

    def url(self, host: str = "127.0.0.1", query: str = "") -> str:
        return f"crate://crate@{host}:{self.server.http_port}/doc" + (f"?{query}" if query else "")


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsNode]:
    keystore = Keystore.create(tmp_path_factory.mktemp("tls"))
    try:
        with running_cratedb(find_tarball(), tls=keystore, hosts=f"127.0.0.1,{OTHER_NAME}") as server:
            yield TlsNode(server, keystore)
    except CrateUnavailable as missing:
        if os.environ.get(REQUIRE_CRATEDB_ENV):  # CI: a CrateDB case must run, never skip
            pytest.fail(f"{REQUIRE_CRATEDB_ENV} is set: {missing}")
        pytest.skip(f"no CrateDB tarball to start a TLS node from: {missing}")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A server where role `secret` needs its password (scram-sha-256), every other role is trusted."""
    import psycopg

    try:
        with running_postgres() as server:
            with psycopg.connect(server.url(), autocommit=True) as connection:
                connection.execute(f"CREATE ROLE secret LOGIN PASSWORD '{SECRET}'")
                hba = server.datadir / "pg_hba.conf"
                hba.write_text("host all secret 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
                connection.execute("SELECT pg_reload_conf()")
            yield server
    except PostgresUnavailable as missing:
        pytest.skip(str(missing))


def error_line(url: str, table: str = "t", env: dict[str, str] | None = None, tmp: Path | None = None) -> str:
    """What `kcl-relay load table` prints for the target `url`: exactly one line, exit code 2."""
    records = Path(tmp or os.environ.get("TMPDIR", "/tmp")) / "one.ndjson"
    records.write_text("{}\n")
    result = CliRunner().invoke(
        cli, ["load", "table", f"kinesis+dynamodb+cdc://{records}", "--target", url, "--table", table], env=env
    )
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert "Max retries" not in line and "ConnectionPool" not in line, line  # urllib3's chain stays out
    return line


def reaches(url: str) -> bool:
    spec = parse_target(url, "t")
    check_reachable(spec)
    return run_sql(spec, "SELECT 1")[1] == [(1,)]


# TLS ------------------------------------------------------------------------------------------------------------


def test_a_certificate_of_a_private_ca_is_not_trusted_and_says_how_to_trust_it(tls_node: TlsNode) -> None:
    url = tls_node.url(query="ssl=true")
    assert error_line(url) == (
        f"kcl-relay: error: cannot use the target cratedb table doc.t at {url}: TLS: the server's certificate is "
        "not trusted (self-signed certificate in certificate chain); trust its CA with ca_cert=PATH in the URL "
        "(or REQUESTS_CA_BUNDLE=PATH)"
    )


def test_ca_cert_trusts_the_private_ca(tls_node: TlsNode) -> None:
    assert reaches(tls_node.url(query=f"ssl=true&ca_cert={tls_node.keystore.ca_pem}"))


def test_requests_ca_bundle_trusts_the_private_ca(tls_node: TlsNode, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_node.keystore.ca_pem))
    assert reaches(tls_node.url(query="ssl=true"))


def test_ssl_cert_file_trusts_the_private_ca_unless_requests_ca_bundle_is_set(
    tls_node: TlsNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    import certifi

    monkeypatch.setenv("SSL_CERT_FILE", str(tls_node.keystore.ca_pem))
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    assert reaches(tls_node.url(query="ssl=true"))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())  # it wins, and the private CA is not in it
    with pytest.raises(TargetError, match="not trusted"):
        reaches(tls_node.url(query="ssl=true"))


def test_a_certificate_for_another_host_name(tls_node: TlsNode) -> None:
    url = tls_node.url(OTHER_NAME, f"ssl=true&ca_cert={tls_node.keystore.ca_pem}")
    line = error_line(url)
    assert line.startswith(f"kcl-relay: error: cannot use the target cratedb table doc.t at {url}: "), line
    assert line.endswith(
        f"TLS: the server's certificate is not valid for the host name {OTHER_NAME} (IP address mismatch, "
        f"certificate is not valid for '{OTHER_NAME}'); connect by a name the certificate carries"
    ), line


def test_plain_http_to_a_tls_port(tls_node: TlsNode) -> None:
    url = tls_node.url()
    port = tls_node.server.http_port
    assert error_line(url) == (
        f"kcl-relay: error: cannot use the target cratedb table doc.t at {url}: the server at 127.0.0.1:{port} "
        "expects TLS on that port: add ?ssl=true (plain HTTP was sent)"
    )


def test_tls_to_a_plain_http_port(cratedb_url: str) -> None:
    url = cratedb_url + ("&" if "?" in cratedb_url else "?") + "ssl=true"
    spec = parse_target(url, "t")
    line = error_line(url)
    assert line == (
        f"kcl-relay: error: cannot use the target cratedb table doc.t at {url}: TLS: the server at "
        f"{spec.url.host}:{spec.url.port} does not speak TLS on that port (drop ssl=true for plain HTTP)"
    )


def test_a_ca_cert_file_that_does_not_exist(tls_node: TlsNode, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    line = error_line(tls_node.url(query=f"ssl=true&ca_cert={missing}"))
    assert line.endswith(f": the ca_cert file {missing} does not exist"), line


# authentication, options, reachability -------------------------------------------------------------------------


def test_an_unknown_cratedb_user_is_an_authentication_failure(cratedb_url: str) -> None:
    spec = parse_target(cratedb_url, "t")
    url = f"crate://nobody:{SECRET}@{spec.url.host}:{spec.url.port}/doc"
    line = error_line(url)
    assert SECRET not in line
    masked = f"crate://nobody:***@{spec.url.host}:{spec.url.port}/doc"
    assert line == (
        f"kcl-relay: error: cannot use the target cratedb table doc.t at {masked}: authentication failed for user "
        "'nobody' (HTTP 401): check user and password"
    )


def test_an_unknown_postgresql_role(postgres: PostgresServer) -> None:
    url = f"postgresql://nobody:{SECRET}@127.0.0.1:{postgres.port}/postgres"
    line = error_line(url)
    masked = f"postgresql://nobody:***@127.0.0.1:{postgres.port}/postgres"
    assert line == (
        f"kcl-relay: error: cannot use the target postgresql table public.t at {masked}: authentication failed: "
        'role "nobody" does not exist'
    )


def test_a_wrong_postgresql_password(postgres: PostgresServer) -> None:
    assert reaches(f"postgresql://secret:{SECRET}@127.0.0.1:{postgres.port}/postgres")
    line = error_line(f"postgresql://secret:wrong@127.0.0.1:{postgres.port}/postgres")
    assert "wrong" not in line
    assert line.endswith(
        f"public.t at postgresql://secret:***@127.0.0.1:{postgres.port}/postgres: authentication failed: "
        'password authentication failed for user "secret"'
    ), line


def test_a_password_in_the_query_is_masked_too(postgres: PostgresServer) -> None:
    line = error_line(f"postgresql://secret@127.0.0.1:{postgres.port}/postgres?password=wrong")
    assert "wrong" not in line and "?password=***" in line, line


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("options=-c%20work_mem%3Dabc", 'invalid value for parameter "work_mem": "abc"'),
        ("require_auth=bogus", 'invalid require_auth value: "bogus"'),
    ],
)
def test_a_refused_postgresql_option(postgres: PostgresServer, query: str, says: str) -> None:
    url = f"postgresql://relay@127.0.0.1:{postgres.port}/postgres?{query}"
    line = error_line(url)
    assert line.startswith(f"kcl-relay: error: cannot use the target postgresql table public.t at {url}: "), line
    assert line.endswith(f"an option of the URL was refused: {says}"), line


def test_a_bad_option_value_is_refused_before_connecting(postgres: PostgresServer) -> None:
    """libpq would refuse sslmode=bogus at the first connection; the URL's check says so before anything starts."""
    url = f"postgresql://relay@127.0.0.1:{postgres.port}/postgres?sslmode=bogus"
    assert error_line(url) == (
        "kcl-relay: error: bad value 'bogus' for target option 'sslmode': expected one of disable, allow, prefer, "
        "require, verify-ca, verify-full"
    )


def test_a_database_that_does_not_exist(postgres: PostgresServer) -> None:
    url = f"postgresql://relay@127.0.0.1:{postgres.port}/nosuchdb"
    assert error_line(url) == (
        f'kcl-relay: error: cannot use the target postgresql table public.t at {url}: database "nosuchdb" does not '
        "exist"
    )


@pytest.mark.parametrize("scheme", ["crate", "postgresql"])
def test_connection_refused(scheme: str) -> None:
    url = f"{scheme}://someone@127.0.0.1:1/" + ("doc" if scheme == "crate" else "db")
    line = error_line(url)
    assert line.endswith(f"at {url}: connection refused at 127.0.0.1:1 (no server listening there?)"), line
    assert line.startswith("kcl-relay: error: cannot reach the target "), line


@pytest.mark.parametrize("scheme", ["crate", "postgresql"])
def test_a_host_name_that_does_not_resolve(scheme: str) -> None:
    url = f"{scheme}://someone@no-such-host.invalid/" + ("doc" if scheme == "crate" else "db")
    line = error_line(url)
    assert line.endswith(f"at {url}: the host name no-such-host.invalid does not resolve"), line


def test_shell_and_show_say_the_same(tls_node: TlsNode) -> None:
    """The companion commands, on a target they cannot use: the same line (exit code 1: a query failed)."""
    url = tls_node.url(query="ssl=true")
    for args in (["shell", "--command", "SELECT 1"], ["show", "table", "doc.t"]):
        result = CliRunner().invoke(cli, [*args, "--target", url])
        assert result.exit_code == 1, result.output
        (line,) = result.stderr.splitlines()
        assert line.startswith("kcl-relay: error: cannot use the target cratedb table doc.") and "not trusted" in line
        assert "Max retries" not in line, line
    refused = CliRunner().invoke(cli, ["shell", "--command", "SELECT 1", "--target", "crate://crate@127.0.0.1:1/doc"])
    assert refused.exit_code == 1 and "Max retries" not in refused.stderr, refused.stderr
    assert refused.stderr.strip().endswith("connection refused at 127.0.0.1:1 (no server listening there?)")


def test_a_query_error_stays_the_databases_own(cratedb_url: str) -> None:
    result = CliRunner().invoke(cli, ["shell", "--command", "SELECT * FROM no_such_table_x", "--target", cratedb_url])
    assert result.exit_code == 1
    assert result.stderr.startswith("kcl-relay: error: RelationUnknown"), result.stderr
