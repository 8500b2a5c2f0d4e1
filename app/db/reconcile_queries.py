"""Read-side SQL of the reconciler: each method is one statement, a keyset page ordered by the
id it names (`after` is the last id of the previous page), the same on both engines."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, exists, not_, select

from app.db.rows import to_handoff
from app.db.tables import handoffs, ingestion_jobs, scrape_records
from app.domain.models import Handoff, ScrapeRecord
from app.domain.reconcile import Kind, Suspect
from app.domain.states import TERMINAL_STATES, HandoffState

_UNFINISHED = [s.value for s in HandoffState if s not in TERMINAL_STATES]
_RUNNING = HandoffState.RUNNING.value
h, r, j = handoffs.c, scrape_records.c, ingestion_jobs.c


def _same_pair() -> Any:
    return and_(h.reference_id == r.reference_id, h.payload_hash == r.payload_hash)


def _current_attempt(*extra: Any) -> Any:
    """An attempt row of the handoff's current lease, with `extra` conditions."""
    return exists().where(j.handoff_id == h.id, j.lease_token == h.lease_token, *extra)


class ReconcileQueries:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def records_without_handoff(self, *, after: int, limit: int) -> list[Suspect]:
        """Stored versions no handoff row accounts for, by record id."""
        rows = self.conn.execute(
            select(r.id, r.reference_id, r.payload_hash)
            .where(r.id > after, not_(exists().where(_same_pair())))
            .order_by(r.id)
            .limit(limit)
        )
        return [
            Suspect(Kind.RECORD_WITHOUT_HANDOFF, x.reference_id, x.payload_hash, record_id=x.id)
            for x in rows
        ]

    def unfinished_without_record(self, *, after: int, limit: int) -> list[Suspect]:
        """Unfinished handoffs whose scrape record is gone, by handoff id."""
        rows = self.conn.execute(
            select(h.id, h.reference_id, h.payload_hash, h.state, h.lease_token)
            .where(h.id > after, h.state.in_(_UNFINISHED), not_(exists().where(_same_pair())))
            .order_by(h.id)
            .limit(limit)
        )
        return [
            Suspect(
                Kind.PAYLOAD_MISSING,
                x.reference_id,
                x.payload_hash,
                handoff_id=x.id,
                state=HandoffState(x.state),
                lease_token=x.lease_token,
            )
            for x in rows
        ]

    def unfinished_with_record(
        self, *, after: int, limit: int
    ) -> list[tuple[Handoff, ScrapeRecord]]:
        """Unfinished handoffs with their stored payloads, by handoff id, for the hash check
        (bodies included: keep `limit` small)."""
        cols = [*handoffs.c, *(c.label(f"r_{c.name}") for c in scrape_records.c)]
        rows = self.conn.execute(
            select(*cols)
            .select_from(handoffs.join(scrape_records, _same_pair()))
            .where(h.id > after, h.state.in_(_UNFINISHED))
            .order_by(h.id)
            .limit(limit)
        ).all()
        return [(to_handoff(row), _record(row._mapping)) for row in rows]

    def running_without_open_attempt(self, *, after: int, limit: int) -> list[Suspect]:
        """Running handoffs whose current lease has no open attempt row, by handoff id."""

        def of_current_lease(column: Any) -> Any:
            # (handoff_id, lease_token) is unique in ingestion_jobs: at most one value.
            return (
                select(column)
                .where(j.handoff_id == h.id, j.lease_token == h.lease_token)
                .scalar_subquery()
            )

        rows = self.conn.execute(
            select(
                h.id,
                h.reference_id,
                h.payload_hash,
                h.lease_token,
                of_current_lease(j.id).label("attempt_id"),
                of_current_lease(j.outcome).label("outcome"),
            )
            .where(
                h.id > after,
                h.state == _RUNNING,
                not_(_current_attempt(j.finished_at.is_(None))),
            )
            .order_by(h.id)
            .limit(limit)
        )
        return [
            Suspect(
                Kind.RUNNING_WITHOUT_OPEN_ATTEMPT,
                x.reference_id,
                x.payload_hash,
                handoff_id=x.id,
                state=HandoffState.RUNNING,
                lease_token=x.lease_token,
                attempt_id=x.attempt_id,
                attempt_outcome=x.outcome,
            )
            for x in rows
        ]

    def attempts_left_open(self, *, after: int, limit: int) -> list[Suspect]:
        """Open attempt rows whose handoff is not running under their lease, by attempt id."""
        rows = self.conn.execute(
            select(j.id, j.lease_token, h.id.label("hid"), h.reference_id, h.payload_hash, h.state)
            .select_from(ingestion_jobs.join(handoffs, h.id == j.handoff_id))
            .where(
                j.id > after,
                j.finished_at.is_(None),
                not_(and_(h.state == _RUNNING, h.lease_token == j.lease_token)),
            )
            .order_by(j.id)
            .limit(limit)
        )
        return [
            Suspect(
                Kind.ATTEMPT_LEFT_OPEN,
                x.reference_id,
                x.payload_hash,
                handoff_id=x.hid,
                state=HandoffState(x.state),
                lease_token=x.lease_token,
                attempt_id=x.id,
            )
            for x in rows
        ]

    def finished_disagreeing(self, *, after: int, limit: int) -> list[Suspect]:
        """Finished handoffs whose closed last attempt says otherwise, by handoff id: succeeded
        without a succeeded attempt for its lease, or failed or cancelled with one. A handoff
        whose attempt is still open is `attempts_left_open`'s, not this."""
        succeeded = h.state == HandoffState.SUCCEEDED.value
        success = _current_attempt(j.outcome == "succeeded")
        rows = self.conn.execute(
            select(h.id, h.reference_id, h.payload_hash, h.state, h.lease_token)
            .where(
                h.id > after,
                not_(_current_attempt(j.finished_at.is_(None))),
                (succeeded & not_(success))
                | (
                    h.state.in_([HandoffState.FAILED.value, HandoffState.CANCELLED.value]) & success
                ),
            )
            .order_by(h.id)
            .limit(limit)
        )
        return [
            Suspect(
                Kind.SUCCEEDED_WITHOUT_SUCCESSFUL_ATTEMPT
                if x.state == HandoffState.SUCCEEDED.value
                else Kind.SUCCESSFUL_ATTEMPT_NOT_SUCCEEDED,
                x.reference_id,
                x.payload_hash,
                handoff_id=x.id,
                state=HandoffState(x.state),
                lease_token=x.lease_token,
            )
            for x in rows
        ]

    def open_attempt(self, attempt_id: int) -> tuple[int, int] | None:
        """`(handoff_id, lease_token)` of an attempt row while it is open."""
        row = self.conn.execute(
            select(j.handoff_id, j.lease_token).where(j.id == attempt_id, j.finished_at.is_(None))
        ).first()
        return None if row is None else (row.handoff_id, row.lease_token)


def _record(m: Any) -> ScrapeRecord:
    return ScrapeRecord(
        id=m["r_id"],
        reference_id=m["r_reference_id"],
        payload_hash=m["r_payload_hash"],
        source=m["r_source"],
        url=m["r_url"],
        fetched_at=m["r_fetched_at"],
        http_status=m["r_http_status"],
        content_type=m["r_content_type"],
        headers=m["r_headers"],
        body=bytes(m["r_body"]),
        fields=m["r_fields"],
        created_at=m["r_created_at"],
    )
