"""The vocabulary of app/domain/states.py is mirrored value for value by the migrations' CHECKs."""

from __future__ import annotations

import re
from typing import get_args

import pytest

from app.domain.documents import Kind
from app.domain.states import (
    ACTIVE_STATES,
    REASON_DESCRIPTIONS,
    RUNNABLE_STATES,
    TERMINAL_STATES,
    EnqueueOutcome,
    HandoffState,
    ReasonCode,
    RetryClass,
)
from app.services.ingestion import RESCUER
from app.settings import REPO_ROOT

MIGRATIONS = REPO_ROOT / "db" / "migrations"
ENGINES = {"postgres": MIGRATIONS, "sqlite": MIGRATIONS / "sqlite"}

_TABLE = re.compile(r"CREATE TABLE (\w+) \((.*?)\n\);", re.DOTALL)
_CHECK_IN = re.compile(r"^\s*(\w+)\s+[^\n]*?CHECK \(\1 IN \(([^)]*)\)\)", re.MULTILINE)
_PARTIAL_INDEX = re.compile(
    r"CREATE UNIQUE INDEX (\w+) ON \w+ \(\w+\)\s+WHERE state (?:IN \(([^)]*)\)|= ('[^']*'))"
)
_QUOTED = re.compile(r"'([^']*)'")
_ALTER = re.compile(r"ALTER TABLE (\w+)\n(.*?);", re.DOTALL)
_ADD_CHECK_IN = re.compile(r"ADD CONSTRAINT \w+ CHECK \((\w+) IN \(([^)]*)\)\)")
_DOMAIN_IN = re.compile(r"CREATE DOMAIN (\w+) AS TEXT CHECK \(VALUE IN \(([^)]*)\)\);")
_TO_DOMAIN = re.compile(r"ALTER COLUMN (\w+) TYPE (\w+)")


def schema_sql(engine: str) -> str:
    files = sorted(ENGINES[engine].glob("*.sql"))
    assert len(files) >= 3, f"no migrations found under {ENGINES[engine]}"
    return "\n".join(path.read_text() for path in files)


def check_lists(engine: str) -> dict[tuple[str, str], set[str]]:
    """{(table, column): the values its `CHECK (column IN (...))` allows}."""
    found: dict[tuple[str, str], set[str]] = {}
    sql = schema_sql(engine)
    for table, body in _TABLE.findall(sql):
        for column, values in _CHECK_IN.findall(body):
            # A SQLite table rebuild creates `<table>_new`, then renames it.
            found[(table.removesuffix("_new"), column)] = set(_QUOTED.findall(values))
    domains = {name: set(_QUOTED.findall(values)) for name, values in _DOMAIN_IN.findall(sql)}
    for table, body in _ALTER.findall(sql):
        for column, values in _ADD_CHECK_IN.findall(body):
            found[(table, column)] = set(_QUOTED.findall(values))
        for column, type_name in _TO_DOMAIN.findall(body):
            # PostgreSQL moves a list into a domain (its CHECK is parsed once per session).
            if type_name in domains:  # not handoff_actor: a LIKE check, tested on its own
                found[(table, column)] = domains[type_name]
    return found


def values(enum: type[HandoffState | ReasonCode | RetryClass | EnqueueOutcome]) -> set[str]:
    return {member.value for member in enum}


def values_of(states: frozenset[HandoffState]) -> set[str]:
    return {s.value for s in states}


@pytest.fixture(params=sorted(ENGINES))
def checks(request: pytest.FixtureRequest) -> dict[tuple[str, str], set[str]]:
    """The CHECK lists of one engine's migrations."""
    return check_lists(str(request.param))


def test_the_parser_finds_every_enumerated_column(
    checks: dict[tuple[str, str], set[str]],
) -> None:
    assert set(checks) == {
        ("ingestion_handoffs", "state"),
        ("ingestion_handoffs", "reason_code"),
        ("ingestion_handoffs", "enqueue_outcome"),
        ("handoff_events", "from_state"),
        ("handoff_events", "to_state"),
        ("handoff_events", "reason_code"),
        ("ingestion_jobs", "outcome"),
        ("ingestion_jobs", "retry_class"),
        ("ingestion_jobs", "reason_code"),
        ("documents", "kind"),
    }


def test_document_kinds_are_exactly_the_extractors_kinds(
    checks: dict[tuple[str, str], set[str]],
) -> None:
    assert checks[("documents", "kind")] == set(get_args(Kind))


