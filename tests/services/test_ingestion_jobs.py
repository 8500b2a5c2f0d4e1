"""Jobs: claims with fenced leases, heartbeats, complete/fail by retry class, the rescuer, release
and operator actions — driven by a FakeClock, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import delete, text

from app.db import tables
from app.db.uow import Database
from app.domain.clock import FakeClock
from app.domain.errors import Conflict, LeaseLost, NotFound
from app.domain.models import ClaimedJob, Handoff, Lease
from app.domain.retry import RetryPolicy
from app.domain.states import HandoffState, ReasonCode, RetryClass
from app.services import ingestion, ingestion_handoff
from app.services.ingestion import Failure
from tests.support import (
    LEASE,
    WORKER,
    at,
    attempts,
    claim,
    claim_one,
    events,
    get,
    hand_off,
    hand_off_one,
    of_reference,
    version,
)

POLICY = RetryPolicy()
OPERATOR = "operator:alice"
Q, R, RW, F = (
    HandoffState.QUEUED,
    HandoffState.RUNNING,
    HandoffState.RETRY_WAIT,
    HandoffState.FAILED,
)


def queued(db: Database, clock: FakeClock, reference_id: str = "sku-1", body: str = "v1") -> int:
    return hand_off_one(db, clock, version(reference_id, body)).handoff_id


def fail(
    db: Database,
    clock: FakeClock,
    lease: Lease,
    failure: Failure,
    *,
    policy: RetryPolicy = POLICY,
) -> Handoff:
    with db.transaction() as uow:
        return ingestion.fail(
            uow, lease, failure, now=clock.now(), worker_id=WORKER, policy=policy, rand=lambda: 0.0
        )


def complete(db: Database, clock: FakeClock, *leases: Lease) -> list[Lease]:
    with db.transaction() as uow:
        return ingestion.complete(uow, list(leases), now=clock.now(), worker_id=WORKER)


def heartbeat(db: Database, clock: FakeClock, *leases: Lease) -> set[int]:
    with db.transaction() as uow:
        return ingestion.heartbeat(uow, list(leases), now=clock.now(), lease=LEASE)


def rescue(db: Database, clock: FakeClock, policy: RetryPolicy = POLICY) -> list[Handoff]:
    with db.transaction() as uow:
        return ingestion.rescue(uow, now=clock.now(), policy=policy)


def release(db: Database, clock: FakeClock, *leases: Lease) -> list[Lease]:
    with db.transaction() as uow:
        return ingestion.release(uow, list(leases), now=clock.now(), worker_id=WORKER)


def expire_and_rescue(db: Database, clock: FakeClock) -> list[Handoff]:
    clock.advance(LEASE + timedelta(seconds=1))
    return rescue(db, clock)


def snapshot(db: Database, handoff_id: int) -> tuple[object, ...]:
    """Everything a finalize could change: the row, its events and its attempts."""
    return (get(db, handoff_id), events(db, handoff_id), attempts(db, handoff_id))


# -- claim ----------------------------------------------------------------------------------------


def test_a_claim_takes_at_most_limit_handoffs_oldest_first(db: Database, clock: FakeClock) -> None:
    ids = []
    for i in range(5):
        ids.append(queued(db, clock, f"sku-{i}"))
        clock.advance(1)
    first = claim(db, clock, 3)
    assert sorted(j.handoff.id for j in first) == ids[:3]
    assert {j.handoff.state for j in first} == {R}
    assert sorted(j.handoff.id for j in claim(db, clock, 3)) == ids[3:]
    assert claim(db, clock, 3) == []


def test_a_claim_orders_by_run_after_not_by_age(db: Database, clock: FakeClock) -> None:
    older, younger = queued(db, clock, "sku-a"), queued(db, clock, "sku-b")
    jobs = {j.handoff.id: j for j in claim(db, clock, 2)}
    fail(db, clock, jobs[older].lease, Failure(RetryClass.TRANSIENT, "x"))  # due in 15 s
    release(db, clock, jobs[younger].lease)  # due now
    clock.advance(60)
    (first,) = claim(db, clock, 1)
    assert first.handoff.id == younger


def test_a_handoff_due_later_is_not_claimed_until_its_time(db: Database, clock: FakeClock) -> None:
    handoff_id = queued(db, clock)
    job = claim_one(db, clock)
    retried = fail(db, clock, job.lease, Failure(RetryClass.TRANSIENT, "timeout"))
    assert retried.run_after == clock.now() + timedelta(seconds=15)
    clock.advance(14)
    assert claim(db, clock) == []
    clock.advance(1)  # run_after == now is due
    assert claim_one(db, clock).handoff.id == handoff_id


def test_a_claim_loads_the_record_and_writes_the_event_and_attempt(
    db: Database, clock: FakeClock
) -> None:
    handoff_id = queued(db, clock, body="the payload")
    job = claim_one(db, clock)
    assert job.record is not None
    assert job.record.body == b"the payload"
    h = job.handoff
    assert (h.lease_owner, h.lease_expires_at, h.attempts) == (WORKER, clock.now() + LEASE, 1)
    last = events(db, handoff_id)[-1]
    assert (last.actor, last.from_state, last.to_state, last.reason_code, last.lease_token) == (
        f"worker:{WORKER}",
        Q,
        R,
        ReasonCode.CLAIMED,
        h.lease_token,
    )
    (attempt,) = attempts(db, handoff_id)
    assert (attempt.lease_token, attempt.attempt, attempt.worker_id, attempt.claimed_at) == (
        h.lease_token,
        1,
        WORKER,
        clock.now(),
    )
    assert attempt.finished_at is None
    assert attempt.outcome is None


def test_a_claim_of_a_handoff_whose_record_is_gone_has_no_record(
    db: Database, clock: FakeClock
) -> None:
    queued(db, clock)
    with db.transaction() as uow:
        uow.conn.execute(delete(tables.scrape_records))
    job = claim_one(db, clock)
    assert job.record is None


def test_each_claim_bumps_the_lease_token(db: Database, clock: FakeClock) -> None:
    queued(db, clock)
    tokens = []
    for _ in range(3):
        job = claim_one(db, clock)
        tokens.append(job.lease.token)
        release(db, clock, job.lease)
    assert tokens == [1, 2, 3]
    assert get(db, job.handoff.id).attempts == 3


def test_successive_claimers_never_share_a_handoff(db: Database, clock: FakeClock) -> None:
    for i in range(6):
        queued(db, clock, f"sku-{i}")
    a = {j.handoff.id for j in claim(db, clock, 4, worker="a")}
    b = {j.handoff.id for j in claim(db, clock, 4, worker="b")}
    assert len(a) == 4
    assert len(b) == 2
    assert not a & b


# -- heartbeat ------------------------------------------------------------------------------------


def test_a_heartbeat_extends_a_current_lease(db: Database, clock: FakeClock) -> None:
    job = (queued(db, clock), claim_one(db, clock))[1]
    clock.advance(50)
    assert heartbeat(db, clock, job.lease) == {job.handoff.id}
    assert get(db, job.handoff.id).lease_expires_at == clock.now() + LEASE
    clock.advance(50)  # past the first expiry, inside the extended one
    assert rescue(db, clock) == []
    assert get(db, job.handoff.id).state is R


def test_a_heartbeat_extends_only_current_leases(db: Database, clock: FakeClock) -> None:
    queued(db, clock, "sku-a")
    queued(db, clock, "sku-b")
    old_a, b = sorted(claim(db, clock, 2), key=lambda j: j.handoff.reference_id)
    expire_and_rescue(db, clock)  # both leases lost...
    clock.advance(POLICY.crash_delay)
    new_a, new_b = sorted(claim(db, clock, 2), key=lambda j: j.handoff.reference_id)
    complete(db, clock, new_b.lease)  # ...and b is finished by its new owner
    before = get(db, new_a.handoff.id).lease_expires_at
    clock.advance(10)
    assert heartbeat(db, clock, old_a.lease, b.lease, new_b.lease) == set()
    assert get(db, new_a.handoff.id).lease_expires_at == before
    assert heartbeat(db, clock, old_a.lease, new_a.lease) == {new_a.handoff.id}
    assert get(db, new_a.handoff.id).lease_expires_at == clock.now() + LEASE


def test_a_heartbeat_skips_a_row_another_transaction_holds_and_keeps_its_lease(
    pg_url: str, clock: FakeClock
) -> None:
    """PostgreSQL: the worker's loop heartbeats, so a row locked by another transaction (its
    result committing, an operator's cancel) must not hold the loop up. The lease is skipped,
    still reported held, and extended by the next beat once the lock has gone."""
    db = Database(pg_url)
    try:
        queued(db, clock, "sku-a")
        queued(db, clock, "sku-b")
        first, second = sorted(claim(db, clock, 2), key=lambda j: j.handoff.reference_id)
        before = get(db, first.handoff.id).lease_expires_at
        clock.advance(10)
        with psycopg.connect(pg_url) as other:
            other.execute(
                "SELECT 1 FROM ingestion_handoffs WHERE id = %s FOR UPDATE", (first.handoff.id,)
            )
            with db.transaction() as uow:
                uow.conn.execute(text("SET LOCAL lock_timeout = '2s'"))  # waiting would fail
                held = ingestion.heartbeat(
                    uow, [first.lease, second.lease], now=clock.now(), lease=LEASE
                )
            assert held == {first.handoff.id, second.handoff.id}
            assert get(db, first.handoff.id).lease_expires_at == before  # skipped this time
            assert get(db, second.handoff.id).lease_expires_at == clock.now() + LEASE
            other.rollback()
        assert heartbeat(db, clock, first.lease) == {first.handoff.id}
        assert get(db, first.handoff.id).lease_expires_at == clock.now() + LEASE
    finally:
        db.dispose()


def test_a_heartbeat_of_nothing_is_nothing(db: Database, clock: FakeClock) -> None:
    assert heartbeat(db, clock) == set()


# -- complete -------------------------------------------------------------------------------------


def test_complete_marks_the_handoff_succeeded_and_closes_its_attempt(
    db: Database, clock: FakeClock
) -> None:
    handoff_id = queued(db, clock)
    job = claim_one(db, clock)
    clock.advance(7)
    assert complete(db, clock, job.lease) == [job.lease]
    done = get(db, handoff_id)
    assert (done.state, done.reason_code, done.finished_at) == (
        HandoffState.SUCCEEDED,
        ReasonCode.SUCCEEDED,
        clock.now(),
    )
    assert (done.lease_owner, done.lease_expires_at) == (None, None)
    (attempt,) = attempts(db, handoff_id)
    assert (attempt.outcome, attempt.finished_at, attempt.reason_code) == (
        "succeeded",
        clock.now(),
        "succeeded",
    )


def test_a_complete_with_a_stale_token_is_refused_and_changes_nothing(
    db: Database, clock: FakeClock
) -> None:
    handoff_id = queued(db, clock)
    stale = claim_one(db, clock, worker="slow").lease
    expire_and_rescue(db, clock)
    clock.advance(POLICY.crash_delay)
    current = claim_one(db, clock, worker="fast").lease
    assert current.token == stale.token + 1
    before = snapshot(db, handoff_id)
    with pytest.raises(LeaseLost), db.transaction() as uow:
        ingestion.complete_one(uow, stale, now=clock.now(), worker_id="slow")
    assert complete(db, clock, stale) == []
    assert snapshot(db, handoff_id) == before
    assert get(db, handoff_id).lease_owner == "fast"
    assert complete(db, clock, current) == [current]


def test_a_fail_with_a_stale_token_is_refused_and_changes_nothing(
    db: Database, clock: FakeClock
) -> None:
    handoff_id = queued(db, clock)
    stale = claim_one(db, clock).lease
    expire_and_rescue(db, clock)
    clock.advance(POLICY.crash_delay)
    claim_one(db, clock)
    before = snapshot(db, handoff_id)
    for retry_class in RetryClass:
        with pytest.raises(LeaseLost):
            fail(db, clock, stale, Failure(retry_class, "late"))
    assert snapshot(db, handoff_id) == before


def test_finalizing_a_finished_handoff_is_refused(db: Database, clock: FakeClock) -> None:
    handoff_id = queued(db, clock)
    lease = claim_one(db, clock).lease
    complete(db, clock, lease)
    before = snapshot(db, handoff_id)
    assert complete(db, clock, lease) == []
    with pytest.raises(LeaseLost):
        fail(db, clock, lease, Failure(RetryClass.PERMANENT, "twice"))
    assert release(db, clock, lease) == []
    assert snapshot(db, handoff_id) == before


def test_a_batch_complete_finishes_only_the_current_leases(db: Database, clock: FakeClock) -> None:
    queued(db, clock, "sku-a")
    queued(db, clock, "sku-b")
    a, b = claim(db, clock, 2)
    stale_b = Lease(b.handoff.id, b.lease.token - 1)
    assert complete(db, clock, a.lease, stale_b) == [a.lease]
    assert get(db, b.handoff.id).state is R


# -- fail, by retry class -------------------------------------------------------------------------


def run_until_final(
    db: Database, clock: FakeClock, failure: Failure, *, limit: int = 20
) -> list[Handoff]:
    """Claim when due and fail with `failure` until the handoff is final; every step's row."""
    steps: list[Handoff] = []
    for _ in range(limit):
        job = claim_one(db, clock)
        steps.append(fail(db, clock, job.lease, failure))
        if steps[-1].state is not RW:
            return steps
        assert claim(db, clock) == []  # not before run_after
        clock.advance(steps[-1].run_after - clock.now())
    raise AssertionError(f"still retrying after {limit} attempts")


