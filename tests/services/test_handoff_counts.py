"""The trigger-kept `handoff_counts` behind stats and metrics, on both engines: exact after
every kind of write (insert, transition, delete, truncate), after compaction, and seeded from
the rows already there when the migration runs."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, text

from app.db import migrations, tables
from app.db.uow import Database, UnitOfWork
from app.domain.clock import FakeClock
from app.domain.states import HandoffState, ReasonCode
from app.services import handoff_queries, ingestion_handoff
from app.worker.handler import NoopHandler
from app.worker.runner import Worker
from tests.conftest import MIGRATIONS
from tests.support import claim, hand_off, version

Counts = dict[tuple[HandoffState, ReasonCode], int]


def counts(db: Database) -> tuple[Counts, Counts]:
    """(the maintained counts, a count of the rows themselves)."""
    with db.transaction(write=False) as uow:
        return uow.queries.counts(), uow.handoffs.counts()


def test_counts_follow_inserts_transitions_and_deletes(db: Database, clock: FakeClock) -> None:
    hand_off(db, clock, *(version(f"r{i}", "v1") for i in range(5)))
    hand_off(db, clock, version("r0", "v2"))  # supersedes r0's queued v1
    kept, real = counts(db)
    assert kept == real
    assert kept[(HandoffState.QUEUED, ReasonCode.ENQUEUED)] == 5
    assert kept[(HandoffState.SUPERSEDED, ReasonCode.SUPERSEDED_BY_NEWER_PAYLOAD)] == 1

    claim(db, clock, 2)
    clock.advance(timedelta(hours=1))
    Worker(db, NoopHandler(), clock=clock)._rescue()  # the two leases expired
    clock.advance(timedelta(minutes=1))  # past the crash delay
    Worker(db, NoopHandler(), clock=clock).drain()
    kept, real = counts(db)
    assert kept == real
    assert kept == {
        (HandoffState.SUCCEEDED, ReasonCode.SUCCEEDED): 5,
        **{k: v for k, v in kept.items() if k[0] is HandoffState.SUPERSEDED},
    }

    with db.transaction() as uow:
        first = uow.conn.execute(select(func.min(tables.handoffs.c.id))).scalar_one()
        uow.conn.execute(
            delete(tables.handoff_events).where(tables.handoff_events.c.handoff_id == first)
        )
        uow.conn.execute(
            delete(tables.ingestion_jobs).where(tables.ingestion_jobs.c.handoff_id == first)
        )
        uow.conn.execute(delete(tables.handoffs).where(tables.handoffs.c.id == first))
    kept, real = counts(db)
    assert kept == real
    assert sum(kept.values()) == 5


def test_a_rolled_back_write_leaves_the_counts_alone(db: Database, clock: FakeClock) -> None:
    hand_off(db, clock, version("a", "v1"))
    before = counts(db)

    def give_up(uow: UnitOfWork) -> None:
        records = [version("b", "v1")]
        ingestion_handoff.enqueue(uow, records, now=clock.now(), actor="client:t", store=True)
        raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        db.run(give_up)
    assert counts(db) == before


def test_compaction_folds_deltas_into_one_row_per_pair(db: Database, clock: FakeClock) -> None:
    for i in range(4):
        hand_off(db, clock, version(f"r{i}", "v1"))
    Worker(db, NoopHandler(), clock=clock).drain()
    kept, _ = counts(db)
    db.run(handoff_queries.compact_counts)
    with db.transaction(write=False) as uow:
        rows = uow.conn.execute(select(tables.handoff_counts)).all()
        assert uow.queries.counts() == kept
    assert len(rows) == len({(r.state, r.reason_code) for r in rows})  # one row per pair
    db.run(handoff_queries.compact_counts)  # again: nothing changes
    assert counts(db)[0] == kept


def test_stats_and_metrics_read_the_maintained_counts(db: Database, clock: FakeClock) -> None:
    hand_off(db, clock, version("a", "v1"), version("b", "v1"))
    clock.advance(10)
    with db.transaction(write=False) as uow:
        stats = handoff_queries.stats(uow, now=clock.now(), stuck_after=timedelta(minutes=15))
        rows = handoff_queries.state_rows(uow, now=clock.now())
    assert stats.totals["queued"] == 2
    assert stats.oldest_age_seconds["queued"] == 10
    assert rows.rows[HandoffState.QUEUED] == 2
    assert rows.rows[HandoffState.SUCCEEDED] == 0
    assert rows.oldest_age_seconds[HandoffState.QUEUED] == 10
    assert set(rows.rows) == set(HandoffState)


def test_truncating_the_handoffs_empties_the_counts(pg_url: str, clock: FakeClock) -> None:
    db = Database(pg_url)
    try:
        hand_off(db, clock, version("a", "v1"))
        with db.transaction() as uow:
            uow.conn.execute(
                text("TRUNCATE ingestion_handoffs, handoff_events, ingestion_jobs CASCADE")
            )
        assert counts(db) == ({}, {})
    finally:
        db.dispose()


def test_the_migration_counts_the_rows_already_there(empty_db_url: str, tmp_path: Path) -> None:
    older = tmp_path / "older"
    (older / "sqlite").mkdir(parents=True)
    for path in sorted(MIGRATIONS.glob("*.sql")):
        if path.stem < "20260301000035":
            shutil.copy(path, older / path.name)
            shutil.copy(MIGRATIONS / "sqlite" / path.name, older / "sqlite" / path.name)
    migrations.apply(empty_db_url, older)  # the previous release, with handoffs in it
    db = Database(empty_db_url)
    try:
        clock = FakeClock()
        hand_off(db, clock, version("a", "v1"), version("b", "v1"))
        claim(db, clock, 1)
        migrations.apply(empty_db_url, MIGRATIONS)
        kept, real = counts(db)
        assert kept == real
        assert sum(kept.values()) == 2
    finally:
        db.dispose()
