"""Wake-ups only while a worker waits for one (PostgreSQL, migration 20260301000037).

An enqueue sends its NOTIFY only while a worker is listed as waiting. A worker lists itself when
a claim comes back short, waits out the enqueues that skipped their NOTIFY, and claims once
more; it takes itself off while it has a backlog, and when it stops. No wake-up is lost across
those moves: the workers below poll once an hour, so only a wake-up or a claim that follows a
full one can find a job in time.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg
import pytest

from app.db.notify import CHANNEL, Listener, ListenSession
from app.db.uow import Database
from app.domain.clock import FakeClock
from app.domain.models import ClaimedJob
from app.domain.states import HandoffState
from app.services import wakeups
from app.services.scrape_storage import store_and_hand_off
from app.worker.runner import Worker, WorkerConfig
from tests.support import CLIENT, get, hand_off_one, of_reference, running, version, wait_for

WAIT = 20.0
HOURLY = WorkerConfig(concurrency=4, poll_every=3600, rescue_every=3600)


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    database = Database(pg_url)
    yield database
    database.dispose()


@contextmanager
def listening(pg_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        yield conn


def notified(conn: psycopg.Connection[tuple[object, ...]], within: float) -> bool:
    """Whether a notification comes within `within` seconds."""
    return any(True for _ in conn.notifies(timeout=within, stop_after=1))


def listed(db: Database) -> list[str]:
    return db.run(wakeups.subscribed, write=False)


def a_session(conn: psycopg.Connection[tuple[object, ...]]) -> ListenSession:
    row = conn.execute(
        "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    ).fetchone()
    assert row is not None
    pid, started = row
    assert isinstance(pid, int)
    assert isinstance(started, datetime)
    return ListenSession(pid, started)


def subscribe(db: Database, worker_id: str, session: ListenSession) -> None:
    db.run(lambda uow: wakeups.subscribe(uow, worker_id, session, now=datetime.now(UTC)))


class OpenEnqueue:
    """An enqueue of `reference_id` on a thread, in a transaction held open until `commit`."""

    def __init__(self, db: Database, clock: FakeClock, reference_id: str) -> None:
        self.looked, self.release = threading.Event(), threading.Event()

        def enqueue() -> None:
            with db.transaction() as uow:
                record = version(reference_id, "v1")
                store_and_hand_off(uow, [record], now=clock.now(), actor=CLIENT)
                self.looked.set()  # its trigger has run: it looked at the list
                assert self.release.wait(WAIT)

        self.thread = threading.Thread(target=enqueue)

    def start(self) -> None:
        self.thread.start()
        assert self.looked.wait(WAIT)

    def commit(self) -> None:
        self.release.set()
        if self.thread.is_alive():
            self.thread.join(WAIT)


def enqueue_backlog(db: Database, clock: FakeClock, refs: list[str]) -> None:
    with db.transaction() as uow:
        store_and_hand_off(uow, [version(r, "v1") for r in refs], now=clock.now(), actor=CLIENT)


def test_an_enqueue_notifies_only_while_a_worker_is_listed(
    pg_url: str, db: Database, clock: FakeClock
) -> None:
    with listening(pg_url) as conn:
        hand_off_one(db, clock, version("nobody-waits", "v1"))
        assert not notified(conn, 0.3)
        subscribe(db, "w-listed", a_session(conn))
        hand_off_one(db, clock, version("somebody-waits", "v1"))
        assert notified(conn, WAIT)
        db.run(lambda uow: wakeups.unsubscribe(uow, "w-listed"))
        hand_off_one(db, clock, version("nobody-again", "v1"))
        assert not notified(conn, 0.3)


def test_an_enqueue_above_read_committed_always_notifies(
    pg_url: str, db: Database, clock: FakeClock
) -> None:
    """Its snapshot may predate a worker's row: it cannot tell that nobody waits."""
    with listening(pg_url) as conn:
        with db.transaction() as uow:
            uow.conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            store_and_hand_off(uow, [version("repeatable", "v1")], now=clock.now(), actor=CLIENT)
        assert notified(conn, WAIT)


def test_listing_waits_for_the_enqueues_that_skipped_their_notify(
    pg_url: str, db: Database, clock: FakeClock
) -> None:
    """An enqueue that found nobody listed and has not committed yet: a worker that lists
    itself now waits for it before its next claim, which then sees the enqueued row."""
    enqueue = OpenEnqueue(db, clock, "in-flight")
    enqueue.start()
    try:
        with listening(pg_url) as conn:
            subscribe(db, "w-barrier", a_session(conn))
        # Still open: a short wait gives up (the worker's poll finds that job instead).
        assert not db.run(
            lambda uow: wakeups.wait_for_skipping_enqueues(uow, timeout_seconds=0.2),
            autocommit=True,
        )
        waited: list[bool] = []
        waiter = threading.Thread(
            target=lambda: waited.append(
                db.run(
                    lambda uow: wakeups.wait_for_skipping_enqueues(uow, timeout_seconds=WAIT),
                    autocommit=True,
                )
            )
        )
        waiter.start()
        time.sleep(0.3)
        assert waited == []  # held up by the open enqueue
        enqueue.commit()
        waiter.join(WAIT)
        assert waited == [True]
    finally:
        enqueue.commit()
    (row,) = of_reference(db, "in-flight")
    assert row.state is HandoffState.QUEUED  # committed: the claim after the wait sees it


