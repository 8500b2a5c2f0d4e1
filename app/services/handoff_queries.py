"""What operators read about handoffs, and replay by filter. Each function runs in the caller's
transaction; only `replay` (without `dry_run`) writes, and the caller commits."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from app.db.uow import UnitOfWork
from app.domain.errors import Conflict, NotFound
from app.domain.models import Attempt, Handoff, HandoffEvent
from app.domain.queries import (
    DocumentSummary,
    HandoffFilter,
    ReplayCandidate,
    Version,
    decode_cursor,
    encode_cursor,
)
from app.domain.states import ACTIVE_STATES, HandoffState
from app.domain.why import WhyFacts, explain
from app.services import ingestion_handoff

#: Most handoffs one replay call considers; a larger match is done over several calls.
REPLAY_MAX = 1000
REPLAYABLE = frozenset({HandoffState.FAILED, HandoffState.CANCELLED})


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Handoff]
    next_cursor: str | None  # None on the last page


def list_handoffs(
    uow: UnitOfWork,
    f: HandoffFilter,
    *,
    cursor: str | None,
    limit: int,
    now: datetime,
    stuck_after: timedelta,
) -> Page:
    """One page of matching handoffs, newest first. A bad cursor is InvalidInput (`cursor`)."""
    before = decode_cursor(cursor) if cursor is not None else None
    rows = uow.queries.page(f, before_id=before, limit=limit + 1, now=now, cutoff=now - stuck_after)
    items = rows[:limit]
    more = len(rows) > limit
    return Page(items, encode_cursor(items[-1].id) if more else None)


@dataclass(frozen=True, slots=True)
class Detail:
    handoff: Handoff
    events: list[HandoffEvent]
    attempts: list[Attempt]
    why: str


def detail(uow: UnitOfWork, handoff_id: int, *, now: datetime) -> Detail:
    """A handoff with its timeline, its attempts and why it is in its state (NotFound)."""
    found = uow.handoffs.get(handoff_id)
    if found is None:
        raise NotFound(f"no handoff {handoff_id}", field="handoff_id")
    events = uow.handoffs.events(handoff_id)
    # The transition into the current state: a repair note (same state in and out) is not one.
    last = next((e for e in reversed(events) if e.from_state is not e.to_state), None)
    facts = WhyFacts(found, now, last_event=last)
    if found.state is HandoffState.WAITING:
        unfinished = uow.handoffs.unfinished_of(found.reference_id)
        ahead = next((h for h in unfinished if h.state in ACTIVE_STATES), None)
        facts = replace(facts, ahead=ahead)
    elif found.state is HandoffState.SUPERSEDED:
        facts = replace(facts, newer=uow.queries.superseding(found))
    return Detail(found, events, uow.jobs.of_handoff(handoff_id), explain(facts))


@dataclass(frozen=True, slots=True)
class Throughput:
    succeeded: int
    failed: int


@dataclass(frozen=True, slots=True)
class Stats:
    counts: dict[str, dict[str, int]]  # state -> reason code -> count, zeros included
    totals: dict[str, int]
    oldest_age_seconds: dict[str, float | None]  # every state; None when it has no handoff
    stuck: int
    last_5_minutes: Throughput
    last_60_minutes: Throughput


def stats(uow: UnitOfWork, *, now: datetime, stuck_after: timedelta) -> Stats:
    """Counts by state x reason, the age of the oldest handoff per state (from its creation),
    how many are stuck, and how many succeeded or failed lately (by finished_at)."""
    counts = ingestion_handoff.stats(uow)
    summaries = uow.queries.state_summaries(now=now, cutoff=now - stuck_after)
    ages: dict[str, float | None] = {}
    for state in HandoffState:
        oldest = summaries[state].oldest_created_at if state in summaries else None
        ages[state.value] = None if oldest is None else max(0.0, (now - oldest).total_seconds())

    def finished(state: HandoffState, last_5m: bool) -> int:
        s = summaries.get(state)
        return 0 if s is None else s.finished_last_5m if last_5m else s.finished_last_60m

    return Stats(
        counts=counts,
        totals={s: sum(by_reason.values()) for s, by_reason in counts.items()},
        oldest_age_seconds=ages,
        stuck=uow.queries.stuck_count(now=now, cutoff=now - stuck_after),
        last_5_minutes=Throughput(
            finished(HandoffState.SUCCEEDED, True), finished(HandoffState.FAILED, True)
        ),
        last_60_minutes=Throughput(
            finished(HandoffState.SUCCEEDED, False), finished(HandoffState.FAILED, False)
        ),
    )


@dataclass(frozen=True, slots=True)
class StateRows:
    """Rows and the oldest row's age (seconds since creation) per state, every state present."""

    rows: dict[HandoffState, int]
    oldest_age_seconds: dict[HandoffState, float]