def test_transient_failures_back_off_then_exhaust_the_budget(
    db: Database, clock: FakeClock
) -> None:
    handoff_id = queued(db, clock)
    steps = run_until_final(db, clock, Failure(RetryClass.TRANSIENT, "503"))
    delays = [(s.run_after - s.updated_at).total_seconds() for s in steps[:-1]]
    assert delays == [15, 30, 60, 120]  # equal jitter at rand=0: half of 30 * 2^n
    assert [s.reason_code for s in steps] == [ReasonCode.TRANSIENT_ERROR] * 4 + [
        ReasonCode.RETRIES_EXHAUSTED
    ]
    last = steps[-1]
    assert len(steps) == POLICY.transient_max_failures
    assert (last.state, last.failures, last.attempts, last.finished_at) == (
        F,
        5,
        5,
        clock.now(),
    )
    assert last.last_error == "503"
    rows = attempts(db, handoff_id)
    assert [(a.attempt, a.outcome, a.retry_class) for a in rows] == [
        (1, "retry", "transient"),
        (2, "retry", "transient"),
        (3, "retry", "transient"),
        (4, "retry", "transient"),
        (5, "failed", "transient"),
    ]
    assert rows[-1].reason_code == "retries_exhausted"


def test_throttling_honours_retry_after_spends_no_failures_then_hits_the_deadline(
    db: Database, clock: FakeClock
) -> None:
    handoff_id = queued(db, clock)
    start = clock.now()
    ten_minutes = timedelta(minutes=10)
    steps = run_until_final(
        db, clock, Failure(RetryClass.THROTTLED, "429", retry_after=ten_minutes)
    )
    for step in steps[:-1]:
        assert step.run_after == step.updated_at + ten_minutes
        assert (step.state, step.reason_code, step.failures) == (RW, ReasonCode.RATE_LIMITED, 0)
        assert step.throttled_since == start
    last = steps[-1]
    assert (last.state, last.reason_code, last.failures) == (
        F,
        ReasonCode.THROTTLE_DEADLINE_EXCEEDED,
        0,
    )
    assert clock.now() - start == timedelta(minutes=60)  # waits only fit inside the hour
    assert len(steps) == 7
    assert {a.retry_class for a in attempts(db, handoff_id)} == {"throttled"}


