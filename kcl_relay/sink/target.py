"""Where the relay writes: a database URL plus the table, parsed from --target and --table.

Accepted forms:

* ``crate://user:password@host:4200/SCHEMA/TABLE`` (cratedb-toolkit style: the path names schema and table;
  ``?ssl=true`` or ``?sslmode=verify-full`` use TLS with certificate verification; ``?timeout=`` seconds)
* ``postgresql://user:password@host:5432/DBNAME`` with ``--table schema.table`` or ``--table table`` (schema public)
* ``sqlite:///path/to/file.db`` with ``--table table`` (a schema is ignored)

Query options are each dialect's driver's own, checked before anything starts (kcl_relay.sink.target_options): an
unknown, repeated or badly valued one is a one-line TargetError. ``--table`` always overrides a table named in the
URL path; without either, the caller's default table (the DynamoDB table's or stream's name) is used.

Passwords never appear in reprs, logs or errors: the URL is kept as a SQLAlchemy URL object, whose str() and repr()
mask the password.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.engine import URL, Engine, create_engine, make_url
from sqlalchemy.exc import ArgumentError

from kcl_relay.masking import mask_secrets, masked_eq
from kcl_relay.sink.target_options import check_options, typed_connect_args

__all__ = ["DialectName", "TargetError", "TargetSpec", "parse_target"]

DialectName = Literal["cratedb", "postgresql", "sqlite"]

# scheme as typed -> (dialect, SQLAlchemy drivername)
_SCHEMES: dict[str, tuple[DialectName, str]] = {
    "crate": ("cratedb", "crate"),
    "cratedb": ("cratedb", "crate"),
    "postgresql": ("postgresql", "postgresql+psycopg"),
    "postgres": ("postgresql", "postgresql+psycopg"),
    "postgresql+psycopg": ("postgresql", "postgresql+psycopg"),
    "sqlite": ("sqlite", "sqlite"),
}
ACCEPTED = "crate://, postgresql://, sqlite:///"
CRATE_DEFAULT_SCHEMA = "doc"
DEFAULT_PORTS = {"cratedb": 4200, "postgresql": 5432}
POSTGRES_DEFAULT_SCHEMA = "public"
# Without a timeout the CrateDB HTTP client waits forever on a dead socket, and apply() would never return.
CRATE_TIMEOUT_SECONDS = 30.0
CRATE_POOL_SIZE = 4
POSTGRES_CONNECT_TIMEOUT_SECONDS = 10
SQLITE_BUSY_TIMEOUT_SECONDS = 30.0


class TargetError(ValueError):
    """A target that cannot be used; the message is one line and never contains a secret."""


@masked_eq  # an assertion diff of two targets stays at the masking repr (kcl_relay.masking)
@dataclass(frozen=True, eq=False)
class TargetSpec:
    url: URL  # SQLAlchemy URL without the table path; its str()/repr() mask the password
    dialect: DialectName
    schema: str | None  # None for SQLite
    table: str
    connect_args: tuple[tuple[str, Any], ...] = field(default=())
    typed: str = field(default="", compare=False)  # the URL as typed, password masked (errors); "" if built in code

    @property
    def shown_url(self) -> str:
        """The URL as typed (password masked), else the driver's: what an error names."""
        return self.typed or self.url.render_as_string(hide_password=True)

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table

    def describe(self) -> str:
        """One line for humans and logs, without the password or secret query options (password=, jwt_token=)."""
        url = self.url.render_as_string(hide_password=True)
        return mask_secrets(f"{self.dialect} table {self.qualified_table} at {url}")

    def identity(self) -> str:
        """What names this target for checkpoints: the same database and table always give the same text.

        Normalized so that spellings of one target agree: SQLite as an absolute path (a relative one resolved against
        the working directory), a server as lower-case host and port (the default port filled in), the database;
        never credentials or query options (TLS, timeouts), which do not change where rows go.
        """
        if self.dialect == "sqlite":
            database = self.url.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                database = os.path.realpath(os.path.expanduser(database))
            return f"sqlite:///{database} table {self.table}"
        host = (self.url.host or "localhost").lower().rstrip(".")
        if ":" in host:
            host = f"[{host}]"
        port = self.url.port or DEFAULT_PORTS[self.dialect]
        database = f"/{self.url.database}" if self.dialect == "postgresql" and self.url.database else ""
        return f"{self.dialect}://{host}:{port}{database} table {self.qualified_table}"

    def create_engine(self, **options: Any) -> Engine:
        return create_engine(self.url, connect_args=dict(self.connect_args), **options)

    def __repr__(self) -> str:
        return f"TargetSpec({self})"

    def __str__(self) -> str:
        return self.describe()


def _scheme(url: str) -> str:
    head, sep, _ = url.partition("://")
    return head.lower() if sep else ""


def _split_table(table: str) -> tuple[str | None, str]:
    schema, dot, name = table.strip().rpartition(".")
    if not name:
        raise TargetError("--table must be 'table' or 'schema.table'")
    return (schema or None) if dot else None, name


