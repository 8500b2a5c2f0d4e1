"""`submit`: a submission in a transaction of its own. On PostgreSQL one record takes a single
statement that commits by itself when it settles the version (new, or a duplicate), and writes
nothing when the version must be decided against its reference's unfinished work; the full
transaction then decides it. Every outcome is checked on both engines, through `submit`."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import delete

from app.db import tables
from app.db.uow import Database
from app.domain.clock import FakeClock
from app.domain.states import EnqueueOutcome, HandoffState, ReasonCode
from app.services import ingestion_handoff
from app.services.scrape_storage import submit
from tests.support import CLIENT, Boom, at, claim_one, count_rows, events, store_then_fail, version

TABLES = ("scrape_records", "ingestion_handoffs", "handoff_events")


def counts(db: Database) -> dict[str, int]:
    with db.transaction(write=False) as uow:
        return {t: count_rows(uow, t) for t in TABLES}


def test_one_new_version_is_stored_queued_and_recorded(db: Database, clock: FakeClock) -> None:
    (result,) = submit(db, [version("sku-1", "v1")], now=clock.now(), actor=CLIENT)
    assert (result.outcome, result.first_outcome, result.state) == (
        EnqueueOutcome.CREATED,
        EnqueueOutcome.CREATED,
        HandoffState.QUEUED,
    )
    assert counts(db) == {t: 1 for t in TABLES}
    (event,) = events(db, result.handoff_id)
    assert (event.actor, event.to_state, event.reason_code) == (
        CLIENT,
        HandoffState.QUEUED,
        ReasonCode.ENQUEUED,
    )


def test_one_duplicate_answers_its_first_outcome_and_writes_nothing(
    db: Database, clock: FakeClock
) -> None:
    record = version("sku-1", "v1")
    (first,) = submit(db, [record], now=clock.now(), actor=CLIENT)
    before = counts(db)
    (again,) = submit(db, [record], now=clock.now(), actor=CLIENT)
    assert (again.outcome, again.first_outcome, again.handoff_id) == (
        EnqueueOutcome.DUPLICATE,
        EnqueueOutcome.CREATED,
        first.handoff_id,
    )
    assert counts(db) == before


def test_a_duplicate_brings_back_a_purged_record(db: Database, clock: FakeClock) -> None:
    """Its handoff stays as it was (a duplicate), but the payload a retry needs is there again."""
    record = version("sku-1", "v1")
    (first,) = submit(db, [record], now=clock.now(), actor=CLIENT)
    with db.transaction() as uow:
        uow.conn.execute(delete(tables.scrape_records))
    (again,) = submit(db, [record], now=clock.now(), actor=CLIENT)
    assert (again.outcome, again.handoff_id) == (EnqueueOutcome.DUPLICATE, first.handoff_id)
    with db.transaction(write=False) as uow:
        assert uow.records.get(record.reference_id, record.payload_hash) is not None
    assert counts(db) == {t: 1 for t in TABLES}


@pytest.mark.parametrize(
    ("claimed", "outcome", "state"),
    [
        (False, EnqueueOutcome.SUPERSEDED_PREVIOUS, HandoffState.QUEUED),
        (True, EnqueueOutcome.QUEUED_BEHIND_RUNNING, HandoffState.WAITING),
    ],
)
def test_a_version_of_a_busy_reference_is_decided_and_stored(
    db: Database,
    clock: FakeClock,
    claimed: bool,
    outcome: EnqueueOutcome,
    state: HandoffState,
) -> None:
    submit(db, [version("sku-1", "v1", fetched_at=at(0))], now=clock.now(), actor=CLIENT)
    if claimed:
        claim_one(db, clock)
    (result,) = submit(
        db, [version("sku-1", "v2", fetched_at=at(1))], now=clock.now(), actor=CLIENT
    )
    assert (result.outcome, result.state) == (outcome, state)
    assert counts(db)["scrape_records"] == 2


def test_an_older_version_is_rejected_stale_but_stored(db: Database, clock: FakeClock) -> None:
    submit(db, [version("sku-1", "new", fetched_at=at(5))], now=clock.now(), actor=CLIENT)
    (result,) = submit(
        db, [version("sku-1", "old", fetched_at=at(1))], now=clock.now(), actor=CLIENT
    )
    assert result.outcome is EnqueueOutcome.REJECTED_STALE
    assert counts(db)["scrape_records"] == 2


def test_a_batch_takes_one_transaction(db: Database, clock: FakeClock) -> None:
    records = [version(f"sku-{i}", "v1") for i in range(3)]
    results = submit(db, records, now=clock.now(), actor=CLIENT)
    assert [r.outcome for r in results] == [EnqueueOutcome.CREATED] * 3
    assert counts(db) == {t: 3 for t in TABLES}


def test_the_single_statement_writes_nothing_for_a_version_it_cannot_settle(
    pg_url: str, clock: FakeClock
) -> None:
    """The outbox on the fast path: a refused version leaves no record without its handoff,
    even for the moment before the full transaction runs (or if that never runs)."""
    db = Database(pg_url)
    try:
        submit(db, [version("sku-1", "v1", fetched_at=at(0))], now=clock.now(), actor=CLIENT)
        before = counts(db)
        for later in (version("sku-1", "v2", fetched_at=at(1)), version("sku-1", "v0")):
            assert ingestion_handoff.enqueue_whole(db, later, now=clock.now(), actor=CLIENT) is None
            assert counts(db) == before
    finally:
        db.dispose()


def test_autocommit_units_of_work_are_for_postgresql(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    try:
        with pytest.raises(ValueError, match="PostgreSQL"), db.transaction(autocommit=True):
            pass
    finally:
        db.dispose()


def test_a_pooled_connection_leaves_autocommit_behind(pg_url: str, clock: FakeClock) -> None:
    """One pooled connection: after an autocommit unit of work (ended well or by an error), the
    next transaction on it is a transaction again, and rolls back whole."""
    db = Database(pg_url, pool_size=1)
    try:
        submit(db, [version("sku-1", "v1")], now=clock.now(), actor=CLIENT)
        with pytest.raises(Boom), db.transaction(autocommit=True):
            raise Boom
        with pytest.raises(Boom):
            store_then_fail(db, clock, "sku-2")
        assert counts(db) == {t: 1 for t in TABLES}
    finally:
        db.dispose()


def test_whole_statements_are_for_postgresql(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    try:
        with pytest.raises(ValueError, match="PostgreSQL"):
            db.execute_whole("SELECT 1", {})
    finally:
        db.dispose()


def test_a_whole_statement_retries_on_a_new_connection_after_the_server_dropped_one(
    pg_url: str, clock: FakeClock
) -> None:
    db = Database(pg_url, pool_size=1)
    try:
        ((first,),) = [r.values() for r in db.execute_whole("SELECT pg_backend_pid()", {})]
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        (result,) = submit(db, [version("sku-1", "v1")], now=clock.now(), actor=CLIENT)
        assert result.outcome is EnqueueOutcome.CREATED
        ((second,),) = [r.values() for r in db.execute_whole("SELECT pg_backend_pid()", {})]
        assert second != first
        assert counts(db) == {t: 1 for t in TABLES}
    finally:
        db.dispose()
