"""Small builders shared by the service tests: scraped versions, hand-offs and lookups."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select

from app.db import tables
from app.db.rows import to_handoff
from app.db.uow import Database, UnitOfWork
from app.domain.clock import FakeClock
from app.domain.models import Attempt, ClaimedJob, Handoff, HandoffEvent
from app.domain.records import PreparedRecord, ScrapeSubmission, prepare
from app.services import ingestion
from app.services.ingestion_handoff import EnqueueResult
from app.services.scrape_storage import store_and_hand_off
from app.worker.runner import Worker

CLIENT = "client:tests"
WORKER = "w1"
LEASE = timedelta(seconds=60)
#: Every table a test writes, children first (so rows can be deleted in this order).
TABLES = (
    tables.handoff_events,
    tables.ingestion_jobs,
    tables.documents,
    tables.handoffs,
    tables.scrape_records,
)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def version(
    reference_id: str, body: str, *, fetched_at: datetime | None = None, source: str = "shop"
) -> PreparedRecord:
    """A prepared scrape of `reference_id` whose payload is `body` (text/plain)."""
    sub = ScrapeSubmission(
        source=source,
        reference_id=reference_id,
        body=body,
        content_type="text/plain",
        fetched_at=fetched_at or T0,
    )
    return prepare(sub, now=T0, max_body_bytes=1 << 20)


def at(seconds: float) -> datetime:
    """A fetch time `seconds` after T0: later scrapes get larger numbers."""
    return T0 + timedelta(seconds=seconds)


def hand_off(db: Database, clock: FakeClock, *records: PreparedRecord) -> list[EnqueueResult]:
    """Store and hand off `records` in one committed transaction, as the API does."""
    with db.transaction() as uow:
        return store_and_hand_off(uow, records, now=clock.now(), actor=CLIENT)


def hand_off_one(db: Database, clock: FakeClock, record: PreparedRecord) -> EnqueueResult:
    (result,) = hand_off(db, clock, record)
    return result


def claim(
    db: Database, clock: FakeClock, limit: int = 10, *, worker: str = WORKER
) -> list[ClaimedJob]:
    with db.transaction() as uow:
        return ingestion.claim(uow, worker, limit, now=clock.now(), lease=LEASE)


def claim_one(db: Database, clock: FakeClock, *, worker: str = WORKER) -> ClaimedJob:
    (job,) = claim(db, clock, 1, worker=worker)
    return job


def get(db: Database, handoff_id: int) -> Handoff:
    with db.transaction(write=False) as uow:
        found = uow.handoffs.get(handoff_id)
    assert found is not None, f"handoff {handoff_id} is gone"
    return found


def of_reference(db: Database, reference_id: str) -> list[Handoff]:
    with db.transaction(write=False) as uow:
        return uow.handoffs.of_reference(reference_id)


def events(db: Database, handoff_id: int) -> list[HandoffEvent]:
    with db.transaction(write=False) as uow:
        return uow.handoffs.events(handoff_id)


def attempts(db: Database, handoff_id: int) -> list[Attempt]:
    with db.transaction(write=False) as uow:
        return uow.jobs.of_handoff(handoff_id)


def count_rows(uow: UnitOfWork, table_name: str) -> int:
    table = tables.metadata.tables[table_name]
    return int(uow.conn.execute(select(func.count()).select_from(table)).scalar_one())


def all_handoffs(uow: UnitOfWork) -> list[Handoff]:
    rows = uow.conn.execute(select(tables.handoffs).order_by(tables.handoffs.c.id))
    return [to_handoff(row) for row in rows]


def wipe(db: Database) -> None:
    """Delete every row a test wrote, keeping the schema (cheaper than a new database)."""
    with db.transaction() as uow:
        for table in TABLES:
            uow.conn.execute(delete(table))


def wait_for(
    condition: Callable[[], bool],
    timeout: float = 60.0,  # a loaded CI machine may take 15 s or more to start a server
    *,
    interval: float = 0.05,
    tolerate: tuple[type[BaseException], ...] = (),
) -> None:
    """Poll `condition` until it holds (no fixed sleeps); `tolerate` names errors that mean
    "not yet" (a server still starting). Fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except tolerate:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(interval)


@contextmanager
def running(worker: Worker, timeout: float = 20.0) -> Iterator[None]:
    """`worker.run` on a thread of its own for the block; stopped and joined after it."""
    stop = threading.Event()
    loop = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    loop.start()
    try:
        yield
    finally:
        stop.set()
        worker.wake.set()
        loop.join(timeout)
    assert not loop.is_alive(), "the worker did not stop"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Boom(Exception):
    """A failure a test raises on purpose."""


def store_then_fail(db: Database, clock: FakeClock, reference_id: str) -> None:
    """Store and hand off one version in a transaction that then raises: it must roll back."""
    with db.transaction() as uow:
        store_and_hand_off(uow, [version(reference_id, "v1")], now=clock.now(), actor=CLIENT)
        raise Boom
