"""The query options of a target URL, checked as the source URL's are: before anything starts, one line each.

Each dialect accepts what its driver reads and nothing else: an unknown option (with the closest known name), an
option given twice and a value the driver would refuse (or, worse, silently misread) are a TargetError. The lists:

* CrateDB: the keyword arguments of crate.client.connect() (crate.client.connection.Connection) plus the
  dialect's `ssl` and `sslmode` (sqlalchemy_cratedb.dialect.CrateDialect.connect);
* PostgreSQL: libpq's connection parameters, as libpq itself lists them (PQconndefaults via psycopg.pq);
* SQLite: what SQLAlchemy's pysqlite dialect passes to sqlite3.connect(), and with uri=true SQLite's URI parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from kcl_relay.source.url import closest

__all__ = ["check_options"]

Parser = Callable[[str], Any]
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _bool(text: str) -> bool:
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise ValueError("expected true or false")


def _number(kind: type, low: float, what: str) -> Parser:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"expected {what}") from None
        if not value >= low:  # also refuses nan
            raise ValueError(f"expected {what}")
        return value

    return parse


def _choice(*choices: str) -> Parser:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return text

    return parse


def _text(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


def _compress(text: str) -> bool | int:
    """The crate client's `compress`: true, false, or the size in bytes from which a request is gzipped."""
    if text.lower() in TRUE + FALSE:
        return _bool(text)
    return _number(int, 0, "true, false or a size in bytes")(text)


SECONDS = _number(float, 0, "seconds, 0 or more")
POSITIVE_SECONDS = _number(float, 0.001, "seconds, more than 0")
WHOLE = _number(int, 0, "a whole number, 0 or more")
POSITIVE = _number(int, 1, "a whole number, 1 or more")

# name -> (parser, whether the driver needs the parsed value rather than the text: it goes to connect_args then)
CRATE_OPTIONS: dict[str, tuple[Parser, bool]] = {
    "ssl": (_bool, False),
    "sslmode": (_choice(*SSL_MODES), False),
    "timeout": (POSITIVE_SECONDS, False),
    "pool_size": (POSITIVE, False),
    "backoff_factor": (SECONDS, True),
    "verify_ssl_cert": (_bool, True),
    "ca_cert": (_text, False),
    "cert_file": (_text, False),
    "key_file": (_text, False),
    "ssl_relax_minimum_version": (_bool, True),
    "error_trace": (_bool, True),
    "username": (_text, False),
    "password": (str, False),
    "jwt_token": (_text, False),
    "schema": (_text, False),
    "time_zone": (_text, False),
    "socket_keepalive": (_bool, True),
    "socket_tcp_keepidle": (POSITIVE, True),
    "socket_tcp_keepintvl": (POSITIVE, True),
    "socket_tcp_keepcnt": (POSITIVE, True),
    "compress": (_compress, True),
}

# libpq checks every value itself when it connects; these are the ones a typo in would otherwise only show then.
POSTGRES_VALUES: dict[str, Parser] = {
    "sslmode": _choice(*SSL_MODES),
    "connect_timeout": WHOLE,
    "keepalives": _choice("0", "1"),
    "keepalives_idle": WHOLE,
    "keepalives_interval": WHOLE,
    "keepalives_count": WHOLE,
    "tcp_user_timeout": WHOLE,
    "target_session_attrs": _choice("any", "read-write", "read-only", "primary", "standby", "prefer-standby"),
    "gssencmode": _choice("disable", "prefer", "require"),
    "channel_binding": _choice("disable", "prefer", "require"),
    "sslnegotiation": _choice("postgres", "direct"),
    "sslcompression": _choice("0", "1"),
    "sslsni": _choice("0", "1"),
    "load_balance_hosts": _choice("disable", "random"),
}
# Parameters libpq lists but SQLAlchemy takes from the URL itself (a query value would silently replace it).
POSTGRES_FROM_URL = frozenset({"user", "dbname", "port", "hostaddr"})

# SQLAlchemy's pysqlite dialect (create_connect_args) and SQLite's URI parameters (https://sqlite.org/uri.html).
SQLITE_OPTIONS: dict[str, Parser] = {
    "timeout": SECONDS,
    "uri": _bool,
    "isolation_level": _choice("DEFERRED", "IMMEDIATE", "EXCLUSIVE"),
    "detect_types": WHOLE,
    "check_same_thread": _bool,
    "cached_statements": WHOLE,
}
SQLITE_URI_OPTIONS: dict[str, Parser] = {
    "mode": _choice("ro", "rw", "rwc", "memory"),
    "cache": _choice("shared", "private"),
    "immutable": _choice("0", "1"),
    "nolock": _choice("0", "1"),
    "psow": _choice("0", "1"),
    "vfs": _text,
}


@cache
def postgres_options() -> dict[str, Parser]:
    """libpq's own list of connection parameters (this libpq's: a newer one knows more)."""
    from psycopg import pq

    names = [option.keyword.decode() for option in pq.Conninfo.get_defaults()]
    return {name: POSTGRES_VALUES.get(name, str) for name in names if name not in POSTGRES_FROM_URL}


def _table(dialect: str, query: Mapping[str, Any]) -> dict[str, Parser]:
    if dialect == "cratedb":
        return {name: parser for name, (parser, _typed) in CRATE_OPTIONS.items()}
    if dialect == "postgresql":
        return {**postgres_options(), "host": str}  # host=: SQLAlchemy's several hosts of one URL
    uri = str(query.get("uri", "")).lower() in TRUE
    return {**SQLITE_OPTIONS, **(SQLITE_URI_OPTIONS if uri else {})}


def check_options(dialect: str, scheme: str, query: Mapping[str, Any]) -> dict[str, Any]:
    """Check a target URL's query options; returns the parsed values (raises TargetError with one line)."""
    from kcl_relay.sink.target import TargetError

    known = _table(dialect, query)
    parsed: dict[str, Any] = {}
    for name, raw in query.items():
        if isinstance(raw, tuple):  # SQLAlchemy's reading of name=a&name=b
            raise TargetError(f"target option {name!r} is given twice")
        if name not in known:
            if dialect == "sqlite" and name in SQLITE_URI_OPTIONS:
                raise TargetError(f"target option {name!r} is a SQLite URI parameter: add uri=true to use it")
            meant = closest(name, list(known))
            hint = f" (did you mean {meant}?)" if meant else ""
            raise TargetError(
                f"unknown option {name!r} for a {scheme}:// target{hint}; valid options: {', '.join(sorted(known))}"
            )
        try:
            parsed[name] = known[name](raw)
        except ValueError as error:
            shown = "***" if "password" in name or "token" in name or "secret" in name else repr(raw)
            raise TargetError(f"bad value {shown} for target option {name!r}: {error}") from None
    return parsed


def typed_connect_args(dialect: str, parsed: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The options whose driver needs the parsed value (the crate client takes a text "false" as true)."""
    if dialect == "cratedb":
        return tuple((name, value) for name, value in parsed.items() if CRATE_OPTIONS[name][1])
    if dialect == "sqlite" and "timeout" in parsed:
        return (("timeout", parsed["timeout"]),)
    return ()
