"""Read-side SQL for operators: filtered pages of handoffs, per-state figures, replay
candidates, a reference's history. Reads only; each answer is one statement on both engines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    case,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.sql import ColumnElement

from app.db.rows import to_handoff
from app.db.tables import documents, handoff_counts, handoffs, scrape_records
from app.domain.models import Handoff
from app.domain.queries import (
    DocumentSummary,
    HandoffFilter,
    ReplayCandidate,
    StateSummary,
    Version,
)
from app.domain.states import (
    ACTIVE_STATES,
    RUNNABLE_STATES,
    EnqueueOutcome,
    HandoffState,
    ReasonCode,
)

_ACTIVE = [s.value for s in ACTIVE_STATES]
_RUNNABLE = [s.value for s in RUNNABLE_STATES]
_EXCERPT_CHARS = 500
_COMPACT_COUNTS_PG = text(
    """
    WITH gone AS (DELETE FROM handoff_counts RETURNING state, reason_code, n)
    INSERT INTO handoff_counts (state, reason_code, n)
    SELECT state, reason_code, sum(n) FROM gone
    GROUP BY state, reason_code
    HAVING sum(n) <> 0
    """
)


def stuck_clause(now: datetime, cutoff: datetime) -> ColumnElement[bool]:
    """Stuck: runnable (queued or retry_wait) since before `cutoff` yet unclaimed, running on
    an expired lease, or waiting since before `cutoff`. `cutoff` is `now` minus the threshold."""
    return or_(
        and_(handoffs.c.state.in_(_RUNNABLE), handoffs.c.run_after <= cutoff),
        and_(handoffs.c.state == HandoffState.RUNNING.value, handoffs.c.lease_expires_at < now),
        # A waiting row is written once and changes only when it leaves `waiting`, so it has
        # waited since its creation (and (state, created_at) is indexed).
        and_(handoffs.c.state == HandoffState.WAITING.value, handoffs.c.created_at <= cutoff),
    )


def _where(f: HandoffFilter, now: datetime, cutoff: datetime) -> list[ColumnElement[bool]]:
    c = handoffs.c
    clauses: list[ColumnElement[bool]] = []
    if f.states:
        clauses.append(c.state.in_(sorted(s.value for s in f.states)))
    if f.reason_code is not None:
        clauses.append(c.reason_code == f.reason_code.value)
    if f.source is not None:
        clauses.append(c.source == f.source)
    if f.reference_id is not None:
        clauses.append(c.reference_id == f.reference_id)
    if f.created_after is not None:
        clauses.append(c.created_at >= f.created_after)
    if f.created_before is not None:
        clauses.append(c.created_at < f.created_before)
    if f.stuck is not None:
        stuck = stuck_clause(now, cutoff)
        clauses.append(stuck if f.stuck else not_(stuck))
    return clauses


class HandoffQueries:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def page(
        self,
        f: HandoffFilter,
        *,
        before_id: int | None,
        limit: int,
        now: datetime,
        cutoff: datetime,
    ) -> list[Handoff]:
        """Up to `limit` matching handoffs, newest (highest id) first, with ids below
        `before_id` when given: keyset pagination, stable while rows are added."""
        clauses = _where(f, now, cutoff)
        if before_id is not None:
            clauses.append(handoffs.c.id < before_id)
        rows = self.conn.execute(
            select(handoffs).where(*clauses).order_by(handoffs.c.id.desc()).limit(limit)
        )
        return [to_handoff(r) for r in rows]

    def count(self, f: HandoffFilter, *, now: datetime, cutoff: datetime) -> int:
        stmt = select(func.count()).select_from(handoffs).where(*_where(f, now, cutoff))
        return int(self.conn.execute(stmt).scalar_one())

    def state_summaries(
        self, *, now: datetime, cutoff: datetime
    ) -> dict[HandoffState, StateSummary]:
        """Per state present: oldest created_at, finished in the last 5/60 min.

        Built to stay fast at millions of rows: each figure reads an index range, never the
        whole table (one probe per state for the oldest, the finished_at index for the last
        hour)."""
        oldest = self.oldest_created()
        finished = self._finished_by_state(now)
        return {
            state: StateSummary(created, *finished.get(state, (0, 0)))
            for state, created in oldest.items()
        }

    def oldest_created(self) -> dict[HandoffState, datetime]:
        """The creation time of the oldest handoff of each state that has any: one index
        probe per state (ingestion_handoffs_state_created)."""
        c = handoffs.c
        probes = [
            select(
                literal(state.value).label("state"),
                select(func.min(c.created_at))
                .where(c.state == state.value)
                .scalar_subquery()
                .label("oldest"),
            )
            for state in HandoffState
        ]
        rows = self.conn.execute(union_all(*probes))
        return {
            HandoffState(r.state): oldest
            for r in rows
            if (oldest := _as_datetime(r.oldest)) is not None
        }

    def stuck_count(self, *, now: datetime, cutoff: datetime) -> int:
        """How many handoffs are stuck (`stuck_clause`), each part counted from an index alone:
        the runnable index, the lease index, (state, created_at) for the waiting ones."""
        c = handoffs.c

        def count(*where: ColumnElement[bool]) -> Any:
            return select(func.count()).where(*where).scalar_subquery()

        stmt = select(
            count(c.state.in_(_RUNNABLE), c.run_after <= cutoff)
            + count(c.state == HandoffState.RUNNING.value, c.lease_expires_at < now)
            + count(c.state == HandoffState.WAITING.value, c.created_at <= cutoff)
        )
        return int(self.conn.execute(stmt).scalar_one())

    def _finished_by_state(self, now: datetime) -> dict[HandoffState, tuple[int, int]]:
        """Per state: how many finished in the last 5 and the last 60 minutes."""
        c = handoffs.c
        recent = c.finished_at > now - timedelta(minutes=5)
        rows = self.conn.execute(
            select(
                c.state,
                func.coalesce(func.sum(case((recent, 1), else_=0)), 0).label("last_5m"),
                func.count().label("last_60m"),
            )
            .where(c.finished_at > now - timedelta(minutes=60), c.finished_at <= now)
            .group_by(c.state)
        )
        return {HandoffState(r.state): (int(r.last_5m), int(r.last_60m)) for r in rows}

    def counts(self) -> dict[tuple[HandoffState, ReasonCode], int]:
        """Handoffs per (state, reason_code) with any, from the trigger-kept `handoff_counts`
        (a few hundred rows, whatever the number of handoffs)."""
        k = handoff_counts.c
        rows = self.conn.execute(
            select(k.state, k.reason_code, func.sum(k.n).label("n"))
            .group_by(k.state, k.reason_code)
            .having(func.sum(k.n) != 0)
        )
        return {(HandoffState(r.state), ReasonCode(r.reason_code)): int(r.n) for r in rows}

    def compact_counts(self) -> None:
        """Fold `handoff_counts` back to one row per pair (PostgreSQL, where writers append
        deltas). Safe while others write or compact: each row is deleted, and its value
        re-added, by one transaction only; rows newer than this statement stay as they are.
        SQLite keeps one row per pair already."""
        if self.conn.dialect.name == "postgresql":
            self.conn.execute(_COMPACT_COUNTS_PG)

    def runnable_backlog(self, *, now: datetime, up_to: int) -> int:
        """Handoffs runnable now (queued or retry_wait, run_after passed), counted up to
        `up_to` at most: the count stops there, so it costs at most `up_to` index entries."""
        c = handoffs.c
        sub = select(c.id).where(c.state.in_(_RUNNABLE), c.run_after <= now).limit(up_to).subquery()
        return int(self.conn.execute(select(func.count()).select_from(sub)).scalar_one())

    def finished_since(self, since: datetime, *, now: datetime) -> int:
        """Handoffs that workers finished (succeeded or failed) after `since`, up to `now`."""
        c = handoffs.c
        stmt = select(func.count()).where(
            c.finished_at > since,
            c.finished_at <= now,
            c.state.in_([HandoffState.SUCCEEDED.value, HandoffState.FAILED.value]),
        )
        return int(self.conn.execute(stmt).scalar_one())

    def oldest_runnable(self, *, now: datetime) -> datetime | None:
        """The earliest run_after among handoffs runnable now (the runnable index's first)."""
        c = handoffs.c
        value = self.conn.execute(
            select(func.min(c.run_after)).where(c.state.in_(_RUNNABLE), c.run_after <= now)
        ).scalar_one()
        return _as_datetime(value)

    def replay_candidates(
        self,
        f: HandoffFilter,
        *,
        limit: int,
        now: datetime,
        cutoff: datetime,
    ) -> list[ReplayCandidate]:
        """Up to `limit` matching handoffs, oldest first, each with its reference's active
        handoff (the one-active index allows at most one) and whether a later-fetched version
        of the reference was handed off. The caller narrows `f` to the replayable states."""
        active = handoffs.alias("active")
        other = handoffs.alias("other")
        newer = exists().where(
            other.c.reference_id == handoffs.c.reference_id,
            other.c.fetched_at > handoffs.c.fetched_at,
        )
        stmt = (
            select(
                handoffs.c.id,
                handoffs.c.reference_id,
                handoffs.c.state,
                active.c.id.label("active_id"),
                active.c.state.label("active_state"),
                newer.label("has_newer"),
            )
            .select_from(
                handoffs.outerjoin(
                    active,
                    and_(
                        active.c.reference_id == handoffs.c.reference_id,
                        active.c.state.in_(_ACTIVE),
                    ),
                )
            )
            .where(*_where(f, now, cutoff))
            .order_by(handoffs.c.id)
            .limit(limit)
        )
        return [
            ReplayCandidate(
                id=r.id,
                reference_id=r.reference_id,
                state=HandoffState(r.state),
                active_id=r.active_id,
                active_state=HandoffState(r.active_state) if r.active_state else None,
                has_newer_version=bool(r.has_newer),
            )
            for r in self.conn.execute(stmt)
        ]

    def superseding(self, superseded: Handoff) -> Handoff | None:
        """The handoff of the same reference that replaced `superseded`: for a stale scrape,
        the newest version handed off; otherwise the next one handed off after it (rows
        refused as stale replace nothing)."""
        c = handoffs.c
        same = c.reference_id == superseded.reference_id
        if superseded.enqueue_outcome is EnqueueOutcome.REJECTED_STALE:
            which = and_(same, c.fetched_at > superseded.fetched_at)
            order = [c.fetched_at.desc(), c.id.desc()]
        else:
            which = and_(
                same,
                c.id > superseded.id,
                c.enqueue_outcome != EnqueueOutcome.REJECTED_STALE.value,
            )
            order = [c.id.asc()]
        row = self.conn.execute(select(handoffs).where(which).order_by(*order).limit(1)).first()
        return None if row is None else to_handoff(row)

    def versions(self, reference_id: str) -> list[Version]:
        """The stored scrapes of a reference, newest fetch first, without their bodies."""
        r = scrape_records.c
        rows = self.conn.execute(
            select(
                r.payload_hash,
                r.source,
                r.url,
                r.fetched_at,
                r.content_type,
                func.length(r.body).label("size"),
                r.created_at,
            )
            .where(r.reference_id == reference_id)
            .order_by(r.fetched_at.desc(), r.id.desc())
        )
        return [
            Version(
                x.payload_hash,
                x.source,
                x.url,
                x.fetched_at,
                x.content_type,
                int(x.size),
                x.created_at,
            )
            for x in rows
        ]

    def of_reference(self, reference_id: str) -> list[Handoff]:
        """The handoffs of a reference, newest first."""
        rows = self.conn.execute(
            select(handoffs)
            .where(handoffs.c.reference_id == reference_id)
            .order_by(handoffs.c.id.desc())
        )
        return [to_handoff(r) for r in rows]

    def current_document(self, reference_id: str) -> DocumentSummary | None:
        """The reference's current document: that of its newest ingested version, if any."""
        d = documents.c
        row = self.conn.execute(
            select(
                d.id,
                d.payload_hash,
                d.content_type,
                func.length(d.text).label("text_length"),
                func.substr(d.text, 1, _EXCERPT_CHARS).label("excerpt"),
                d.created_at,
                d.updated_at,
            ).where(d.reference_id == reference_id, d.superseded_at.is_(None))
        ).first()
        if row is None:
            return None
        return DocumentSummary(
            id=row.id,
            payload_hash=row.payload_hash,
            content_type=row.content_type,
            text_length=int(row.text_length),
            excerpt=str(row.excerpt),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


def _as_datetime(value: Any) -> datetime | None:
    # min() over a timestamp can come back as text on SQLite, whatever the column type says.
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