def test_throttling_then_a_transient_failure_spends_one_failure(
    db: Database, clock: FakeClock
) -> None:
    queued(db, clock)
    for failure in (
        Failure(RetryClass.THROTTLED, "429", retry_after=timedelta(seconds=5)),
        Failure(RetryClass.THROTTLED, "429", retry_after=timedelta(seconds=5)),
        Failure(RetryClass.TRANSIENT, "503"),
    ):
        job = claim_one(db, clock)
        step = fail(db, clock, job.lease, failure)
        clock.advance(step.run_after - clock.now())
    assert (step.failures, step.throttled_since, step.attempts) == (1, None, 3)


def test_a_permanent_failure_fails_at_once_with_its_reason(db: Database, clock: FakeClock) -> None:
    handoff_id = queued(db, clock)
    job = claim_one(db, clock)
    failed = fail(
        db,
        clock,
        job.lease,
        Failure(RetryClass.PERMANENT, "bad json", reason=ReasonCode.PERMANENT_VALIDATION_ERROR),
    )
    assert (failed.state, failed.reason_code, failed.failures, failed.finished_at) == (
        F,
        ReasonCode.PERMANENT_VALIDATION_ERROR,
        0,
        clock.now(),
    )
    (attempt,) = attempts(db, handoff_id)
    assert (attempt.outcome, attempt.retry_class, attempt.reason_code, attempt.error) == (
        "failed",
        "permanent",
        "permanent_validation_error",
        "bad json",
    )
    clock.advance(timedelta(days=1))
    assert claim(db, clock) == []


