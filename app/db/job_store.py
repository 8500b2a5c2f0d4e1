"""`ingestion_jobs`: one history row per attempt, written in the transaction of the transition."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, select, text, tuple_, update

from app.db.tables import ingestion_jobs
from app.domain.models import Attempt, Handoff


class JobStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def start(self, claimed: Sequence[Handoff], worker_id: str, now: datetime) -> None:
        """Open one attempt row per claimed handoff (one statement)."""
        if not claimed:
            return
        if self.conn.dialect.name == "postgresql":
            self.conn.execute(
                _START_PG,
                {
                    "ids": [h.id for h in claimed],
                    "tokens": [h.lease_token for h in claimed],
                    "attempts": [h.attempts for h in claimed],
                    "worker": worker_id,
                    "now": now,
                },
            )
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
        # One statement for the whole batch: every row gets the same values.
        self.conn.execute(
            update(ingestion_jobs)
            .where(
                tuple_(ingestion_jobs.c.handoff_id, ingestion_jobs.c.lease_token).in_(list(ended)),
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

    def of_handoff(self, handoff_id: int) -> list[Attempt]:
        rows = self.conn.execute(
            select(ingestion_jobs)
            .where(ingestion_jobs.c.handoff_id == handoff_id)
            .order_by(ingestion_jobs.c.id)
        )
        return [Attempt(**r._mapping) for r in rows]


_START_PG = text(
    """
    INSERT INTO ingestion_jobs (handoff_id, lease_token, attempt, worker_id, claimed_at)
    SELECT v.handoff_id, v.lease_token, v.attempt, :worker, :now
    FROM unnest(
        CAST(:ids AS bigint[]), CAST(:tokens AS bigint[]), CAST(:attempts AS integer[])
    ) AS v(handoff_id, lease_token, attempt)
    """
)