@pytest.mark.parametrize(
    ("table", "column"),
    [
        ("ingestion_handoffs", "state"),
        ("handoff_events", "from_state"),
        ("handoff_events", "to_state"),
    ],
)
def test_state_columns_allow_exactly_the_handoff_states(
    checks: dict[tuple[str, str], set[str]], table: str, column: str
) -> None:
    assert checks[(table, column)] == values(HandoffState)


@pytest.mark.parametrize("table", ["ingestion_handoffs", "handoff_events", "ingestion_jobs"])
def test_reason_code_columns_allow_exactly_the_reason_codes(
    checks: dict[tuple[str, str], set[str]], table: str
) -> None:
    assert checks[(table, "reason_code")] == values(ReasonCode)


def test_enqueue_outcomes_are_the_enum_minus_duplicate(
    checks: dict[tuple[str, str], set[str]],
) -> None:
    # A duplicate never creates a row, so the stored outcome is never `duplicate`.
    assert checks[("ingestion_handoffs", "enqueue_outcome")] == values(EnqueueOutcome) - {
        EnqueueOutcome.DUPLICATE.value
    }


def test_attempt_retry_classes_are_exactly_the_retry_classes(
    checks: dict[tuple[str, str], set[str]],
) -> None:
    assert checks[("ingestion_jobs", "retry_class")] == values(RetryClass)


def test_attempt_outcomes_cover_what_the_ingestion_service_writes(
    checks: dict[tuple[str, str], set[str]],
) -> None:
    source = (REPO_ROOT / "app" / "services" / "ingestion.py").read_text()
    written = set(re.findall(r'outcome="(\w+)"', source))
    assert written, "the parser found no outcome= in app/services/ingestion.py"
    assert written <= checks[("ingestion_jobs", "outcome")]


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_the_partial_unique_indexes_use_the_active_and_waiting_states(engine: str) -> None:
    found = {
        name: set(_QUOTED.findall(in_list or single))
        for name, in_list, single in _PARTIAL_INDEX.findall(schema_sql(engine))
    }
    assert found == {
        "ingestion_handoffs_one_active": values_of(ACTIVE_STATES),
        "ingestion_handoffs_one_waiting": {HandoffState.WAITING.value},
    }


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_the_runnable_index_covers_exactly_the_runnable_states(engine: str) -> None:
    match = re.search(
        r"CREATE INDEX ingestion_handoffs_runnable ON \w+ \([^)]*\)\s+WHERE state IN \(([^)]*)\)",
        schema_sql(engine),
    )
    assert match is not None
    assert set(_QUOTED.findall(match.group(1))) == values_of(RUNNABLE_STATES)


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_every_actor_the_code_uses_passes_the_actor_check(engine: str) -> None:
    sql = schema_sql(engine)
    # The column's CHECK, or the domain that took it over on PostgreSQL.
    match = re.search(r"CREATE DOMAIN handoff_actor AS TEXT CHECK \(([^\n]*)\);", sql) or re.search(
        r"actor\s+TEXT\s+NOT NULL CHECK \(([^\n]*)\),", sql
    )
    assert match is not None
    prefixes = {
        p.rstrip("%") for p in re.findall(r"(?:actor|VALUE) LIKE '([^']*)'", match.group(1))
    }
    assert prefixes == {"client:", "worker:", "system:", "operator:"}
    assert any(RESCUER.startswith(p) for p in prefixes)


def test_both_engines_enumerate_the_same_values() -> None:
    assert check_lists("postgres") == check_lists("sqlite")


def test_the_state_groups_partition_the_states() -> None:
    waiting = {HandoffState.WAITING}
    assert ACTIVE_STATES | waiting | TERMINAL_STATES == set(HandoffState)
    assert not ACTIVE_STATES & TERMINAL_STATES
    assert RUNNABLE_STATES < ACTIVE_STATES


def test_every_reason_code_is_documented() -> None:
    assert set(REASON_DESCRIPTIONS) == set(ReasonCode)
    assert all(text.strip() for text in REASON_DESCRIPTIONS.values())


def test_both_engines_have_the_same_migration_ids() -> None:
    names = {engine: [p.name for p in sorted(d.glob("*.sql"))] for engine, d in ENGINES.items()}
    assert names["postgres"] == names["sqlite"]