def state_rows(uow: UnitOfWork, *, now: datetime) -> StateRows:
    """What the metrics scrape reads: the per-state totals of the maintained counts and one
    index probe per state for the oldest. Every state is present, zeros included."""
    counts = uow.queries.counts()
    rows = {state: 0 for state in HandoffState}
    for (state, _), n in counts.items():
        rows[state] += n
    oldest = uow.queries.oldest_created()
    ages = {
        state: max(0.0, (now - oldest[state]).total_seconds()) if state in oldest else 0.0
        for state in HandoffState
    }
    return StateRows(rows, ages)


def compact_counts(uow: UnitOfWork) -> None:
    """Fold the appended count deltas back to one row per (state, reason_code); workers call
    it on their rescuer timer. Safe to run anywhere, any time."""
    uow.queries.compact_counts()


@dataclass(frozen=True, slots=True)
class ReplayItem:
    id: int
    reference_id: str
    state: HandoffState  # before the replay
    outcome: Literal["requeued", "refused"]  # in a dry run: what a real run would do
    reason: str | None  # why it was (or would be) refused


@dataclass(frozen=True, slots=True)
class ReplayReport:
    dry_run: bool
    matched: int  # failed or cancelled handoffs the filter matches
    limit: int
    items: list[ReplayItem]  # the first `limit` of them, oldest first

    @property
    def truncated(self) -> bool:
        return self.matched > len(self.items)

    @property
    def requeued(self) -> int:
        return sum(1 for i in self.items if i.outcome == "requeued")

    @property
    def refused(self) -> int:
        return len(self.items) - self.requeued


def replay(
    uow: UnitOfWork,
    f: HandoffFilter,
    *,
    dry_run: bool,
    now: datetime,
    actor: str,
    stuck_after: timedelta,
    limit: int = REPLAY_MAX,
) -> ReplayReport:
    """Retry the failed or cancelled handoffs matching `f`, oldest first, at most `limit` per
    call. Each goes through `ingestion_handoff.retry`, so the same refusals apply (active work
    on the reference, a newer version handed off). A dry run writes nothing and reports what a
    real run would do, refusals included."""
    states = REPLAYABLE & f.states if f.states else REPLAYABLE
    cutoff = now - stuck_after
    if not states:  # the filter asks only for states that cannot be replayed
        return ReplayReport(dry_run, 0, limit, [])
    narrowed = replace(f, states=frozenset(states))
    matched = uow.queries.count(narrowed, now=now, cutoff=cutoff)
    found = uow.queries.replay_candidates(narrowed, limit=limit, now=now, cutoff=cutoff)
    items = _predict(found) if dry_run else [_retry(uow, c, now, actor) for c in found]
    return ReplayReport(dry_run, matched, limit, items)


def _predict(candidates: list[ReplayCandidate]) -> list[ReplayItem]:
    """What retrying each candidate in turn would do, with the messages `retry` would give."""
    requeued: dict[str, int] = {}  # reference -> the candidate this run would requeue
    items = []
    for c in candidates:
        ahead = requeued.get(c.reference_id)
        if ahead is not None:
            reason: str | None = _busy(c.reference_id, ahead, HandoffState.QUEUED)
        elif c.active_id is not None and c.active_state is not None:
            reason = _busy(c.reference_id, c.active_id, c.active_state)
        elif c.has_newer_version:
            reason = (
                f"handoff {c.id} holds an older version of {c.reference_id!r} than one already "
                "handed off; retrying it would ingest stale content"
            )
        else:
            reason = None
            requeued[c.reference_id] = c.id
        outcome: Literal["requeued", "refused"] = "refused" if reason else "requeued"
        items.append(ReplayItem(c.id, c.reference_id, c.state, outcome, reason))
    return items


def _busy(reference_id: str, active_id: int, state: HandoffState) -> str:
    return f"reference {reference_id!r} already has active handoff {active_id} ({state.value})"


def _retry(uow: UnitOfWork, c: ReplayCandidate, now: datetime, actor: str) -> ReplayItem:
    try:
        ingestion_handoff.retry(uow, c.id, now=now, actor=actor)
    except (Conflict, NotFound) as exc:  # raised before `retry` wrote anything
        return ReplayItem(c.id, c.reference_id, c.state, "refused", exc.message)
    return ReplayItem(c.id, c.reference_id, c.state, "requeued", None)


@dataclass(frozen=True, slots=True)
class ReferenceHistory:
    reference_id: str
    versions: list[Version]  # newest fetch first
    handoffs: list[Handoff]  # newest first
    current_document: DocumentSummary | None


def reference_history(uow: UnitOfWork, reference_id: str) -> ReferenceHistory:
    """A reference's stored versions, its handoffs and its current document (NotFound when
    nothing was ever stored or handed off for it)."""
    versions = uow.queries.versions(reference_id)
    handoffs = uow.queries.of_reference(reference_id)
    if not versions and not handoffs:
        raise NotFound(f"no reference {reference_id!r}", field="reference_id")
    return ReferenceHistory(
        reference_id, versions, handoffs, uow.queries.current_document(reference_id)
    )
