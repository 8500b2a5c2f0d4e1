"""Mapping rows to the domain's frozen dataclasses, and dialect-specific INSERT."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import psycopg
from psycopg.rows import dict_row
from sqlalchemy import Connection, Dialect, PoolProxiedConnection, Row, Table, TextClause
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from app.domain.models import HandedOff, Handoff, HandoffEvent, ScrapeRecord
from app.domain.states import EnqueueOutcome, HandoffState, ReasonCode


def upsert_insert(conn: Connection, table: Table) -> Any:
    """An INSERT that knows ON CONFLICT, for the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def pg_text(statement: TextClause) -> str:
    """A fixed PostgreSQL statement as psycopg takes it (`%(name)s` parameters)."""
    return str(statement.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]


def driver_rows(
    conn: Connection, statement: str, params: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Run a fixed statement (see `pg_text`) on the psycopg connection under `conn`, in its
    transaction, and return its rows as dicts. For the hottest statements only: it skips
    SQLAlchemy's work per execution (cache look-up, parameter processing, result metadata built
    from the cursor description), about a quarter of a one-record submission's client CPU.
    Driver errors are raised as SQLAlchemy's, so callers' retries (deadlock, serialization)
    treat them alike."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    try:
        with raw.cursor(row_factory=dict_row) as cur:
            cur.execute(statement, params)
            return cur.fetchall()
    except psycopg.Error as exc:
        err = driver_error(conn.dialect, conn.connection, statement, params, exc)
        if err.connection_invalidated:
            conn.invalidate(err)  # the pool replaces it; `Database.run` retries on a fresh one
        raise err from exc


def driver_error(
    dialect: Dialect,
    pooled: PoolProxiedConnection | psycopg.Connection[Any],
    statement: str,
    params: Mapping[str, Any],
    exc: psycopg.Error,
) -> DBAPIError:
    """A psycopg error of a statement sent past SQLAlchemy, as SQLAlchemy raises its own: its
    error class, flagged `connection_invalidated` if the connection (pooled, or a driver
    connection of the autocommit lane) is lost: the caller drops it, and retries run on a
    fresh one."""
    # psycopg's Connection is a DB-API connection; SQLAlchemy's protocol for one is untyped.
    gone = dialect.is_disconnect(cast(Any, exc), cast(Any, pooled), None)
    err = DBAPIError.instance(
        statement, dict(params), exc, psycopg.Error, connection_invalidated=gone, dialect=dialect
    )
    assert isinstance(err, DBAPIError)  # a psycopg.Error is a DB-API error
    return err


def to_handoff(row: Row[Any]) -> Handoff:
    return handoff_from(row._mapping)


# Enum members by value: a dict look-up, not the enum call (a batch maps hundreds of rows).
_STATES = {s.value: s for s in HandoffState}
_REASONS = {r.value: r for r in ReasonCode}
_OUTCOMES = {o.value: o for o in EnqueueOutcome}


def handoff_from(m: Mapping[Any, Any]) -> Handoff:
    return Handoff(
        id=m["id"],
        reference_id=m["reference_id"],
        payload_hash=m["payload_hash"],
        source=m["source"],
        fetched_at=m["fetched_at"],
        state=_STATES[m["state"]],
        reason_code=_REASONS[m["reason_code"]],
        enqueue_outcome=_OUTCOMES[m["enqueue_outcome"]],
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


def handed_off_from(m: Mapping[Any, Any]) -> HandedOff:
    return HandedOff(
        m["id"],
        m["reference_id"],
        m["payload_hash"],
        _STATES[m["state"]],
        _REASONS[m["reason_code"]],
        _OUTCOMES[m["enqueue_outcome"]],
    )


def handed_off(h: Handoff) -> HandedOff:
    return HandedOff(
        h.id, h.reference_id, h.payload_hash, h.state, h.reason_code, h.enqueue_outcome
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
    return record_from(row._mapping)


def record_from(m: Mapping[Any, Any], prefix: str = "") -> ScrapeRecord:
    """A scrape record from a row's columns, named `<prefix><column>` (a join's aliases)."""
    return ScrapeRecord(
        id=m[f"{prefix}id"],
        reference_id=m[f"{prefix}reference_id"],
        payload_hash=m[f"{prefix}payload_hash"],
        source=m[f"{prefix}source"],
        url=m[f"{prefix}url"],
        fetched_at=m[f"{prefix}fetched_at"],
        http_status=m[f"{prefix}http_status"],
        content_type=m[f"{prefix}content_type"],
        headers=m[f"{prefix}headers"],
        body=bytes(m[f"{prefix}body"]),
        fields=m[f"{prefix}fields"],
        created_at=m[f"{prefix}created_at"],
    )
