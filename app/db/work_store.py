"""The worker's two hot transitions, each in one statement on PostgreSQL.

A claim leases handoffs, writes their `claimed` events and attempt rows and loads their scrape
records; a completion marks handoffs succeeded, writes their events and closes their attempt
rows. Each was three or four statements (one round trip each) on the worker's single database
thread; here each is one statement over data-modifying CTEs, so a worker turn costs BEGIN,
completion, promotion, claim and COMMIT. SQLite (in-process, no round trips) runs the stores in
turn, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from app.db.handoff_store import HandoffStore
from app.db.job_store import JobStore
from app.db.record_store import RecordStore
from app.db.rows import driver_rows, handoff_from, pg_text, record_from
from app.db.tables import handoffs
from app.domain.models import ClaimedJob, Handoff, Lease, NewEvent, ScrapeRecord
from app.domain.states import HandoffState, ReasonCode


class WorkStore:
    def __init__(
        self, conn: Connection, records: RecordStore, handoffs: HandoffStore, jobs: JobStore
    ) -> None:
        self.conn = conn
        self.records = records
        self.handoffs = handoffs
        self.jobs = jobs

    def claim(
        self, worker_id: str, limit: int, now: datetime, lease_until: datetime, actor: str
    ) -> list[ClaimedJob]:
        """Lease up to `limit` runnable handoffs (see `HandoffStore.claim`), write a `claimed`
        event and an open attempt row for each, and load their scrape records."""
        if self.conn.dialect.name != "postgresql":
            claimed = self.handoffs.claim(worker_id, limit, now, lease_until)
            if not claimed:
                return []
            leased = [h for h, _ in claimed]
            self.handoffs.add_events(
                [
                    NewEvent(h.id, actor, prev, h.state, h.reason_code, h.lease_token)
                    for h, prev in claimed
                ],
                now,
            )
            self.jobs.start(leased, worker_id, now)
            records = self.records.load((h.reference_id, h.payload_hash) for h in leased)
            return [ClaimedJob(h, records.get((h.reference_id, h.payload_hash))) for h in leased]
        rows = driver_rows(
            self.conn,
            CLAIM_SQL,
            {
                "limit": limit,
                "now": now,
                "lease_until": lease_until,
                "worker": worker_id,
                "actor": actor,
            },
        )
        jobs = [ClaimedJob(handoff_from(r), _record(r)) for r in rows]
        self.handoffs.note_moves(
            (HandoffState(r["prev_state"]), HandoffState.RUNNING, ReasonCode.CLAIMED) for r in rows
        )
        return jobs

    def succeed(self, leases: Sequence[Lease], now: datetime, actor: str) -> list[Handoff]:
        """Move running handoffs whose lease token is still current to `succeeded`, with their
        events and closed attempt rows; a stale lease changes nothing. Returns those moved."""
        if not leases:
            return []
        values = {
            "state": HandoffState.SUCCEEDED.value,
            "reason_code": ReasonCode.SUCCEEDED.value,
            "lease_owner": None,
            "lease_expires_at": None,
            "last_error": None,
            "finished_at": now,
            "updated_at": now,
        }
        if self.conn.dialect.name != "postgresql":
            done = self.handoffs.finish_leases(leases, values)
            self.handoffs.add_events(
                [
                    NewEvent(
                        h.id, actor, HandoffState.RUNNING, h.state, h.reason_code, h.lease_token
                    )
                    for h in done
                ],
                now,
            )
            self.jobs.finish(
                [(h.id, h.lease_token) for h in done],
                outcome="succeeded",
                now=now,
                reason_code=ReasonCode.SUCCEEDED.value,
            )
            return done
        result = driver_rows(
            self.conn,
            _SUCCEED_SQL,
            {
                "ids": [lease.handoff_id for lease in leases],
                "tokens": [lease.token for lease in leases],
                "now": now,
                "actor": actor,
            },
        )
        done = [handoff_from(r) for r in result]
        self.handoffs.note_moves(
            (HandoffState.RUNNING, HandoffState.SUCCEEDED, ReasonCode.SUCCEEDED) for _ in done
        )
        return done


def _record(row: dict[str, Any]) -> ScrapeRecord | None:
    return None if row["r_id"] is None else record_from(row, "r_")


_HANDOFF_COLUMNS = ", ".join(f"{{0}}.{c.name}" for c in handoffs.c)  # in handoffs.c order

# The claim: lock-and-skip the oldest runnable rows (ingestion_handoffs_runnable), lease them,
# then their events and attempt rows from the UPDATE's RETURNING, and their records joined in.
# Written so that every plan, generic ones included, probes by key: the UPDATE by primary key
# (`= ANY` of the picked ids, not a join the planner could turn into a scan from the first id)
# and the record by its version key (a lateral look-up that is not flattened into a join).
_CLAIM_PG = text(
    """
    WITH picked AS (
        SELECT id, state AS prev_state FROM ingestion_handoffs
        WHERE state IN ('queued', 'retry_wait') AND run_after <= :now
        ORDER BY run_after, id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ),
    c AS (
        UPDATE ingestion_handoffs h
        SET state = 'running', reason_code = 'claimed', lease_token = h.lease_token + 1,
            lease_owner = :worker, lease_expires_at = :lease_until, attempts = h.attempts + 1,
            updated_at = :now
        WHERE h.id = ANY (ARRAY(SELECT id FROM picked))
        RETURNING h.*
    ),
    cp AS (
        SELECT c.*, picked.prev_state FROM c JOIN picked ON picked.id = c.id
    ),
    e AS (
        INSERT INTO handoff_events (
            handoff_id, at, actor, from_state, to_state, reason_code, lease_token
        )
        SELECT cp.id, :now, :actor, cp.prev_state, cp.state, cp.reason_code, cp.lease_token
        FROM cp ORDER BY cp.id
    ),
    j AS (
        INSERT INTO ingestion_jobs (handoff_id, lease_token, attempt, worker_id, claimed_at)
        SELECT c.id, c.lease_token, c.attempts, :worker, :now FROM c ORDER BY c.id
    )
    SELECT """
    + _HANDOFF_COLUMNS.format("cp")
    + """, cp.prev_state, r.id AS r_id, r.reference_id AS r_reference_id,
           r.payload_hash AS r_payload_hash, r.source AS r_source, r.url AS r_url,
           r.fetched_at AS r_fetched_at, r.http_status AS r_http_status,
           r.content_type AS r_content_type, r.headers AS r_headers, r.body AS r_body,
           r.fields AS r_fields, r.created_at AS r_created_at
    FROM cp
    LEFT JOIN LATERAL (
        SELECT * FROM scrape_records s
        WHERE s.reference_id = cp.reference_id AND s.payload_hash = cp.payload_hash
        OFFSET 0
    ) r ON true
    ORDER BY cp.id
    """
)

# The completion: fenced by (id, lease_token) while running, as `HandoffStore.finish_leases`.
_SUCCEED_PG = text(
    """
    WITH l AS (
        SELECT * FROM unnest(CAST(:ids AS bigint[]), CAST(:tokens AS bigint[]))
            AS l(id, lease_token)
    ),
    d AS (
        UPDATE ingestion_handoffs h
        SET state = 'succeeded', reason_code = 'succeeded', lease_owner = NULL,
            lease_expires_at = NULL, last_error = NULL, finished_at = :now, updated_at = :now
        WHERE h.state = 'running'
          AND (h.id, h.lease_token) IN (SELECT l.id, l.lease_token FROM l)
        RETURNING h.*
    ),
    e AS (
        INSERT INTO handoff_events (
            handoff_id, at, actor, from_state, to_state, reason_code, lease_token
        )
        SELECT d.id, :now, :actor, 'running', d.state, d.reason_code, d.lease_token
        FROM d ORDER BY d.id
    ),
    j AS (
        UPDATE ingestion_jobs a
        SET finished_at = :now, outcome = 'succeeded', retry_class = NULL,
            reason_code = 'succeeded', error = NULL
        FROM d
        WHERE a.handoff_id = d.id AND a.lease_token = d.lease_token AND a.finished_at IS NULL
    )
    SELECT """
    + _HANDOFF_COLUMNS.format("d")
    + """ FROM d ORDER BY d.id
    """
)

#: The claim as the worker runs it (bench/perf.py explains it at a large backlog).
CLAIM_SQL = pg_text(_CLAIM_PG)
_SUCCEED_SQL = pg_text(_SUCCEED_PG)