def test_unclassified_failures_have_a_reduced_budget(db: Database, clock: FakeClock) -> None:
    queued(db, clock)
    steps = run_until_final(db, clock, Failure(RetryClass.UNCLASSIFIED, "KeyError: 'x'"))
    assert len(steps) == POLICY.unclassified_max_failures == 3
    assert [s.reason_code for s in steps] == [
        ReasonCode.UNCLASSIFIED_ERROR,
        ReasonCode.UNCLASSIFIED_ERROR,
        ReasonCode.RETRIES_EXHAUSTED,
    ]


def test_a_huge_error_message_is_truncated(db: Database, clock: FakeClock) -> None:
    handoff_id = queued(db, clock)
    job = claim_one(db, clock)
    failed = fail(db, clock, job.lease, Failure(RetryClass.PERMANENT, "e" * 10_000))
    assert failed.last_error == "e" * 4000
    assert attempts(db, handoff_id)[0].error == "e" * 4000


# -- the rescuer ----------------------------------------------------------------------------------


def test_the_rescuer_returns_an_expired_lease_to_retry_wait(db: Database, clock: FakeClock) -> None:
    handoff_id = queued(db, clock)
    job = claim_one(db, clock)
    (rescued,) = expire_and_rescue(db, clock)
    assert rescued.id == handoff_id
    assert (rescued.state, rescued.reason_code, rescued.crashes, rescued.failures) == (
        RW,
        ReasonCode.LEASE_EXPIRED,
        1,
        0,
    )
    assert rescued.run_after == clock.now() + POLICY.crash_delay
    assert (rescued.lease_owner, rescued.lease_expires_at, rescued.finished_at) == (
        None,
        None,
        None,
    )
    last = events(db, handoff_id)[-1]
    assert (last.actor, last.from_state, last.to_state, last.reason_code, last.lease_token) == (
        ingestion.RESCUER,
        R,
        RW,
        ReasonCode.LEASE_EXPIRED,
        job.lease.token,
    )
    (attempt,) = attempts(db, handoff_id)
    assert (attempt.outcome, attempt.retry_class, attempt.reason_code) == (
        "lease_expired",
        "crash",
        "lease_expired",
    )
    with pytest.raises(LeaseLost), db.transaction() as uow:  # the crashed worker comes back
        ingestion.complete_one(uow, job.lease, now=clock.now(), worker_id=WORKER)


