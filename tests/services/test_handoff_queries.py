"""services.handoff_queries on both engines: replay bounds and its in-run refusals, and the
stuck rule for each state."""

from __future__ import annotations

from datetime import timedelta

from app.db.uow import Database
from app.domain.clock import FakeClock
from app.domain.queries import HandoffFilter
from app.domain.retry import RetryPolicy
from app.domain.states import HandoffState, RetryClass
from app.services import handoff_queries, ingestion
from app.services.ingestion import Failure
from tests.support import WORKER, claim, get, hand_off_one, version

OPERATOR = "operator:tests"
STUCK = timedelta(minutes=15)


def failed(db: Database, clock: FakeClock, reference_id: str, body: str) -> int:
    hid = hand_off_one(db, clock, version(reference_id, body)).handoff_id
    (job,) = claim(db, clock)
    with db.transaction() as uow:
        ingestion.fail(
            uow,
            job.lease,
            Failure(RetryClass.PERMANENT, "bad"),
            now=clock.now(),
            worker_id=WORKER,
            policy=RetryPolicy(),
        )
    return hid


def replay(
    db: Database, clock: FakeClock, *, dry_run: bool, limit: int = 1000
) -> handoff_queries.ReplayReport:
    with db.transaction(write=not dry_run) as uow:
        return handoff_queries.replay(
            uow,
            HandoffFilter(),
            dry_run=dry_run,
            now=clock.now(),
            actor=OPERATOR,
            stuck_after=STUCK,
            limit=limit,
        )


def test_a_replay_takes_at_most_its_limit_oldest_first_and_says_so(
    db: Database, clock: FakeClock
) -> None:
    ids = [failed(db, clock, f"r:{i}", "x") for i in range(3)]
    report = replay(db, clock, dry_run=False, limit=2)
    assert (report.matched, report.truncated, report.requeued) == (3, True, 2)
    assert [i.id for i in report.items] == ids[:2]
    assert get(db, ids[2]).state is HandoffState.FAILED
    rest = replay(db, clock, dry_run=False, limit=2)
    assert (rest.matched, rest.truncated, [i.id for i in rest.items]) == (1, False, ids[2:])


def test_two_versions_of_one_reference_replay_only_the_first(
    db: Database, clock: FakeClock
) -> None:
    # Same fetch time, different payloads: neither is older, so only active work refuses one.
    first = failed(db, clock, "r:1", "a")
    second = failed(db, clock, "r:1", "b")
    predicted = replay(db, clock, dry_run=True)
    done = replay(db, clock, dry_run=False)
    assert predicted.items == done.items
    assert [(i.id, i.outcome) for i in done.items] == [(first, "requeued"), (second, "refused")]
    assert done.items[1].reason == f"reference 'r:1' already has active handoff {first} (queued)"


def page_ids(db: Database, clock: FakeClock, f: HandoffFilter) -> list[int]:
    with db.transaction(write=False) as uow:
        page = handoff_queries.list_handoffs(
            uow, f, cursor=None, limit=50, now=clock.now(), stuck_after=STUCK
        )
    return [h.id for h in page.items]


def test_a_retry_wait_handoff_is_stuck_only_once_its_retry_is_long_overdue(
    db: Database, clock: FakeClock
) -> None:
    hid = hand_off_one(db, clock, version("r:1", "x")).handoff_id
    (job,) = claim(db, clock)
    with db.transaction() as uow:
        ingestion.fail(
            uow,
            job.lease,
            Failure(RetryClass.TRANSIENT, "timeout"),
            now=clock.now(),
            worker_id=WORKER,
            policy=RetryPolicy(),
            rand=lambda: 0.0,
        )  # due again in 15 s
    stuck = HandoffFilter(stuck=True)
    clock.advance(STUCK)
    assert page_ids(db, clock, stuck) == []
    clock.advance(15)
    assert page_ids(db, clock, stuck) == [hid]
