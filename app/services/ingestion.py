"""Ingestion jobs: claim with a lease, heartbeat, complete, fail by retry class, release, rescue.

Every function runs in the caller's transaction and writes, in that same transaction, one event
per transition and the attempt's row in `ingestion_jobs`. A lease token fences each finalize: a
worker that lost its lease (rescued, cancelled, re-claimed) can never move the handoff again.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from app import metrics
from app.db.uow import UnitOfWork
from app.domain.errors import LeaseLost
from app.domain.models import ClaimedJob, Handoff, Lease, NewEvent
from app.domain.retry import Counters, RetryPolicy, decide
from app.domain.states import (
    RUNNABLE_STATES,
    TERMINAL_STATES,
    HandoffState,
    ReasonCode,
    RetryClass,
)
from app.services.ingestion_handoff import promote_waiting

RESCUER = "system:rescuer"
log = structlog.get_logger("handoff.rescuer")


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt as the worker reports it."""

    retry_class: RetryClass
    error: str
    retry_after: timedelta | None = None
    reason: ReasonCode = ReasonCode.PERMANENT_ERROR  # used by the permanent class only


def claim(
    uow: UnitOfWork, worker_id: str, limit: int, *, now: datetime, lease: timedelta
) -> list[ClaimedJob]:
    """Lease up to `limit` runnable handoffs and load their scrape records (one batch)."""
    return uow.work.claim(worker_id, limit, now, now + lease, f"worker:{worker_id}")


def heartbeat(
    uow: UnitOfWork, leases: Collection[Lease], *, now: datetime, lease: timedelta
) -> set[int]:
    """Extend the leases still held; returns their handoff ids. The others are lost."""
    return uow.handoffs.extend_leases(leases, now + lease, now)


def complete(
    uow: UnitOfWork, leases: Sequence[Lease], *, now: datetime, worker_id: str
) -> list[Lease]:
    """Mark handoffs succeeded (batch). Returns the leases that were still current; a stale
    one changes nothing. Promotes the waiting handoff of each reference that finished."""
    done = uow.work.succeed(leases, now, f"worker:{worker_id}")
    # Succeeded is terminal: each reference's active slot is free for its waiting row. Its own
    # statement, so it sees a waiting row queued behind the running one meanwhile.
    promote_waiting(
        uow, sorted({h.reference_id for h in done}), now=now, actor=f"worker:{worker_id}"
    )
    return [Lease(h.id, h.lease_token) for h in done]


def complete_one(uow: UnitOfWork, lease: Lease, *, now: datetime, worker_id: str) -> None:
    if not complete(uow, [lease], now=now, worker_id=worker_id):
        raise LeaseLost(f"handoff {lease.handoff_id}: lease token {lease.token} is not current")


def fail(
    uow: UnitOfWork,
    lease: Lease,
    failure: Failure,
    *,
    now: datetime,
    worker_id: str,
    policy: RetryPolicy,
    rand: Callable[[], float] = random.random,
) -> Handoff:
    """Record a failed attempt and move the handoff as its retry class says."""
    current = uow.handoffs.get(lease.handoff_id)
    if (
        current is None
        or current.state is not HandoffState.RUNNING
        or current.lease_token != lease.token
    ):
        raise LeaseLost(f"handoff {lease.handoff_id}: lease token {lease.token} is not current")
    decision = decide(
        policy,
        failure.retry_class,
        Counters(current.failures, current.crashes, current.throttled_since),
        now,
        retry_after=failure.retry_after,
        permanent_reason=failure.reason,
        rand=rand,
    )
    terminal = decision.state in TERMINAL_STATES
    moved = uow.handoffs.finish_leases(
        [lease],
        {
            "state": decision.state.value,
            "reason_code": decision.reason.value,
            "run_after": decision.run_after or now,
            "failures": decision.failures,
            "crashes": decision.crashes,
            "throttled_since": decision.throttled_since,
            "lease_owner": None,
            "lease_expires_at": None,
            "last_error": failure.error[:4000],
            "finished_at": now if terminal else None,
            "updated_at": now,
        },
    )
    if not moved:
        raise LeaseLost(f"handoff {lease.handoff_id}: lease token {lease.token} is not current")
    _record_moves(
        uow,
        moved,
        now,
        f"worker:{worker_id}",
        outcome="failed" if terminal else "retry",
        retry_class=failure.retry_class,
        error=failure.error,
    )
    return moved[0]


