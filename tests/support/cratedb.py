"""Start a real CrateDB for tests from a release tarball: loopback only, free ports, an unprivileged user.

The tarball is named by KCL_RELAY_CRATEDB_TARBALL, else ../shared/cratedb/crate-*.tar.gz beside the project's
clone when it exists (the way cr8 or CrateDB's own test layers start a node from a release). CrateDB refuses to run
as root, so when the tests run as root (CI does) the node runs as the system user `crate` (created when missing).
`bin/crate` always runs `$CRATE_HOME/jdk/bin/java`: the extracted folder gets a `jdk` link to a JDK new enough for
it (KCL_RELAY_CRATEDB_JAVA_HOME, else the newest under /usr/lib/jvm).

    with running_cratedb(find_tarball()) as server:
        url = server.url()          # crate://crate@127.0.0.1:PORT/doc
        server.stop(); server.start()   # an outage, for the delivery tests

    with running_cratedb(find_tarball(), tls=Keystore.create(folder)) as server:  # HTTPS only, on its own ports
        server.url()                # crate://crate@127.0.0.1:PORT/doc (add ?ssl=true&ca_cert=keystore.ca_pem)
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CrateServer", "CrateUnavailable", "Keystore", "find_tarball", "running_cratedb"]

TARBALL_ENV = "KCL_RELAY_CRATEDB_TARBALL"
JAVA_HOME_ENV = "KCL_RELAY_CRATEDB_JAVA_HOME"
HEAP_ENV = "KCL_RELAY_CRATEDB_HEAP"
SERVICE_USER = "crate"
REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "cratedb"
START_TIMEOUT = 180.0


class CrateUnavailable(RuntimeError):
    """No tarball to start CrateDB from (the only reason a CrateDB test may skip)."""


def find_tarball() -> Path | None:
    """The tarball named by KCL_RELAY_CRATEDB_TARBALL, else the newest ../shared/cratedb/crate-*.tar.gz, else None."""
    named = os.environ.get(TARBALL_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise FileNotFoundError(f"{TARBALL_ENV}={named}: no such file")
        return path
    found = sorted(SHARED.glob("crate-*.tar.gz"))
    return found[-1] if found else None


def _java_major(java: Path) -> int:
    try:
        banner = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError):
        return 0
    match = re.search(r'version "(\d+)', banner)
    return int(match.group(1)) if match else 0


def find_java_home() -> Path:
    """The JDK for CrateDB: KCL_RELAY_CRATEDB_JAVA_HOME, else the newest JDK under /usr/lib/jvm (6.x needs 25)."""
    named = os.environ.get(JAVA_HOME_ENV)
    if named:
        return Path(named)
    homes = [Path(p).parent.parent for p in glob.glob("/usr/lib/jvm/*/bin/java")]
    ranked = sorted(((_java_major(home / "bin" / "java"), str(home)) for home in homes), reverse=True)
    if not ranked or ranked[0][0] == 0:
        raise RuntimeError(f"no JDK found under /usr/lib/jvm for CrateDB: set {JAVA_HOME_ENV}")
    return Path(ranked[0][1])


@dataclass(frozen=True)
class Keystore:
    """A node's TLS key and certificate, signed by a private CA made for it (keytool, from the JDK)."""

    path: Path  # PKCS12: the node's key, its certificate and the CA's
    password: str
    ca_pem: Path  # the CA's certificate: what a client must trust (ca_cert=, REQUESTS_CA_BUNDLE)
    names: tuple[str, ...]  # the certificate's subject alternative names

    @classmethod
    def create(cls, folder: Path, names: tuple[str, ...] = ("dns:localhost", "ip:127.0.0.1")) -> Keystore:
        folder.mkdir(parents=True, exist_ok=True)
        keytool = str(find_java_home() / "bin" / "keytool")
        password = "kcl-relay-" + hashlib.sha256(str(folder).encode()).hexdigest()[:12]
        ca, node = folder / "ca.p12", folder / "node.p12"
        ca_pem, csr, node_pem = folder / "ca.pem", folder / "node.csr", folder / "node.pem"
        common = ["-storepass", password, "-storetype", "PKCS12"]
        key = ["-keyalg", "RSA", "-keysize", "2048", "-validity", "30"]
        san = "SAN=" + ",".join(names)
        for step in (
            ["-genkeypair", "-alias", "ca", "-dname", "CN=kcl-relay test CA", "-ext", "bc:c", *key, "-keystore", ca],
            ["-exportcert", "-rfc", "-alias", "ca", "-keystore", ca, "-file", ca_pem],
            ["-genkeypair", "-alias", "node", "-dname", "CN=localhost", *key, "-keystore", node],
            ["-certreq", "-alias", "node", "-keystore", node, "-file", csr],
            ["-gencert", "-rfc", "-alias", "ca", "-keystore", ca, "-infile", csr, "-outfile", node_pem, "-ext", san,
             "-ext", "eku=serverAuth", "-validity", "30"],
            ["-importcert", "-noprompt", "-alias", "ca", "-keystore", node, "-file", ca_pem],
            ["-importcert", "-alias", "node", "-keystore", node, "-file", node_pem],
        ):  # fmt: skip
            subprocess.run([keytool, *map(str, step), *common], check=True, capture_output=True, timeout=120)
        return cls(path=node, password=password, ca_pem=ca_pem, names=names)

    def settings(self, path: Path) -> list[str]:
        """The node's settings, its keystore copied to `path` (where the node's user can read it)."""
        shutil.copyfile(self.path, path)
        return [
            "-Cssl.http.enabled=true",
            f"-Cssl.keystore_filepath={path}",
            f"-Cssl.keystore_password={self.password}",
            f"-Cssl.keystore_key_password={self.password}",
        ]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _service_account() -> pwd.struct_passwd | None:
    """Who runs the node: None for the current (non-root) user, else the unprivileged system user `crate`."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SERVICE_USER)
    # Another test session may create it at the same moment: then useradd fails and the lookup succeeds.
    subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
        capture_output=True,
    )
    return pwd.getpwnam(SERVICE_USER)


def _extracted(tarball: Path) -> Path:
    """The tarball unpacked once per machine into a shared temp folder (world-readable, so `crate` can run it)."""
    digest = hashlib.sha256(f"{tarball.resolve()}:{tarball.stat().st_size}:{tarball.stat().st_mtime}".encode())
    name = f"{tarball.name.split('.tar')[0]}-{digest.hexdigest()[:8]}"
    cache = Path(tempfile.gettempdir()) / "kcl-relay-cratedb" / name
    home = cache / "home"
    if (home / "bin" / "crate").exists():
        return home
    cache.mkdir(parents=True, exist_ok=True)
    os.chmod(cache.parent, 0o755)
    os.chmod(cache, 0o755)
    staging = Path(tempfile.mkdtemp(prefix="unpack-", dir=cache))
    with tarfile.open(tarball) as archive:
        archive.extractall(staging, filter="data") if hasattr(tarfile, "data_filter") else archive.extractall(staging)
    (top,) = [path for path in staging.iterdir() if path.is_dir()]
    for path in [top, *top.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))
    try:
        os.rename(top, home)  # atomic: a concurrent session either sees the whole folder or unpacks its own
    except OSError:
        if not (home / "bin" / "crate").exists():
            raise
    shutil.rmtree(staging, ignore_errors=True)
    return home


@dataclass
class CrateServer:
    home: Path
    base: Path
    account: pwd.struct_passwd | None
    http_port: int = field(default_factory=_free_port)
    psql_port: int = field(default_factory=_free_port)
    transport_port: int = field(default_factory=_free_port)
    heap: str = field(default_factory=lambda: os.environ.get(HEAP_ENV, "1g"))
    tls: Keystore | None = None  # HTTPS (only) on the HTTP port
    hosts: str = "127.0.0.1"  # network.host: the addresses it listens on
    process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.http_port}"

    def url(self, schema: str = "doc") -> str:
        return f"crate://crate@127.0.0.1:{self.http_port}/{schema}"

    def start(self, timeout: float = START_TIMEOUT) -> float:
        """Start the node (again, after stop(): same data, same ports); return the seconds until it answered."""
        for name in ("data", "logs", "gc"):
            (self.base / name).mkdir(exist_ok=True)
        tls = self.tls.settings(self.base / "keystore.p12") if self.tls else []
        if self.account is not None:
            for path in [self.base, *self.base.rglob("*")]:
                os.chown(path, self.account.pw_uid, self.account.pw_gid)
        command = [
            str(self.home / "bin" / "crate"),
            f"-Cnetwork.host={self.hosts}",
            "-Cdiscovery.type=single-node",
            f"-Chttp.port={self.http_port}",
            f"-Cpsql.port={self.psql_port}",
            f"-Ctransport.tcp.port={self.transport_port}",
            f"-Cpath.data={self.base / 'data'}",
            f"-Cpath.logs={self.base / 'logs'}",
            "-Ccluster.name=kcl-relay-tests",
            *tls,
        ]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.base),
            "CRATE_HEAP_SIZE": self.heap,
            "CRATE_GC_LOG_DIR": str(self.base / "gc"),
        }
        kwargs: dict[str, Any] = {}
        if self.account is not None:
            kwargs = {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
        started = time.monotonic()
        with open(self.base / "console.log", "ab") as console:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, env=env, cwd=self.base,
                start_new_session=True, **kwargs,
            )  # fmt: skip
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"CrateDB exited with code {self.process.returncode}:\n{self.log_tail()}")
            if self._answers():
                return time.monotonic() - started
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"CrateDB did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def _open(self, request: str | urllib.request.Request, timeout: float) -> Any:
        """urlopen, trusting the node's own CA when it speaks TLS."""
        context = ssl.create_default_context(cafile=str(self.tls.ca_pem)) if self.tls else None
        return urllib.request.urlopen(request, timeout=timeout, context=context)

    def _answers(self) -> bool:
        try:
            with self._open(self.http_url + "/", timeout=2) as response:
                return bool(json.loads(response.read()).get("ok"))
        except (OSError, ValueError):
            return False

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the node (SIGTERM, then SIGKILL after `timeout`); its data stays for start()."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def sql(self, statement: str, args: list[Any] | None = None) -> dict[str, Any]:
        """One statement over HTTP, without the relay's code in between (test setup and EXPLAIN)."""
        body = json.dumps({"stmt": statement, "args": args or []}).encode()
        request = urllib.request.Request(self.http_url + "/_sql", body, {"Content-Type": "application/json"})
        try:
            with self._open(request, timeout=60) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise RuntimeError(json.loads(error.read()).get("error", {}).get("message", str(error))) from None

    def version(self) -> str:
        with self._open(self.http_url + "/", timeout=5) as response:
            return str(json.loads(response.read())["version"]["number"])

    def log_tail(self, chars: int = 3000) -> str:
        logs = [self.base / "console.log", *sorted((self.base / "logs").glob("*.log"))]
        return "\n".join(path.read_text(errors="replace")[-chars:] for path in logs if path.exists())


@contextlib.contextmanager
def running_cratedb(
    tarball: Path | None, tls: Keystore | None = None, hosts: str = "127.0.0.1"
) -> Iterator[CrateServer]:
    """A started node, stopped and deleted on exit. CrateUnavailable without a tarball; RuntimeError if it fails.

    With `tls`, its HTTP port speaks HTTPS only, with that keystore; `hosts`: the addresses it listens on."""
    if tarball is None:
        raise CrateUnavailable(
            f"no CrateDB tarball: set {TARBALL_ENV} (or CRATEDB_SQLALCHEMY_URL for a running server); "
            f"{SHARED}/crate-*.tar.gz not found"
        )
    home = _extracted(tarball)
    jdk = home / "jdk"
    if not jdk.exists():
        with contextlib.suppress(FileExistsError):
            jdk.symlink_to(find_java_home())
    account = _service_account()
    base = Path(tempfile.mkdtemp(prefix="kcl-relay-crate-"))
    server = CrateServer(home=home, base=base, account=account, tls=tls, hosts=hosts)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
