"""Enqueue: idempotent pairs, superseding, waiting behind a running payload, stale scrapes, and the
record + handoff committing together. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import update

from app.db import tables
from app.db.uow import Database
from app.domain.clock import FakeClock
from app.domain.models import ClaimedJob, Handoff, HandoffEvent
from app.domain.retry import RetryPolicy
from app.domain.states import (
    ACTIVE_STATES,
    EnqueueOutcome,
    HandoffState,
    ReasonCode,
    RetryClass,
)
from app.services import ingestion, ingestion_handoff
from app.services.scrape_storage import store_and_hand_off
from tests.support import (
    CLIENT,
    LEASE,
    WORKER,
    all_handoffs,
    at,
    claim,
    claim_one,
    count_rows,
    events,
    get,
    hand_off,
    hand_off_one,
    of_reference,
    version,
)

Q, R, W = HandoffState.QUEUED, HandoffState.RUNNING, HandoffState.WAITING
OPERATOR = "operator:alice"
POLICY = RetryPolicy()


def moves(history: list[HandoffEvent]) -> list[tuple[HandoffState | None, HandoffState, str]]:
    return [(e.from_state, e.to_state, e.reason_code.value) for e in history]


def running(db: Database, clock: FakeClock, reference_id: str) -> ClaimedJob:
    """Hand off a first payload of `reference_id` and claim it."""
    hand_off(db, clock, version(reference_id, "first", fetched_at=at(0)))
    job = claim_one(db, clock)
    assert job.handoff.reference_id == reference_id
    return job


def fail(
    db: Database, clock: FakeClock, job: ClaimedJob, retry_class: RetryClass, worker: str = WORKER
) -> Handoff:
    with db.transaction() as uow:
        return ingestion.fail(
            uow,
            job.lease,
            ingestion.Failure(retry_class, f"{retry_class} boom"),
            now=clock.now(),
            worker_id=worker,
            policy=POLICY,
        )


# -- created and duplicate ------------------------------------------------------------------------


def test_a_new_pair_is_created_queued_with_its_record(db: Database, clock: FakeClock) -> None:
    record = version("sku-1", "v1")
    result = hand_off_one(db, clock, record)
    assert (result.outcome, result.first_outcome, result.state) == (
        EnqueueOutcome.CREATED,
        EnqueueOutcome.CREATED,
        Q,
    )
    stored = get(db, result.handoff_id)
    assert (stored.reference_id, stored.payload_hash) == (record.reference_id, record.payload_hash)
    assert (stored.reason_code, stored.run_after, stored.lease_token) == (
        ReasonCode.ENQUEUED,
        clock.now(),
        0,
    )
    with db.transaction(write=False) as uow:
        kept = uow.records.get(record.reference_id, record.payload_hash)
    assert kept is not None
    assert kept.body == b"v1"
    (event,) = events(db, result.handoff_id)
    assert (event.actor, event.from_state, event.to_state, event.reason_code, event.detail) == (
        CLIENT,
        None,
        Q,
        ReasonCode.ENQUEUED,
        "created",
    )


def test_replaying_a_pair_returns_its_stored_outcome_and_creates_nothing(
    db: Database, clock: FakeClock
) -> None:
    first = hand_off_one(db, clock, version("sku-1", "v1"))
    clock.advance(60)
    again = hand_off_one(db, clock, version("sku-1", "v1", fetched_at=at(60)))
    assert again.outcome is EnqueueOutcome.DUPLICATE
    assert (again.handoff_id, again.state, again.first_outcome) == (
        first.handoff_id,
        Q,
        EnqueueOutcome.CREATED,
    )
    assert len(of_reference(db, "sku-1")) == 1
    assert len(events(db, first.handoff_id)) == 1
    with db.transaction(write=False) as uow:
        assert count_rows(uow, "scrape_records") == 1


def test_replaying_a_finished_pair_returns_its_outcome_and_state_forever(
    db: Database, clock: FakeClock
) -> None:
    first = hand_off_one(db, clock, version("sku-1", "v1"))
    job = claim_one(db, clock)
    with db.transaction() as uow:
        ingestion.complete(uow, [job.lease], now=clock.now(), worker_id=WORKER)
    for _ in range(3):
        clock.advance(timedelta(days=30))
        again = hand_off_one(db, clock, version("sku-1", "v1", fetched_at=clock.now()))
        assert (again.outcome, again.handoff_id, again.state, again.first_outcome) == (
            EnqueueOutcome.DUPLICATE,
            first.handoff_id,
            HandoffState.SUCCEEDED,
            EnqueueOutcome.CREATED,
        )
    assert claim(db, clock) == []  # no new work appeared
    assert len(of_reference(db, "sku-1")) == 1


def test_replaying_a_superseded_pair_does_not_bring_it_back(db: Database, clock: FakeClock) -> None:
    old = hand_off_one(db, clock, version("sku-1", "old", fetched_at=at(0)))
    new = hand_off_one(db, clock, version("sku-1", "new", fetched_at=at(10)))
    again = hand_off_one(db, clock, version("sku-1", "old", fetched_at=at(20)))
    assert (again.outcome, again.handoff_id, again.state) == (
        EnqueueOutcome.DUPLICATE,
        old.handoff_id,
        HandoffState.SUPERSEDED,
    )
    assert get(db, new.handoff_id).state is Q


def test_references_do_not_interfere(db: Database, clock: FakeClock) -> None:
    a = hand_off_one(db, clock, version("sku-a", "same body"))
    b = hand_off_one(db, clock, version("sku-b", "same body"))
    assert a.outcome is b.outcome is EnqueueOutcome.CREATED
    assert a.handoff_id != b.handoff_id
    assert get(db, a.handoff_id).state is get(db, b.handoff_id).state is Q


# -- a newer payload ------------------------------------------------------------------------------


def test_a_newer_payload_supersedes_a_queued_one(db: Database, clock: FakeClock) -> None:
    old = hand_off_one(db, clock, version("sku-1", "old", fetched_at=at(0)))
    clock.advance(5)
    new = hand_off_one(db, clock, version("sku-1", "new", fetched_at=at(10)))
    assert (new.outcome, new.first_outcome, new.state) == (
        EnqueueOutcome.SUPERSEDED_PREVIOUS,
        EnqueueOutcome.SUPERSEDED_PREVIOUS,
        Q,
    )
    gone = get(db, old.handoff_id)
    assert (gone.state, gone.reason_code, gone.finished_at) == (
        HandoffState.SUPERSEDED,
        ReasonCode.SUPERSEDED_BY_NEWER_PAYLOAD,
        clock.now(),
    )
    assert moves(events(db, old.handoff_id))[-1] == (
        Q,
        HandoffState.SUPERSEDED,
        "superseded_by_newer_payload",
    )
    assert events(db, old.handoff_id)[-1].actor == CLIENT
    assert [j.handoff.id for j in claim(db, clock)] == [new.handoff_id]


def test_a_payload_with_the_same_fetch_time_but_new_content_supersedes(
    db: Database, clock: FakeClock
) -> None:
    old = hand_off_one(db, clock, version("sku-1", "old", fetched_at=at(0)))
    new = hand_off_one(db, clock, version("sku-1", "new", fetched_at=at(0)))
    assert new.outcome is EnqueueOutcome.SUPERSEDED_PREVIOUS
    assert get(db, old.handoff_id).state is HandoffState.SUPERSEDED


def test_a_newer_payload_supersedes_one_waiting_to_be_retried(
    db: Database, clock: FakeClock
) -> None:
    job = running(db, clock, "sku-1")
    assert fail(db, clock, job, RetryClass.TRANSIENT).state is HandoffState.RETRY_WAIT
    new = hand_off_one(db, clock, version("sku-1", "new", fetched_at=at(10)))
    assert (new.outcome, new.state) == (EnqueueOutcome.SUPERSEDED_PREVIOUS, Q)
    gone = get(db, job.handoff.id)
    assert (gone.state, gone.reason_code) == (
        HandoffState.SUPERSEDED,
        ReasonCode.SUPERSEDED_BY_NEWER_PAYLOAD,
    )
    assert moves(events(db, job.handoff.id))[-1] == (
        HandoffState.RETRY_WAIT,
        HandoffState.SUPERSEDED,
        "superseded_by_newer_payload",
    )


def test_a_newer_payload_waits_behind_a_running_one(db: Database, clock: FakeClock) -> None:
    job = running(db, clock, "sku-1")
    new = hand_off_one(db, clock, version("sku-1", "new", fetched_at=at(10)))
    assert (new.outcome, new.first_outcome, new.state) == (
        EnqueueOutcome.QUEUED_BEHIND_RUNNING,
        EnqueueOutcome.QUEUED_BEHIND_RUNNING,
        W,
    )
    assert get(db, new.handoff_id).reason_code is ReasonCode.QUEUED_BEHIND_RUNNING
    still = get(db, job.handoff.id)
    assert (still.state, still.lease_token) == (R, job.handoff.lease_token)
    clock.advance(3600)
    assert claim(db, clock) == []  # a waiting payload is never claimed


def test_a_third_payload_replaces_the_waiting_one(db: Database, clock: FakeClock) -> None:
    job = running(db, clock, "sku-1")
    second = hand_off_one(db, clock, version("sku-1", "second", fetched_at=at(10)))
    third = hand_off_one(db, clock, version("sku-1", "third", fetched_at=at(20)))
    assert (third.outcome, third.state) == (EnqueueOutcome.QUEUED_BEHIND_RUNNING, W)
    replaced = get(db, second.handoff_id)
    assert (replaced.state, replaced.reason_code) == (
        HandoffState.SUPERSEDED,
        ReasonCode.SUPERSEDED_BY_NEWER_PAYLOAD,
    )
    assert moves(events(db, second.handoff_id)) == [
        (None, W, "queued_behind_running"),
        (W, HandoffState.SUPERSEDED, "superseded_by_newer_payload"),
    ]
    assert get(db, job.handoff.id).state is R
    states = sorted(h.state.value for h in of_reference(db, "sku-1"))
    assert states == ["running", "superseded", "waiting"]


# -- the running payload ends: the waiting one moves up -------------------------------------------


def _complete(db: Database, clock: FakeClock, job: ClaimedJob) -> str:
    with db.transaction() as uow:
        ingestion.complete(uow, [job.lease], now=clock.now(), worker_id=WORKER)
    return f"worker:{WORKER}"


def _fail_permanently(db: Database, clock: FakeClock, job: ClaimedJob) -> str:
    fail(db, clock, job, RetryClass.PERMANENT)
    return f"worker:{WORKER}"


def _cancel(db: Database, clock: FakeClock, job: ClaimedJob) -> str:
    with db.transaction() as uow:
        ingestion_handoff.cancel(uow, job.handoff.id, now=clock.now(), actor=OPERATOR)
    return OPERATOR


def _exhaust_retries(db: Database, clock: FakeClock, job: ClaimedJob) -> str:
    with db.transaction() as uow:  # one failure short of the budget: the next one is the last
        uow.conn.execute(
            update(tables.handoffs)
            .where(tables.handoffs.c.id == job.handoff.id)
            .values(failures=POLICY.transient_max_failures - 1)
        )
    assert fail(db, clock, job, RetryClass.TRANSIENT).reason_code is ReasonCode.RETRIES_EXHAUSTED
    return f"worker:{WORKER}"


@pytest.mark.parametrize(
    ("end", "final"),
    [
        (_complete, HandoffState.SUCCEEDED),
        (_fail_permanently, HandoffState.FAILED),
        (_cancel, HandoffState.CANCELLED),
        (_exhaust_retries, HandoffState.FAILED),
    ],
    ids=["completed", "failed-permanently", "cancelled", "retries-exhausted"],
)
def test_when_the_running_payload_ends_the_waiting_one_is_promoted(
    db: Database,
    clock: FakeClock,
    end: Callable[[Database, FakeClock, ClaimedJob], str],
    final: HandoffState,
) -> None:
    job = running(db, clock, "sku-1")
    waiting = hand_off_one(db, clock, version("sku-1", "new", fetched_at=at(10)))
    clock.advance(30)
    actor = end(db, clock, job)
    assert get(db, job.handoff.id).state is final
    promoted = get(db, waiting.handoff_id)
    assert (promoted.state, promoted.reason_code, promoted.run_after) == (
        Q,
        ReasonCode.PROMOTED,
        clock.now(),
    )
    last = events(db, waiting.handoff_id)[-1]
    assert (last.from_state, last.to_state, last.reason_code, last.actor) == (
        W,
        Q,
        ReasonCode.PROMOTED,
        actor,
    )
    assert claim_one(db, clock).handoff.id == waiting.handoff_id


def test_when_the_rescuer_gives_up_on_a_poisoned_payload_the_waiting_one_is_promoted(
    db: Database, clock: FakeClock
) -> None:
    running(db, clock, "sku-1")
    waiting = hand_off_one(db, clock, version("sku-1", "new", fetched_at=at(10)))
    clock.advance(LEASE * 2)
    with db.transaction() as uow:
        (rescued,) = ingestion.rescue(uow, now=clock.now(), policy=RetryPolicy(crash_max=1))
    assert (rescued.state, rescued.reason_code) == (
        HandoffState.FAILED,
        ReasonCode.POISON_SUSPECTED,
    )
    assert get(db, waiting.handoff_id).state is Q
    assert events(db, waiting.handoff_id)[-1].actor == ingestion.RESCUER


def _fail_transiently(db: Database, clock: FakeClock, job: ClaimedJob) -> None:
    fail(db, clock, job, RetryClass.TRANSIENT)


def _fail_throttled(db: Database, clock: FakeClock, job: ClaimedJob) -> None:
    fail(db, clock, job, RetryClass.THROTTLED)


def _lose_lease(db: Database, clock: FakeClock, job: ClaimedJob) -> None:
    clock.advance(LEASE * 2)
    with db.transaction() as uow:
        assert ingestion.rescue(uow, now=clock.now(), policy=POLICY)


def _release(db: Database, clock: FakeClock, job: ClaimedJob) -> None:
    with db.transaction() as uow:
        assert ingestion.release(uow, [job.lease], now=clock.now(), worker_id=WORKER)


@pytest.mark.parametrize(
    ("go_back", "via"),
    [
        (_fail_transiently, HandoffState.RETRY_WAIT),
        (_fail_throttled, HandoffState.RETRY_WAIT),
        (_lose_lease, HandoffState.RETRY_WAIT),
        (_release, Q),
    ],
    ids=["transient", "throttled", "lease-lost", "released"],
)
def test_a_running_payload_going_back_to_wait_yields_to_the_newer_waiting_one(
    db: Database,
    clock: FakeClock,
    go_back: Callable[[Database, FakeClock, ClaimedJob], None],
    via: HandoffState,
) -> None:
    job = running(db, clock, "sku-1")
    waiting = hand_off_one(db, clock, version("sku-1", "new", fetched_at=at(10)))
    go_back(db, clock, job)
    old = get(db, job.handoff.id)
    assert (old.state, old.reason_code) == (
        HandoffState.SUPERSEDED,
        ReasonCode.SUPERSEDED_BY_NEWER_PAYLOAD,
    )
    assert [m[:2] for m in moves(events(db, job.handoff.id))][-2:] == [
        (R, via),
        (via, HandoffState.SUPERSEDED),
    ]
    promoted = get(db, waiting.handoff_id)
    assert (promoted.state, promoted.reason_code) == (Q, ReasonCode.PROMOTED)
    assert claim_one(db, clock).handoff.id == waiting.handoff_id


def test_a_running_payload_going_back_to_wait_keeps_its_slot_when_nothing_waits(
    db: Database, clock: FakeClock
) -> None:
    job = running(db, clock, "sku-1")
    assert fail(db, clock, job, RetryClass.TRANSIENT).state is HandoffState.RETRY_WAIT
    assert get(db, job.handoff.id).state is HandoffState.RETRY_WAIT


# -- stale scrapes --------------------------------------------------------------------------------


def test_an_older_scrape_after_a_newer_one_is_rejected_stale(
    db: Database, clock: FakeClock
) -> None:
    newer = hand_off_one(db, clock, version("sku-1", "newer", fetched_at=at(100)))
    stale = hand_off_one(db, clock, version("sku-1", "older", fetched_at=at(50)))
    assert (stale.outcome, stale.first_outcome, stale.state) == (
        EnqueueOutcome.REJECTED_STALE,
        EnqueueOutcome.REJECTED_STALE,
        HandoffState.SUPERSEDED,
    )
    row = get(db, stale.handoff_id)
    assert (row.reason_code, row.finished_at) == (ReasonCode.STALE_PAYLOAD, clock.now())
    assert moves(events(db, stale.handoff_id)) == [(None, HandoffState.SUPERSEDED, "stale_payload")]
    untouched = get(db, newer.handoff_id)
    assert (untouched.state, untouched.reason_code) == (Q, ReasonCode.ENQUEUED)
    # The stale version is still stored: the ledger accounts for every record.
    with db.transaction(write=False) as uow:
        assert uow.records.get("sku-1", stale.payload_hash) is not None


def test_a_stale_rejection_is_idempotent(db: Database, clock: FakeClock) -> None:
    hand_off_one(db, clock, version("sku-1", "newer", fetched_at=at(100)))
    stale = hand_off_one(db, clock, version("sku-1", "older", fetched_at=at(50)))
    for _ in range(2):
        again = hand_off_one(db, clock, version("sku-1", "older", fetched_at=at(50)))
        assert (again.outcome, again.handoff_id, again.state, again.first_outcome) == (
            EnqueueOutcome.DUPLICATE,
            stale.handoff_id,
            HandoffState.SUPERSEDED,
            EnqueueOutcome.REJECTED_STALE,
        )
    assert len(of_reference(db, "sku-1")) == 2


@pytest.mark.parametrize("newer_state", ["running", "succeeded", "waiting"])
def test_an_older_scrape_is_stale_whatever_became_of_the_newer_one(
    db: Database, clock: FakeClock, newer_state: str
) -> None:
    job = running(db, clock, "sku-1")  # fetched at 0
    if newer_state == "waiting":
        hand_off_one(db, clock, version("sku-1", "newest", fetched_at=at(100)))
    elif newer_state == "succeeded":
        with db.transaction() as uow:
            ingestion.complete(uow, [job.lease], now=clock.now(), worker_id=WORKER)
        hand_off_one(db, clock, version("sku-1", "newest", fetched_at=at(100)))
        job = claim_one(db, clock)
        with db.transaction() as uow:
            ingestion.complete(uow, [job.lease], now=clock.now(), worker_id=WORKER)
    else:
        with db.transaction() as uow:
            ingestion.complete(uow, [job.lease], now=clock.now(), worker_id=WORKER)
        hand_off_one(db, clock, version("sku-1", "newest", fetched_at=at(100)))
        claim_one(db, clock)
    before = {h.id: h.state for h in of_reference(db, "sku-1")}
    stale = hand_off_one(db, clock, version("sku-1", "between", fetched_at=at(50)))
    assert stale.outcome is EnqueueOutcome.REJECTED_STALE
    assert {h.id: h.state for h in of_reference(db, "sku-1") if h.id != stale.handoff_id} == before


# -- one transaction ------------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_the_record_and_its_handoff_commit_together_or_not_at_all(
    db: Database, clock: FakeClock
) -> None:
    record = version("sku-1", "v1")
    seen_inside: list[bool] = []

    def store_then_crash() -> None:
        with db.transaction() as uow:
            (result,) = store_and_hand_off(uow, [record], now=clock.now(), actor=CLIENT)
            seen_inside.append(result.outcome is EnqueueOutcome.CREATED)
            seen_inside.append(
                uow.records.get(record.reference_id, record.payload_hash) is not None
            )
            raise Boom

    with pytest.raises(Boom):
        store_then_crash()
    assert seen_inside == [True, True]  # both were written inside the transaction
    with db.transaction(write=False) as uow:
        assert uow.records.get(record.reference_id, record.payload_hash) is None
        assert uow.handoffs.of_reference(record.reference_id) == []
        for table in ("scrape_records", "ingestion_handoffs", "handoff_events"):
            assert count_rows(uow, table) == 0, table
    # And the pair is new again afterwards: nothing half-written blocks it.
    assert hand_off_one(db, clock, record).outcome is EnqueueOutcome.CREATED


def test_a_rolled_back_supersede_leaves_the_previous_payload_queued(
    db: Database, clock: FakeClock
) -> None:
    old = hand_off_one(db, clock, version("sku-1", "old", fetched_at=at(0)))

    def supersede_then_crash() -> None:
        with db.transaction() as uow:
            newer = version("sku-1", "new", fetched_at=at(10))
            store_and_hand_off(uow, [newer], now=clock.now(), actor=CLIENT)
            raise Boom

    with pytest.raises(Boom):
        supersede_then_crash()
    assert get(db, old.handoff_id).state is Q
    assert len(events(db, old.handoff_id)) == 1
    assert len(of_reference(db, "sku-1")) == 1


# -- the event trail ------------------------------------------------------------------------------


def test_every_transition_writes_an_event_with_actor_from_to_and_reason(
    db: Database, clock: FakeClock
) -> None:
    first = hand_off_one(db, clock, version("sku-1", "v1", fetched_at=at(0)))
    job = claim_one(db, clock)
    second = hand_off_one(db, clock, version("sku-1", "v2", fetched_at=at(10)))
    with db.transaction() as uow:
        ingestion.complete(uow, [job.lease], now=clock.now(), worker_id=WORKER)
    job2 = claim_one(db, clock, worker="w2")
    clock.advance(1)
    fail(db, clock, job2, RetryClass.PERMANENT, worker="w2")
    with db.transaction() as uow:
        ingestion_handoff.retry(uow, second.handoff_id, now=clock.now(), actor=OPERATOR)
    with db.transaction() as uow:
        ingestion_handoff.cancel(uow, second.handoff_id, now=clock.now(), actor=OPERATOR)

    trail = [(e.actor, *m) for e, m in _with_moves(events(db, first.handoff_id))]
    assert trail == [
        (CLIENT, None, Q, "enqueued"),
        ("worker:w1", Q, R, "claimed"),
        ("worker:w1", R, HandoffState.SUCCEEDED, "succeeded"),
    ]
    trail = [(e.actor, *m) for e, m in _with_moves(events(db, second.handoff_id))]
    assert trail == [
        (CLIENT, None, W, "queued_behind_running"),
        ("worker:w1", W, Q, "promoted"),
        ("worker:w2", Q, R, "claimed"),
        ("worker:w2", R, HandoffState.FAILED, "permanent_error"),
        (OPERATOR, HandoffState.FAILED, Q, "operator_retry"),
        (OPERATOR, Q, HandoffState.CANCELLED, "operator_cancelled"),
    ]
    claimed = events(db, second.handoff_id)[2]
    assert claimed.lease_token == job2.handoff.lease_token
    for h in [get(db, first.handoff_id), get(db, second.handoff_id)]:
        assert events(db, h.id)[-1].to_state is h.state


def _with_moves(
    history: list[HandoffEvent],
) -> list[tuple[HandoffEvent, tuple[HandoffState | None, HandoffState, str]]]:
    return list(zip(history, moves(history), strict=True))


# -- several versions in one call -----------------------------------------------------------------


def test_a_batch_with_several_versions_of_one_reference_keeps_only_the_newest_active(
    db: Database, clock: FakeClock
) -> None:
    v1 = version("sku-1", "v1", fetched_at=at(0))
    v2 = version("sku-1", "v2", fetched_at=at(10))
    v3 = version("sku-1", "v3", fetched_at=at(20))
    other = version("sku-2", "x")
    results = hand_off(db, clock, v3, v1, other, v2)
    assert [r.payload_hash for r in results] == [
        v3.payload_hash,
        v1.payload_hash,
        other.payload_hash,
        v2.payload_hash,
    ]  # one result per record, in the order given
    by_hash = {h.payload_hash: h for h in of_reference(db, "sku-1")}
    assert len(by_hash) == 3
    assert by_hash[v3.payload_hash].state is Q
    assert by_hash[v1.payload_hash].state is HandoffState.SUPERSEDED
    assert by_hash[v2.payload_hash].state is HandoffState.SUPERSEDED
    assert results[0].outcome is EnqueueOutcome.SUPERSEDED_PREVIOUS
    assert results[2].outcome is EnqueueOutcome.CREATED
    assert {r.outcome for r in results} <= {
        EnqueueOutcome.CREATED,
        EnqueueOutcome.SUPERSEDED_PREVIOUS,
    }
    claimed = {j.handoff.payload_hash for j in claim(db, clock)}
    assert claimed == {v3.payload_hash, other.payload_hash}
    # Replaying the whole batch is a no-op.
    replay = hand_off(db, clock, v3, v1, other, v2)
    assert {r.outcome for r in replay} == {EnqueueOutcome.DUPLICATE}


def test_a_batch_reports_the_state_each_version_ends_in(db: Database, clock: FakeClock) -> None:
    """Regression: a version superseded later in the same batch was reported with the state it
    had when inserted (`queued`), not the state it ends the call in."""
    results = hand_off(
        db,
        clock,
        version("sku-1", "v1", fetched_at=at(0)),
        version("sku-1", "v2", fetched_at=at(10)),
    )
    stored = {h.id: h.state for h in of_reference(db, "sku-1")}
    assert [(r.handoff_id, r.state) for r in results] == [
        (r.handoff_id, stored[r.handoff_id]) for r in results
    ]


def test_a_batch_with_the_same_pair_twice_gives_it_one_row_and_one_answer(
    db: Database, clock: FakeClock
) -> None:
    record = version("sku-1", "v1")
    first, second = hand_off(db, clock, record, record)
    assert first == second
    assert first.outcome is EnqueueOutcome.CREATED
    assert len(of_reference(db, "sku-1")) == 1


def test_a_batch_of_newer_versions_behind_a_running_one_leaves_only_the_newest_waiting(
    db: Database, clock: FakeClock
) -> None:
    job = running(db, clock, "sku-1")
    v2 = version("sku-1", "v2", fetched_at=at(10))
    v3 = version("sku-1", "v3", fetched_at=at(20))
    stale = version("sku-1", "v0", fetched_at=at(-10))
    results = {r.payload_hash: r for r in hand_off(db, clock, v3, stale, v2)}
    assert results[v3.payload_hash].outcome is EnqueueOutcome.QUEUED_BEHIND_RUNNING
    assert results[stale.payload_hash].outcome is EnqueueOutcome.REJECTED_STALE
    rows = {h.payload_hash: h.state for h in of_reference(db, "sku-1")}
    assert rows == {
        job.handoff.payload_hash: R,
        v2.payload_hash: HandoffState.SUPERSEDED,
        v3.payload_hash: W,
        stale.payload_hash: HandoffState.SUPERSEDED,
    }


def test_no_reference_ever_has_two_active_rows_after_a_mixed_history(
    db: Database, clock: FakeClock
) -> None:
    for step in range(6):
        hand_off(
            db, clock, *(version(f"sku-{i}", f"v{step}", fetched_at=at(step)) for i in range(3))
        )
        for job in claim(db, clock, 2):
            fail(db, clock, job, RetryClass.TRANSIENT)
        clock.advance(600)
    with db.transaction(write=False) as uow:
        assert uow.handoffs.active_count_per_reference() == 1
        per_reference: dict[str, list[HandoffState]] = {}
        for h in all_handoffs(uow):
            per_reference.setdefault(h.reference_id, []).append(h.state)
    for states in per_reference.values():
        assert sum(s in ACTIVE_STATES for s in states) == 1
        assert states.count(W) == 0  # nothing ran, so nothing waits
