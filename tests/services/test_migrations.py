"""Migrations on both engines: idempotent, safe to run from several processes at once, giving
exactly the schema app/db/tables.py and the stores rely on."""

from __future__ import annotations

import multiprocessing
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Integer, LargeBinary, insert, inspect, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.types import TypeEngine

from app.db import migrations, tables
from app.db.tables import metadata
from app.db.uow import Database
from app.domain.errors import SchemaOutdated
from app.domain.states import ACTIVE_STATES, HandoffState
from tests.conftest import MIGRATIONS
from tests.services import migrate_procs

SPAWN = multiprocessing.get_context("spawn")
ALL_IDS = sorted(p.stem for p in MIGRATIONS.glob("*.sql"))

#: What the stores rely on beyond tables.py: ON CONFLICT targets and the one-slot rules.
UNIQUE_CONSTRAINTS = {
    "scrape_records": {"scrape_records_version_key": ["reference_id", "payload_hash"]},
    "ingestion_handoffs": {"ingestion_handoffs_pair_key": ["reference_id", "payload_hash"]},
    "handoff_events": {},
    "ingestion_jobs": {"ingestion_jobs_lease_key": ["handoff_id", "lease_token"]},
    "documents": {
        "documents_id_key": ["id"],
        "documents_version_key": ["reference_id", "payload_hash"],
    },
}
#: Index name -> (columns, unique, the states its WHERE names, or None for a full index).
INDEXES: dict[str, dict[str, tuple[list[str], bool, set[str] | None]]] = {
    "scrape_records": {},  # its unique version key only
    "ingestion_handoffs": {
        "ingestion_handoffs_one_active": (
            ["reference_id"],
            True,
            {s.value for s in ACTIVE_STATES},
        ),
        "ingestion_handoffs_one_waiting": (["reference_id"], True, {HandoffState.WAITING.value}),
        "ingestion_handoffs_runnable": (["run_after", "id"], False, {"queued", "retry_wait"}),
        "ingestion_handoffs_leases": (["lease_expires_at"], False, {"running"}),
        "ingestion_handoffs_state_created": (["state", "created_at"], False, None),
        # Partial (finished_at IS NOT NULL), but it names no state.
        "ingestion_handoffs_finished": (["finished_at", "state"], False, set()),
    },
    "handoff_events": {"handoff_events_handoff_idx": (["handoff_id", "id"], False, None)},
    "ingestion_jobs": {},
    "documents": {"documents_one_current": (["reference_id"], True, set())},
}
#: PostgreSQL columns typed with a domain (the value lists; see migration 036), by column.
PG_DOMAINS = {
    "ingestion_handoffs.state": "handoff_state",
    "ingestion_handoffs.reason_code": "handoff_reason_code",
    "ingestion_handoffs.enqueue_outcome": "handoff_enqueue_outcome",
    "handoff_events.actor": "handoff_actor",
    "handoff_events.from_state": "handoff_state",
    "handoff_events.to_state": "handoff_state",
    "handoff_events.reason_code": "handoff_reason_code",
    "ingestion_jobs.reason_code": "handoff_reason_code",
    # The checks of the rows every enqueue and claim writes (migration 038).
    "ingestion_handoffs.attempts": "handoff_count",
    "ingestion_handoffs.failures": "handoff_count",
    "ingestion_handoffs.crashes": "handoff_count",
    "scrape_records.reference_id": "scrape_reference_id",
    "scrape_records.payload_hash": "scrape_payload_hash",
}
#: Full-text search is engine-specific, so tables.py leaves it out: PostgreSQL has a generated
#: tsvector column with a GIN index, SQLite an FTS5 table (and its shadow tables) with triggers.
PG_SEARCH_COLUMN, PG_SEARCH_INDEX, SQLITE_FTS = (
    "search_vector",
    "documents_search_idx",
    "documents_fts",
)


