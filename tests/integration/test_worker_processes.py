"""Workers as real processes: SIGKILL mid-job, SIGTERM with a grace period, LISTEN wake-ups."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from app.db.uow import Database
from app.domain.clock import SystemClock
from app.domain.errors import LeaseLost
from app.domain.models import Lease
from app.domain.records import ScrapeSubmission
from app.domain.retry import RetryPolicy
from app.domain.states import HandoffState, ReasonCode
from app.services import ingestion, scrape_storage
from app.settings import REPO_ROOT
from app.worker.handler import NoopHandler
from app.worker.runner import Worker, WorkerConfig
from tests.support import wait_for


def submit(db: Database, reference_id: str, body: str = "<p>x</p>") -> int:
    now = SystemClock().now()
    sub = ScrapeSubmission(source="t", reference_id=reference_id, body=body)
    prepared = scrape_storage.prepare_all([sub], now=now, max_body_bytes=10_000)
    results = db.run(
        lambda uow: scrape_storage.store_and_hand_off(uow, prepared, now=now, actor="client:t")
    )
    return results[0].handoff_id


def state_of(db: Database, handoff_id: int) -> HandoffState:
    with db.transaction(write=False) as uow:
        found = uow.handoffs.get(handoff_id)
    assert found is not None
    return found.state


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], Path]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(url: str, mode: str, grace: float = 30.0) -> tuple[subprocess.Popen[bytes], Path]:
        marker = tmp_path / f"{mode}-{len(procs)}.started"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.worker_proc",
                url,
                mode,
                str(marker),
                str(grace),
            ],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        procs.append(proc)
        return proc, marker

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_killed_workers_handoff_is_rescued_and_its_late_completion_refused(
    db: Database, db_url: str, spawn: Callable[..., tuple[subprocess.Popen[bytes], Path]]
) -> None:
    handoff_id = submit(db, "kill-me")
    proc, marker = spawn(db_url, "hang")
    wait_for(marker.exists)
    _, token = (int(x) for x in marker.read_text().split())
    assert state_of(db, handoff_id) is HandoffState.RUNNING

    proc.send_signal(signal.SIGKILL)
    proc.wait()
    policy = RetryPolicy(crash_delay=timedelta(0))
    rescued: list[int] = []

    def rescue_once() -> bool:
        moved = db.run(lambda uow: ingestion.rescue(uow, now=SystemClock().now(), policy=policy))
        rescued.extend(h.id for h in moved)
        return bool(rescued)

    wait_for(rescue_once)  # the 2 s lease has to run out first
    assert rescued == [handoff_id]
    with db.transaction(write=False) as uow:
        found = uow.handoffs.get(handoff_id)
    assert found is not None
    assert found.reason_code is ReasonCode.LEASE_EXPIRED

    assert Worker(db, NoopHandler(), worker_id="survivor").drain() == 1
    assert state_of(db, handoff_id) is HandoffState.SUCCEEDED

    with pytest.raises(LeaseLost):
        db.run(
            lambda uow: ingestion.complete_one(
                uow, Lease(handoff_id, token), now=SystemClock().now(), worker_id="proc-hang"
            )
        )
    with db.transaction(write=False) as uow:
        events = uow.handoffs.events(handoff_id)
        attempts = uow.jobs.of_handoff(handoff_id)
    assert [(e.to_state, e.actor) for e in events] == [
        (HandoffState.QUEUED, "client:t"),
        (HandoffState.RUNNING, "worker:proc-hang"),
        (HandoffState.RETRY_WAIT, "system:rescuer"),
        (HandoffState.RUNNING, "worker:survivor"),
        (HandoffState.SUCCEEDED, "worker:survivor"),
    ]
    assert [a.outcome for a in attempts] == ["lease_expired", "succeeded"]


def test_sigterm_lets_the_in_flight_job_finish_within_the_grace_period(
    db: Database, db_url: str, spawn: Callable[..., tuple[subprocess.Popen[bytes], Path]]
) -> None:
    handoff_id = submit(db, "finish-me")
    proc, marker = spawn(db_url, "slow", 30.0)
    wait_for(marker.exists)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert state_of(db, handoff_id) is HandoffState.SUCCEEDED


def test_sigterm_past_the_grace_period_releases_the_job_for_another_worker(
    db: Database, db_url: str, spawn: Callable[..., tuple[subprocess.Popen[bytes], Path]]
) -> None:
    handoff_id = submit(db, "release-me")
    proc, marker = spawn(db_url, "forever", 0.2)
    wait_for(marker.exists)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    with db.transaction(write=False) as uow:
        found = uow.handoffs.get(handoff_id)
    assert found is not None
    assert (found.state, found.reason_code) == (HandoffState.QUEUED, ReasonCode.LEASE_RELEASED)
    assert found.failures == 0
    assert Worker(db, NoopHandler()).drain() == 1
    assert state_of(db, handoff_id) is HandoffState.SUCCEEDED


def test_a_notification_wakes_an_idle_worker_long_before_its_poll(pg_url: str) -> None:
    db = Database(pg_url)
    stop = threading.Event()
    worker = Worker(db, NoopHandler(), config=WorkerConfig(poll_every=3600, rescue_every=3600))
    listener = worker.start_listener(stop)
    wait_for(listener.listening.is_set)
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        time.sleep(0.2)  # let the worker finish its first (empty) claim and go idle
        handoff_id = submit(db, "wake-up")
        wait_for(lambda: state_of(db, handoff_id) is HandoffState.SUCCEEDED, timeout=30)
    finally:
        stop.set()
        thread.join(timeout=5)
        db.dispose()
    assert not thread.is_alive()  # stopping does not wait out the hour-long poll
