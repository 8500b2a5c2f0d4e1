"""`handoff_wakeup_subscribers`: the workers that wait for a wake-up (PostgreSQL only; see
migration 20260301000037). The insert trigger sends its NOTIFY only while a row is here."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import DBAPIError

from app.db.tables import handoff_wakeup_subscribers as subscribers

#: The transaction-level advisory lock an enqueue holds when it skips its NOTIFY (the insert
#: trigger names the same two keys: 'hand' as an integer, then 1).
BARRIER_KEY = (1751215716, 1)

_BARRIER = text(
    "SELECT pg_advisory_xact_lock(:k1, :k2) FROM (SELECT set_config('lock_timeout', :ms, true)) s"
)
_PRUNE = text(
    """
    DELETE FROM handoff_wakeup_subscribers s
    WHERE NOT EXISTS (
        SELECT 1 FROM pg_stat_activity a WHERE a.pid = s.pid AND a.backend_start = s.backend_start
    )
    """
)
_LOCK_NOT_AVAILABLE = "55P03"


class WakeupStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def subscribe(self, worker_id: str, pid: int, backend_start: datetime, now: datetime) -> None:
        """List `worker_id` as waiting, on the LISTEN session (`pid`, `backend_start`)."""
        stmt = pg_insert(subscribers).values(
            worker_id=worker_id, pid=pid, backend_start=backend_start, since=now
        )
        again = {c: stmt.excluded[c] for c in ("pid", "backend_start", "since")}
        self.conn.execute(
            stmt.on_conflict_do_update(index_elements=[subscribers.c.worker_id], set_=again)
        )

    def unsubscribe(self, worker_id: str) -> None:
        self.conn.execute(delete(subscribers).where(subscribers.c.worker_id == worker_id))

    def wait_for_skipping_enqueues(self, timeout_seconds: float) -> bool:
        """Wait until every enqueue that skipped its NOTIFY has committed or rolled back (they
        hold the barrier lock shared): run after `subscribe` committed, a claim then sees their
        rows. False if that took longer than `timeout_seconds` (a long transaction is open)."""
        k1, k2 = BARRIER_KEY
        ms = str(max(1, round(timeout_seconds * 1000)))
        try:
            self.conn.execute(_BARRIER, {"k1": k1, "k2": k2, "ms": ms})
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                raise
            self.conn.rollback()
            return False
        return True

    def prune(self) -> int:
        """Drop the rows of LISTEN sessions that are gone (a worker that died listed)."""
        return self.conn.execute(_PRUNE).rowcount

    def worker_ids(self) -> list[str]:
        stmt = select(subscribers.c.worker_id).order_by(subscribers.c.worker_id)
        return list(self.conn.execute(stmt).scalars())
