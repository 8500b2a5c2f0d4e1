"""The dashboard's throughput chart: handoffs finished per five-minute window over the last
hour, counted by the database on both engines, adding up to the stats' hourly figures."""

from __future__ import annotations

from datetime import timedelta

from app.db.uow import Database
from app.domain.clock import FakeClock
from app.domain.models import Lease
from app.domain.retry import RetryPolicy
from app.domain.states import RetryClass
from app.services import handoff_queries, ingestion, throughput
from app.services.ingestion import Failure
from tests.support import WORKER, claim_one, hand_off_one, version


def finish(db: Database, clock: FakeClock, reference_id: str, *, ok: bool) -> None:
    """Hand off a version of `reference_id`, claim it and finish it now."""
    hand_off_one(db, clock, version(reference_id, "body"))
    job = claim_one(db, clock)
    lease = Lease(job.handoff.id, job.handoff.lease_token)
    with db.transaction() as uow:
        if ok:
            ingestion.complete_one(uow, lease, now=clock.now(), worker_id=WORKER)
        else:
            failure = Failure(RetryClass.PERMANENT, "unparseable")
            ingestion.fail(
                uow, lease, failure, now=clock.now(), worker_id=WORKER, policy=RetryPolicy()
            )


def test_windows_count_what_finished_in_them_oldest_first(db: Database, clock: FakeClock) -> None:
    finish(db, clock, "old", ok=True)  # 70 minutes before the end: outside the hour
    clock.advance(timedelta(minutes=70 - 58))
    finish(db, clock, "a", ok=True)  # 58 minutes before: the first window
    finish(db, clock, "b", ok=False)
    clock.advance(timedelta(minutes=58 - 5))
    finish(db, clock, "c", ok=True)  # exactly 5 minutes before: the eleventh window, (start, end]
    clock.advance(timedelta(minutes=5))
    finish(db, clock, "d", ok=False)  # now: the last window
    finish(db, clock, "e", ok=False)

    now = clock.now()
    with db.transaction(write=False) as uow:
        windows = throughput.last_hour(uow, now=now)
        stats = handoff_queries.stats(uow, now=now, stuck_after=timedelta(minutes=15))

    assert len(windows) == 12
    assert windows[-1].end == now
    assert [(w.succeeded, w.failed) for w in windows] == [(1, 1)] + [(0, 0)] * 9 + [(1, 0), (0, 2)]
    assert windows[0].failure_rate == 0.5
    assert windows[5].failure_rate is None
    assert sum(w.succeeded for w in windows) == stats.last_60_minutes.succeeded
    assert sum(w.failed for w in windows) == stats.last_60_minutes.failed


def test_an_empty_hour_is_twelve_empty_windows(db: Database, clock: FakeClock) -> None:
    with db.transaction(write=False) as uow:
        windows = throughput.last_hour(uow, now=clock.now())
    assert [(w.succeeded, w.failed, w.finished) for w in windows] == [(0, 0, 0)] * 12
