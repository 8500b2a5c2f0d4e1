"""The handoff layer: turn persisted versions into at most one active ingestion per reference.

`enqueue` runs inside the caller's transaction, the same one that stored the scrape records
(outbox pattern): the record and its handoff commit together or not at all. Uniqueness is the
database's job (pair key, one active and one waiting row per reference); this module reacts to
what the constraints refuse instead of checking first and hoping.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any

import structlog

from app import log as app_log
from app import metrics
from app.db.handoff_store import split_enqueued
from app.db.outbox_store import store_if_queued_statement
from app.db.uow import Database, UnitOfWork, run_after_commit
from app.domain.errors import Conflict, Contention, NotFound
from app.domain.models import HandedOff, Handoff, NewEvent
from app.domain.records import PreparedRecord
from app.domain.states import (
    ACTIVE_STATES,
    RUNNABLE_STATES,
    TERMINAL_STATES,
    EnqueueOutcome,
    HandoffState,
    Move,
    ReasonCode,
)

_MAX_ROUNDS = 8  # re-reads of one reference's rows before the transaction is retried whole
log = structlog.get_logger("handoff.enqueue")


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    reference_id: str
    payload_hash: str
    handoff_id: int
    state: HandoffState
    outcome: EnqueueOutcome
    #: For a duplicate: the outcome the pair got when it was first handed off.
    first_outcome: EnqueueOutcome


def enqueue(
    uow: UnitOfWork,
    records: Sequence[PreparedRecord],
    *,
    now: datetime,
    actor: str,
    store: bool = False,
) -> list[EnqueueResult]:
    """Hand off versions; one result per record, in the order given. With `store`, the
    versions not stored yet are persisted first, in the same statement where the engine allows
    (the outbox write); without it they must already be stored.

    Idempotent forever: a pair seen before returns `duplicate` with its stored state and first
    outcome. Locks only the rows of the references involved; does not commit.
    """
    ordered = sorted(
        {(r.reference_id, r.payload_hash): r for r in records}.values(),
        # One order for every caller: concurrent batches lock references in the same order.
        key=lambda r: (r.reference_id, r.fetched_at, r.payload_hash),
    )
    pairs = [(r.reference_id, r.payload_hash) for r in ordered]
    # Fast path: one statement queues every version that is new, not older than one already
    # handed off, and whose reference has no unfinished work. The rest is refused by a
    # constraint (or the staleness guard) and resolved below: duplicates in one look-up,
    # contended references row by row.
    rows = [
        _row(r, now, HandoffState.QUEUED, ReasonCode.ENQUEUED, EnqueueOutcome.CREATED)
        for r in ordered
    ]
    inserted, existed = (
        uow.outbox.store_and_enqueue(ordered, rows, actor=actor, now=now)
        if store
        else uow.handoffs.insert_enqueued(rows, actor=actor, now=now)
    )
    results = {(h.reference_id, h.payload_hash): _result(h, h.enqueue_outcome) for h in inserted}
    results.update({(h.reference_id, h.payload_hash): _duplicate(h) for h in existed})
    existing = uow.handoffs.by_pairs(p for p in pairs if p not in results)
    results.update({pair: _duplicate(h) for pair, h in existing.items()})
    contended = set()
    for rec, pair in zip(ordered, pairs, strict=True):
        if pair not in results:  # a constraint refused the fast path: resolve it row by row
            results[pair] = _enqueue_contended(uow, rec, now=now, actor=actor)
            contended.add(rec.reference_id)
    if contended:  # a later version in this batch may have moved an earlier one: re-read
        ids = [r.handoff_id for r in results.values() if r.reference_id in contended]
        final = uow.handoffs.states_of(ids)
        results = {
            p: replace(r, state=final.get(r.handoff_id, r.state)) for p, r in results.items()
        }
    out = [results[(r.reference_id, r.payload_hash)] for r in records]
    uow.on_commit(lambda: _report(out, actor))
    return out


def enqueue_whole(
    db: Database, record: PreparedRecord, *, now: datetime, actor: str
) -> EnqueueResult | None:
    """Store and hand off one version in a single statement that commits by itself
    (PostgreSQL): the commonest submission, a new version of a reference with no unfinished
    work, or a duplicate. None if the statement wrote nothing because the version needs
    deciding against the reference's other handoffs: `enqueue` with `store` does that, in a
    transaction."""
    row = _row(record, now, HandoffState.QUEUED, ReasonCode.ENQUEUED, EnqueueOutcome.CREATED)
    statement, params = store_if_queued_statement(record, row, actor=actor, now=now)
    inserted, existed = split_enqueued(db.execute_whole(statement, params))
    if inserted:
        (handed,) = inserted
        result = _result(handed, handed.enqueue_outcome)
        move: Move | None = (None, handed.state, handed.reason_code)
    elif existed:
        result, move = _duplicate(existed[0]), None
    else:
        return None
    run_after_commit([partial(_report_one, result, move, actor)])
    return result


def _report_one(result: EnqueueResult, move: Move | None, actor: str) -> None:
    """`_report` of one version, and its creation's transition if it made one."""
    metrics.count_one_enqueued(result.outcome, move)
    if app_log.enabled(logging.INFO):  # else nothing to write: no logger bound for nothing
        log.info("handoff.enqueued", **_fields(result, actor))


