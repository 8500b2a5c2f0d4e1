"""services.reconcile on both engines: every planted inconsistency is found and repaired with
an event, a report changes nothing, a second run finds nothing, and repairs that meet a row
moved meanwhile skip it instead of overwriting it."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import delete, select, update

from app.db import tables
from app.db.uow import Database
from app.domain.clock import FakeClock
from app.domain.models import Lease
from app.domain.reconcile import Kind
from app.domain.retry import RetryPolicy
from app.domain.states import HandoffState, ReasonCode, RetryClass
from app.ingest.pipeline import IngestHandler
from app.ingest.sinks import DocumentStoreSink
from app.services import handoff_queries, ingestion, ingestion_handoff, reconcile
from app.services.ingestion import Failure
from app.worker.runner import Worker, WorkerConfig
from tests.support import (
    TABLES,
    WORKER,
    attempts,
    claim_one,
    events,
    get,
    hand_off_one,
    of_reference,
    version,
)

ACTOR = "operator:cli:tests"


def run(db: Database, clock: FakeClock, *, repair: bool) -> reconcile.Report:
    return reconcile.run(db, repair_them=repair, now=clock.now, actor=ACTOR)


def snapshot(db: Database) -> dict[str, list[Any]]:
    with db.transaction(write=False) as uow:
        return {
            t.name: [tuple(r) for r in uow.conn.execute(select(t).order_by(t.c.id))] for t in TABLES
        }


def sql(db: Database, statement: Any) -> None:
    with db.transaction() as uow:
        uow.conn.execute(statement)


def record_only(db: Database, clock: FakeClock, reference_id: str, body: str) -> None:
    """A stored version written around the outbox: no handoff."""
    with db.transaction() as uow:
        uow.records.insert([version(reference_id, body)], clock.now())


def completed(db: Database, clock: FakeClock, reference_id: str) -> int:
    hid = hand_off_one(db, clock, version(reference_id, "done")).handoff_id
    job = claim_one(db, clock)
    with db.transaction() as uow:
        ingestion.complete(uow, [job.lease], now=clock.now(), worker_id=WORKER)
    return hid


def failed(db: Database, clock: FakeClock, reference_id: str) -> int:
    hid = hand_off_one(db, clock, version(reference_id, "bad")).handoff_id
    job = claim_one(db, clock)
    with db.transaction() as uow:
        ingestion.fail(
            uow,
            job.lease,
            Failure(RetryClass.PERMANENT, "no"),
            now=clock.now(),
            worker_id=WORKER,
            policy=RetryPolicy(),
        )
    return hid


def set_attempt(db: Database, handoff_id: int, **values: Any) -> None:
    jobs = tables.ingestion_jobs
    sql(db, update(jobs).where(jobs.c.handoff_id == handoff_id).values(**values))


def plant_everything(db: Database, clock: FakeClock) -> dict[Kind, int]:
    """One inconsistency of every kind; returns the handoff id of each (0 for the record)."""
    # Claimed ones first: a claim takes the oldest runnable handoff.
    running = hand_off_one(db, clock, version("running", "x")).handoff_id
    claim_one(db, clock)
    set_attempt(db, running, finished_at=clock.now(), outcome="succeeded")
    left_open = completed(db, clock, "left-open")
    set_attempt(db, left_open, finished_at=None, outcome=None)
    lying_success = completed(db, clock, "lying-success")
    set_attempt(db, lying_success, outcome="failed")
    lying_failure = failed(db, clock, "lying-failure")
    set_attempt(db, lying_failure, outcome="succeeded")
    records = tables.scrape_records
    record_only(db, clock, "orphan", "no handoff")
    gone = hand_off_one(db, clock, version("gone", "deleted payload")).handoff_id
    sql(db, delete(records).where(records.c.reference_id == "gone"))
    corrupt = hand_off_one(db, clock, version("corrupt", "original")).handoff_id
    sql(db, update(records).where(records.c.reference_id == "corrupt").values(body=b"tampered"))
    return {
        Kind.RECORD_WITHOUT_HANDOFF: 0,
        Kind.PAYLOAD_MISSING: gone,
        Kind.PAYLOAD_HASH_MISMATCH: corrupt,
        Kind.RUNNING_WITHOUT_OPEN_ATTEMPT: running,
        Kind.ATTEMPT_LEFT_OPEN: left_open,
        Kind.SUCCEEDED_WITHOUT_SUCCESSFUL_ATTEMPT: lying_success,
        Kind.SUCCESSFUL_ATTEMPT_NOT_SUCCEEDED: lying_failure,
    }


def test_a_consistent_database_has_nothing_to_reconcile(db: Database, clock: FakeClock) -> None:
    completed(db, clock, "a")
    failed(db, clock, "b")
    hand_off_one(db, clock, version("c", "queued"))
    report = run(db, clock, repair=True)
    assert report.findings == []
    assert set(report.counts) == {k.value for k in Kind}
    assert sum(report.counts.values()) == 0


def test_a_report_finds_every_planted_inconsistency_and_changes_nothing(
    db: Database, clock: FakeClock
) -> None:
    planted = plant_everything(db, clock)
    before = snapshot(db)
    report = run(db, clock, repair=False)
    assert report.counts == {k.value: 1 for k in Kind}
    by_kind = {f.suspect.kind: f for f in report.findings}
    for kind, hid in planted.items():
        if hid:
            assert by_kind[kind].suspect.handoff_id == hid
    assert by_kind[Kind.RECORD_WITHOUT_HANDOFF].suspect.reference_id == "orphan"
    assert all(f.outcome == "found" for f in report.findings)
    assert snapshot(db) == before


def test_repair_fixes_each_inconsistency_with_an_event_and_a_second_run_finds_nothing(
    db: Database, clock: FakeClock
) -> None:
    planted = plant_everything(db, clock)
    clock.advance(1)
    report = run(db, clock, repair=True)
    assert [f.outcome for f in report.findings] == ["repaired"] * len(Kind)

    (orphan,) = of_reference(db, "orphan")
    assert (orphan.state, orphan.reason_code) == (HandoffState.QUEUED, ReasonCode.ENQUEUED)
    assert events(db, orphan.id)[-1].actor == ACTOR

    def moved(kind: Kind) -> tuple[HandoffState, ReasonCode]:
        h = get(db, planted[kind])
        last = events(db, h.id)[-1]
        assert (last.actor, last.at, last.to_state) == (ACTOR, clock.now(), h.state)
        assert last.detail is not None
        assert kind.value in last.detail
        return h.state, h.reason_code

    assert moved(Kind.PAYLOAD_MISSING) == (HandoffState.FAILED, ReasonCode.PAYLOAD_MISSING)
    assert moved(Kind.PAYLOAD_HASH_MISMATCH) == (
        HandoffState.FAILED,
        ReasonCode.PAYLOAD_HASH_MISMATCH,
    )
    assert moved(Kind.RUNNING_WITHOUT_OPEN_ATTEMPT) == (
        HandoffState.QUEUED,
        ReasonCode.LEASE_RELEASED,
    )
    assert moved(Kind.ATTEMPT_LEFT_OPEN) == (HandoffState.SUCCEEDED, ReasonCode.SUCCEEDED)
    (closed,) = attempts(db, planted[Kind.ATTEMPT_LEFT_OPEN])
    assert (closed.outcome, closed.finished_at) == ("succeeded", clock.now())
    for kind in (Kind.SUCCEEDED_WITHOUT_SUCCESSFUL_ATTEMPT, Kind.SUCCESSFUL_ATTEMPT_NOT_SUCCEEDED):
        assert moved(kind) == (HandoffState.QUEUED, ReasonCode.OPERATOR_RETRY)

    assert run(db, clock, repair=True).findings == []
    # The requeued handoffs run again; what they leave behind is consistent too.
    Worker(db, IngestHandler([DocumentStoreSink(db, clock)]), clock=clock).drain()
    assert get(db, planted[Kind.SUCCEEDED_WITHOUT_SUCCESSFUL_ATTEMPT]).state is (
        HandoffState.SUCCEEDED
    )
    assert run(db, clock, repair=False).findings == []


def test_a_row_moved_after_it_was_found_is_skipped_not_overwritten(
    db: Database, clock: FakeClock
) -> None:
    gone = hand_off_one(db, clock, version("gone", "x")).handoff_id
    records = tables.scrape_records
    sql(db, delete(records).where(records.c.reference_id == "gone"))
    record_only(db, clock, "orphan", "y")
    found = reconcile.find(db)
    assert [f.suspect.kind for f in found] == [Kind.RECORD_WITHOUT_HANDOFF, Kind.PAYLOAD_MISSING]
    # Meanwhile an operator cancels the handoff and a client submits the orphan's version.
    with db.transaction() as uow:
        ingestion_handoff.cancel(uow, gone, now=clock.now(), actor="operator:other")
    hand_off_one(db, clock, version("orphan", "y"))
    done = reconcile.repair(db, found, now=clock.now, actor=ACTOR)
    assert [f.outcome for f in done] == ["skipped", "skipped"]
    assert get(db, gone).state is HandoffState.CANCELLED
    assert len(of_reference(db, "orphan")) == 1


def test_a_lease_claimed_again_after_it_was_found_is_left_to_its_new_worker(
    db: Database, clock: FakeClock
) -> None:
    hid = hand_off_one(db, clock, version("r", "x")).handoff_id
    claim_one(db, clock)
    set_attempt(db, hid, finished_at=clock.now(), outcome="released")
    found = reconcile.find(db)
    assert [f.suspect.kind for f in found] == [Kind.RUNNING_WITHOUT_OPEN_ATTEMPT]
    # The real worker gives the lease back and another claims it before the repair runs.
    with db.transaction() as uow:
        ingestion.release(uow, [Lease(hid, 1)], now=clock.now(), worker_id=WORKER)
    job = claim_one(db, clock, worker="w2")
    (skipped,) = reconcile.repair(db, found, now=clock.now, actor=ACTOR)
    assert skipped.outcome == "skipped"
    after = get(db, hid)
    assert (after.state, after.lease_token, after.lease_owner) == (HandoffState.RUNNING, 2, "w2")
    with db.transaction() as uow:  # the new lease still finalizes
        assert ingestion.complete(uow, [job.lease], now=clock.now(), worker_id="w2")


def test_an_orphan_of_a_busy_reference_never_makes_a_second_active_handoff(
    db: Database, clock: FakeClock
) -> None:
    first = hand_off_one(db, clock, version("r", "v1")).handoff_id
    claim_one(db, clock)  # running
    record_only(db, clock, "r", "v2")
    record_only(db, clock, "r", "v3")
    report = run(db, clock, repair=True)
    assert [f.outcome for f in report.findings] == ["repaired", "repaired"]
    states = sorted(h.state.value for h in of_reference(db, "r"))
    assert states == ["running", "superseded", "waiting"]
    assert get(db, first).state is HandoffState.RUNNING
    with db.transaction(write=False) as uow:
        assert uow.handoffs.active_count_per_reference() == 1
    assert run(db, clock, repair=False).findings == []


def test_a_running_handoff_whose_payload_is_gone_fails_and_frees_its_reference(
    db: Database, clock: FakeClock
) -> None:
    hid = hand_off_one(db, clock, version("r", "v1")).handoff_id
    job = claim_one(db, clock)
    waiting = hand_off_one(db, clock, version("r", "v2")).handoff_id
    records = tables.scrape_records
    sql(db, delete(records).where(records.c.payload_hash == job.handoff.payload_hash))
    report = run(db, clock, repair=True)
    assert [(f.suspect.kind, f.outcome) for f in report.findings] == [
        (Kind.PAYLOAD_MISSING, "repaired")
    ]
    assert get(db, hid).reason_code is ReasonCode.PAYLOAD_MISSING
    (attempt,) = attempts(db, hid)
    assert (attempt.outcome, attempt.reason_code) == ("failed", "payload_missing")
    assert get(db, waiting).state is HandoffState.QUEUED  # promoted
    with db.transaction() as uow:  # the worker's lease is fenced off
        assert ingestion.complete(uow, [job.lease], now=clock.now(), worker_id=WORKER) == []
    assert run(db, clock, repair=False).findings == []


def test_closing_an_attempt_left_open_keeps_why_on_the_real_transition(
    db: Database, clock: FakeClock
) -> None:
    hid = hand_off_one(db, clock, version("r", "x")).handoff_id
    claim_one(db, clock)
    with db.transaction() as uow:
        ingestion_handoff.cancel(uow, hid, now=clock.now(), actor="operator:alice")
    set_attempt(db, hid, finished_at=None, outcome=None)  # as if the cancel had left it open
    (found,) = run(db, clock, repair=True).findings
    assert (found.suspect.kind, found.outcome) == (Kind.ATTEMPT_LEFT_OPEN, "repaired")
    (closed,) = attempts(db, hid)
    assert closed.outcome == "cancelled"
    with db.transaction(write=False) as uow:
        why = handoff_queries.detail(uow, hid, now=clock.now()).why
    assert why.startswith("Cancelled by operator:alice")


def test_repairs_racing_a_worker_leave_one_active_handoff_per_reference_and_nothing_to_find(
    db: Database, clock: FakeClock
) -> None:
    for i in range(20):
        hand_off_one(db, clock, version(f"r{i}", "v1"))
        record_only(db, clock, f"r{i}", "v2")  # a newer version nobody handed off
    worker = Worker(
        db,
        IngestHandler([DocumentStoreSink(db, clock)]),
        clock=clock,
        config=WorkerConfig(claim_batch=3),
    )
    errors: list[BaseException] = []

    def drain() -> None:
        try:
            for _ in range(50):
                worker.run_once()
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=drain)
    thread.start()
    report = run(db, clock, repair=True)
    thread.join()
    assert errors == []
    assert report.counts[Kind.RECORD_WITHOUT_HANDOFF.value] == 20
    assert {f.outcome for f in report.findings} <= {"repaired", "skipped"}
    with db.transaction(write=False) as uow:
        assert uow.handoffs.active_count_per_reference() <= 1
    worker.drain()
    assert run(db, clock, repair=True).findings == []
    for i in range(20):
        assert {h.state for h in of_reference(db, f"r{i}")} <= {
            HandoffState.SUCCEEDED,
            HandoffState.SUPERSEDED,
        }
