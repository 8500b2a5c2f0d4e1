"""A running worker's rescuer has a thread of its own: a rescuer pass held up (here by a row
lock on the expired lease it must return) does not hold up the claim of a notified job."""

from __future__ import annotations

import psycopg

from app.db.uow import Database
from app.domain.clock import FakeClock
from app.domain.states import HandoffState
from app.worker.runner import Worker, WorkerConfig
from tests.integration.test_worker_completer import WAIT, GatedHandler
from tests.support import claim_one, get, hand_off_one, running, version, wait_for


def _waiting_for_a_lock(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_held_up_rescuer_does_not_hold_up_the_next_claim(pg_url: str, clock: FakeClock) -> None:
    db = Database(pg_url)  # the worker runs on the system clock: the fake one is in the past
    lost = hand_off_one(db, clock, version("lost", "v1"))
    claim_one(db, clock)  # leased at the fake clock's time: long expired for the worker
    handler = GatedHandler("none")
    worker = Worker(db, handler, config=WorkerConfig(poll_every=60, rescue_every=60))
    with psycopg.connect(pg_url) as lock:
        lock.execute(
            "SELECT 1 FROM ingestion_handoffs WHERE id = %s FOR UPDATE", (lost.handoff_id,)
        )
        with running(worker, WAIT):
            # The rescuer's first pass, at start, waits for this lock to return the lease.
            wait_for(lambda: _waiting_for_a_lock(lock) == 1, WAIT)
            hand_off_one(db, clock, version("next", "v1"))
            worker.wake.set()  # what the listener does on its notification
            assert handler.event("next").wait(WAIT), "the claim waited behind the rescuer"
            assert get(db, lost.handoff_id).state is HandoffState.RUNNING  # not yet rescued
            lock.rollback()
            wait_for(lambda: get(db, lost.handoff_id).state is HandoffState.RETRY_WAIT, WAIT)
    db.dispose()
