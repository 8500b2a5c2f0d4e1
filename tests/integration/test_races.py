"""Races between writers on PostgreSQL, forced into the bad interleaving on purpose."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import text

from app.db.uow import Database
from app.domain.clock import FakeClock, SystemClock
from app.domain.models import ClaimedJob
from app.domain.states import HandoffState, ReasonCode
from app.services import ingestion
from app.services.scrape_storage import store_and_hand_off
from app.worker.runner import Worker, WorkerConfig
from tests.support import CLIENT, LEASE, WORKER, at, hand_off_one, version, wait_for


def test_a_payload_queued_behind_a_finishing_run_is_promoted_not_stranded(pg_url: str) -> None:
    db, clock = Database(pg_url), FakeClock()
    hand_off_one(db, clock, version("race", "old", fetched_at=at(0)))
    (job,) = db.run(lambda uow: ingestion.claim(uow, WORKER, 1, now=clock.now(), lease=LEASE))

    finished = threading.Event()

    def complete() -> None:
        db.run(lambda uow: ingestion.complete(uow, [job.lease], now=clock.now(), worker_id=WORKER))
        finished.set()

    def completer_blocked() -> bool:
        with db.engine.connect() as conn:
            waits = conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            ).scalar_one()
        return finished.is_set() or waits > 0

    # The newer payload is queued behind the running one, and before that commits the worker
    # finishes the running one: its promotion must still see the waiting row.
    with db.transaction() as uow:
        (queued,) = store_and_hand_off(
            uow, [version("race", "new", fetched_at=at(1))], now=clock.now(), actor=CLIENT
        )
        assert queued.state is HandoffState.WAITING
        thread = threading.Thread(target=complete)
        thread.start()
        wait_for(completer_blocked)
    thread.join(timeout=20)
    assert finished.is_set()

    with db.transaction(write=False) as uow:
        newer = uow.handoffs.get(queued.handoff_id)
    assert newer is not None
    assert (newer.state, newer.reason_code) == (HandoffState.QUEUED, ReasonCode.PROMOTED)
    db.dispose()


@contextmanager
def hung_worker(db: Database, **config: Any) -> Iterator[None]:
    """A worker with one handler thread whose handler never returns (until the block ends)."""
    release, stop = threading.Event(), threading.Event()

    def hang(job: ClaimedJob) -> None:
        release.wait(30)

    settings = {"heartbeat_every": 0.05, "poll_every": 0.05, "job_timeout": 0.3, **config}
    worker = Worker(db, hang, config=WorkerConfig(concurrency=1, shutdown_grace=0, **settings))
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        yield
    finally:
        stop.set()
        release.set()
        thread.join(timeout=20)


def test_a_hung_handler_stops_being_heartbeated_and_is_rescued_as_a_crash(db_url: str) -> None:
    db = Database(db_url)
    hand_off_one(db, FakeClock(SystemClock().now()), version("hung", "x"))

    def rescued() -> bool:
        with db.transaction(write=False) as uow:
            rows = uow.handoffs.of_reference("hung")
        return rows[0].crashes >= 1

    with hung_worker(db, lease=timedelta(seconds=1), rescue_every=0.1):
        wait_for(rescued)
    with db.transaction(write=False) as uow:
        (row,) = uow.handoffs.of_reference("hung")
        events = uow.handoffs.events(row.id)
    assert any(e.reason_code is ReasonCode.LEASE_EXPIRED for e in events)
    db.dispose()


def test_jobs_prefetched_behind_a_hung_handler_are_given_back_at_no_cost(db_url: str) -> None:
    db = Database(db_url)
    clock = FakeClock(SystemClock().now())
    for n in range(3):
        hand_off_one(db, clock, version(f"queue-{n}", "x"))

    def rows() -> list[tuple[HandoffState, ReasonCode, int, int]]:
        with db.transaction(write=False) as uow:
            found = [uow.handoffs.of_reference(f"queue-{n}")[0] for n in range(3)]
        return [(h.state, h.reason_code, h.failures, h.crashes) for h in found]

    def two_given_back() -> bool:
        return sum(r[1] is ReasonCode.LEASE_RELEASED for r in rows()) == 2

    with hung_worker(db, prefetch=2, lease=timedelta(seconds=30), rescue_every=3600):
        wait_for(two_given_back)
        # The only handler thread is hung, so the worker claims nothing more: they stay queued.
        time.sleep(0.3)
        assert two_given_back()
    released = [r for r in rows() if r[1] is ReasonCode.LEASE_RELEASED]
    assert released == [(HandoffState.QUEUED, ReasonCode.LEASE_RELEASED, 0, 0)] * 2
    db.dispose()
