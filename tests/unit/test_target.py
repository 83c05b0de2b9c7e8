"""parse_target: URL forms, --table overrides, TLS and timeouts, and no secret in any repr, log or error."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kcl_relay.sink.target import CRATE_TIMEOUT_SECONDS, TargetError, TargetSpec, parse_target

SECRET = "s3cr%40t"  # "s3cr@t", percent-encoded in the URL
PLAIN_SECRET = "s3cr@t"


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert PLAIN_SECRET not in text and SECRET not in text and "s3cr" not in text


def test_crate_path_names_schema_and_table() -> None:
    spec = parse_target(f"crate://admin:{SECRET}@db.example.com:4200/testdrive/orders", None)
    assert (spec.dialect, spec.schema, spec.table) == ("cratedb", "testdrive", "orders")
    assert spec.url.drivername == "crate"
    assert spec.url.database is None  # the table path is not part of the connection URL
    assert spec.url.password == PLAIN_SECRET
    assert dict(spec.connect_args) == {"timeout": CRATE_TIMEOUT_SECONDS, "pool_size": 4}
    assert spec.qualified_table == "testdrive.orders"
    assert_no_secret(repr(spec), str(spec), spec.describe(), str(spec.url), repr(spec.url))
    assert spec.describe() == "cratedb table testdrive.orders at crate://admin:***@db.example.com:4200"


@pytest.mark.parametrize(
    ("url", "table", "expected"),
    [
        ("crate://localhost:4200/", "orders", ("doc", "orders")),
        ("crate://localhost:4200", "s.orders", ("s", "orders")),
        ("crate://localhost:4200/myschema", "orders", ("myschema", "orders")),
        ("crate://localhost:4200/a/b", "c", ("a", "c")),  # --table overrides the path's table
        ("crate://localhost:4200/a/b", "x.c", ("x", "c")),
        ("cratedb://localhost:4200/a/b", None, ("a", "b")),
    ],
)
def test_crate_table_override(url: str, table: str | None, expected: tuple[str, str]) -> None:
    spec = parse_target(url, table)
    assert (spec.schema, spec.table) == expected


@pytest.mark.parametrize("query", ["?ssl=true", "?sslmode=verify-full"])
def test_crate_tls_keeps_certificate_verification(query: str) -> None:
    spec = parse_target(f"crate://admin:{SECRET}@db.example.com:4200/doc/t{query}", None)
    assert spec.url.query["sslmode"] == "verify-full"
    assert "ssl" not in spec.url.query
    # What the CrateDB dialect hands to the driver: https and verification on.
    engine = spec.create_engine()
    _, kwargs = engine.dialect.create_connect_args(engine.url)
    kwargs.update(dict(spec.connect_args))
    assert kwargs["sslmode"] == "verify-full" and kwargs["timeout"] == CRATE_TIMEOUT_SECONDS
    assert kwargs["password"] == PLAIN_SECRET


def test_crate_explicit_timeout_wins() -> None:
    spec = parse_target("crate://localhost:4200/doc/t?timeout=5", None)
    assert spec.connect_args == (("pool_size", 4),)
    assert spec.url.query["timeout"] == "5"


def test_postgresql() -> None:
    spec = parse_target(f"postgresql://relay:{SECRET}@127.0.0.1:5432/analytics", "events")
    assert (spec.dialect, spec.schema, spec.table) == ("postgresql", "public", "events")
    assert spec.url.drivername == "postgresql+psycopg"
    assert spec.url.database == "analytics"
    assert dict(spec.connect_args) == {"connect_timeout": 10}
    assert parse_target("postgres://h/db", "cdc.events").qualified_table == "cdc.events"
    assert_no_secret(repr(spec), spec.describe())


def test_sqlite_ignores_schema() -> None:
    spec = parse_target("sqlite:///tmp/relay.db", "main.events")
    assert (spec.dialect, spec.schema, spec.table) == ("sqlite", None, "events")
    assert spec.url.database == "tmp/relay.db"
    assert spec.qualified_table == "events"


@pytest.mark.parametrize(
    ("url", "table", "message"),
    [
        ("crate://localhost:4200/doc", None, "no table"),
        ("crate://localhost:4200/a/b/c", None, "path must be"),
        (f"postgresql://u:{SECRET}@h/db", None, "no table"),
        ("postgresql://h", "t", "must name the database"),
        ("sqlite:///x.db", None, "no table"),
        ("sqlite://", "t", "must name a database file"),
        ("crate://localhost:4200/a/b", "s.", "--table must be"),
    ],
)
def test_missing_parts_are_one_line_errors(url: str, table: str | None, message: str) -> None:
    with pytest.raises(TargetError, match=message) as caught:
        parse_target(url, table)
    assert "\n" not in str(caught.value)
    assert_no_secret(str(caught.value))
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "url", [f"mysql://root:{SECRET}@h/db", f"postgresql+psycopg2://u:{SECRET}@h/db", "just-a-path.db", None, ""]
)
def test_unknown_scheme_lists_accepted_ones(url: str | None) -> None:
    with pytest.raises(TargetError) as caught:
        parse_target(url, "t")
    message = str(caught.value)
    assert "crate://" in message and "postgresql://" in message and "sqlite:///" in message
    assert_no_secret(message)


def test_unparsable_url_does_not_echo_it() -> None:
    with pytest.raises(TargetError) as caught:
        parse_target(f"crate://admin:{SECRET}@host:notaport/doc/t", None)
    assert_no_secret(str(caught.value))
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_logging_a_spec_masks_the_password(caplog: pytest.LogCaptureFixture) -> None:
    spec = parse_target(f"crate://admin:{SECRET}@h:4200/doc/t", None)
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("target %s / %r", spec, spec)
    assert_no_secret(caplog.text)
    assert isinstance(spec, TargetSpec)


# ---- identity: what names a target for checkpoints ---------------------------------------------------------------


def test_sqlite_identity_is_an_absolute_path_resolved_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = parse_target("sqlite:///relay.db", "t").identity()
    absolute = parse_target(f"sqlite:///{tmp_path}/relay.db", "t").identity()
    dotted = parse_target(f"sqlite:///{tmp_path}/sub/../relay.db", "t").identity()
    assert relative == absolute == dotted == f"sqlite:///{tmp_path.resolve()}/relay.db table t"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert parse_target("sqlite:///relay.db", "t").identity() != absolute, "another directory, another database"


@pytest.mark.parametrize(
    "url",
    [
        "crate://crate@localhost:4200/doc/orders",
        "crate://LocalHost/doc/orders",
        "crate://admin:secret@LOCALHOST:4200/doc/orders?ssl=true&timeout=5",
        "cratedb://localhost/doc/orders",
    ],
)
def test_crate_identity_fills_the_default_port_lowers_the_host_and_drops_credentials_and_query(url: str) -> None:
    identity = parse_target(url, None).identity()
    assert identity == "cratedb://localhost:4200 table doc.orders"
    assert "secret" not in identity and "admin" not in identity and "app:" not in identity


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:secret@DB.example:5432/shop",
        "postgres://db.example/shop",
        "postgresql+psycopg://other@db.example/shop?connect_timeout=3&sslmode=require",
    ],
)
def test_postgresql_identity(url: str) -> None:
    identity = parse_target(url, "public.orders").identity()
    assert identity == "postgresql://db.example:5432/shop table public.orders"
    assert "secret" not in identity and "admin" not in identity and "app:" not in identity


def test_identity_tells_databases_tables_hosts_and_ports_apart() -> None:
    identities = {
        parse_target("postgresql://h/shop", "orders").identity(),
        parse_target("postgresql://h/shop2", "orders").identity(),
        parse_target("postgresql://h/shop", "invoices").identity(),
        parse_target("postgresql://h/shop", "archive.orders").identity(),
        parse_target("postgresql://h2/shop", "orders").identity(),
        parse_target("postgresql://h:5433/shop", "orders").identity(),
    }
    assert len(identities) == 6


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        (f"postgres://admin:{SECRET}@db:5432/app", "postgres://admin:***@db:5432/app"),  # not postgresql+psycopg://
        (
            f"crate://admin:{SECRET}@db:4200/s/t?ssl=true&ca_cert=/etc/ca.pem",
            "crate://admin:***@db:4200/s/t?ssl=true&ca_cert=/etc/ca.pem",
        ),
        (
            f"postgresql://admin@db/app?sslmode=require&password={SECRET}",
            "postgresql://admin@db/app?sslmode=require&password=***",
        ),
        ("crate://db:4200/doc", "crate://db:4200/doc"),
        ("sqlite:///relay.db", "sqlite:///relay.db"),
    ],
)
def test_errors_show_the_url_as_typed_with_the_password_masked(typed: str, shown: str) -> None:
    spec = parse_target(typed, "t")
    assert spec.shown_url == shown
    assert_no_secret(spec.shown_url)
    assert spec == parse_target(typed.replace("postgres://", "postgresql://"), "t")  # not part of the identity


# ---- query options: checked before anything starts, as the source URL's are ----------------------------------


@pytest.mark.parametrize(
    ("url", "table"),
    [
        (
            "crate://h:4200/doc/t?ssl=true&ca_cert=/etc/ca.pem&verify_ssl_cert=false&cert_file=/c.pem&key_file=/k.pem"
            "&timeout=5&pool_size=8&schema=doc&backoff_factor=0.5&error_trace=true&socket_tcp_keepidle=60"
            "&compress=false&time_zone=UTC&ssl_relax_minimum_version=true",
            None,
        ),
        ("crate://h:4200/doc/t?sslmode=require&socket_keepalive=off&compress=4096", None),
        (
            "postgresql://h/db?sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=3&application_name=relay"
            "&options=-c%20statement_timeout%3D5000&password=x&target_session_attrs=read-write&keepalives_idle=30",
            "t",
        ),
        ("sqlite:///x.db?timeout=5&check_same_thread=false&isolation_level=IMMEDIATE&cached_statements=10", "t"),
        ("sqlite:///file:x.db?uri=true&mode=ro&cache=shared", "t"),
    ],
)
def test_every_dialects_own_options_pass(url: str, table: str | None) -> None:
    parse_target(url, table)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "crate://h:4200/doc/t?sslx=true",
            "unknown option 'sslx' for a crate:// target (did you mean ssl?); valid options: backoff_factor, ",
        ),
        ("crate://h:4200/doc/t?ssl=maybe", "bad value 'maybe' for target option 'ssl': expected true or false"),
        ("crate://h:4200/doc/t?timeout=soon", "bad value 'soon' for target option 'timeout': expected seconds, more"),
        ("crate://h:4200/doc/t?pool_size=0", "bad value '0' for target option 'pool_size': expected a whole number"),
        ("crate://h:4200/doc/t?sslmode=verify_full", "bad value 'verify_full' for target option 'sslmode': expected"),
        ("crate://h:4200/doc/t?timeout=5&timeout=6", "target option 'timeout' is given twice"),
        ("crate://h:4200/doc/t?sslpassword=x", "unknown option 'sslpassword' for a crate:// target (did you mean"),
        ("postgresql://h/db?sslmod=require", "unknown option 'sslmod' for a postgresql:// target (did you mean sslm"),
        ("postgresql://h/db?connect_timeout=ten", "bad value 'ten' for target option 'connect_timeout': expected a "),
        ("postgresql://h/db?dbname=other", "unknown option 'dbname' for a postgresql:// target"),  # the URL's path
        ("sqlite:///x.db?foo=1", "unknown option 'foo' for a sqlite:// target; valid options: cached_statements, "),
        ("sqlite:///x.db?timeout=-1", "bad value '-1' for target option 'timeout': expected seconds, 0 or more"),
        ("sqlite:///x.db?mode=ro", "target option 'mode' is a SQLite URI parameter: add uri=true to use it"),
    ],
)
def test_a_bad_option_is_one_line(url: str, message: str) -> None:
    with pytest.raises(TargetError) as raised:
        parse_target(url, "t")
    text = str(raised.value)
    assert text.startswith(message) and "\n" not in text, text


def test_a_bad_secret_value_is_not_echoed() -> None:
    with pytest.raises(TargetError, match="target option 'password'") as raised:
        parse_target("postgresql://h/db?password=a&password=s3cr", "t")
    assert_no_secret(str(raised.value))


def test_the_crate_option_list_is_the_drivers() -> None:
    """Every keyword crate.client.connect() takes from a URL, and the dialect's ssl and sslmode; nothing else."""
    import inspect

    from crate.client.connection import Connection

    from kcl_relay.sink.target_options import CRATE_OPTIONS

    taken = set(inspect.signature(Connection.__init__).parameters) - {"self", "servers", "client", "converter"}
    assert set(CRATE_OPTIONS) == taken | {"ssl", "sslmode"}


def test_options_the_driver_needs_typed_reach_it_typed() -> None:
    """The crate client reads a text "false" as true (verify_ssl_cert), and SQLite's timeout= must win over ours."""
    crate = parse_target("crate://h:4200/doc/t?verify_ssl_cert=false&socket_tcp_keepidle=60&compress=no", None)
    assert dict(crate.connect_args) == {
        "timeout": CRATE_TIMEOUT_SECONDS,
        "pool_size": 4,
        "verify_ssl_cert": False,
        "socket_tcp_keepidle": 60,
        "compress": False,
    }
    assert dict(parse_target("sqlite:///x.db?timeout=2.5", "t").connect_args) == {"timeout": 2.5}