def app_tables(url: str) -> dict[str, Any]:
    """The reflected schema of the application's tables (yoyo's bookkeeping left out)."""
    db = Database(url)
    try:
        insp = inspect(db.engine)
        names = [
            n for n in insp.get_table_names() if not n.startswith(("_yoyo", "yoyo", SQLITE_FTS))
        ]
        return {
            name: {
                "columns": [c for c in insp.get_columns(name) if c["name"] != PG_SEARCH_COLUMN],
                "pk": insp.get_pk_constraint(name)["constrained_columns"],
                "unique": insp.get_unique_constraints(name),
                "indexes": [i for i in insp.get_indexes(name) if i["name"] != PG_SEARCH_INDEX],
            }
            for name in names
        }
    finally:
        db.dispose()


def summary(url: str) -> dict[str, Any]:
    """The reflected schema as plain, comparable values."""
    return {
        name: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in t["columns"]],
            sorted(u["name"] for u in t["unique"]),
            sorted(i["name"] for i in t["indexes"]),
        )
        for name, t in app_tables(url).items()
    }


def sqlite_storage(type_: TypeEngine[Any]) -> str:
    """The type a SQLite migration declares for a column of this SQLAlchemy type."""
    if isinstance(type_, Integer):
        return "INTEGER"
    if isinstance(type_, LargeBinary):
        return "BLOB"
    return "TEXT"  # text, JSON and timestamps (SQLAlchemy stores those as ISO text)


def where_states(options: dict[str, Any]) -> set[str] | None:
    where = options.get("postgresql_where", options.get("sqlite_where"))
    return None if where is None else set(re.findall(r"'([a-z_]+)'", str(where)))


# -- applying -------------------------------------------------------------------------------------


def test_applying_twice_is_a_no_op(empty_db_url: str) -> None:
    assert migrations.pending(empty_db_url, MIGRATIONS) == ALL_IDS
    assert migrations.apply(empty_db_url, MIGRATIONS) == ALL_IDS
    schema = summary(empty_db_url)
    assert set(schema) == set(metadata.tables)
    assert migrations.apply(empty_db_url, MIGRATIONS) == []
    assert migrations.pending(empty_db_url, MIGRATIONS) == []
    assert summary(empty_db_url) == schema


def test_both_engines_have_the_same_migrations() -> None:
    assert sorted(p.stem for p in (MIGRATIONS / "sqlite").glob("*.sql")) == ALL_IDS
    assert len(ALL_IDS) >= 3


