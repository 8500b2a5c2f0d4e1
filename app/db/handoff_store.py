"""SQL over `ingestion_handoffs` and `handoff_events`. Every state change is a guarded UPDATE:
it names the states (and lease token) it may change, so a racing writer changes nothing."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, case, func, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError

from app.db.rows import (
    driver_rows,
    handed_off,
    handed_off_from,
    handoff_from,
    pg_text,
    to_event,
    to_handoff,
    upsert_insert,
)
from app.db.tables import handoff_events, handoffs
from app.domain.errors import Conflict
from app.domain.models import HandedOff, Handoff, HandoffEvent, Lease, NewEvent
from app.domain.states import ACTIVE_STATES, RUNNABLE_STATES, HandoffState, Move, ReasonCode

Pair = tuple[str, str]
_ACTIVE = [s.value for s in ACTIVE_STATES]
_RUNNABLE = [s.value for s in RUNNABLE_STATES]
_RUNNING = HandoffState.RUNNING.value


def _leases_clause(leases: Iterable[Lease]) -> Any:
    pairs = [(lease.handoff_id, lease.token) for lease in leases]
    return and_(
        handoffs.c.state == _RUNNING, tuple_(handoffs.c.id, handoffs.c.lease_token).in_(pairs)
    )


class HandoffStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        #: Every transition whose event this store wrote in its transaction, in order; the
        #: unit of work reports them to metrics once the transaction has committed.
        self.moves: list[Move] = []

    def note_inserted(self, inserted: Iterable[HandedOff]) -> None:
        """Record the creation events of handoffs inserted (with their events) by one statement."""
        self.moves.extend((None, h.state, h.reason_code) for h in inserted)

    def note_moves(self, moves: Iterable[Move]) -> None:
        """Record transitions whose events another store's statement wrote."""
        self.moves.extend(moves)

    # -- reads -------------------------------------------------------------------------------

    def get(self, handoff_id: int) -> Handoff | None:
        row = self.conn.execute(select(handoffs).where(handoffs.c.id == handoff_id)).first()
        return None if row is None else to_handoff(row)

    def by_pairs(self, pairs: Iterable[Pair]) -> dict[Pair, Handoff]:
        wanted = list(set(pairs))
        if not wanted:
            return {}
        key = tuple_(handoffs.c.reference_id, handoffs.c.payload_hash)
        rows = self.conn.execute(select(handoffs).where(key.in_(wanted)))
        return {(r.reference_id, r.payload_hash): to_handoff(r) for r in rows}

    def states_of(self, ids: Collection[int]) -> dict[int, HandoffState]:
        if not ids:
            return {}
        rows = self.conn.execute(
            select(handoffs.c.id, handoffs.c.state).where(handoffs.c.id.in_(list(ids)))
        )
        return {r.id: HandoffState(r.state) for r in rows}

    def latest_fetched(self, reference_ids: Collection[str]) -> dict[str, datetime]:
        """The newest fetched_at handed off so far, per reference."""
        if not reference_ids:
            return {}
        rows = self.conn.execute(
            select(handoffs.c.reference_id, func.max(handoffs.c.fetched_at).label("latest"))
            .where(handoffs.c.reference_id.in_(list(reference_ids)))
            .group_by(handoffs.c.reference_id)
        )
        # max() bypasses the column type on SQLite, so convert through the type by hand.
        return {r.reference_id: _as_datetime(r.latest) for r in rows}

    def unfinished_of(self, reference_id: str) -> list[Handoff]:
        """The active and the waiting handoff of a reference (at most one of each)."""
        states = [*_ACTIVE, HandoffState.WAITING.value]
        rows = self.conn.execute(
            select(handoffs).where(
                handoffs.c.reference_id == reference_id, handoffs.c.state.in_(states)
            )
        )
        return [to_handoff(r) for r in rows]

    def of_reference(self, reference_id: str) -> list[Handoff]:
        rows = self.conn.execute(
            select(handoffs).where(handoffs.c.reference_id == reference_id).order_by(handoffs.c.id)
        )
        return [to_handoff(r) for r in rows]

    def events(self, handoff_id: int) -> list[HandoffEvent]:
        rows = self.conn.execute(
            select(handoff_events)
            .where(handoff_events.c.handoff_id == handoff_id)
            .order_by(handoff_events.c.id)
        )
        return [to_event(r) for r in rows]

    def counts(self) -> dict[tuple[HandoffState, ReasonCode], int]:
        rows = self.conn.execute(
            select(handoffs.c.state, handoffs.c.reason_code, func.count().label("n")).group_by(
                handoffs.c.state, handoffs.c.reason_code
            )
        )
        return {(HandoffState(r.state), ReasonCode(r.reason_code)): int(r.n) for r in rows}

    def active_count_per_reference(self) -> int:
        """The largest number of active rows any reference has (the index keeps it <= 1)."""
        sub = (
            select(func.count().label("n"))
            .where(handoffs.c.state.in_(_ACTIVE))
            .group_by(handoffs.c.reference_id)
            .subquery()
        )
        return int(self.conn.execute(select(func.coalesce(func.max(sub.c.n), 0))).scalar_one())

    # -- writes ------------------------------------------------------------------------------

    def lock_running(self, handoff_id: int) -> bool:
        """Lock a handoff while it is still running (until commit); False if it is not.

        Queueing a payload behind a running one takes this lock first, so the worker's
        finalize of that row waits for us and its promotion then sees our waiting row."""
        row = self.conn.execute(
            select(handoffs.c.id)
            .where(handoffs.c.id == handoff_id, handoffs.c.state == _RUNNING)
            .with_for_update()
        ).first()
        return row is not None

    def insert(self, rows: Sequence[Mapping[str, Any]]) -> list[Handoff]:
        """Insert handoffs; a row that trips any unique constraint (the pair key, one active or
        one waiting per reference) is skipped, not raised. Returns the rows inserted."""
        if not rows:
            return []
        stmt = upsert_insert(self.conn, handoffs).on_conflict_do_nothing().returning(*handoffs.c)
        return [to_handoff(r) for r in self.conn.execute(stmt, list(rows))]

    def insert_enqueued(
        self, rows: Sequence[Mapping[str, Any]], *, actor: str, now: datetime
    ) -> tuple[list[HandedOff], list[HandedOff]]:
        """Insert new queued handoffs with their `enqueued` events. Skipped, not raised: a row
        whose reference already has a version fetched later (stale), and a row that trips a
        unique constraint (the pair key, one active per reference). Returns those inserted and,
        on PostgreSQL, from the same statement, the handoffs its pairs already had (a duplicate
        costs no second round trip); SQLite's callers look those up."""
        if not rows:
            return [], []
        if self.conn.dialect.name == "postgresql":
            return self._insert_enqueued_pg(rows, actor=actor, now=now)
        latest = self.latest_fetched({r["reference_id"] for r in rows})
        fresh = [
            r
            for r in rows
            if r["reference_id"] not in latest or r["fetched_at"] >= latest[r["reference_id"]]
        ]
        inserted = self.insert(fresh)
        self.add_events(
            [
                NewEvent(h.id, actor, None, h.state, h.reason_code, detail=h.enqueue_outcome.value)
                for h in inserted
            ],
            now,
        )
        return [handed_off(h) for h in inserted], []

    def _insert_enqueued_pg(
        self, rows: Sequence[Mapping[str, Any]], *, actor: str, now: datetime
    ) -> tuple[list[HandedOff], list[HandedOff]]:
        # One statement for the batch: arrays in (one fixed query text, so it is parsed once
        # and prepared by the server), rows and their events out.
        result = driver_rows(
            self.conn, _INSERT_ENQUEUED_SQL, enqueue_params(rows, actor=actor, now=now)
        )
        return self.split_enqueued(result)

    def split_enqueued(
        self, result: Sequence[Mapping[str, Any]]
    ) -> tuple[list[HandedOff], list[HandedOff]]:
        """`split_enqueued` of a statement run in this store's transaction."""
        inserted, existed = split_enqueued(result)
        self.note_inserted(inserted)  # the statement wrote their creation events
        return inserted, existed

    def transition(
        self, handoff_id: int, from_states: Collection[HandoffState], values: Mapping[str, Any]
    ) -> Handoff | None:
        """Change one handoff if it is still in one of `from_states`; None if it was not."""
        row = self.conn.execute(
            update(handoffs)
            .where(
                handoffs.c.id == handoff_id, handoffs.c.state.in_([s.value for s in from_states])
            )
            .values(**values)
            .returning(*handoffs.c)
        ).first()
        return None if row is None else to_handoff(row)

    def requeue(
        self, handoff_id: int, from_states: Collection[HandoffState], values: Mapping[str, Any]
    ) -> Handoff | None:
        """Like `transition` into an active state, but a reference that gained active work
        meanwhile (the one-active index refuses the row) raises Conflict instead of aborting
        the transaction: the UPDATE runs in a savepoint."""
        try:
            with self.conn.begin_nested():
                return self.transition(handoff_id, from_states, values)
        except IntegrityError as exc:
            raise Conflict(
                f"handoff {handoff_id}: its reference gained active work meanwhile; look again"
            ) from exc

    def add_events(self, events: Sequence[NewEvent], at: datetime) -> None:
        if not events:
            return
        self.moves.extend((e.from_state, e.to_state, e.reason_code) for e in events)
        if self.conn.dialect.name == "postgresql":
            # Arrays in: one fixed statement text for any number of events (parsed once,
            # prepared by the server) rather than a VALUES list that grows with the batch.
            self.conn.execute(
                _ADD_EVENTS_PG,
                {
                    "ids": [e.handoff_id for e in events],
                    "at": at,
                    "actors": [e.actor for e in events],
                    "froms": [e.from_state.value if e.from_state else None for e in events],
                    "tos": [e.to_state.value for e in events],
                    "reasons": [e.reason_code.value for e in events],
                    "tokens": [e.lease_token for e in events],
                    "details": [e.detail for e in events],
                },
            )
            return
        self.conn.execute(
            handoff_events.insert(),
            [
                {
                    "handoff_id": e.handoff_id,
                    "at": at,
                    "actor": e.actor,
                    "from_state": e.from_state.value if e.from_state else None,
                    "to_state": e.to_state.value,
                    "reason_code": e.reason_code.value,
                    "lease_token": e.lease_token,
                    "detail": e.detail,
                }
                for e in events
            ],
        )

    def claim(
        self, worker_id: str, limit: int, now: datetime, lease_until: datetime
    ) -> list[tuple[Handoff, HandoffState]]:
        """SQLite's claim: lease up to `limit` runnable handoffs, oldest `run_after` first,
        bumping each lease token (the fence). It runs inside BEGIN IMMEDIATE, so claimers take
        turns, and reading first then updating cannot race (SQLite's RETURNING cannot name a
        FROM clause). PostgreSQL claims in one statement: `WorkStore.claim`. Returns each
        claimed handoff with the state it was claimed from."""
        picked = (
            select(handoffs.c.id, handoffs.c.state.label("prev_state"))
            .where(handoffs.c.state.in_(_RUNNABLE), handoffs.c.run_after <= now)
            .order_by(handoffs.c.run_after, handoffs.c.id)
            .limit(limit)
        )
        values = {
            "state": _RUNNING,
            "reason_code": ReasonCode.CLAIMED.value,
            "lease_token": handoffs.c.lease_token + 1,
            "lease_owner": worker_id,
            "lease_expires_at": lease_until,
            "attempts": handoffs.c.attempts + 1,
            "updated_at": now,
        }
        prev = {r.id: HandoffState(r.prev_state) for r in self.conn.execute(picked)}
        if not prev:
            return []
        rows = self.conn.execute(
            update(handoffs)
            .where(handoffs.c.id.in_(list(prev)))
            .values(**values)
            .returning(*handoffs.c)
        ).all()
        return sorted(((to_handoff(r), prev[r.id]) for r in rows), key=lambda p: p[0].id)

    def extend_leases(self, leases: Collection[Lease], until: datetime, now: datetime) -> set[int]:
        """Heartbeat: push out the leases still held; returns the ids whose lease held.

        On PostgreSQL a row another transaction has locked (its result committing, an
        operator's cancel) is skipped, not waited for: the worker's loop heartbeats, and a
        claim must not wait behind a lock it does not need. A skipped lease that is still
        current is returned as held (it was not extended this time; the next beat tries
        again, well within the lease)."""
        if not leases:
            return set()
        skip_locked = self.conn.dialect.name == "postgresql"
        target = _leases_clause(leases)
        if skip_locked:
            free = select(handoffs.c.id).where(target).with_for_update(skip_locked=True)
            target = handoffs.c.id.in_(free.scalar_subquery())
        rows = self.conn.execute(
            update(handoffs)
            .where(target)
            .values(lease_expires_at=until, updated_at=now)
            .returning(handoffs.c.id)
        )
        held = {r.id for r in rows}
        if skip_locked and len(held) < len(leases):
            skipped = [lease for lease in leases if lease.handoff_id not in held]
            held |= set(
                self.conn.execute(select(handoffs.c.id).where(_leases_clause(skipped))).scalars()
            )
        return held

    def finish_leases(self, leases: Collection[Lease], values: Mapping[str, Any]) -> list[Handoff]:
        """Move running handoffs whose lease token is still current; others are left alone."""
        if not leases:
            return []
        rows = self.conn.execute(
            update(handoffs).where(_leases_clause(leases)).values(**values).returning(*handoffs.c)
        )
        return [to_handoff(r) for r in rows]

    def promote_waiting(self, reference_ids: Collection[str], now: datetime) -> list[Handoff]:
        """Queue the waiting handoff of each reference whose active slot is free."""
        if not reference_ids:
            return []
        if self.conn.dialect.name == "postgresql":
            # One fixed statement for any number of references (prepared once, generic plan
            # on the partial indexes), where an IN list made a new statement text per count.
            promoted = driver_rows(
                self.conn, _PROMOTE_WAITING_SQL, {"refs": sorted(set(reference_ids)), "now": now}
            )
            return [handoff_from(r) for r in promoted]
        busy = (
            select(handoffs.c.reference_id)
            .where(handoffs.c.reference_id.in_(list(reference_ids)), handoffs.c.state.in_(_ACTIVE))
            .scalar_subquery()
        )
        rows = self.conn.execute(
            update(handoffs)
            .where(
                handoffs.c.reference_id.in_(list(reference_ids)),
                handoffs.c.state == HandoffState.WAITING.value,
                handoffs.c.reference_id.not_in(busy),
            )
            .values(
                state=HandoffState.QUEUED.value,
                reason_code=ReasonCode.PROMOTED.value,
                run_after=now,
                updated_at=now,
            )
            .returning(*handoffs.c)
        )
        return [to_handoff(r) for r in rows]

    def rescue_expired(self, now: datetime, crash_max: int, run_after: datetime) -> list[Handoff]:
        """The rescuer: one guarded UPDATE returns every expired lease to `retry_wait` (or to
        `failed` as poison_suspected once its crash budget is spent). The guard (still running,
        lease expired) makes it safe to run on every node at once: a row moves only once."""
        poisoned = handoffs.c.crashes + 1 >= crash_max
        rows = self.conn.execute(
            update(handoffs)
            .where(handoffs.c.state == _RUNNING, handoffs.c.lease_expires_at < now)
            .values(
                crashes=handoffs.c.crashes + 1,
                state=case(
                    (poisoned, HandoffState.FAILED.value), else_=HandoffState.RETRY_WAIT.value
                ),
                reason_code=case(
                    (poisoned, ReasonCode.POISON_SUSPECTED.value),
                    else_=ReasonCode.LEASE_EXPIRED.value,
                ),
                finished_at=case((poisoned, now), else_=None),
                run_after=run_after,
                lease_owner=None,
                lease_expires_at=None,
                last_error="lease expired",
                throttled_since=None,  # a crash ends a throttling spell, as decide() says
                updated_at=now,
            )
            .returning(*handoffs.c)
        )
        return [to_handoff(r) for r in rows]


