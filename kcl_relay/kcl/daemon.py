"""Find Java and the KCL jars, and run the MultiLangDaemon as a child process."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

MIN_JAVA = 17
DAEMON_CLASS = "software.amazon.kinesis.multilang.MultiLangDaemon"
JVM_OPTIONS = [
    # moto rejects the SDK's default CBOR encoding of Kinesis calls; JSON works with AWS and every emulator.
    "-Daws.cborEnabled=false",
    "-Xms64m",
]


class SetupError(RuntimeError):
    """Java or the jars are missing: reported as one line naming the fix, exit code 2, nothing started."""


def find_java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        raise SetupError(
            f"Java {MIN_JAVA}+ not found: install it (apt-get install -y openjdk-17-jre-headless) or set JAVA_HOME"
        )
    try:
        banner = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError) as error:
        raise SetupError(f"cannot run {java}: {error}") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', banner)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise SetupError(
            f"{java} is Java {major or 'unknown'}; the KCL needs Java {MIN_JAVA}+: "
            "install openjdk-17-jre-headless or set JAVA_HOME"
        )
    return java


def find_jars() -> Path:
    """KCL_RELAY_JARS, else the jars amazon-kclpy was installed with (by scripts/install-kcl-jars)."""
    candidates = []
    if os.environ.get("KCL_RELAY_JARS"):
        candidates.append(Path(os.environ["KCL_RELAY_JARS"]))
    try:
        import amazon_kclpy

        candidates.append(Path(amazon_kclpy.__file__).parent / "jars")
    except ImportError:
        pass
    for folder in candidates:
        if any(folder.glob("amazon-kinesis-client-multilang-*.jar")):
            return folder
    raise SetupError(
        "KCL jars not found: run scripts/install-kcl-jars (fetches them with mvn) "
        "or set KCL_RELAY_JARS to a folder of them"
    )


class Daemon:
    """One MultiLangDaemon JVM in its own session: terminal signals reach kcl-relay only, which stops it gracefully."""

    def __init__(self, java: str, jars: Path, properties: Path, log_path: Path, env: dict[str, str]) -> None:
        extra = os.environ.get("KCL_RELAY_JVM_OPTIONS", "").split()
        self.command = [
            java,
            *JVM_OPTIONS,
            *extra,
            "-cp",
            f"{jars}/*",
            DAEMON_CLASS,
            "--properties-file",
            str(properties),
        ]
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        log_file.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def poll(self) -> int | None:
        return self.process.poll() if self.process else None

    def request_stop(self) -> None:
        """SIGTERM: the JVM's shutdown hook asks every processor to flush and checkpoint (shutdownGraceMillis)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])
