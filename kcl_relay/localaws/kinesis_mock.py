"""kinesis-mock (npm `kinesis-local`) on a loopback port: a Kinesis emulator that splits and merges shards.

moto ignores ListShards' ShardFilter, so after a split the KCL rejects the shard hash ranges it gets; kinesis-mock
implements SplitShard, MergeShards, child shards in GetRecords and the filter (but AT_TRIM_HORIZON answers every
shard, like FROM_TRIM_HORIZON: docs/local-aws.md says what that means for the KCL). The KCL's lease table stays on
moto (`LocalAws`). It also serves enhanced fan-out (consumer=fanout: Register/Describe/DeregisterStreamConsumer and
SubscribeToShard) on its plain port, over the HTTP/2 without TLS (h2c) the KCL's async client speaks; it pushes a
shard's new records to a subscriber once a second (AWS: as they arrive), and sends no initial-response event, which
boto3 needs (the KCL's Java SDK does not). kinesis-mock binds every interface and has no host setting: a
`--require` preload makes each listen() default to 127.0.0.1, and `start()` checks its listening sockets in /proc.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from kcl_relay.localaws.server import HOST, REGION, _terminate_group, aws_client

__all__ = [
    "DIR_ENV",
    "PACKAGE",
    "VERSION",
    "KinesisMock",
    "KinesisMockError",
    "find_package",
    "listening_addresses",
    "missing_requirements",
]

PACKAGE = "kinesis-local"
VERSION = "0.6.2"
DIR_ENV = "KINESIS_MOCK_DIR"  # an npm prefix (holding node_modules/kinesis-local) or the package folder itself
DEFAULT_PREFIX = Path.home() / ".cache" / "kcl-relay" / "kinesis-mock"
# Its defaults are 500 ms per stream/shard state change; tests wait for each one.
FAST_DURATIONS = {
    name: "100ms"
    for name in (
        "CREATE_STREAM_DURATION",
        "DELETE_STREAM_DURATION",
        "MERGE_SHARDS_DURATION",
        "SPLIT_SHARD_DURATION",
        "UPDATE_SHARD_COUNT_DURATION",
        "REGISTER_STREAM_CONSUMER_DURATION",
        "DEREGISTER_STREAM_CONSUMER_DURATION",
    )
}
# net.Server.listen([port[, host[, backlog]]][, cb]) or listen({port, host}): a missing or wildcard host becomes
# loopback. The other forms (a path, an fd, a handle) open no new network socket and pass through unchanged.
LOOPBACK_PRELOAD = """\
"use strict";
const net = require("net");
const LOOPBACK = "@HOST@";
const wildcard = (host) => host === undefined || host === null || host === "" || host === "0.0.0.0" || host === "::";
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const first = args[0];
  if (first === undefined || typeof first === "function") {
    args.unshift(0, LOOPBACK);
  } else if (typeof first === "number" || (typeof first === "string" && /^[0-9]+$/.test(first))) {
    if (typeof args[1] === "string") {
      if (wildcard(args[1])) args[1] = LOOPBACK;
    } else {
      args.splice(1, 0, LOOPBACK);
    }
  } else if (first && typeof first === "object" && "port" in first && wildcard(first.host)) {
    args[0] = { ...first, host: LOOPBACK };
  }
  return listen.apply(this, args);
};
""".replace("@HOST@", HOST)
LOOPBACK_PREFIXES = ("127.", "::1", "::ffff:127.")


class KinesisMockError(RuntimeError):
    """kinesis-mock is missing, cannot be installed, or did not start or answer."""


def _package_dirs(base: Path) -> list[Path]:
    return [base, base / "node_modules" / PACKAGE]


def _version(folder: Path) -> str | None:
    try:
        meta = json.loads((folder / "package.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("name") != PACKAGE or not (folder / "main.js").is_file():
        return None
    return str(meta.get("version"))


def _prefix() -> Path:
    return Path(os.environ.get(DIR_ENV) or DEFAULT_PREFIX).expanduser()


def _installed() -> Path | None:
    return next((folder for folder in _package_dirs(_prefix()) if _version(folder) == VERSION), None)


def missing_requirements() -> str:
    """Why kinesis-mock cannot run here (no node; no npm while the package is not installed), or ""."""
    if not shutil.which("node"):
        return "Node.js (node) not found: install it (apt-get install -y nodejs npm)"
    if _installed() is None and not shutil.which("npm"):
        return f"npm not found and {PACKAGE}@{VERSION} not installed under {_prefix()}: install npm or set {DIR_ENV}"
    return ""


def find_package(install: bool = True) -> Path:
    """The kinesis-local package folder, installed with npm into the prefix when missing (the pinned version)."""
    found = _installed()
    if found is not None:
        return found
    prefix = _prefix()
    npm = shutil.which("npm")
    if not install or not npm:
        raise KinesisMockError(
            f"{PACKAGE}@{VERSION} not found under {prefix}"
            + ("" if npm else "; npm not found: install it (apt-get install -y nodejs npm) or set " + DIR_ENV)
        )
    prefix.mkdir(parents=True, exist_ok=True)
    with open(prefix / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers: one installs, the others then find it
        found = _installed()
        if found is not None:
            return found
        done = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", f"{PACKAGE}@{VERSION}"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        found = _installed()
    if done.returncode != 0 or found is None:
        raise KinesisMockError(
            f"npm install {PACKAGE}@{VERSION} into {prefix} failed (exit {done.returncode}): {done.stderr[-1500:]}"
        )
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` listens on, from /proc (Linux)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] != "0A" or fields[9] not in inodes:  # 0A: TCP_LISTEN
                    continue
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)
                if sys.byteorder == "little":  # /proc prints each 32-bit word of the address in host order
                    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add((socket.inet_ntop(family, raw), int(port, 16)))
    return found


class KinesisMock:
    """kinesis-mock in a child process (own process group) on a free loopback port; a context manager."""

    def __init__(
        self,
        log_path: str | Path | None = None,
        start_timeout: float = 60.0,
        durations: dict[str, str] | None = None,
        log_level: str = "INFO",
    ) -> None:
        self._log_path = Path(log_path) if log_path else None
        self.log_path: Path | None = self._log_path
        self.start_timeout = start_timeout
        self.env = {**FAST_DURATIONS, **(durations or {}), "LOG_LEVEL": log_level}
        self.port: int | None = None
        self.tls_port: int | None = None
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._preload: Path | None = None

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise KinesisMockError("KinesisMock is not started")
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def client(self, service: str = "kinesis", **config: Any) -> Any:
        return aws_client(service, self.endpoint_url, **config)

    def start(self) -> KinesisMock:
        if self._process is not None:
            return self
        node = shutil.which("node")
        if not node:
            raise KinesisMockError(missing_requirements())
        started = time.monotonic()
        package = find_package()
        fd, preload = tempfile.mkstemp(prefix="kcl-relay-kinesis-mock-", suffix=".js")
        with os.fdopen(fd, "w") as handle:
            handle.write(LOOPBACK_PRELOAD)
        self._preload = Path(preload)
        try:
            for attempt in range(3):  # a free port may be taken between probing it and node's bind: try fresh ones
                try:
                    self._spawn(node, package)
                    self._wait_until_ready()
                    break
                except KinesisMockError:
                    self._kill()
                    if attempt == 2 or "EADDRINUSE" not in self._log_tail():
                        raise
            self._check_loopback()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _spawn(self, node: str, package: Path) -> None:
        assert self._preload is not None
        self.port, self.tls_port = _free_port(), _free_port()
        while self.tls_port == self.port:
            self.tls_port = _free_port()
        self.log_path = self._log_path or Path(tempfile.gettempdir()) / f"kcl-relay-kinesis-mock-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # A developer's AWS_REGION or AWS_ACCOUNT_ID would move its default region or account away from the tools'.
        inherited = {name: value for name, value in os.environ.items() if name not in ("AWS_ACCOUNT_ID", "AWS_REGION")}
        env = {
            **inherited,
            **self.env,
            "AWS_REGION": REGION,
            "KINESIS_MOCK_PLAIN_PORT": str(self.port),
            # Not used (the KCL's netty client fails on it), but it is always served: give it a free port too.
            "KINESIS_MOCK_TLS_PORT": str(self.tls_port),
            "SHOULD_PERSIST_DATA": "false",  # it would write into its package folder (its working directory)
            "LOAD_DATA_IF_EXISTS": "false",
        }
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [node, "--require", str(self._preload), "main.js"],
                cwd=package,  # it reads server.json (the TLS certificate) from its working directory
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: no terminal signals, and stop() signals the group
            )

    def _wait_until_ready(self) -> None:
        kinesis = self.client(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1})
        deadline = time.monotonic() + self.start_timeout
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise KinesisMockError(
                    f"kinesis-mock exited with code {self._process.returncode} (log: {self.log_path})"
                )
            try:
                kinesis.list_streams()
                return
            except Exception as error:  # connection refused or reset while node boots
                if time.monotonic() > deadline:
                    raise KinesisMockError(
                        f"kinesis-mock at {self.endpoint_url} not ready after {self.start_timeout:.0f} s: {error} "
                        f"(log: {self.log_path})"
                    ) from None
            time.sleep(0.1)

    def _check_loopback(self) -> None:
        """Fail rather than run an unauthenticated server on a public interface, should the preload miss a bind."""
        assert self._process is not None
        if not Path("/proc/self/net/tcp").exists():
            return  # not Linux: nothing to read the sockets from
        listening = listening_addresses(self._process.pid)
        exposed = sorted(f"{host}:{port}" for host, port in listening if not host.startswith(LOOPBACK_PREFIXES))
        if not listening:
            raise KinesisMockError(f"no listening socket found for kinesis-mock (pid {self._process.pid})")
        if exposed:
            raise KinesisMockError(f"kinesis-mock listens beyond loopback: {', '.join(exposed)}")

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:] if self.log_path else ""
        except OSError:
            return ""

    def _kill(self, timeout: float = 0.2) -> None:
        # kinesis-mock 0.6.2 on node ignores SIGTERM and SIGINT (still running 15 s later); its state is in memory
        # only, so the SIGKILL that follows the short wait loses nothing.
        process, self._process = self._process, None
        if process is not None:
            _terminate_group(process.pid, timeout, lambda: process.poll() is None)

    def stop(self, timeout: float = 0.2) -> None:
        self._kill(timeout)
        self.port = self.tls_port = None
        if self._preload is not None:
            self._preload.unlink(missing_ok=True)
            self._preload = None

    def __enter__(self) -> KinesisMock:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