def _report(results: Sequence[EnqueueResult], actor: str) -> None:
    """Count and log each outcome, once the transaction that decided them has committed."""
    metrics.count_enqueued(r.outcome for r in results)
    if not app_log.enabled(logging.INFO):
        return
    bound = log.bind()  # the lazy logger binds on every call: once per batch, not per record
    for r in results:
        bound.info("handoff.enqueued", **_fields(r, actor))


def _fields(r: EnqueueResult, actor: str) -> dict[str, Any]:
    return {
        "handoff_id": r.handoff_id,
        "reference_id": r.reference_id,
        "payload_hash": r.payload_hash,
        "outcome": r.outcome.value,
        "state": r.state.value,
        "actor": actor,
    }


def _enqueue_contended(
    uow: UnitOfWork, rec: PreparedRecord, *, now: datetime, actor: str
) -> EnqueueResult:
    """The reference already has unfinished work (or a racing writer): decide against it."""
    pair = (rec.reference_id, rec.payload_hash)
    for _ in range(_MAX_ROUNDS):
        found = uow.handoffs.by_pairs([pair]).get(pair)
        if found is not None:
            return _duplicate(found)
        latest = uow.handoffs.latest_fetched([rec.reference_id]).get(rec.reference_id)
        if latest is not None and rec.fetched_at < latest:
            done = _insert_one(uow, _stale_row(rec, now), now, actor)
            if done is not None:
                return _result(done, EnqueueOutcome.REJECTED_STALE)
            continue
        unfinished = uow.handoffs.unfinished_of(rec.reference_id)
        active = next((h for h in unfinished if h.state in ACTIVE_STATES), None)
        waiting = next((h for h in unfinished if h.state is HandoffState.WAITING), None)
        if active is not None and active.state is HandoffState.RUNNING:
            if not uow.handoffs.lock_running(active.id):
                continue  # it finished meanwhile: look again
            return _queue_behind(uow, rec, waiting, now=now, actor=actor)
        outcome = _replace_not_started(uow, [h for h in (active, waiting) if h], now, actor)
        if outcome is None:
            continue  # a worker claimed it meanwhile: look again
        row = _row(rec, now, HandoffState.QUEUED, ReasonCode.ENQUEUED, outcome)
        created = _insert_one(uow, row, now, actor)
        if created is None:
            raise Contention()  # cannot happen while we hold the superseded rows' locks
        return _result(created, outcome)
    raise Contention()


