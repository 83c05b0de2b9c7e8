"""Run the moto emulators (Kinesis, DynamoDB, DynamoDB Streams, CloudWatch) on one loopback port under hypercorn.

`LocalAws` starts them as a child process for tests; `serve_forever` runs them in the foreground for the CLI;
`start_detached`/`stop_detached` keep them running behind a pid file for demos. Run as a module
(`python -m kcl_relay.localaws.server --port N` or `--fd N`) it is the child process itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

__all__ = [
    "DEFAULT_PORT",
    "DUMMY_CREDENTIALS",
    "HOST",
    "REGION",
    "LocalAws",
    "LocalAwsError",
    "aws_client",
    "serve_forever",
    "start_detached",
    "stop_detached",
    "wait_until_ready",
]

HOST = "127.0.0.1"  # loopback only: the emulators have no authentication
DEFAULT_PORT = 4566
REGION = "us-east-1"
# moto accepts any credentials; fixed dummies keep a developer's real ones out of every request.
DUMMY_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
CHILD_MARKER = "kcl_relay.localaws.server"  # found in the child's command line: guards stop_detached against pid reuse
# Each service's app is built on its first request; touching them all at start keeps that cost out of tests.
WARM_UP = {
    "kinesis": "list_streams",
    "dynamodb": "list_tables",
    "dynamodbstreams": "list_streams",
    "cloudwatch": "list_metrics",
}


class LocalAwsError(RuntimeError):
    """The emulators did not start, answer or stop as expected."""


def aws_client(service: str, endpoint_url: str, region: str = REGION, **config: Any) -> Any:
    """A boto3 client for one emulated service, with dummy credentials."""
    boto_config = BotoConfig(**config) if config else None
    return boto3.session.Session(region_name=region, **DUMMY_CREDENTIALS).client(
        service, endpoint_url=endpoint_url, config=boto_config
    )


def wait_until_ready(endpoint_url: str, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> float:
    """Poll until every emulated service answers; return the seconds waited. Fails fast if `process` died."""
    started = time.monotonic()
    deadline = started + timeout
    pending = dict(WARM_UP)
    clients = {
        service: aws_client(service, endpoint_url, connect_timeout=1, read_timeout=10, retries={"max_attempts": 1})
        for service in pending
    }
    last_error: Exception | None = None
    while pending:
        if process is not None and process.poll() is not None:
            raise LocalAwsError(f"emulator process exited with code {process.returncode}")
        service, operation = next(iter(pending.items()))
        try:
            getattr(clients[service], operation)()
            del pending[service]
            continue
        except Exception as error:  # connection refused, reset or timeout while the child boots
            last_error = error
        if time.monotonic() > deadline:
            raise LocalAwsError(f"emulators at {endpoint_url} not ready after {timeout:.0f} s: {last_error}")
        time.sleep(0.1)
    return time.monotonic() - started


def _listening_socket(port: int) -> socket.socket:
    # Bound here and handed to the child by fd, so port 0 gets a free port with no window for another process.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as error:
        sock.close()
        raise LocalAwsError(f"cannot listen on {HOST}:{port}: {error.strerror}") from error
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _spawn(sock: socket.socket, log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", CHILD_MARKER, "--fd", str(sock.fileno())],
            pass_fds=(sock.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: no terminal signals, and stop() can signal the group
        )


def _terminate_group(pid: int, timeout: float, alive: Callable[[], bool]) -> None:
    """SIGTERM the child's process group (hypercorn shuts down gracefully), SIGKILL it if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive():
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.05)


