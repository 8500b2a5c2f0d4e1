"""The handoff lifecycle as a hypothesis state machine, on SQLite and PostgreSQL.

Random sequences of enqueue (a few references, several payloads, varying fetch times), claim,
heartbeat, complete, fail (every retry class), release, rescue, cancel, operator retry and clock
moves. After every step the invariants in `the_ledger_holds` must hold, and every finalize that
presents a lease token that is not current must be refused and change nothing.

"A waiting row exists only while its reference has a running row" is asserted as is: every path
that ends or requeues a running row settles the waiting one in the same transaction, so it holds
for transitions run one after another, which is what this machine drives. Under concurrency it
also rests on enqueue locking the running row before queueing behind it; the multi-process run in
test_concurrent_enqueue.py checks that no waiting row is left stranded.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from typing import ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from sqlalchemy import select

from app.db import tables
from app.db.rows import to_event, to_handoff
from app.db.uow import Database
from app.domain.clock import FakeClock
from app.domain.errors import Conflict, LeaseLost
from app.domain.models import Handoff, HandoffEvent, Lease
from app.domain.records import PreparedRecord
from app.domain.retry import RetryPolicy
from app.domain.states import (
    ACTIVE_STATES,
    RUNNABLE_STATES,
    TERMINAL_STATES,
    EnqueueOutcome,
    HandoffState,
    ReasonCode,
    RetryClass,
)
from app.services import handoff_queries, ingestion, ingestion_handoff
from app.services.ingestion_handoff import EnqueueResult
from app.services.scrape_storage import store_and_hand_off
from tests.support import CLIENT, LEASE, T0, version, wipe

#: Small budgets, so that short runs reach the ends of them too.
POLICY = RetryPolicy(
    transient_max_failures=3,
    unclassified_max_failures=2,
    crash_max=2,
    throttle_deadline=timedelta(minutes=20),
)
REFERENCES = ("r1", "r2", "r3")
BODIES = ("a", "b", "c", "d", "e")
WORKERS = ("w1", "w2")
OPERATOR = "operator:o"
#: What a worker may do with a lease: keep it alive, or end it one way or another.
ACTIONS = ("heartbeat", "complete", "release", *(c.value for c in RetryClass))
RETRIED = (RetryClass.TRANSIENT, RetryClass.UNCLASSIFIED, RetryClass.THROTTLED, RetryClass.CRASH)
#: The moves of a step, weighted by repetition (see `Lifecycle.step`).
MOVES = (
    *["enqueue_one"] * 2,
    "enqueue_batch",
    "enqueue_newer",
    *["advance_to_the_next_retry"] * 2,
    *["claim"] * 3,
    *["act_on_a_current_lease"] * 4,
    "act_on_any_lease",
    "a_rescued_worker_comes_back",
    "fail_until_it_ends",
    *["rescue"] * 2,
    *["operator"] * 2,
    *["advance_clock"] * 3,
)
Pair = tuple[str, str]

versions = st.builds(
    lambda ref, body, minute: version(ref, body, fetched_at=T0 + timedelta(minutes=minute)),
    st.sampled_from(REFERENCES),
    st.sampled_from(BODIES),
    st.integers(min_value=0, max_value=5),
)


@dataclass(frozen=True)
class World:
    """Everything in the database that a step could change."""

    handoffs: dict[int, Handoff]
    events: dict[int, list[HandoffEvent]]
    attempts: dict[int, int]
    records: set[Pair]

    def running(self) -> list[Handoff]:
        return sorted(
            (h for h in self.handoffs.values() if h.state is HandoffState.RUNNING),
            key=lambda h: h.id,
        )

    def due(self, now: datetime) -> list[Handoff]:
        """What a claim at `now` may take, in the order it should take it."""
        return sorted(
            (
                h
                for h in self.handoffs.values()
                if h.state in RUNNABLE_STATES and h.run_after <= now
            ),
            key=lambda h: (h.run_after, h.id),
        )

    def expired(self, now: datetime) -> list[Handoff]:
        return [h for h in self.running() if h.lease_expires_at and h.lease_expires_at < now]


def look(db: Database) -> World:
    with db.transaction(write=False) as uow:
        conn = uow.conn
        handoffs = {h.id: h for h in map(to_handoff, conn.execute(select(tables.handoffs)))}
        events: dict[int, list[HandoffEvent]] = defaultdict(list)
        for row in conn.execute(select(tables.handoff_events).order_by(tables.handoff_events.c.id)):
            event = to_event(row)
            events[event.handoff_id].append(event)
        attempts: Counter[int] = Counter(
            row.handoff_id for row in conn.execute(select(tables.ingestion_jobs.c.handoff_id))
        )
        records = {
            (r.reference_id, r.payload_hash)
            for r in conn.execute(
                select(tables.scrape_records.c.reference_id, tables.scrape_records.c.payload_hash)
            )
        }
    return World(handoffs, dict(events), dict(attempts), records)


class Lifecycle(RuleBasedStateMachine):
    db: Database  # set by the test: one database per engine, emptied for every example
    #: What the runs reached, over all examples; the test checks the interesting cases happened.
    seen: ClassVar[Counter[str]] = Counter()

    def __init__(self) -> None:
        super().__init__()
        wipe(self.db)
        self.clock = FakeClock()
        self.pairs: dict[Pair, int] = {}  # every pair ever enqueued -> its handoff id
        self.issued: list[Lease] = []  # every lease ever handed out: most go stale, the point
        self.fresh = 0  # numbers payloads no one has sent yet
        self.world = look(self.db)  # the last look, refreshed after every step
        self.last_event = 0  # events up to this id are tallied in `seen`

    @rule(data=st.data(), move=st.sampled_from(MOVES))
    def step(self, data: st.DataObject, move: str) -> None:
        """One move from a weighted list. (As separate rules, hypothesis spent most steps on
        clock moves and empty claims and seldom drove a running handoff to its end.)"""
        self.seen[f"move {move}"] += 1
        getattr(self, move)(data)

    # -- helpers ----------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self.clock.now()

    def is_current(self, lease: Lease) -> bool:
        with self.db.transaction(write=False) as uow:
            h = uow.handoffs.get(lease.handoff_id)
        return h is not None and h.state is HandoffState.RUNNING and h.lease_token == lease.token

    def refused_without_change(self, before: World) -> None:
        assert look(self.db) == before, "a refused call changed something"
        self.seen["refused without change"] += 1

    def enqueue(self, records: list[PreparedRecord]) -> list[EnqueueResult]:
        with self.db.transaction() as uow:
            results = store_and_hand_off(uow, records, now=self.now(), actor=CLIENT)
        assert len(results) == len(records)
        for rec, result in zip(records, results, strict=True):
            pair = (rec.reference_id, rec.payload_hash)
            assert (result.reference_id, result.payload_hash) == pair
            assert result.outcome in EnqueueOutcome
            known = self.pairs.setdefault(pair, result.handoff_id)
            assert result.handoff_id == known  # a pair keeps its one handoff forever
            self.seen[f"outcome {result.outcome.value}"] += 1
        return results

    # -- enqueue ----------------------------------------------------------------------------------

    def enqueue_one(self, data: st.DataObject) -> None:
        record = data.draw(versions)
        before = self.world
        known = self.pairs.get((record.reference_id, record.payload_hash))
        mine = [h for h in before.handoffs.values() if h.reference_id == record.reference_id]
        latest = max((h.fetched_at for h in mine), default=None)
        (result,) = self.enqueue([record])
        if known is not None:
            old = before.handoffs[known]
            assert (result.outcome, result.state, result.first_outcome) == (
                EnqueueOutcome.DUPLICATE,
                old.state,
                old.enqueue_outcome,
            )
        elif latest is not None and record.fetched_at < latest:
            assert (result.outcome, result.state) == (
                EnqueueOutcome.REJECTED_STALE,
                HandoffState.SUPERSEDED,
            )
        elif any(h.state is HandoffState.RUNNING for h in mine):
            assert (result.outcome, result.state) == (
                EnqueueOutcome.QUEUED_BEHIND_RUNNING,
                HandoffState.WAITING,
            )
        else:
            unfinished = any(h.state in {*RUNNABLE_STATES, HandoffState.WAITING} for h in mine)
            expected = EnqueueOutcome.SUPERSEDED_PREVIOUS if unfinished else EnqueueOutcome.CREATED
            assert (result.outcome, result.state) == (expected, HandoffState.QUEUED)

    def enqueue_batch(self, data: st.DataObject) -> None:
        self.enqueue(data.draw(st.lists(versions, min_size=2, max_size=4)))

    def enqueue_newer(self, data: st.DataObject) -> None:
        """A payload at least as new as anything of its reference: if one runs, it must wait."""
        reference = data.draw(st.sampled_from(REFERENCES))
        mine = [h for h in self.world.handoffs.values() if h.reference_id == reference]
        latest = max((h.fetched_at for h in mine), default=T0)
        self.fresh += 1
        (result,) = self.enqueue([version(reference, f"fresh-{self.fresh}", fetched_at=latest)])
        if any(h.state is HandoffState.RUNNING for h in mine):
            assert (result.outcome, result.state) == (
                EnqueueOutcome.QUEUED_BEHIND_RUNNING,
                HandoffState.WAITING,
            )
        else:
            assert result.state is HandoffState.QUEUED

    # -- workers ----------------------------------------------------------------------------------

    def claim(self, data: st.DataObject) -> None:
        limit = data.draw(st.integers(min_value=1, max_value=3))
        worker = data.draw(st.sampled_from(WORKERS))
        before = self.world
        with self.db.transaction() as uow:
            jobs = ingestion.claim(uow, worker, limit, now=self.now(), lease=LEASE)
        assert sorted(j.handoff.id for j in jobs) == sorted(
            h.id for h in before.due(self.now())[:limit]
        )
        for job in jobs:
            assert job.handoff.lease_token == before.handoffs[job.handoff.id].lease_token + 1
            assert job.record is not None
        self.issued.extend(sorted((j.lease for j in jobs), key=lambda lease: lease.handoff_id))

    def act_on_any_lease(self, data: st.DataObject) -> None:
        """Any lease ever handed out, mostly stale ones: they must be fenced out."""
        if self.issued:
            self.act(data.draw(st.sampled_from(self.issued)), data.draw(st.sampled_from(ACTIONS)))

    def a_rescued_worker_comes_back(self, data: st.DataObject) -> None:
        """A worker stalls past its lease, the rescuer takes the handoff back, another worker
        claims it, and then the first worker wakes up and acts with its old lease."""
        running = self.world.running()
        if not running:
            return
        h = data.draw(st.sampled_from(running))
        assert h.lease_expires_at is not None
        self.clock.advance(
            max(h.lease_expires_at - self.now(), timedelta(0)) + timedelta(seconds=1)
        )
        self.rescue(data)
        self.clock.advance(POLICY.crash_delay)
        self.world = look(self.db)
        self.claim(data)
        self.world = look(self.db)
        self.act(Lease(h.id, h.lease_token), data.draw(st.sampled_from(ACTIONS)))

    def act_on_a_current_lease(self, data: st.DataObject) -> None:
        """The current lease of a running handoff: this moves the lifecycle forward."""
        running = self.world.running()
        if running:
            h = data.draw(st.sampled_from(running))
            self.act(Lease(h.id, h.lease_token), data.draw(st.sampled_from(ACTIONS)))

    def fail_until_it_ends(self, data: st.DataObject) -> None:
        """A worker fails the same handoff, retry after retry, until its budget ends (or
        something else, like a newer payload, takes it away)."""
        running = self.world.running()
        if not running:
            return
        h = data.draw(st.sampled_from(running))
        retry_class = data.draw(st.sampled_from(RETRIED))
        lease = Lease(h.id, h.lease_token)
        for _ in range(10):
            self.fail(lease, retry_class)
            self.world = look(self.db)
            row = self.world.handoffs[h.id]
            if row.state is not HandoffState.RETRY_WAIT:
                return
            self.clock.advance(max(row.run_after - self.now(), timedelta(0)))
            with self.db.transaction() as uow:
                jobs = ingestion.claim(uow, "w1", len(self.pairs), now=self.now(), lease=LEASE)
            self.issued.extend(sorted((j.lease for j in jobs), key=lambda x: x.handoff_id))
            self.world = look(self.db)
            mine = [j.lease for j in jobs if j.handoff.id == h.id]
            if not mine:
                return
            lease = mine[0]
        raise AssertionError(f"{retry_class} retried handoff {h.id} without end")

    def act(self, lease: Lease, action: str) -> None:
        h = self.world.handoffs[lease.handoff_id]
        if h.state is HandoffState.RUNNING and h.lease_token != lease.token:
            self.seen["old lease of a running handoff refused"] += 1
        if action == "heartbeat":
            self.heartbeat(lease)
        elif action == "complete":
            self.complete(lease)
        elif action == "release":
            self.release(lease)
        else:
            self.fail(lease, RetryClass(action))

    def heartbeat(self, lease: Lease) -> None:
        current, before = self.is_current(lease), self.world
        with self.db.transaction() as uow:
            held = ingestion.heartbeat(uow, [lease], now=self.now(), lease=LEASE)
        if current:
            assert held == {lease.handoff_id}
            assert look(self.db).handoffs[lease.handoff_id].lease_expires_at == self.now() + LEASE
        else:
            assert held == set()
            self.refused_without_change(before)

    def complete(self, lease: Lease) -> None:
        current, before = self.is_current(lease), self.world
        with self.db.transaction() as uow:
            done = ingestion.complete(uow, [lease], now=self.now(), worker_id="w")
        if current:
            assert done == [lease]
            assert look(self.db).handoffs[lease.handoff_id].state is HandoffState.SUCCEEDED
        else:
            assert done == []
            self.refused_without_change(before)

    def release(self, lease: Lease) -> None:
        current, before = self.is_current(lease), self.world
        with self.db.transaction() as uow:
            released = ingestion.release(uow, [lease], now=self.now(), worker_id="w")
        if current:
            assert released == [lease]
            after = look(self.db).handoffs[lease.handoff_id]
            assert after.state in (HandoffState.QUEUED, HandoffState.SUPERSEDED)
            assert after.failures == before.handoffs[lease.handoff_id].failures
        else:
            assert released == []
            self.refused_without_change(before)

    def fail(self, lease: Lease, retry_class: RetryClass) -> None:
        current, before = self.is_current(lease), self.world
        retry_after = timedelta(minutes=5) if retry_class is RetryClass.THROTTLED else None
        failure = ingestion.Failure(retry_class, "boom", retry_after=retry_after)
        try:
            with self.db.transaction() as uow:
                moved = ingestion.fail(
                    uow, lease, failure, now=self.now(), worker_id="w", policy=POLICY
                )
        except LeaseLost:
            assert not current, "the current lease was refused"
            self.refused_without_change(before)
            return
        assert current, "a lease that is not current finalized a handoff"
        was = before.handoffs[lease.handoff_id]
        assert moved.state in (HandoffState.RETRY_WAIT, HandoffState.FAILED)
        if retry_class is RetryClass.PERMANENT:
            assert (moved.state, moved.failures) == (HandoffState.FAILED, was.failures)
        if retry_class is RetryClass.THROTTLED:
            assert moved.failures == was.failures

    def rescue(self, data: st.DataObject) -> None:
        expired = {h.id for h in self.world.expired(self.now())}
        with self.db.transaction() as uow:
            moved = ingestion.rescue(uow, now=self.now(), policy=POLICY)
        assert {h.id for h in moved} == expired

    # -- operators and time -----------------------------------------------------------------------

    def operator(self, data: st.DataObject) -> None:
        if not self.pairs:
            return
        if data.draw(st.booleans()):
            self.cancel(data.draw(st.sampled_from(sorted(self.pairs.values()))))
            return
        ended = [
            h.id
            for h in self.world.handoffs.values()
            if h.state in (HandoffState.FAILED, HandoffState.CANCELLED)
        ]
        self.operator_retry(data.draw(st.sampled_from(sorted(ended or self.pairs.values()))))

    def cancel(self, handoff_id: int) -> None:
        before = self.world
        try:
            with self.db.transaction() as uow:
                ingestion_handoff.cancel(uow, handoff_id, now=self.now(), actor=OPERATOR)
        except Conflict:
            assert before.handoffs[handoff_id].state in TERMINAL_STATES
            self.refused_without_change(before)
            return
        assert before.handoffs[handoff_id].state not in TERMINAL_STATES
        assert look(self.db).handoffs[handoff_id].state is HandoffState.CANCELLED

    def operator_retry(self, handoff_id: int) -> None:
        before = self.world
        target = before.handoffs[handoff_id]
        busy = any(
            h.reference_id == target.reference_id and h.state in ACTIVE_STATES
            for h in before.handoffs.values()
        )
        retryable = target.state in (HandoffState.FAILED, HandoffState.CANCELLED)
        try:
            with self.db.transaction() as uow:
                ingestion_handoff.retry(uow, handoff_id, now=self.now(), actor=OPERATOR)
        except Conflict:
            assert busy or not retryable
            self.refused_without_change(before)
            return
        assert retryable
        assert not busy
        assert look(self.db).handoffs[handoff_id].state is HandoffState.QUEUED

    def advance_to_the_next_retry(self, data: st.DataObject) -> None:
        """Jump to when the next retry is due, as an idle worker would wait for it."""
        later = [h.run_after for h in self.world.handoffs.values() if h.state in RUNNABLE_STATES]
        if later and min(later) > self.now():
            self.clock.advance(min(later) - self.now())

    def advance_clock(self, data: st.DataObject) -> None:
        self.clock.advance(data.draw(st.sampled_from([1, 15, 61, 600, 3600])))

    # -- invariants -------------------------------------------------------------------------------

    @invariant()
    def the_ledger_holds(self) -> None:
        world = self.world = look(self.db)
        for history in world.events.values():  # tally the transitions this step made
            for event in history:
                if event.id > self.last_event:
                    self.seen[f"state {event.to_state.value}"] += 1
                    self.seen[f"reason {event.reason_code.value}"] += 1
        self.last_event = max((e[-1].id for e in world.events.values()), default=0)

        # No handoff lost: every pair ever enqueued has exactly one row, no row comes from
        # nowhere, and every pair's scrape record is stored.
        assert {(h.reference_id, h.payload_hash): h.id for h in world.handoffs.values()} == (
            self.pairs
        )
        assert world.records == set(self.pairs)

        per_reference: dict[str, list[HandoffState]] = defaultdict(list)
        for h in world.handoffs.values():
            per_reference[h.reference_id].append(h.state)
        for reference, states in per_reference.items():
            assert sum(s in ACTIVE_STATES for s in states) <= 1, f"{reference}: {states}"
            assert states.count(HandoffState.WAITING) <= 1, f"{reference}: {states}"
            if HandoffState.WAITING in states:
                assert HandoffState.RUNNING in states, f"{reference} waits behind nothing"

        for h in world.handoffs.values():
            history = world.events.get(h.id, [])
            assert history, f"handoff {h.id} has no event"
            assert history[0].from_state is None
            for earlier, later in pairwise(history):
                assert later.from_state is earlier.to_state, f"handoff {h.id}: broken trail"
            # The latest event says where the row is and why.
            assert (history[-1].to_state, history[-1].reason_code) == (h.state, h.reason_code)
            assert world.attempts.get(h.id, 0) == h.attempts  # one attempt row per claim
            running = h.state is HandoffState.RUNNING
            assert (h.lease_owner is not None) == running
            assert (h.lease_expires_at is not None) == running
            assert (h.finished_at is not None) == (h.state in TERMINAL_STATES)

        # The trigger-kept counts behind stats and metrics equal a count of the rows, before
        # and after compaction (which the workers run on their rescuer timer).
        with self.db.transaction(write=False) as uow:
            counted = uow.handoffs.counts()
            assert uow.queries.counts() == counted
        self.db.run(handoff_queries.compact_counts)
        with self.db.transaction(write=False) as uow:
            assert uow.queries.counts() == counted


#: What the runs must reach, or the machine is not testing what it claims to.
MUST_REACH = [
    "refused without change",
    "old lease of a running handoff refused",
    *(f"outcome {o.value}" for o in EnqueueOutcome),
    *(f"state {s.value}" for s in HandoffState),
    *(
        f"reason {r.value}"
        for r in (
            ReasonCode.PROMOTED,
            ReasonCode.SUPERSEDED_BY_NEWER_PAYLOAD,
            ReasonCode.STALE_PAYLOAD,
            ReasonCode.LEASE_EXPIRED,
            ReasonCode.LEASE_RELEASED,
            ReasonCode.RATE_LIMITED,
            ReasonCode.TRANSIENT_ERROR,
            ReasonCode.UNCLASSIFIED_ERROR,
            ReasonCode.PERMANENT_ERROR,
            ReasonCode.POISON_SUSPECTED,
            ReasonCode.RETRIES_EXHAUSTED,
            ReasonCode.THROTTLE_DEADLINE_EXCEEDED,
            ReasonCode.OPERATOR_RETRY,
            ReasonCode.OPERATOR_CANCELLED,
        )
    ),
]


def run_machine(database_url: str) -> Counter[str]:
    """Run the derandomized machine against one engine; what it reached."""
    db = Database(database_url)
    try:
        Lifecycle.db = db
        Lifecycle.seen = Counter()
        case = Lifecycle.TestCase
        case.settings = settings(
            max_examples=25,
            stateful_step_count=50,
            derandomize=True,  # the same runs every time and on both engines (see below)
            database=None,  # nothing to replay: derandomized runs find the same examples again
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        case().runTest()
        return Lifecycle.seen
    finally:
        db.dispose()


def test_the_handoff_lifecycle_keeps_its_invariants_on_both_engines_alike(
    sqlite_url: str, pg_url: str
) -> None:
    on_sqlite = run_machine(sqlite_url)
    missing = [what for what in MUST_REACH if not on_sqlite[what]]
    assert not missing, f"the machine never reached: {missing}"
    # The same moves must take both engines through the same states, reasons and outcomes.
    assert run_machine(pg_url) == on_sqlite