def _replace_not_started(
    uow: UnitOfWork, olds: list[Handoff], now: datetime, actor: str
) -> EnqueueOutcome | None:
    """Supersede the reference's not-yet-running rows; None if one started meanwhile."""
    for old in olds:
        moved = uow.handoffs.transition(
            old.id,
            {*RUNNABLE_STATES, HandoffState.WAITING},
            _terminal(HandoffState.SUPERSEDED, ReasonCode.SUPERSEDED_BY_NEWER_PAYLOAD, now),
        )
        if moved is None:
            return None
        uow.handoffs.add_events(
            [NewEvent(old.id, actor, old.state, moved.state, moved.reason_code)], now
        )
    return EnqueueOutcome.SUPERSEDED_PREVIOUS if olds else EnqueueOutcome.CREATED


def _queue_behind(
    uow: UnitOfWork,
    rec: PreparedRecord,
    waiting: Handoff | None,
    *,
    now: datetime,
    actor: str,
) -> EnqueueResult:
    if waiting is not None:
        replaced = _replace_not_started(uow, [waiting], now, actor)
        if replaced is None:
            raise Contention()  # promoted meanwhile: retry whole
    row = _row(
        rec,
        now,
        HandoffState.WAITING,
        ReasonCode.QUEUED_BEHIND_RUNNING,
        EnqueueOutcome.QUEUED_BEHIND_RUNNING,
    )
    created = _insert_one(uow, row, now, actor)
    if created is None:
        raise Contention()
    return _result(created, EnqueueOutcome.QUEUED_BEHIND_RUNNING)


def _insert_one(uow: UnitOfWork, row: dict[str, Any], now: datetime, actor: str) -> Handoff | None:
    inserted = uow.handoffs.insert([row])
    if not inserted:
        return None
    h = inserted[0]
    uow.handoffs.add_events(
        [NewEvent(h.id, actor, None, h.state, h.reason_code, detail=h.enqueue_outcome.value)], now
    )
    return h


def _row(
    rec: PreparedRecord,
    now: datetime,
    state: HandoffState,
    reason: ReasonCode,
    outcome: EnqueueOutcome,
) -> dict[str, Any]:
    return {
        "reference_id": rec.reference_id,
        "payload_hash": rec.payload_hash,
        "source": rec.source,
        "fetched_at": rec.fetched_at,
        "state": state.value,
        "reason_code": reason.value,
        "enqueue_outcome": outcome.value,
        "run_after": now,
        "created_at": now,
        "updated_at": now,
        "finished_at": now if state in TERMINAL_STATES else None,
    }


def _stale_row(rec: PreparedRecord, now: datetime) -> dict[str, Any]:
    # Kept as a terminal ledger row so the pair stays idempotent and the record is accounted for.
    return _row(
        rec, now, HandoffState.SUPERSEDED, ReasonCode.STALE_PAYLOAD, EnqueueOutcome.REJECTED_STALE
    )


def _terminal(state: HandoffState, reason: ReasonCode, now: datetime) -> dict[str, Any]:
    return {
        "state": state.value,
        "reason_code": reason.value,
        "updated_at": now,
        "finished_at": now,
        "lease_owner": None,
        "lease_expires_at": None,
    }


def _result(h: Handoff | HandedOff, outcome: EnqueueOutcome) -> EnqueueResult:
    return EnqueueResult(h.reference_id, h.payload_hash, h.id, h.state, outcome, h.enqueue_outcome)


def _duplicate(h: Handoff | HandedOff) -> EnqueueResult:
    return _result(h, EnqueueOutcome.DUPLICATE)


# -- operator actions ----------------------------------------------------------------------------


