"""Process bodies for test_concurrent_enqueue.py: each runs in a spawned OS process with its own
Database, waits at a barrier so all start at once, and reports what it saw through a queue."""

from __future__ import annotations

import random
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier, Event

from app.db.uow import Database, UnitOfWork
from app.domain.clock import SystemClock
from app.domain.models import ClaimedJob
from app.domain.records import PreparedRecord
from app.domain.retry import RetryPolicy
from app.domain.states import RetryClass
from app.services import ingestion
from app.services.ingestion_handoff import EnqueueResult
from app.services.scrape_storage import store_and_hand_off
from tests.support import T0, version

LEASE = timedelta(minutes=5)  # real time here: long enough that no lease expires mid-test


@dataclass
class Report:
    """What one process did: outcomes by name, and anything that went wrong."""

    name: str
    outcomes: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    errors: list[str] = field(default_factory=list)
    pairs: set[tuple[str, str]] = field(default_factory=set)


def same_pairs(count: int) -> list[PreparedRecord]:
    """The same `count` versions in every process: one payload per reference."""
    return [version(f"ref-{i:04d}", f"body of {i}") for i in range(count)]


def competing_versions(count: int, process: int, rounds: int) -> list[PreparedRecord]:
    """This process's own payloads for the shared references, newer each round; fetch times of
    different processes interleave so some arrive stale."""
    return [
        version(
            f"ref-{i:04d}",
            f"p{process} round {r} of {i}",
            fetched_at=T0 + timedelta(seconds=r * 10 + process),
        )
        for r in range(rounds)
        for i in range(count)
    ]


def _batches(records: Sequence[PreparedRecord], rng: random.Random) -> list[list[PreparedRecord]]:
    out, i = [], 0
    while i < len(records):
        size = rng.randint(1, 40)
        out.append(list(records[i : i + size]))
        i += size
    return out


def enqueue_shuffled(
    url: str,
    name: str,
    records: list[PreparedRecord],
    seed: int,
    barrier: Barrier,
    done: Event,
    reports: Queue[Report],
) -> None:
    """Submit `records` in a random order and random batches."""
    enqueue(url, name, records, seed, barrier, reports, shuffle=True)


def enqueue_in_order(
    url: str,
    name: str,
    records: list[PreparedRecord],
    seed: int,
    barrier: Barrier,
    done: Event,
    reports: Queue[Report],
) -> None:
    """Submit `records` in their order (older rounds first), in random batches."""
    enqueue(url, name, records, seed, barrier, reports, shuffle=False)


def enqueue(
    url: str,
    name: str,
    records: list[PreparedRecord],
    seed: int,
    barrier: Barrier,
    reports: Queue[Report],
    *,
    shuffle: bool,
) -> None:
    """Submit `records` in random batches, each batch one transaction (as one API call)."""
    report = Report(name)
    db = Database(url)
    rng = random.Random(seed)
    if shuffle:
        rng.shuffle(records)
    clock = SystemClock()
    try:
        barrier.wait(timeout=60)
        for batch in _batches(records, rng):

            def call(uow: UnitOfWork, batch: list[PreparedRecord] = batch) -> list[EnqueueResult]:
                return store_and_hand_off(uow, batch, now=clock.now(), actor=f"client:{name}")

            report.calls += 1
            try:
                results = db.run(call)
            except Exception:  # the test asserts there are none: report, do not die
                report.errors.append(traceback.format_exc())
                continue
            if [(r.reference_id, r.payload_hash) for r in results] != [
                (r.reference_id, r.payload_hash) for r in batch
            ]:
                report.errors.append(f"results do not match the batch: {results!r}")
            report.outcomes.update(r.outcome.value for r in results)
            report.pairs.update((r.reference_id, r.payload_hash) for r in batch)
    except Exception:
        report.errors.append(traceback.format_exc())
    finally:
        db.dispose()
        reports.put(report)


def finish(uow: UnitOfWork, *, job: ClaimedJob, how: str, now: datetime) -> None:
    if how == "released":
        ingestion.release(uow, [job.lease], now=now, worker_id="racer")
    elif how == "failed":
        failure = ingestion.Failure(RetryClass.PERMANENT, "refused")
        ingestion.fail(uow, job.lease, failure, now=now, worker_id="racer", policy=RetryPolicy())
    else:
        ingestion.complete(uow, [job.lease], now=now, worker_id="racer")


def claim(uow: UnitOfWork, *, now: datetime) -> list[ClaimedJob]:
    return ingestion.claim(uow, "racer", 10, now=now, lease=LEASE)


def claim_and_finish(
    url: str, barrier: Barrier, enqueuers_done: Event, reports: Queue[Report]
) -> None:
    """A worker racing the enqueuers: claims and finishes (mostly completes, sometimes fails
    permanently or releases) until the enqueuers are done and nothing is left to claim."""
    report = Report("claimer")
    db = Database(url)
    clock = SystemClock()
    rng = random.Random(7)
    try:
        barrier.wait(timeout=60)
        while True:
            done = enqueuers_done.is_set()  # read before claiming: no enqueue can follow
            jobs = db.run(partial(claim, now=clock.now()))
            if not jobs and done:
                break
            for job in jobs:
                how = rng.choices(["released", "failed", "completed"], weights=[1, 1.5, 7.5])[0]
                db.run(partial(finish, job=job, how=how, now=clock.now()))
                report.outcomes[how] += 1
    except Exception:
        report.errors.append(traceback.format_exc())
    finally:
        db.dispose()
        reports.put(report)
