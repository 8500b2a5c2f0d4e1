"""Several OS processes enqueue at once (spawned, each with its own Database; on SQLite all share
one file). The database's unique indexes must keep the ledger exact, and every call must come back
with a defined outcome rather than an exception."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from app.db import tables
from app.db.uow import Database
from app.domain.states import ACTIVE_STATES, EnqueueOutcome, HandoffState
from tests.services import enqueue_procs
from tests.services.enqueue_procs import Report

PROCESSES = 4
SPAWN = multiprocessing.get_context("spawn")
DEADLINE_SECONDS = 120
Target = tuple[Callable[..., None], tuple[Any, ...]]


def per_reference_maxima(db: Database) -> tuple[int, int]:
    """The most active rows, and the most waiting rows, that any one reference has now."""
    h = tables.handoffs

    def most(states: list[str]) -> int:
        counts = (
            select(func.count().label("n"))
            .where(h.c.state.in_(states))
            .group_by(h.c.reference_id)
            .subquery()
        )
        query = select(func.coalesce(func.max(counts.c.n), 0))
        with db.transaction(write=False) as uow:
            return int(uow.conn.execute(query).scalar_one())

    return most([s.value for s in ACTIVE_STATES]), most([HandoffState.WAITING.value])


def run_processes(
    db: Database, targets: list[Target]
) -> tuple[list[Report], list[tuple[int, int]]]:
    """Start every target at once (a barrier); sample the per-reference maxima while they run.
    Each target gets `(*args, barrier, enqueuers_done, reports)`; `enqueuers_done` is set once
    every process but the claimer (if any) has reported."""
    barrier = SPAWN.Barrier(len(targets))
    enqueuers_done = SPAWN.Event()
    reports: Any = SPAWN.Queue()
    procs = [
        SPAWN.Process(target=fn, args=(*args, barrier, enqueuers_done, reports))
        for fn, args in targets
    ]
    enqueuers = sum(fn is not enqueue_procs.claim_and_finish for fn, _ in targets)
    for proc in procs:
        proc.start()
    samples: list[tuple[int, int]] = []
    collected: list[Report] = []
    try:
        while len(collected) < len(procs):
            samples.append(per_reference_maxima(db))
            while not reports.empty():
                collected.append(reports.get(timeout=DEADLINE_SECONDS))
            if sum(r.name != "claimer" for r in collected) == enqueuers:
                enqueuers_done.set()
            crashed = [p.exitcode for p in procs if not p.is_alive() and p.exitcode]
            assert not crashed, f"a process died: exit codes {crashed}"
            procs[0].join(timeout=0.01)  # pace the sampling without sleeping blind
    finally:
        for proc in procs:
            proc.join(timeout=DEADLINE_SECONDS)
            if proc.is_alive():
                proc.kill()
    return collected, samples


def rows(db: Database) -> list[tuple[str, str, HandoffState]]:
    h = tables.handoffs
    with db.transaction(write=False) as uow:
        found = uow.conn.execute(select(h.c.reference_id, h.c.payload_hash, h.c.state)).all()
    return [(r.reference_id, r.payload_hash, HandoffState(r.state)) for r in found]


def stored_records(db: Database) -> int:
    query = select(func.count()).select_from(tables.scrape_records)
    with db.transaction(write=False) as uow:
        return int(uow.conn.execute(query).scalar_one())


@pytest.mark.slow
def test_processes_enqueueing_the_same_pairs_at_once_create_each_handoff_once(
    db: Database, db_url: str
) -> None:
    pairs = 1000
    records = enqueue_procs.same_pairs(pairs)
    reports, samples = run_processes(
        db,
        [(enqueue_procs.enqueue_shuffled, (db_url, f"p{i}", records, i)) for i in range(PROCESSES)],
    )

    assert [r.errors for r in reports] == [[]] * PROCESSES  # no exception leaked
    outcomes: Counter[str] = Counter()
    for report in reports:
        assert sum(report.outcomes.values()) == pairs  # a defined outcome for every record
        assert report.calls > 1
        outcomes.update(report.outcomes)
    # Each pair was created exactly once, whichever process got there first.
    assert outcomes == {
        EnqueueOutcome.CREATED.value: pairs,
        EnqueueOutcome.DUPLICATE.value: pairs * (PROCESSES - 1),
    }
    found = rows(db)
    assert len(found) == len({(ref, digest) for ref, digest, _ in found}) == pairs
    assert {state for _, _, state in found} == {HandoffState.QUEUED}
    assert stored_records(db) == pairs
    assert len(samples) > 1, "the run was not sampled while it ran"
    assert max(active for active, _ in samples) <= 1  # never two active rows for a reference
    assert per_reference_maxima(db) == (1, 0)


@pytest.mark.slow
def test_processes_racing_different_payloads_for_the_same_references_keep_one_slot_each(
    db: Database, db_url: str
) -> None:
    references, rounds = 200, 3
    reports, samples = run_processes(
        db,
        [
            (enqueue_procs.claim_and_finish, (db_url,)),
            *(
                (
                    enqueue_procs.enqueue_in_order,
                    (db_url, f"p{i}", enqueue_procs.competing_versions(references, i, rounds), i),
                )
                for i in range(PROCESSES)
            ),
        ],
    )

    assert [r.errors for r in reports] == [[]] * (PROCESSES + 1)  # no exception leaked
    submitted: set[tuple[str, str]] = set()
    outcomes: Counter[str] = Counter()
    for report in reports:
        if report.name != "claimer":
            assert sum(report.outcomes.values()) == references * rounds  # one outcome each
            submitted |= report.pairs
            outcomes.update(report.outcomes)
    assert set(outcomes) <= {o.value for o in EnqueueOutcome}
    assert outcomes[EnqueueOutcome.SUPERSEDED_PREVIOUS.value] > 0  # the payloads did compete

    found = rows(db)
    assert {(ref, digest) for ref, digest, _ in found} == submitted  # no handoff lost
    assert len(found) == len(submitted) == stored_records(db)
    assert max(active for active, _ in samples) <= 1
    assert max(waiting for _, waiting in samples) <= 1
    per_reference: dict[str, list[HandoffState]] = {}
    for ref, _, state in found:
        per_reference.setdefault(ref, []).append(state)
    assert len(per_reference) == references
    for ref, states in per_reference.items():
        assert sum(s in ACTIVE_STATES for s in states) <= 1, ref
        # The claimer ran everything it could before stopping: nothing runs any more, so
        # nothing may wait either (a waiting row left behind would never be ingested).
        assert HandoffState.RUNNING not in states, ref
        assert HandoffState.WAITING not in states, f"{ref} was stranded: {states}"
