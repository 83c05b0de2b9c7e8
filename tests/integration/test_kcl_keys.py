"""kcl-relay's KCL key lists (kcl/properties.py, checked before any JVM starts) are what the jars read.

The launcher's --kcl-keys lists, from the jars it runs on, the keys the multilang configurator resolves (BeanUtils on
MultiLangDaemonConfiguration, as KinesisClientLibConfigurator does). A KCL upgrade that adds, drops or moves a key
(e.g. flattens FanoutConfigBean) fails here, loudly, instead of the check quietly refusing a real key or passing an
ignored one.
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from kcl_relay.kcl import launcher
from kcl_relay.kcl.daemon import SetupError, find_jars, find_java
from kcl_relay.kcl.properties import (
    FANOUT_BEAN,
    KCL_CLIENT_BUILDERS,
    KCL_CREDENTIALS_BUILDERS,
    KCL_FANOUT_KEYS,
    KCL_FLATTENED_BEANS,
    KCL_KEYS,
    KCL_VERSION,
    is_kcl_key,
)


@pytest.fixture(scope="module")
def jar() -> dict[str, set[str]]:
    try:
        jars = find_jars()
    except SetupError as error:
        pytest.skip(f"needs the KCL jars: {error}")
    if not (launcher.built_dir(jars) / launcher.COMPLETE).is_file():
        try:
            launcher.find_javac()
        except SetupError as error:
            pytest.skip(f"the launcher is not built, and cannot be here: {error}")
    return launcher.kcl_keys(jars)


def nested(jar: dict[str, set[str]], bean: str) -> set[str]:
    return {name.split(".", 1)[1] for name in jar["nested"] if name.split(".", 1)[0] == bean}


def test_the_jars_are_the_kcl_version_the_messages_name(jar: dict[str, set[str]]) -> None:
    assert jar["version"] == {KCL_VERSION}


def test_the_top_level_keys_are_the_jars(jar: dict[str, set[str]]) -> None:
    top = jar["key"] | jar["daemon"]
    assert not top - KCL_KEYS, f"keys the KCL reads that kcl-relay refuses: {sorted(top - KCL_KEYS)}"
    assert not KCL_KEYS - top, f"keys kcl-relay passes that the KCL ignores: {sorted(KCL_KEYS - top)}"
    assert jar["daemon"] == {"executableName", "processingLanguage", "maxActiveThreads"}


def test_the_fanout_keys_are_the_jars_and_only_nested(jar: dict[str, set[str]]) -> None:
    assert nested(jar, FANOUT_BEAN) == KCL_FANOUT_KEYS
    assert not KCL_FANOUT_KEYS & jar["key"]  # not flattened: at top level the KCL ignores them
    assert all(is_kcl_key(f"{FANOUT_BEAN}.{name}") and not is_kcl_key(name) for name in KCL_FANOUT_KEYS)


def test_the_other_nested_beans_are_the_flattened_ones(jar: dict[str, set[str]]) -> None:
    beans = {name.split(".", 1)[0] for name in jar["nested"]}
    assert beans == KCL_FLATTENED_BEANS | {FANOUT_BEAN}
    for bean in KCL_FLATTENED_BEANS:
        keys = nested(jar, bean)
        assert keys and keys <= jar["key"], f"{bean}: {sorted(keys - jar['key'])} are not at the top level"


def test_the_builders_are_the_jars(jar: dict[str, set[str]]) -> None:
    assert jar["builder"] == KCL_CLIENT_BUILDERS | KCL_CREDENTIALS_BUILDERS
    assert all(is_kcl_key(f"{builder}.endpointOverride") for builder in KCL_CLIENT_BUILDERS)


def test_the_keys_are_listed_whatever_the_kcl_version(jar: dict[str, set[str]], tmp_path: Path) -> None:
    # An upgraded KCL must show its keys (the launcher refuses to run it, not to list them): a multilang jar that
    # says 3.2.0, first on the class path.
    jars = find_jars()
    built = launcher.ensure_built(jars)
    multilang = next(jars.glob("amazon-kinesis-client-multilang-3*.jar"))
    other = tmp_path / "amazon-kinesis-client-multilang-3.2.0.jar"
    pom = "META-INF/maven/software.amazon.kinesis/amazon-kinesis-client-multilang/pom.properties"
    with zipfile.ZipFile(multilang) as source, zipfile.ZipFile(other, "w") as copy:
        for entry in source.infolist():
            data = source.read(entry)
            copy.writestr(entry, data.replace(b"version=3.1.3", b"version=3.2.0") if entry.filename == pom else data)
    classpath = f"{built}:{other}:{jars}/*"
    done = subprocess.run(
        [find_java(), "-cp", classpath, launcher.MAIN_CLASS, launcher.KCL_KEYS_FLAG],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "version 3.2.0" in lines
    assert {line.split(" ", 1)[1] for line in lines if line.startswith("key ")} == jar["key"]
