"""Generated DynamoDB streams at DynamoDB's limits, replayed from a file into CrateDB, PostgreSQL and SQLite.

Each example (tests/support/dynamo_items.py makes them) is written as an NDJSON file of Kinesis Data Streams for
DynamoDB records (bare, or as Lambda envelopes) and replayed through `kcl-relay load table
kinesis+dynamodb+cdc:///PATH.ndjson?batch-size=N` (relay.replay_file, the KCL's pipeline) into a fresh table.
The run must end by itself with exit code 0 and no dead letter, and the table, read back as verify and show
table read it (sink/reader.py: key + data + aux), must equal the reference model item by item, exactly.

Hypothesis profiles (env KCL_RELAY_HYPOTHESIS_PROFILE): `ci` (default) runs a fixed, derandomized set of a few
hundred examples in all; `long` runs ten times as many, random, and keeps failing examples in .hypothesis/.
The longer run:

    KCL_RELAY_HYPOTHESIS_PROFILE=long python3 -m pytest -q -rP tests/integration/test_generated_items.py

(CRATEDB_SQLALCHEMY_URL=crate://HOST:4200 to use a running CrateDB instead of starting one.)
KCL_RELAY_HYPOTHESIS_EXAMPLES=N sets the examples per database for either profile; KCL_RELAY_KEEP_FAILED=DIR
keeps the NDJSON file of each failing example there, to replay by hand with `kcl-relay load table`.
What a database cannot hold by its documented limits is not generated there (dynamo_items.Limits): on CrateDB, key
attribute names that are no valid sub-column name (such a table is refused with one line before anything starts).
NUL characters (PostgreSQL stores them escaped) and names beyond U+FFFF (CrateDB stores them escaped in aux) are
generated everywhere.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from kcl_relay.cdc.layout import valid_object_key
from kcl_relay.relay import replay_file
from kcl_relay.sink.admin import run_sql
from kcl_relay.sink.dialect import DEADLETTERS_SUFFIX, SETTINGS_SUFFIX, TOMBSTONES_SUFFIX
from kcl_relay.sink.reader import TargetReader
from kcl_relay.sink.target import TargetSpec, parse_target
from kcl_relay.source.url import parse_source
from tests.support import dynamo_cases as cases
from tests.support import dynamo_items as gen
from tests.support.corpus import write_ndjson
from tests.support.tables import relation

pytestmark = pytest.mark.timeout(900)

PROFILE_ENV, EXAMPLES_ENV = "KCL_RELAY_HYPOTHESIS_PROFILE", "KCL_RELAY_HYPOTHESIS_EXAMPLES"
KEEP_ENV = "KCL_RELAY_KEEP_FAILED"  # a directory: the NDJSON of each failing example is moved there
RUN_DEADLINE = 240.0  # seconds one replay may take before the test calls it stuck
RETRY_TIMEOUT = 60  # retry-timeout= of the replay: a stuck retry loop ends the run instead of hanging it
_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    "print_blob": True,
}
settings.register_profile("ci", derandomize=True, database=None, **_COMMON)
settings.register_profile(
    "long", derandomize=False, database=DirectoryBasedExampleDatabase(".hypothesis/examples"), **_COMMON
)
PROFILE = os.environ.get(PROFILE_ENV, "ci")
# Examples per database: CrateDB's DDL per table is the slow part, so it gets fewer.
EXAMPLES = {"ci": {"cratedb": 60, "postgresql": 100, "sqlite": 140}, "long": {"cratedb": 600, "postgresql": 1000,
            "sqlite": 1400}}  # fmt: skip

LIMITS = {
    "cratedb": gen.Limits(key_name=valid_object_key),
    "postgresql": gen.Limits(),
    "sqlite": gen.Limits(),
}


@pytest.fixture(scope="module")
def module_sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('generated') / 'relay.db'}"


def database_url(request: pytest.FixtureRequest, database: str) -> str:
    return request.getfixturevalue("module_sqlite_url" if database == "sqlite" else f"{database}_url")


def drop_tables(target: TargetSpec) -> None:
    for suffix in ("", TOMBSTONES_SUFFIX, DEADLETTERS_SUFFIX, SETTINGS_SUFFIX):
        run_sql(target, f"DROP TABLE IF EXISTS {relation(target, suffix)}", commit=True)


def dead_letters(target: TargetSpec) -> list[tuple[Any, ...]]:
    table = relation(target, DEADLETTERS_SUFFIX)
    if target.dialect == "cratedb":
        run_sql(target, f"REFRESH TABLE {table}")
    return run_sql(target, f"SELECT reason, sequence_number FROM {table}")[1]


def replay(path: Path, batch_size: int, target: TargetSpec) -> int:
    """replay_file in a thread: its exit code, or a failure when it is still running after RUN_DEADLINE."""
    spec = parse_source(f"kinesis+dynamodb+cdc://{path}?batch-size={batch_size}&retry-timeout={RETRY_TIMEOUT}")
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(replay_file(spec, target))
        except BaseException as error:  # reported below, with the example
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True, name="replay")
    thread.start()
    thread.join(RUN_DEADLINE)
    if thread.is_alive():
        pytest.fail(f"the replay did not end within {RUN_DEADLINE:.0f} s")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return int(outcome[0])


def stored_table(target: TargetSpec, schema: gen.KeySchema) -> dict[tuple[Any, ...], Any]:
    reader = TargetReader(target, schema.types)  # type: ignore[arg-type]
    try:
        return {gen.stored_identity(schema, row.key): row.item for row in reader.rows()}
    finally:
        reader.close()


def check_scenario(scenario: gen.Scenario, url: str, workdir: Path) -> None:
    """Replay the scenario into a fresh table of `url`; the table must equal the reference model."""
    target = parse_target(url, f"gen_{uuid.uuid4().hex[:12]}")
    path = workdir / f"{target.table}.ndjson"
    write_ndjson(path, gen.records(scenario), envelope=scenario.envelope)
    kept = False
    try:
        code = replay(path, scenario.batch_size, target)
        assert code == 0, f"the replay exited {code}"
        letters = dead_letters(target)
        assert not letters, f"{len(letters)} dead letter(s), e.g. {letters[:2]!r:.600}"
        expected = gen.final_state(scenario.schema, scenario.events)
        if not expected and not run_sql(target, f"SELECT 1 FROM {relation(target)} LIMIT 1")[1]:
            return
        got = stored_table(target, scenario.schema)
        problems = gen.compare_tables(expected, got, numbers_as_text=target.dialect == "cratedb")
        assert not problems, "the table differs from DynamoDB's:\n" + "\n".join(problems)
    except BaseException:
        kept = True  # the records of the last failing example stay, to replay by hand (KEEP_DIR)
        raise
    finally:
        if kept and os.environ.get(KEEP_ENV):
            path.replace(Path(os.environ[KEEP_ENV]) / f"{target.dialect}-batch{scenario.batch_size}.ndjson")
        path.unlink(missing_ok=True)
        drop_tables(target)


def examples(database: str) -> int:
    override = os.environ.get(EXAMPLES_ENV)
    return int(override) if override else EXAMPLES[PROFILE][database]


@pytest.fixture
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("streams")


@pytest.mark.parametrize(
    "database",
    [
        "cratedb",
        "postgresql",
        "sqlite",
    ],
)
def test_generated_streams_end_with_dynamodbs_table(
    database: str, request: pytest.FixtureRequest, workdir: Path
) -> None:
    url = database_url(request, database)
    seen: Counter[str] = Counter()

    @settings(settings.get_profile(PROFILE), max_examples=examples(database))
    @given(scenario=gen.scenarios(LIMITS[database]))
    def property_holds(scenario: gen.Scenario) -> None:
        kinds = [note.split()[0] for note in scenario.notes]
        kinds.append("composite key" if scenario.schema.range_name else "hash key")
        for kind in kinds:
            event(kind)
        check_scenario(scenario, url, workdir)
        seen.update(["example", *kinds, *(event.op for event in scenario.events)])

    property_holds()
    # What ran (pytest -rP shows it): examples, wide and large items, key shapes, operations.
    print(f"{database}: {dict(sorted(seen.items()))}", file=sys.stderr)


# Each fixed case in small batches (1: every record alone, the slowest for CrateDB's columns) and in one batch.
FIXED_RUNS = [(name, size) for name in {**cases.FIXED, **cases.REGRESSIONS} for size in (1, 10_000)]


@pytest.mark.parametrize("database", ["cratedb", "postgresql", "sqlite"])
@pytest.mark.parametrize(("case", "batch_size"), FIXED_RUNS)
def test_fixed_cases_at_dynamodbs_limits(
    database: str, case: str, batch_size: int, request: pytest.FixtureRequest, workdir: Path
) -> None:
    make = {**cases.FIXED, **cases.REGRESSIONS}[case]
    known = cases.KNOWN_FAILURES.get((case, database, batch_size))
    if known:
        request.applymarker(pytest.mark.xfail(reason=known, strict=True))
    check_scenario(make(LIMITS[database], batch_size), database_url(request, database), workdir)