class SlowHandler:
    """Every job takes `seconds`; notes which references ran."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ran: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, job: ClaimedJob) -> None:
        time.sleep(self.seconds)
        with self.lock:
            self.ran.add(job.handoff.reference_id)


def test_a_worker_is_listed_while_idle_not_while_it_has_a_backlog_nor_once_stopped(
    pg_url: str, db: Database, clock: FakeClock
) -> None:
    handler = SlowHandler(0.05)
    worker = Worker(db, handler, config=HOURLY)
    stop = threading.Event()
    worker.start_listener(stop)
    try:
        with running(worker, WAIT):
            wait_for(lambda: listed(db) == [worker.id], WAIT)  # its first claim came back empty
            refs = [f"backlog-{n}" for n in range(60)]
            enqueue_backlog(db, clock, refs)
            wait_for(lambda: listed(db) == [], WAIT)  # a full claim: off the list
            wait_for(lambda: handler.ran == set(refs), WAIT)
            wait_for(lambda: listed(db) == [worker.id], WAIT)  # drained: listed again
        assert listed(db) == []  # stopped
    finally:
        stop.set()


def test_a_worker_going_idle_finds_the_job_of_an_enqueue_that_skipped_its_notify(
    pg_url: str, db: Database, clock: FakeClock
) -> None:
    """The race, made to happen: an enqueue looks at the list while the worker has a backlog
    (nobody listed: no NOTIFY), and commits only after the worker, drained, has listed itself.
    The worker waits for it and claims once more; without that the job would wait an hour."""
    handler = SlowHandler(0.02)
    worker = Worker(db, handler, config=HOURLY)
    stop = threading.Event()
    worker.start_listener(stop)
    enqueue = OpenEnqueue(db, clock, "skipped")
    try:
        with running(worker, WAIT):
            wait_for(lambda: listed(db) == [worker.id], WAIT)
            enqueue_backlog(db, clock, [f"backlog-{n}" for n in range(60)])
            wait_for(lambda: listed(db) == [], WAIT)
            enqueue.start()
            wait_for(lambda: listed(db) == [worker.id], WAIT)  # drained, listed, waiting for us
            time.sleep(0.2)
            enqueue.commit()
            wait_for(lambda: "skipped" in handler.ran, WAIT)
    finally:
        enqueue.commit()
        stop.set()


def test_a_worker_lists_itself_again_after_its_listener_reconnects(
    pg_url: str, db: Database, clock: FakeClock
) -> None:
    worker = Worker(db, SlowHandler(0), config=HOURLY)
    stop = threading.Event()
    listener = worker.start_listener(stop)
    try:
        with running(worker, WAIT):
            wait_for(lambda: listed(db) == [worker.id], WAIT)
            first = listener.session
            assert first is not None
            with psycopg.connect(pg_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (first.pid,))
            wait_for(lambda: listener.session not in (None, first), WAIT)
            wait_for(lambda: _listed_pid(db, worker.id) == _pid(listener), WAIT)
            done = hand_off_one(db, clock, version("after-reconnect", "v1"))
            wait_for(lambda: get(db, done.handoff_id).state is HandoffState.SUCCEEDED, WAIT)
    finally:
        stop.set()


def _pid(listener: Listener) -> int | None:
    session = listener.session
    return None if session is None else session.pid


def _listed_pid(db: Database, worker_id: str) -> int | None:
    with psycopg.connect(db.url) as conn:
        row = conn.execute(
            "SELECT pid FROM handoff_wakeup_subscribers WHERE worker_id = %s", (worker_id,)
        ).fetchone()
    return None if row is None else int(row[0])


def test_the_rescuer_prunes_the_rows_of_sessions_that_are_gone(pg_url: str, db: Database) -> None:
    with listening(pg_url) as conn:
        live = a_session(conn)
        subscribe(db, "w-live", live)
        subscribe(db, "w-gone", ListenSession(live.pid, datetime(2020, 1, 1, tzinfo=UTC)))
        Worker(db, SlowHandler(0))._rescue()
        assert listed(db) == ["w-live"]


@pytest.mark.slow
def test_no_wakeup_is_lost_while_workers_move_between_backlog_and_idle(
    pg_url: str, db: Database, clock: FakeClock
) -> None:
    """Two workers that poll once an hour, and bursts of enqueues from three threads, of
    random sizes and with random pauses, so that the workers keep going from a backlog to
    idle and back: every job runs within seconds."""
    handler = SlowHandler(0.002)
    stop = threading.Event()
    workers = [Worker(db, handler, config=HOURLY) for _ in range(2)]
    for worker in workers:
        worker.start_listener(stop)
    refs: list[str] = []
    refs_lock = threading.Lock()

    def produce(seed: int) -> None:
        rand = random.Random(seed)
        for burst in range(40):
            batch = [f"p{seed}-{burst}-{n}" for n in range(rand.choice([1, 1, 2, 5, 30]))]
            for ref in batch:
                with db.transaction() as uow:  # one enqueue per call, as the API's clients do
                    store_and_hand_off(uow, [version(ref, "v1")], now=clock.now(), actor=CLIENT)
            with refs_lock:
                refs.extend(batch)
            time.sleep(rand.choice([0, 0.001, 0.01, 0.05]))

    try:
        with running(workers[0], WAIT), running(workers[1], WAIT):
            producers = [threading.Thread(target=produce, args=(seed,)) for seed in range(3)]
            for p in producers:
                p.start()
            for p in producers:
                p.join(120)
            wait_for(lambda: handler.ran == set(refs), WAIT)
    finally:
        stop.set()