@pytest.mark.slow
def test_processes_migrating_a_fresh_database_at_once_all_succeed_and_apply_it_once(
    empty_db_url: str,
) -> None:
    processes = 3
    barrier = SPAWN.Barrier(processes)
    results: Any = SPAWN.Queue()
    procs = [
        SPAWN.Process(
            target=migrate_procs.migrate, args=(empty_db_url, MIGRATIONS, barrier, results)
        )
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    errors = [o for o in outcomes if isinstance(o, str)]
    assert errors == []
    applied: list[str] = [m for o in outcomes if isinstance(o, list) for m in o]
    assert sorted(applied) == ALL_IDS  # every migration applied by exactly one process
    assert migrations.pending(empty_db_url, MIGRATIONS) == []
    assert set(app_tables(empty_db_url)) == set(metadata.tables)


# -- the schema -----------------------------------------------------------------------------------


def test_the_migrated_schema_has_exactly_the_tables_and_columns_of_tables_py(db_url: str) -> None:
    reflected = app_tables(db_url)
    assert set(reflected) == set(metadata.tables)
    postgres = db_url.startswith("postgresql")
    for name, table in metadata.tables.items():
        columns = {c["name"]: c for c in reflected[name]["columns"]}
        assert list(columns) == [c.name for c in table.columns], name
        assert reflected[name]["pk"] == [c.name for c in table.primary_key], name
        for column in table.columns:
            found = columns[column.name]
            where = f"{name}.{column.name}"
            if not column.primary_key:  # SQLite reports its rowid key as nullable
                assert found["nullable"] == column.nullable, where
            if postgres:
                dialect = postgresql.dialect()  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy
                stored = found["type"]
                if where in PG_DOMAINS:  # a checked list over its base type
                    assert isinstance(stored, postgresql.DOMAIN), where
                    assert stored.name == PG_DOMAINS[where], where
                    stored = type(stored.data_type)()  # its collation is the default one
                assert stored.compile(dialect) == column.type.compile(dialect), where
            else:
                assert str(found["type"]) == sqlite_storage(column.type), where


def test_the_migrated_schema_has_the_unique_constraints_the_stores_rely_on(db_url: str) -> None:
    reflected = app_tables(db_url)
    for name, expected in UNIQUE_CONSTRAINTS.items():
        found = {u["name"]: u["column_names"] for u in reflected[name]["unique"]}
        assert found == expected, name


def test_the_migrated_schema_has_the_partial_unique_and_lookup_indexes(db_url: str) -> None:
    reflected = app_tables(db_url)
    for name, expected in INDEXES.items():
        found = {
            i["name"]: (i["column_names"], bool(i["unique"]), where_states(i["dialect_options"]))
            for i in reflected[name]["indexes"]
            if not i.get("duplicates_constraint")  # PostgreSQL lists unique constraints too
        }
        assert found == expected, name


@pytest.mark.parametrize(
    ("table", "column", "bad"),
    [
        ("ingestion_handoffs", "state", "paused"),
        ("ingestion_handoffs", "reason_code", "because"),
        ("ingestion_handoffs", "enqueue_outcome", "duplicate"),
        ("handoff_events", "to_state", "paused"),
        ("handoff_events", "from_state", "paused"),
        ("handoff_events", "reason_code", "because"),
        ("handoff_events", "actor", "someone"),
        ("ingestion_jobs", "reason_code", "because"),
        ("ingestion_handoffs", "attempts", -1),
        ("ingestion_handoffs", "failures", -1),
        ("ingestion_handoffs", "crashes", -1),
        ("scrape_records", "reference_id", ""),
        ("scrape_records", "reference_id", "r" * 513),
        ("scrape_records", "payload_hash", "sha256:" + "0" * 63),
        ("scrape_records", "payload_hash", "sha256:" + "0" * 65),
        ("scrape_records", "payload_hash", "sha512:" + "0" * 64),
        ("scrape_records", "payload_hash", "0" * 71),
    ],
)
def test_a_value_outside_a_columns_list_is_refused(
    db_url: str, table: str, column: str, bad: str | int
) -> None:
    """The lists and formats are the database's, whether CHECK constraints (SQLite) or domains
    (PostgreSQL): the row with a valid value goes in, the same row with `bad` does not."""
    now = datetime.now(UTC)
    handoff = {
        "reference_id": "ref",
        "payload_hash": "sha256:" + "0" * 64,
        "source": "test",
        "fetched_at": now,
        "state": "queued",
        "reason_code": "enqueued",
        "enqueue_outcome": "created",
        "run_after": now,
        "created_at": now,
        "updated_at": now,
    }
    db = Database(db_url)
    try:
        with db.transaction() as uow:
            handoff_id = uow.conn.execute(
                insert(tables.handoffs).values(handoff).returning(tables.handoffs.c.id)
            ).scalar_one()
        rows = {
            "ingestion_handoffs": {**handoff, "reference_id": "other"},
            "handoff_events": {
                "handoff_id": handoff_id,
                "at": now,
                "actor": "client:test",
                "from_state": "queued",
                "to_state": "running",
                "reason_code": "claimed",
            },
            "scrape_records": {
                "reference_id": "ref",
                "payload_hash": "sha256:" + "0123456789abcdef" * 4,
                "source": "test",
                "fetched_at": now,
                "content_type": "text/html",
                "headers": {},
                "body": b"<p>ok</p>",
                "created_at": now,
            },
            "ingestion_jobs": {
                "handoff_id": handoff_id,
                "lease_token": 1,
                "attempt": 1,
                "worker_id": "w1",
                "claimed_at": now,
                "reason_code": "claimed",
            },
        }
        target = tables.metadata.tables[table]
        with pytest.raises(IntegrityError), db.transaction() as uow:
            uow.conn.execute(insert(target).values({**rows[table], column: bad}))
        with db.transaction() as uow:  # the same row with its listed value is fine
            uow.conn.execute(insert(target).values(rows[table]))
    finally:
        db.dispose()


_HEX_FORM = re.compile(r"sha256:[0-9a-f]{64}")
_HASH_LIKE = st.text(alphabet="0123456789abcdefABCDEFg\n é", min_size=62, max_size=66).map(
    lambda tail: "sha256:" + tail
)


def _domain_takes(conn: Connection, value: str) -> bool:
    try:
        with conn.begin_nested():
            conn.execute(text("SELECT CAST(:v AS scrape_payload_hash)"), {"v": value})
    except IntegrityError:  # check_violation
        return False
    return True


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.one_of(_HASH_LIKE, st.text(max_size=80)))
@example(value="sha256:" + "0123456789abcdef" * 4)
@example(value="sha256:" + "0" * 63 + "g")
@example(value="sha256:" + "A" * 64)
@example(value="sha256:" + "0" * 63 + "\n")
@example(value="sha256:" + "0" * 62 + "\n0")
@example(value="sha256:" + "0" * 63 + "é")
@example(value="sha256:" + " " + "0" * 63)
@example(value="SHA256:" + "0" * 64)
@example(value="sha256:" + "0" * 63)
@example(value="")
def test_the_payload_hash_domain_takes_what_the_pattern_it_replaced_took(
    pg_url: str, value: str
) -> None:
    """Migration 038 checks the hash's form with string functions instead of the pattern
    '^sha256:[0-9a-f]{64}$': the same strings pass (upper case, a newline before the end,
    non-ASCII, one digit short or over are all refused), on the examples and on any string."""
    value = value.replace("\x00", "")  # PostgreSQL text holds no NUL
    db = Database(pg_url)
    try:
        with db.transaction() as uow:
            assert _domain_takes(uow.conn, value) == bool(_HEX_FORM.fullmatch(value)), value
    finally:
        db.dispose()