_ADD_EVENTS_PG = text(
    """
    INSERT INTO handoff_events (
        handoff_id, at, actor, from_state, to_state, reason_code, lease_token, detail
    )
    SELECT v.handoff_id, :at, v.actor, v.from_state, v.to_state, v.reason_code, v.lease_token,
           v.detail
    FROM unnest(
        CAST(:ids AS bigint[]), CAST(:actors AS text[]), CAST(:froms AS text[]),
        CAST(:tos AS text[]), CAST(:reasons AS text[]), CAST(:tokens AS bigint[]),
        CAST(:details AS text[])
    ) AS v(handoff_id, actor, from_state, to_state, reason_code, lease_token, detail)
    """
)

#: The handoff half of an enqueue, over a CTE `v` of versions (see `_ENQUEUE_FROM_ARRAYS`):
#: queued rows for versions not older than one already handed off, refused rows skipped (CTE
#: `h`, the rows inserted) ...
_ENQUEUE_INSERT = """
    h AS (
        INSERT INTO ingestion_handoffs AS t (
            reference_id, payload_hash, source, fetched_at, state, reason_code, enqueue_outcome,
            run_after, created_at, updated_at
        )
        SELECT v.reference_id, v.payload_hash, v.source, v.fetched_at, :state, :reason,
               :outcome, :now, :now, :now
        FROM v
        WHERE NOT EXISTS (
            SELECT 1 FROM ingestion_handoffs x
            WHERE x.reference_id = v.reference_id AND x.fetched_at > v.fetched_at
            OFFSET 0  -- a probe of the pair key per version, never a join over the table
        )
        {order}
        ON CONFLICT DO NOTHING
        RETURNING t.id, t.reference_id, t.payload_hash, t.state, t.reason_code, t.enqueue_outcome
    ),
"""
ENQUEUE_INSERT = _ENQUEUE_INSERT.format(order="ORDER BY v.n")
#: ... over a CTE `v` of one version: nothing to order (a sort is set up per execution).
ENQUEUE_INSERT_ONE = _ENQUEUE_INSERT.format(order="")
#: ... then an `enqueued` event per row inserted, and the statement's rows: those inserted and
#: the pairs' handoffs from before it. A statement may put CTEs of its own between the two.
_ENQUEUE_RESULT = """
    e AS (
        INSERT INTO handoff_events (handoff_id, at, actor, to_state, reason_code, detail)
        SELECT h.id, :now, :actor, h.state, h.reason_code, h.enqueue_outcome FROM h
    )
    SELECT h.*, false AS existed FROM h
    UNION ALL
    -- Pairs handed off before this statement (its snapshot does not see the rows h inserts):
    -- the duplicates, answered here rather than by a second look-up.
    SELECT x.*, true AS existed
    FROM v CROSS JOIN LATERAL (
        SELECT id, reference_id, payload_hash, state, reason_code, enqueue_outcome
        FROM ingestion_handoffs x
        WHERE x.reference_id = v.reference_id AND x.payload_hash = v.payload_hash
        OFFSET 0
    ) x
    {tail}
"""
#: ... over a CTE `v` of one version: a pair `h` inserted had no handoff before, so the
#: look-up is skipped (a gating filter, evaluated once); at most one row, nothing to order.
ENQUEUE_RESULT_ONE = _ENQUEUE_RESULT.format(tail="WHERE NOT EXISTS (SELECT 1 FROM h)")
ENQUEUE_RESULT = _ENQUEUE_RESULT.format(tail="ORDER BY id")
ENQUEUE_CTES = ENQUEUE_INSERT + ENQUEUE_RESULT