def cancel(uow: UnitOfWork, handoff_id: int, *, now: datetime, actor: str) -> Handoff:
    """Cancel an unfinished handoff. A running one's worker will find its lease gone."""
    current = _get(uow, handoff_id)
    if current.state in TERMINAL_STATES:
        raise Conflict(f"handoff {handoff_id} is already {current.state.value}")
    moved = uow.handoffs.transition(
        handoff_id,
        {current.state},
        _terminal(HandoffState.CANCELLED, ReasonCode.OPERATOR_CANCELLED, now),
    )
    if moved is None:
        raise Conflict(f"handoff {handoff_id} changed state meanwhile; look again")
    uow.handoffs.add_events(
        [NewEvent(handoff_id, actor, current.state, moved.state, moved.reason_code)], now
    )
    if current.state is HandoffState.RUNNING:  # close the attempt the worker can no longer end
        uow.jobs.finish(
            [(handoff_id, current.lease_token)],
            outcome="cancelled",
            now=now,
            reason_code=ReasonCode.OPERATOR_CANCELLED.value,
        )
    if current.state in ACTIVE_STATES:
        promote_waiting(uow, [moved.reference_id], now=now, actor=actor)
    return moved


def retry(uow: UnitOfWork, handoff_id: int, *, now: datetime, actor: str) -> Handoff:
    """Queue a failed or cancelled handoff again with fresh budgets. Conflict (409) if its
    reference has active work, or if a newer version of it was handed off since (retrying
    would ingest stale content over newer)."""
    current = _get(uow, handoff_id)
    if current.state not in (HandoffState.FAILED, HandoffState.CANCELLED):
        raise Conflict(
            f"only failed or cancelled handoffs can be retried; "
            f"{handoff_id} is {current.state.value}"
        )
    active = [
        h for h in uow.handoffs.unfinished_of(current.reference_id) if h.state in ACTIVE_STATES
    ]
    if active:
        raise Conflict(
            f"reference {current.reference_id!r} already has active handoff {active[0].id} "
            f"({active[0].state.value})"
        )
    latest = uow.handoffs.latest_fetched([current.reference_id])[current.reference_id]
    if current.fetched_at < latest:
        raise Conflict(
            f"handoff {handoff_id} holds an older version of {current.reference_id!r} than one "
            "already handed off; retrying it would ingest stale content"
        )
    moved = uow.handoffs.requeue(handoff_id, {current.state}, operator_requeue_values(now))
    if moved is None:
        raise Conflict(f"handoff {handoff_id} changed state meanwhile; look again")
    uow.handoffs.add_events(
        [NewEvent(handoff_id, actor, current.state, moved.state, moved.reason_code)], now
    )
    return moved


def operator_requeue_values(now: datetime) -> dict[str, Any]:
    """Columns of a handoff an operator (or reconcile) sends back to the queue afresh."""
    return {
        "state": HandoffState.QUEUED.value,
        "reason_code": ReasonCode.OPERATOR_RETRY.value,
        "run_after": now,
        "failures": 0,
        "crashes": 0,
        "throttled_since": None,
        "finished_at": None,
        "updated_at": now,
    }


def promote_waiting(
    uow: UnitOfWork, reference_ids: Sequence[str], *, now: datetime, actor: str
) -> list[Handoff]:
    """Queue the waiting handoff of each reference whose active slot has emptied."""
    promoted = uow.handoffs.promote_waiting(set(reference_ids), now)
    uow.handoffs.add_events(
        [NewEvent(h.id, actor, HandoffState.WAITING, h.state, h.reason_code) for h in promoted],
        now,
    )
    return promoted


def stats(uow: UnitOfWork) -> dict[str, dict[str, int]]:
    """Counts by state x reason code, every state and reason present (zeros included)."""
    counts = uow.queries.counts()
    return {
        state.value: {reason.value: counts.get((state, reason), 0) for reason in ReasonCode}
        for state in HandoffState
    }


def _get(uow: UnitOfWork, handoff_id: int) -> Handoff:
    found = uow.handoffs.get(handoff_id)
    if found is None:
        raise NotFound(f"no handoff {handoff_id}")
    return found
