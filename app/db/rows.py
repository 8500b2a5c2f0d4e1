"""Mapping rows to the domain's frozen dataclasses, and dialect-specific INSERT."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, Table
from sqlalchemy.dialects import postgresql, sqlite

from app.domain.models import Handoff, HandoffEvent, ScrapeRecord
from app.domain.states import EnqueueOutcome, HandoffState, ReasonCode


def upsert_insert(conn: Connection, table: Table) -> Any:
    """An INSERT that knows ON CONFLICT, for the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def to_handoff(row: Row[Any]) -> Handoff:
    m = row._mapping
    return Handoff(
        id=m["id"],
        reference_id=m["reference_id"],
        payload_hash=m["payload_hash"],
        source=m["source"],
        fetched_at=m["fetched_at"],
        state=HandoffState(m["state"]),
        reason_code=ReasonCode(m["reason_code"]),
        enqueue_outcome=EnqueueOutcome(m["enqueue_outcome"]),
        run_after=m["run_after"],
        attempts=m["attempts"],
        failures=m["failures"],
        crashes=m["crashes"],
        throttled_since=m["throttled_since"],
        lease_token=m["lease_token"],
        lease_owner=m["lease_owner"],
        lease_expires_at=m["lease_expires_at"],
        last_error=m["last_error"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        finished_at=m["finished_at"],
    )


def to_event(row: Row[Any]) -> HandoffEvent:
    m = row._mapping
    return HandoffEvent(
        id=m["id"],
        handoff_id=m["handoff_id"],
        at=m["at"],
        actor=m["actor"],
        from_state=HandoffState(m["from_state"]) if m["from_state"] else None,
        to_state=HandoffState(m["to_state"]),
        reason_code=ReasonCode(m["reason_code"]),
        lease_token=m["lease_token"],
        detail=m["detail"],
    )


def to_record(row: Row[Any]) -> ScrapeRecord:
    m = row._mapping
    return ScrapeRecord(
        id=m["id"],
        reference_id=m["reference_id"],
        payload_hash=m["payload_hash"],
        source=m["source"],
        url=m["url"],
        fetched_at=m["fetched_at"],
        http_status=m["http_status"],
        content_type=m["content_type"],
        headers=m["headers"],
        body=bytes(m["body"]),
        fields=m["fields"],
        created_at=m["created_at"],
    )