def release(
    uow: UnitOfWork, leases: Sequence[Lease], *, now: datetime, worker_id: str
) -> list[Lease]:
    """Give leased handoffs back untouched (graceful shutdown): queued again at once, with no
    failure counted. Returns the leases that were still held."""
    moved = uow.handoffs.finish_leases(
        leases,
        {
            "state": HandoffState.QUEUED.value,
            "reason_code": ReasonCode.LEASE_RELEASED.value,
            "run_after": now,
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": now,
        },
    )
    _record_moves(uow, moved, now, f"worker:{worker_id}", outcome="released")
    return [Lease(h.id, h.lease_token) for h in moved]


def rescue(uow: UnitOfWork, *, now: datetime, policy: RetryPolicy) -> list[Handoff]:
    """Return expired leases (one guarded UPDATE; safe to run on every node at once)."""
    moved = uow.handoffs.rescue_expired(now, policy.crash_max, now + policy.crash_delay)
    _record_moves(uow, moved, now, RESCUER, outcome="lease_expired", retry_class=RetryClass.CRASH)
    if moved:
        uow.on_commit(lambda: _report_rescued(moved))
    return moved


def _report_rescued(moved: Sequence[Handoff]) -> None:
    for h in moved:
        metrics.RESCUED.labels(h.reason_code.value).inc()
        log.info(
            "rescuer.rescued",
            handoff_id=h.id,
            reference_id=h.reference_id,
            payload_hash=h.payload_hash,
            lease_token=h.lease_token,
            state=h.state.value,
            reason_code=h.reason_code.value,
            crashes=h.crashes,
        )


def _record_moves(
    uow: UnitOfWork,
    moved: Sequence[Handoff],
    now: datetime,
    actor: str,
    *,
    outcome: str,
    retry_class: RetryClass | None = None,
    error: str | None = None,
) -> None:
    """Events and attempt rows for handoffs that just left `running`, then settle waiting rows:
    a reference whose active row ended promotes its waiting row; one whose active row went
    back to wait for a retry hands its slot to the newer waiting payload instead."""
    if not moved:
        return
    uow.handoffs.add_events(
        [
            NewEvent(h.id, actor, HandoffState.RUNNING, h.state, h.reason_code, h.lease_token)
            for h in moved
        ],
        now,
    )
    for reason in {h.reason_code for h in moved}:
        uow.jobs.finish(
            [(h.id, h.lease_token) for h in moved if h.reason_code is reason],
            outcome=outcome,
            now=now,
            retry_class=retry_class.value if retry_class else None,
            reason_code=reason.value,
            error=error[:4000] if error else None,
        )
    freed = {h.reference_id for h in moved if h.state in TERMINAL_STATES}
    requeued = [h for h in moved if h.state in RUNNABLE_STATES]
    if requeued:
        freed |= _yield_to_waiting(uow, requeued, now, actor)
    promote_waiting(uow, sorted(freed), now=now, actor=actor)


def _yield_to_waiting(
    uow: UnitOfWork, requeued: Sequence[Handoff], now: datetime, actor: str
) -> set[str]:
    """A payload going back to wait whose reference has a newer one waiting is superseded."""
    freed: set[str] = set()
    for h in requeued:
        waiting = [
            w for w in uow.handoffs.unfinished_of(h.reference_id) if w.state is HandoffState.WAITING
        ]
        if not waiting:
            continue
        gone = uow.handoffs.transition(
            h.id,
            RUNNABLE_STATES,
            {
                "state": HandoffState.SUPERSEDED.value,
                "reason_code": ReasonCode.SUPERSEDED_BY_NEWER_PAYLOAD.value,
                "finished_at": now,
                "updated_at": now,
            },
        )
        if gone is not None:
            uow.handoffs.add_events(
                [NewEvent(h.id, actor, h.state, gone.state, gone.reason_code)], now
            )
            freed.add(h.reference_id)
    return freed