class LocalAws:
    """The emulators in a child process on a loopback port. Use as a context manager, or start()/stop()."""

    def __init__(self, port: int = 0, log_path: str | Path | None = None, start_timeout: float = 60.0) -> None:
        self.requested_port = port
        self._log_path = Path(log_path) if log_path else None
        self.log_path: Path | None = self._log_path
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise LocalAwsError("LocalAws is not started")
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def client(self, service: str, **config: Any) -> Any:
        return aws_client(service, self.endpoint_url, **config)

    def start(self) -> LocalAws:
        if self._process is not None:
            return self
        started = time.monotonic()
        sock = _listening_socket(self.requested_port)
        try:
            self.port = sock.getsockname()[1]
            self.log_path = self._log_path or Path(tempfile.gettempdir()) / f"kcl-relay-localaws-{self.port}.log"
            self._process = _spawn(sock, self.log_path)
        finally:
            sock.close()  # the child holds its own copy
        try:
            wait_until_ready(self.endpoint_url, self.start_timeout, self._process)
        except LocalAwsError as error:
            self.stop()
            raise LocalAwsError(f"{error} (log: {self.log_path})") from error
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        _terminate_group(process.pid, timeout, lambda: process.poll() is None)
        self.port = None

    def reset(self) -> None:
        """Forget every table, stream and metric (moto's reset API): a clean slate without a restart."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def __enter__(self) -> LocalAws:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_detached(
    port: int = DEFAULT_PORT,
    pidfile: str | Path = "localaws.pid",
    log_path: str | Path | None = None,
    timeout: float = 60.0,
) -> str:
    """Start the emulators in the background, write their pid to `pidfile`, wait until ready; return the URL."""
    pidfile = Path(pidfile)
    if pidfile.exists() and _is_our_server(_pid_or_zero(pidfile)):
        raise LocalAwsError(f"already running (pid file {pidfile})")
    sock = _listening_socket(port)
    try:
        actual_port = sock.getsockname()[1]
        log = Path(log_path) if log_path else pidfile.with_suffix(".log")
        process = _spawn(sock, log)
    finally:
        sock.close()
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(f"{process.pid}\n")
    endpoint_url = f"http://{HOST}:{actual_port}"
    try:
        wait_until_ready(endpoint_url, timeout, process)
    except LocalAwsError as error:
        _terminate_group(process.pid, 10.0, lambda: process.poll() is None)
        pidfile.unlink(missing_ok=True)
        raise LocalAwsError(f"{error} (log: {log})") from error
    # Not waited for on purpose: the child outlives us (own session); init reaps it.
    process.returncode = 0  # keeps Popen.__del__ from warning that the child still runs
    return endpoint_url


def _read_pid(pidfile: Path) -> int:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError) as error:
        raise LocalAwsError(f"no usable pid in {pidfile}") from error


def _pid_or_zero(pidfile: Path) -> int:
    try:
        return _read_pid(pidfile)
    except LocalAwsError:
        return 0  # an unreadable pid file is as stale as one of a dead process


def _is_our_server(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return CHILD_MARKER.encode() in cmdline


def stop_detached(pidfile: str | Path, timeout: float = 10.0) -> bool:
    """Stop emulators started by start_detached; False if they were not running. Removes the pid file."""
    pidfile = Path(pidfile)
    if not pidfile.exists():
        return False
    pid = _read_pid(pidfile)
    running = _is_our_server(pid)  # a stale pid may belong to another process by now: never signal that
    if running:
        # Not our child (the starting CLI has exited): a zombie's cmdline is empty, so this also ends at exit.
        _terminate_group(pid, timeout, lambda: _is_our_server(pid))
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaps it when this process started it (tests), else not our child
    pidfile.unlink(missing_ok=True)
    return running


def serve_forever(port: int = DEFAULT_PORT, *, fd: int | None = None, graceful_timeout: float = 1.0) -> None:
    """Serve the emulators in this process until SIGINT/SIGTERM. `fd`: an already listening socket to use."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from kcl_relay.localaws.app import app

    if fd is None:
        # Bound here so that "port in use" is a LocalAwsError; hypercorn owns (and closes) the socket from now on.
        fd = _listening_socket(port).detach()
    config = Config()
    config.bind = [f"fd://{fd}"]
    config.graceful_timeout = graceful_timeout  # clients keep HTTP/2 connections open; don't wait long for them
    config.errorlog = "-"
    config.accesslog = None
    asyncio.run(serve(app, config, mode="wsgi"))  # moto's dispatcher is a WSGI app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=CHILD_MARKER, description="Serve the moto emulators on loopback.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--port", type=int, default=DEFAULT_PORT)
    group.add_argument("--fd", type=int, help="listening socket inherited from the parent")
    args = parser.parse_args(argv)
    serve_forever(args.port, fd=args.fd)


if __name__ == "__main__":
    main()
