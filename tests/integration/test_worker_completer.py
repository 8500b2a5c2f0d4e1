"""A running worker on PostgreSQL commits finished jobs on its completer thread, so a claim never
waits behind the commit of an earlier result. Shown with a completion held up by a row lock:
the next job starts while the last one's result is still waiting to commit, and the result
commits once the lock goes. And a result only commits: claims are for hints and poll ticks."""

from __future__ import annotations

import threading
import time

import psycopg

from app.db.uow import Database
from app.domain.clock import FakeClock
from app.domain.models import ClaimedJob
from app.domain.states import HandoffState
from app.worker.runner import Worker, WorkerConfig
from tests.support import get, hand_off_one, running, version, wait_for

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
    first = hand_off_one(db, clock, version("first", "v1"))
    with running(worker, WAIT):
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
    db.dispose()


def test_a_result_costs_no_claim_until_a_hint_or_the_poll(pg_url: str, clock: FakeClock) -> None:
    """With no listener and a long poll: a version stored while the first job runs is still
    queued after that job's result has committed, and starts once the worker is woken, as a
    notification would wake it."""
    db = Database(pg_url)
    handler = GatedHandler("first")
    worker = Worker(db, handler, config=WorkerConfig(concurrency=1, poll_every=60))
    first = hand_off_one(db, clock, version("first", "v1"))
    with running(worker, WAIT):
        assert handler.event("first").wait(WAIT)
        second = hand_off_one(db, clock, version("second", "v1"))
        handler.release.set()
        wait_for(lambda: _succeeded(db, first.handoff_id), WAIT)
        assert not handler.event("second").wait(0.5), "the result's turn claimed"
        assert get(db, second.handoff_id).state is HandoffState.QUEUED
        worker.wake.set()  # what the listener does on a notification
        assert handler.event("second").wait(WAIT)
    db.dispose()
