"""Start a throwaway PostgreSQL server for tests: loopback only, trust authentication, a temporary data directory.

PostgreSQL refuses to run as root, so when the tests run as root (CI does) the server runs as the unprivileged
`postgres` system user (created when missing). Reusable by end-to-end tests:

    with running_postgres() as server:
        url = server.create_database("relay")
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PostgresServer", "PostgresUnavailable", "find_bindir", "running_postgres"]

SUPERUSER = "relay"
SERVICE_USER = "postgres"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent

    def version(path: str) -> tuple[int, str]:
        name = Path(path).parent.name
        return (int(name) if name.isdigit() else 0, name)

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _service_account() -> pwd.struct_passwd | None:
    """Who runs the server: None for the current (non-root) user, else an unprivileged system user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVICE_USER)


@dataclass
class PostgresServer:
    bindir: Path
    base: Path
    port: int
    account: pwd.struct_passwd | None

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self.account is not None:
            kwargs = {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "HOME": str(self.base)}
        result = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]], capture_output=True, text=True, env=env, cwd=self.base, **kwargs
        )  # type: ignore[call-overload]
        if result.returncode != 0:
            log = self.base / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr.strip()}\n{tail}")
        return result

    def start(self) -> None:
        self._run(
            "initdb", "-D", str(self.datadir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C",
            "--no-instructions",
        )  # fmt: skip
        self.resume()

    def resume(self) -> None:
        """Start the server on its existing data directory (again, after stop(): an outage in a test)."""
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='{self.base}' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(self.base / "server.log")
        self._run("pg_ctl", "-D", str(self.datadir), "-l", log, "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database `name` (if missing) and return its URL."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres") as conn:
            conn.autocommit = True
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A started server, stopped and deleted on exit. Raises PostgresUnavailable without the binaries."""
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql")
    account = _service_account()
    base = Path(tempfile.mkdtemp(prefix="kcl-relay-pg-"))
    if account is not None:
        os.chown(base, account.pw_uid, account.pw_gid)
    server = PostgresServer(bindir=bindir, base=base, port=_free_port(), account=account)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