def test_the_rescuer_fails_a_handoff_that_keeps_losing_its_lease_as_poison(
    db: Database, clock: FakeClock
) -> None:
    handoff_id = queued(db, clock)
    outcomes = []
    for _ in range(POLICY.crash_max):
        claim_one(db, clock)
        (rescued,) = expire_and_rescue(db, clock)
        outcomes.append((rescued.state, rescued.reason_code, rescued.crashes))
        clock.advance(POLICY.crash_delay)
    assert outcomes == [
        (RW, ReasonCode.LEASE_EXPIRED, 1),
        (RW, ReasonCode.LEASE_EXPIRED, 2),
        (F, ReasonCode.POISON_SUSPECTED, 3),
    ]
    assert get(db, handoff_id).finished_at is not None
    assert claim(db, clock) == []
    assert [a.outcome for a in attempts(db, handoff_id)] == ["lease_expired"] * 3


def test_the_rescuer_leaves_live_leases_alone(db: Database, clock: FakeClock) -> None:
    queued(db, clock, "sku-a")
    queued(db, clock, "sku-b")
    old = claim_one(db, clock)
    clock.advance(30)
    young = claim_one(db, clock)
    clock.advance(LEASE - timedelta(seconds=29))  # old expired 1 s ago; young has 29 s left
    assert [h.id for h in rescue(db, clock)] == [old.handoff.id]
    still = get(db, young.handoff.id)
    assert (still.state, still.lease_token, still.lease_owner) == (R, young.lease.token, WORKER)
    assert rescue(db, clock) == []  # a row is rescued once
    assert complete(db, clock, young.lease) == [young.lease]


