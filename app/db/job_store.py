"""`ingestion_jobs`: one history row per attempt, written in the transaction of the transition."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, bindparam, select, update

from app.db.tables import ingestion_jobs
from app.domain.models import Attempt, Handoff


class JobStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def start(self, claimed: Sequence[Handoff], worker_id: str, now: datetime) -> None:
        if not claimed:
            return
        self.conn.execute(
            ingestion_jobs.insert(),
            [
                {
                    "handoff_id": h.id,
                    "lease_token": h.lease_token,
                    "attempt": h.attempts,
                    "worker_id": worker_id,
                    "claimed_at": now,
                }
                for h in claimed
            ],
        )

    def finish(
        self,
        ended: Sequence[tuple[int, int]],
        *,
        outcome: str,
        now: datetime,
        retry_class: str | None = None,
        reason_code: str | None = None,
        error: str | None = None,
    ) -> None:
        """Close the attempt rows of `(handoff_id, lease_token)` pairs with one outcome."""
        if not ended:
            return
        stmt = (
            update(ingestion_jobs)
            .where(
                ingestion_jobs.c.handoff_id == bindparam("h_id"),
                ingestion_jobs.c.lease_token == bindparam("h_token"),
                ingestion_jobs.c.finished_at.is_(None),
            )
            .values(
                finished_at=now,
                outcome=outcome,
                retry_class=retry_class,
                reason_code=reason_code,
                error=error,
            )
        )
        self.conn.execute(stmt, [{"h_id": h, "h_token": t} for h, t in ended])

    def of_handoff(self, handoff_id: int) -> list[Attempt]:
        rows = self.conn.execute(
            select(ingestion_jobs)
            .where(ingestion_jobs.c.handoff_id == handoff_id)
            .order_by(ingestion_jobs.c.id)
        )
        return [Attempt(**r._mapping) for r in rows]