def test_the_migrated_schema_has_its_engines_full_text_search(db_url: str) -> None:
    db = Database(db_url)
    try:
        insp = inspect(db.engine)
        if db_url.startswith("postgresql"):
            columns = {c["name"]: str(c["type"]) for c in insp.get_columns("documents")}
            assert columns[PG_SEARCH_COLUMN] == "TSVECTOR"
            with db.engine.connect() as conn:
                indexdef = conn.exec_driver_sql(
                    "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (PG_SEARCH_INDEX,)
                ).scalar_one()
            assert "USING gin (search_vector)" in indexdef
        else:
            assert SQLITE_FTS in insp.get_table_names()
            with db.engine.connect() as conn:
                triggers = set(
                    conn.exec_driver_sql(
                        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?",
                        ("documents",),
                    ).scalars()
                )
            assert triggers == {f"{SQLITE_FTS}_{op}" for op in ("insert", "update", "delete")}
    finally:
        db.dispose()


# -- refusing to run on an old schema -------------------------------------------------------------


def test_ensure_current_refuses_an_unmigrated_database_naming_handoff_migrate(
    empty_db_url: str,
) -> None:
    with pytest.raises(SchemaOutdated) as caught:
        migrations.ensure_current(empty_db_url, MIGRATIONS)
    assert "handoff migrate" in caught.value.message
    assert f"{len(ALL_IDS)} migration(s) pending" in caught.value.message
    assert caught.value.status == 503
    migrations.apply(empty_db_url, MIGRATIONS)
    migrations.ensure_current(empty_db_url, MIGRATIONS)  # current now: no error


def test_ensure_current_names_the_migration_a_database_is_missing(
    empty_db_url: str, tmp_path: Path
) -> None:
    older = tmp_path / "older"
    (older / "sqlite").mkdir(parents=True)
    for path in [*sorted(MIGRATIONS.glob("*.sql"))[:-1]]:
        shutil.copy(path, older / path.name)
        shutil.copy(MIGRATIONS / "sqlite" / path.name, older / "sqlite" / path.name)
    migrations.apply(empty_db_url, older)  # as deployed by the previous release
    migrations.ensure_current(empty_db_url, older)
    with pytest.raises(SchemaOutdated) as caught:
        migrations.ensure_current(empty_db_url, MIGRATIONS)
    assert ALL_IDS[-1] in caught.value.message
    assert ALL_IDS[0] not in caught.value.message
    assert "handoff migrate" in caught.value.message
    assert migrations.apply(empty_db_url, MIGRATIONS) == [ALL_IDS[-1]]
