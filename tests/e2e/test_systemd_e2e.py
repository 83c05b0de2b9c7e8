"""The systemd service as docs/deploy.md installs it: scripts/install-service, the template unit, its ExecStart.

Runs as root only (it installs into /opt/kcl-relay, /etc and creates the system user kcl-relay); CI runs as root.
systemd is not PID 1 in a container, so the unit is not started by systemctl: its ExecStart line is parsed from
the unit file and run the way systemd would run it (as User=, with the EnvironmentFile's variables and
Environment=, STATE_DIRECTORY and CACHE_DIRECTORY made and owned by the user), against the emulators.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import sqlite3
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from kcl_relay.localaws.server import LocalAws
from tests.support.e2e import cdc_record, new_stream, put_records

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "scripts" / "kcl-relay@.service"
INSTALLED_UNIT = Path("/etc/systemd/system/kcl-relay@.service")
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.skipif(os.geteuid() != 0, reason="installs into /opt and /etc and adds a system user: needs root"),
]


def service_section(path: Path) -> dict[str, list[str]]:
    """The [Service] settings of a unit file: key -> values in order (keys like Environment= repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def expand(text: str, instance: str) -> str:
    """The unit specifiers this unit uses (systemd.unit(5)), for a system service."""
    for spec, value in (("%i", instance), ("%H", socket.gethostname()), ("%C", "/var/cache"), ("%S", "/var/lib")):
        text = text.replace(spec, value)
    return text


def environment_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


@pytest.fixture(scope="module")
def installed() -> Path:
    """scripts/install-service, as docs/deploy.md says (again: it is safe to repeat, and installs this checkout)."""
    done = subprocess.run([str(ROOT / "scripts" / "install-service")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return INSTALLED_UNIT


def test_the_installed_unit_verifies_and_keeps_secrets_out(installed: Path) -> None:
    assert installed.read_text() == UNIT.read_text()
    instance = f"verify{uuid.uuid4().hex[:6]}"
    done = subprocess.run(
        ["systemd-analyze", "verify", f"{installed.parent}/kcl-relay@{instance}.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    service = service_section(installed)
    assert service["RestartPreventExitStatus"] == ["2"], "bad input: no restart loop"
    assert service["User"] == ["kcl-relay"] and service["StateDirectory"] == ["kcl-relay/%i"]
    assert service["EnvironmentFile"] == ["/etc/kcl-relay/%i.env"]
    exec_start = shlex.split(service["ExecStart"][0])
    assert exec_start[0] == "/opt/kcl-relay/venv/bin/kcl-relay" and "%H-%i" in exec_start
    assert not any("@" in arg or "://" in arg for arg in exec_start), "no URL, no credentials on the command line"
    assert not [line for line in service.get("Environment", []) if "SECRET" in line or "URL" in line]
    venv_packages = subprocess.run(
        ["/opt/kcl-relay/venv/bin/python", "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    ).stdout.lower()
    assert "kcl-relay==" in venv_packages and "amazon-kclpy==" in venv_packages
    assert "pytest" not in venv_packages and "moto" not in venv_packages, "runtime dependencies only"


def test_exec_start_as_the_service_user_relays_records(installed: Path, aws: LocalAws) -> None:
    instance = f"e2e{uuid.uuid4().hex[:6]}"
    stream = new_stream(aws)
    put_records(aws.client("kinesis"), stream, [cdc_record("INSERT", f"k{n}", 1_000_000 + n) for n in range(25)])
    state = Path("/var/lib/kcl-relay") / instance
    properties = Path(f"/etc/kcl-relay/{instance}.properties")
    env_file = Path(f"/etc/kcl-relay/{instance}.env")
    properties.write_text(
        f"streamName = {stream}\napplicationName = systemd-{instance}\nregionName = us-east-1\n"
        f"kinesisEndpoint = {aws.endpoint_url}\ndynamoDBEndpoint = {aws.endpoint_url}\nmetricsLevel = NONE\n"
        "shardSyncIntervalMillis = 1000\nkclrelay.table = orders\nkclrelay.once = true\n"
    )
    properties.chmod(0o644)
    # What install-service makes: root's, 0600; the secrets never appear in the unit or on the command line.
    env_file.touch(mode=0o600)
    env_file.write_text(
        f"CRATEDB_SQLALCHEMY_URL=sqlite:///{state}/relay.db\nAWS_ACCESS_KEY_ID=test\nAWS_SECRET_ACCESS_KEY=test\n"
    )
    try:
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600 and env_file.stat().st_uid == 0
        service = service_section(installed)
        user = service["User"][0]
        denied = subprocess.run(["runuser", "-u", user, "--", "cat", str(env_file)], capture_output=True)
        assert denied.returncode != 0, "the service user cannot read its secrets file; systemd reads it as root"
        # What systemd makes before ExecStart: StateDirectory= and CacheDirectory=, owned by User=.
        directories = {
            "STATE_DIRECTORY": Path("/var/lib") / expand(service["StateDirectory"][0], instance),
            "CACHE_DIRECTORY": Path("/var/cache") / expand(service["CacheDirectory"][0], instance),
        }
        for folder in directories.values():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.chown(folder, user, user)
        env = {"PATH": SYSTEMD_PATH, "HOME": "/var/lib/kcl-relay", "USER": user, "LOGNAME": user}
        env |= {key: str(value) for key, value in directories.items()}
        env |= dict(expand(line, instance).split("=", 1) for line in service.get("Environment", []))
        env |= environment_file(Path(expand(service["EnvironmentFile"][0], instance)))
        command = shlex.split(expand(service["ExecStart"][0], instance))
        done = subprocess.run(
            ["runuser", "-u", user, "--", "env", "-i", *(f"{key}={value}" for key, value in env.items()), *command],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"worker {socket.gethostname()}-{instance} of application systemd-{instance}" in done.stderr
        assert f"logs in {state}/kcl-relay-systemd-{instance}/run-" in done.stderr
        with sqlite3.connect(state / "relay.db") as connection:
            (rows,) = connection.execute("SELECT count(*) FROM orders").fetchone()
        assert rows == 25
        owners = {path.owner() for path in state.rglob("*")}
        assert owners == {user}, f"everything the worker wrote belongs to {user}: {owners}"
    finally:
        properties.unlink(missing_ok=True)
        env_file.unlink(missing_ok=True)
        shutil.rmtree(state, ignore_errors=True)