def test_a_handoff_is_rescued_only_once_by_rescuers_racing(db: Database, clock: FakeClock) -> None:
    queued(db, clock)
    claim_one(db, clock)
    clock.advance(LEASE * 2)
    results: list[list[Handoff]] = []

    def rescuer() -> None:
        results.append(rescue(db, clock))

    threads = [threading.Thread(target=rescuer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(r) for r in results) == [0, 0, 0, 1]


# -- release --------------------------------------------------------------------------------------


def test_release_returns_the_handoff_to_the_queue_without_counting_a_failure(
    db: Database, clock: FakeClock
) -> None:
    handoff_id = queued(db, clock)
    job = claim_one(db, clock)
    clock.advance(5)
    assert release(db, clock, job.lease) == [job.lease]
    back = get(db, handoff_id)
    assert (back.state, back.reason_code, back.run_after) == (
        Q,
        ReasonCode.LEASE_RELEASED,
        clock.now(),
    )
    assert (back.failures, back.crashes, back.lease_owner, back.lease_expires_at) == (
        0,
        0,
        None,
        None,
    )
    assert attempts(db, handoff_id)[0].outcome == "released"
    assert claim_one(db, clock).lease.token == job.lease.token + 1  # claimable at once
    assert release(db, clock, job.lease) == []  # a stale lease releases nothing


# -- history --------------------------------------------------------------------------------------


def test_every_attempt_has_an_ingestion_jobs_row_with_its_outcome(
    db: Database, clock: FakeClock
) -> None:
    handoff_id = queued(db, clock)
    first = claim_one(db, clock, worker="a")
    release(db, clock, first.lease)
    second = claim_one(db, clock, worker="b")
    fail(db, clock, second.lease, Failure(RetryClass.TRANSIENT, "timeout"))
    clock.advance(POLICY.transient_backoff.cap_seconds)
    third = claim_one(db, clock, worker="c")
    clock.advance(3)
    complete(db, clock, third.lease)
    rows = attempts(db, handoff_id)
    assert [(a.attempt, a.lease_token, a.worker_id, a.outcome) for a in rows] == [
        (1, 1, "a", "released"),
        (2, 2, "b", "retry"),
        (3, 3, "c", "succeeded"),
    ]
    assert all(a.finished_at is not None for a in rows)
    assert rows[2].finished_at is not None
    assert rows[2].finished_at - rows[2].claimed_at == timedelta(seconds=3)
    assert rows[1].error == "timeout"


# -- operator actions -----------------------------------------------------------------------------


def cancel(db: Database, clock: FakeClock, handoff_id: int) -> Handoff:
    with db.transaction() as uow:
        return ingestion_handoff.cancel(uow, handoff_id, now=clock.now(), actor=OPERATOR)


def retry(db: Database, clock: FakeClock, handoff_id: int) -> Handoff:
    with db.transaction() as uow:
        return ingestion_handoff.retry(uow, handoff_id, now=clock.now(), actor=OPERATOR)


def test_an_operator_cancels_a_queued_handoff(db: Database, clock: FakeClock) -> None:
    handoff_id = queued(db, clock)
    cancelled = cancel(db, clock, handoff_id)
    assert (cancelled.state, cancelled.reason_code, cancelled.finished_at) == (
        HandoffState.CANCELLED,
        ReasonCode.OPERATOR_CANCELLED,
        clock.now(),
    )
    last = events(db, handoff_id)[-1]
    assert (last.actor, last.from_state, last.to_state) == (OPERATOR, Q, HandoffState.CANCELLED)
    assert claim(db, clock) == []


def test_a_cancelled_running_handoff_fences_out_its_worker(db: Database, clock: FakeClock) -> None:
    handoff_id = queued(db, clock)
    job = claim_one(db, clock)
    cancel(db, clock, handoff_id)
    assert heartbeat(db, clock, job.lease) == set()
    assert complete(db, clock, job.lease) == []
    with pytest.raises(LeaseLost):
        fail(db, clock, job.lease, Failure(RetryClass.TRANSIENT, "x"))
    clock.advance(LEASE * 2)
    assert rescue(db, clock) == []
    assert get(db, handoff_id).state is HandoffState.CANCELLED


def test_cancelling_a_running_handoff_closes_its_attempt_as_cancelled(
    db: Database, clock: FakeClock
) -> None:
    """Regression: the attempt row of a cancelled running handoff was never closed (its worker
    is fenced out, so nothing else would ever finish it)."""
    handoff_id = queued(db, clock)
    job = claim_one(db, clock)
    cancel(db, clock, handoff_id)
    complete(db, clock, job.lease)  # the worker finishes and learns it lost the lease
    (attempt,) = attempts(db, handoff_id)
    assert (attempt.outcome, attempt.finished_at) == ("cancelled", clock.now())


def test_cancelling_a_finished_handoff_is_a_conflict(db: Database, clock: FakeClock) -> None:
    handoff_id = queued(db, clock)
    complete(db, clock, claim_one(db, clock).lease)
    with pytest.raises(Conflict):
        cancel(db, clock, handoff_id)
    assert get(db, handoff_id).state is HandoffState.SUCCEEDED
    with pytest.raises(NotFound):
        cancel(db, clock, handoff_id + 1000)


@pytest.mark.parametrize("how", ["failed", "cancelled"])
def test_an_operator_retry_queues_the_handoff_again_with_fresh_budgets(
    db: Database, clock: FakeClock, how: str
) -> None:
    handoff_id = queued(db, clock)
    if how == "failed":
        steps = run_until_final(db, clock, Failure(RetryClass.UNCLASSIFIED, "boom"))
        assert steps[-1].failures == 3
    else:
        cancel(db, clock, handoff_id)
    clock.advance(60)
    again = retry(db, clock, handoff_id)
    assert (again.state, again.reason_code, again.run_after) == (
        Q,
        ReasonCode.OPERATOR_RETRY,
        clock.now(),
    )
    assert (again.failures, again.crashes, again.throttled_since, again.finished_at) == (
        0,
        0,
        None,
        None,
    )
    last = events(db, handoff_id)[-1]
    assert (last.actor, last.to_state, last.reason_code) == (
        OPERATOR,
        Q,
        ReasonCode.OPERATOR_RETRY,
    )
    job = claim_one(db, clock)
    assert job.handoff.id == handoff_id
    assert fail(db, clock, job.lease, Failure(RetryClass.UNCLASSIFIED, "boom")).state is RW


def test_an_operator_retry_is_refused_while_the_reference_has_active_work(
    db: Database, clock: FakeClock
) -> None:
    old = hand_off_one(db, clock, version("sku-1", "old", fetched_at=at(0))).handoff_id
    fail(db, clock, claim_one(db, clock).lease, Failure(RetryClass.PERMANENT, "bad"))
    newer = hand_off_one(db, clock, version("sku-1", "new", fetched_at=at(10))).handoff_id
    before = {h.id: h for h in of_reference(db, "sku-1")}
    with pytest.raises(Conflict) as caught:
        retry(db, clock, old)
    assert str(newer) in caught.value.message
    assert {h.id: h for h in of_reference(db, "sku-1")} == before
    # Once the newer one is done, the old one still may not run: it would ingest stale content.
    complete(db, clock, claim_one(db, clock).lease)
    with pytest.raises(Conflict) as stale:
        retry(db, clock, old)
    assert "older version" in stale.value.message
    assert get(db, old).state is F


@pytest.mark.parametrize("state", ["queued", "running", "succeeded"])
def test_only_failed_or_cancelled_handoffs_can_be_retried(
    db: Database, clock: FakeClock, state: str
) -> None:
    handoff_id = queued(db, clock)
    if state != "queued":
        job = claim_one(db, clock)
        if state == "succeeded":
            complete(db, clock, job.lease)
    before = snapshot(db, handoff_id)
    with pytest.raises(Conflict):
        retry(db, clock, handoff_id)
    assert snapshot(db, handoff_id) == before


def test_an_operator_retry_racing_an_enqueue_is_a_conflict_not_a_crash(
    pg_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the "no active work" check and the UPDATE are separate; an enqueue committed
    in between made the UPDATE violate ingestion_handoffs_one_active, which escaped as an
    IntegrityError (a 500) instead of Conflict. PostgreSQL only: on SQLite the operator's
    BEGIN IMMEDIATE keeps the enqueue out."""
    db = Database(pg_url)
    try:
        old = hand_off_one(db, clock, version("sku-1", "old", fetched_at=at(0))).handoff_id
        cancel(db, clock, old)
        with db.transaction() as uow:
            original = uow.handoffs.transition

            def transition_after_a_competing_enqueue(
                handoff_id: int, from_states: Collection[HandoffState], values: Mapping[str, Any]
            ) -> Handoff | None:
                # The race window: another client commits a newer payload of sku-1 between the
                # operator's check and its update.
                hand_off(db, clock, version("sku-1", "new", fetched_at=at(10)))
                monkeypatch.setattr(uow.handoffs, "transition", original)
                return original(handoff_id, from_states, values)

            monkeypatch.setattr(uow.handoffs, "transition", transition_after_a_competing_enqueue)
            with pytest.raises(Conflict):
                ingestion_handoff.retry(uow, old, now=clock.now(), actor=OPERATOR)
        assert [h.state for h in of_reference(db, "sku-1")] == [HandoffState.CANCELLED, Q]
    finally:
        db.dispose()


def test_claimed_jobs_report_their_lease(db: Database, clock: FakeClock) -> None:
    queued(db, clock)
    job: ClaimedJob = claim_one(db, clock)
    assert job.lease == Lease(job.handoff.id, job.handoff.lease_token)