def parse_target(url: str | None, table: str | None, default_table: str | None = None) -> TargetSpec:
    """Parse a target URL and an optional --table override into a TargetSpec (raises TargetError).

    `default_table` is the table when neither --table nor the URL names one (the DynamoDB table's or stream's name,
    as docs/full-load.md says); its schema is the URL's, else the dialect's default.
    """
    if not url:
        raise TargetError(f"no target URL given; accepted: {ACCEPTED}")
    scheme = _scheme(url)
    if scheme not in _SCHEMES:
        shown = f"'{scheme}://'" if scheme else "a URL without a scheme"
        raise TargetError(f"unsupported target {shown}; accepted: {ACCEPTED}")
    dialect, drivername = _SCHEMES[scheme]
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # SQLAlchemy's message repeats the URL, password included: never pass it on.
        raise TargetError(f"cannot parse the {scheme}:// target URL") from None
    typed = _masked(url.strip())
    options = check_options(dialect, scheme, parsed.query)
    parsed = parsed.set(drivername=drivername)
    override = _split_table(table) if table else None
    if dialect == "cratedb":
        spec = _crate(parsed, override, default_table)
    elif dialect == "postgresql":
        spec = _postgres(parsed, override or _default(default_table))
    else:
        spec = _sqlite(parsed, override or _default(default_table))
    connect_args = dict(spec.connect_args) | dict(typed_connect_args(dialect, options))
    return dataclasses.replace(spec, typed=typed, connect_args=tuple(connect_args.items()))


def _default(default_table: str | None) -> tuple[str | None, str] | None:
    return (None, default_table) if default_table else None


# SQLAlchemy's own reading of the user part (the password runs to the first "@"), and libpq's password options.
_USER_PASSWORD = re.compile(r"^([\w+]+://[^:/]*:)([^@]*)(?=@)")
_QUERY_PASSWORD = re.compile(r"([?&][^=&#]*(?:password|passwd|secret|token)[^=&#]*=)[^&#]*", re.IGNORECASE)


def _masked(url: str) -> str:
    """The URL as typed, its password (in the user part or the query) shown as ***."""
    return _QUERY_PASSWORD.sub(r"\1***", _USER_PASSWORD.sub(lambda m: m.group(1) + ("***" if m.group(2) else ""), url))


def _crate(url: URL, override: tuple[str | None, str] | None, default_table: str | None = None) -> TargetSpec:
    parts = [p for p in (url.database or "").split("/") if p]
    if len(parts) > 2:
        raise TargetError("crate:// URL path must be /SCHEMA/TABLE, /SCHEMA or empty")
    schema = parts[0] if parts else CRATE_DEFAULT_SCHEMA
    name = parts[1] if len(parts) == 2 else None
    if override:
        schema = override[0] or schema
        name = override[1]
    name = name or default_table
    if not name:
        raise TargetError("no table: give crate://host:4200/SCHEMA/TABLE or --table")
    query = dict(url.query)
    ssl = str(query.pop("ssl", "")).lower()
    if ssl in ("true", "1", "yes", "on") and "sslmode" not in query:
        query["sslmode"] = "verify-full"  # TLS with certificate and host name verification
    # set() cannot clear a field (None means "unchanged"): rebuild without the table path.
    url = URL.create(url.drivername, url.username, url.password, url.host, url.port, None, query)
    connect_args: tuple[tuple[str, Any], ...] = () if "timeout" in query else (("timeout", CRATE_TIMEOUT_SECONDS),)
    # The writer reads by key on several connections at once (CrateDBDialect.features.parallel_reads).
    connect_args += (("pool_size", CRATE_POOL_SIZE),)
    return TargetSpec(url=url, dialect="cratedb", schema=schema, table=name, connect_args=connect_args)


def _postgres(url: URL, override: tuple[str | None, str] | None) -> TargetSpec:
    if not override:
        raise TargetError("no table: give --table schema.table (or table, in schema public) with postgresql://")
    if not url.database:
        raise TargetError("postgresql:// URL must name the database: postgresql://user@host:5432/DBNAME")
    connect_args = () if "connect_timeout" in url.query else (("connect_timeout", POSTGRES_CONNECT_TIMEOUT_SECONDS),)
    return TargetSpec(
        url=url,
        dialect="postgresql",
        schema=override[0] or POSTGRES_DEFAULT_SCHEMA,
        table=override[1],
        connect_args=connect_args,
    )


def _sqlite(url: URL, override: tuple[str | None, str] | None) -> TargetSpec:
    if not override:
        raise TargetError("no table: give --table with sqlite:///path.db")
    if not url.database:
        raise TargetError("sqlite:/// URL must name a database file: sqlite:///path/to/file.db")
    connect_args = (("timeout", SQLITE_BUSY_TIMEOUT_SECONDS),)
    return TargetSpec(url=url, dialect="sqlite", schema=None, table=override[1], connect_args=connect_args)
