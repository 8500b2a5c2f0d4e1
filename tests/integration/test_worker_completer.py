"""A running worker on PostgreSQL commits finished jobs on its completer thread, so a claim never
waits behind the commit of an earlier result. Shown with a completion held up by a row lock:
the next job starts while the last one's result is still waiting to commit, and the result
commits once the lock goes."""

from __future__ import annotations

import threading
import time

import psycopg

from app.db.uow import Database
from app.domain.clock import FakeClock
from app.domain.models import ClaimedJob
from app.domain.states import HandoffState
from app.worker.runner import Worker, WorkerConfig
from tests.support import get, hand_off_one, version

WAIT = 20.0


class GatedHandler:
    """Notes each job's start; the job of `gated` finishes only once `release` is set."""

    def __init__(self, gated: str) -> None:
        self.gated = gated
        self.started: dict[str, threading.Event] = {}
        self.release = threading.Event()

    def event(self, reference_id: str) -> threading.Event:
        return self.started.setdefault(reference_id, threading.Event())

    def __call__(self, job: ClaimedJob) -> None:
        self.event(job.handoff.reference_id).set()
        if job.handoff.reference_id == self.gated:
            assert self.release.wait(WAIT)


def _succeeded(db: Database, handoff_id: int) -> bool:
    return get(db, handoff_id).state is HandoffState.SUCCEEDED


def test_a_claim_does_not_wait_behind_a_held_up_completion(pg_url: str, clock: FakeClock) -> None:
    db = Database(pg_url)  # the worker runs on the system clock: the fake one is in the past
    handler = GatedHandler("first")
    worker = Worker(db, handler, config=WorkerConfig(concurrency=2, poll_every=0.05))
    stop = threading.Event()
    loop = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    first = hand_off_one(db, clock, version("first", "v1"))
    loop.start()
    try:
        assert handler.event("first").wait(WAIT)
        with psycopg.connect(pg_url) as lock:
            # Hold the running row: the completion's UPDATE of it waits for this transaction.
            lock.execute(
                "SELECT 1 FROM ingestion_handoffs WHERE id = %s FOR UPDATE", (first.handoff_id,)
            )
            handler.release.set()
            time.sleep(0.5)  # the result is handed over and its commit is under way, held up
            second = hand_off_one(db, clock, version("second", "v1"))
            assert handler.event("second").wait(WAIT), "the claim waited behind the completion"
            assert not _succeeded(db, first.handoff_id)  # still held up
            lock.rollback()
        deadline = time.monotonic() + WAIT
        while not (_succeeded(db, first.handoff_id) and _succeeded(db, second.handoff_id)):
            assert time.monotonic() < deadline, "the results did not commit"
            time.sleep(0.05)
    finally:
        stop.set()
        worker.wake.set()
        loop.join(WAIT)
        db.dispose()
    assert not loop.is_alive()
