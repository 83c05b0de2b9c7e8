"""The DynamoDB Streams Kinesis adapter's jar (com.amazonaws:dynamodb-streams-kinesis-adapter), for dynamodb+cdc://.

Only a DynamoDB Streams source needs it: the launcher's DynamoDbStreamsLauncher is compiled and run with it on the
class path (kcl_relay/kcl/launcher.py). Found in KCL_RELAY_STREAMS_ADAPTER_JAR, in the KCL jars folder, in the cache
or Maven's local repository, else fetched once with `mvn dependency:copy` into the cache. Its SHA-256 is pinned: a
jar with other bytes is refused, whoever put it there. Version 2.0.1 is built on KCL 3.1.1; it runs on the KCL 3.1.3
jars of amazon-kclpy (the adapter's classes only call KCL APIs that 3.1.3 keeps; tests/e2e runs it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from kcl_relay.kcl.daemon import SetupError, cache_dir

__all__ = ["ADAPTER", "ADAPTER_SHA256", "find_adapter_jar"]

GROUP, ARTIFACT, VERSION = "com.amazonaws", "dynamodb-streams-kinesis-adapter", "2.0.1"
ADAPTER = f"{GROUP}:{ARTIFACT}:{VERSION}"
JAR = f"{ARTIFACT}-{VERSION}.jar"
ADAPTER_SHA256 = "7113d35ffdd787182395aa60dea5253d3fe5d0c8c31044d11d2aa555a6cdc680"  # Maven Central's 2.0.1 jar
ENV = "KCL_RELAY_STREAMS_ADAPTER_JAR"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _candidates(jars: Path) -> list[Path]:
    m2 = Path.home() / ".m2" / "repository" / GROUP.replace(".", "/") / ARTIFACT / VERSION / JAR
    return [jars / JAR, cache_dir() / "jars" / JAR, m2]


def _checked(path: Path) -> Path:
    if _sha256(path) != ADAPTER_SHA256:
        raise SetupError(f"{path} is not the {ADAPTER} jar of Maven Central (its SHA-256 differs): remove it")
    return path


def find_adapter_jar(jars: Path, fetch: bool = True) -> Path:
    """The adapter's jar, checked; fetched with mvn into the cache when nowhere else. SetupError otherwise."""
    given = os.environ.get(ENV)
    if given:
        if not Path(given).is_file():
            raise SetupError(f"{ENV}={given}: no such file")
        return _checked(Path(given))
    for path in _candidates(jars):
        if path.is_file():
            return _checked(path)
    if fetch and shutil.which("mvn"):
        folder = cache_dir() / "jars"
        folder.mkdir(parents=True, exist_ok=True)
        command = ["mvn", "-q", "-B", "dependency:copy", f"-Dartifact={ADAPTER}", f"-DoutputDirectory={folder}"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as error:
            raise SetupError(f"fetching {ADAPTER} with mvn failed: {error}") from None
        if result.returncode == 0 and (folder / JAR).is_file():
            return _checked(folder / JAR)
    raise SetupError(
        f"a DynamoDB Streams source needs the {ADAPTER} jar: `mvn dependency:get -Dartifact={ADAPTER}` "
        f"(or set {ENV} to the jar)"
    )