_INSERT_ENQUEUED_PG = text(
    """
    WITH v AS (
        SELECT * FROM unnest(
            CAST(:refs AS text[]), CAST(:hashes AS text[]), CAST(:sources AS text[]),
            CAST(:fetched AS timestamptz[])
        ) WITH ORDINALITY AS v(reference_id, payload_hash, source, fetched_at, n)
    ),
    """
    + ENQUEUE_CTES
)
_INSERT_ENQUEUED_SQL = pg_text(_INSERT_ENQUEUED_PG)

#: `promote_waiting` on PostgreSQL: the waiting row of each reference with no active row.
_PROMOTE_WAITING_SQL = pg_text(
    text(
        """
        UPDATE ingestion_handoffs h
        SET state = 'queued', reason_code = 'promoted', run_after = :now, updated_at = :now
        FROM unnest(CAST(:refs AS text[])) AS r(reference_id)
        WHERE h.reference_id = r.reference_id
          AND h.state = 'waiting'
          AND NOT EXISTS (
              SELECT 1 FROM ingestion_handoffs a
              WHERE a.reference_id = r.reference_id
                AND a.state IN ('queued', 'running', 'retry_wait')
          )
        RETURNING h.*
        """
    )
)


def split_enqueued(
    result: Sequence[Mapping[str, Any]],
) -> tuple[list[HandedOff], list[HandedOff]]:
    """The rows of an `ENQUEUE_CTES` statement: (inserted, existing before it)."""
    inserted = [handed_off_from(r) for r in result if not r["existed"]]
    return inserted, [handed_off_from(r) for r in result if r["existed"]]


def enqueue_params(
    rows: Sequence[Mapping[str, Any]], *, actor: str, now: datetime
) -> dict[str, Any]:
    return {
        "refs": [r["reference_id"] for r in rows],
        "hashes": [r["payload_hash"] for r in rows],
        "sources": [r["source"] for r in rows],
        "fetched": [r["fetched_at"] for r in rows],
        "state": rows[0]["state"],
        "reason": rows[0]["reason_code"],
        "outcome": rows[0]["enqueue_outcome"],
        "actor": actor,
        "now": now,
    }


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
