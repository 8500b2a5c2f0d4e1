"""Wake-ups only while a worker waits for one (PostgreSQL).

A worker whose claim came back short is about to sleep until a hint: it lists itself, waits
out the enqueues that skipped their NOTIFY while nobody was listed, and claims once more. A
worker whose claims come back full has a backlog and claims without waiting: it takes itself
off the list, and enqueues stop paying for a NOTIFY nobody needs (a NOTIFY serialises the
commits of concurrent enqueues; see migration 20260301000037).
"""

from __future__ import annotations

from datetime import datetime

from app.db.notify import ListenSession
from app.db.uow import UnitOfWork


def subscribe(uow: UnitOfWork, worker_id: str, session: ListenSession, *, now: datetime) -> None:
    """List the worker as waiting for wake-ups on its LISTEN session. Commit it, then call
    `wait_for_skipping_enqueues` before the next claim."""
    uow.wakeups.subscribe(worker_id, session.pid, session.backend_start, now)


def wait_for_skipping_enqueues(uow: UnitOfWork, *, timeout_seconds: float) -> bool:
    """Wait for the enqueues that looked at the list before the worker's row committed (an
    autocommit unit of work). False if one is still open after `timeout_seconds`: its job is
    found by the worker's poll instead."""
    return uow.wakeups.wait_for_skipping_enqueues(timeout_seconds)


def unsubscribe(uow: UnitOfWork, worker_id: str) -> None:
    uow.wakeups.unsubscribe(worker_id)


def prune(uow: UnitOfWork) -> int:
    """Drop the rows of workers whose LISTEN session is gone; how many."""
    return uow.wakeups.prune()


def subscribed(uow: UnitOfWork) -> list[str]:
    """The worker ids listed as waiting."""
    return uow.wakeups.worker_ids()
