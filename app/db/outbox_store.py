"""The outbox write: scrape records and their handoffs in one go, in the caller's transaction.

On PostgreSQL it is one statement (records, handoffs and their events from the same arrays), so
a submission costs one round trip before its commit; on SQLite it is the two stores in turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from app.db.handoff_store import (
    ENQUEUE_CTES,
    ENQUEUE_INSERT_ONE,
    ENQUEUE_RESULT_ONE,
    HandoffStore,
    enqueue_params,
)
from app.db.record_store import RecordStore, record_params
from app.db.rows import driver_rows, pg_text
from app.domain.models import HandedOff
from app.domain.records import PreparedRecord


class OutboxStore:
    def __init__(self, conn: Connection, records: RecordStore, handoffs: HandoffStore) -> None:
        self.conn = conn
        self.records = records
        self.handoffs = handoffs

    def store_and_enqueue(
        self,
        records: Sequence[PreparedRecord],
        rows: Sequence[Mapping[str, Any]],
        *,
        actor: str,
        now: datetime,
    ) -> tuple[list[HandedOff], list[HandedOff]]:
        """Store the versions not stored yet, then insert their queued handoffs as
        `HandoffStore.insert_enqueued` does (and return what it returns). `rows[i]` is the
        handoff of `records[i]`."""
        if not records:
            return [], []
        if self.conn.dialect.name != "postgresql":
            self.records.insert(records, now)
            return self.handoffs.insert_enqueued(rows, actor=actor, now=now)
        params = {**record_params(records, now), **enqueue_params(rows, actor=actor, now=now)}
        if len(records) == 1:  # the commonest call: scalars, not one-element arrays
            return self.handoffs.split_enqueued(
                driver_rows(self.conn, _STORE_AND_ENQUEUE_ONE_SQL, _scalars(params))
            )
        return self.handoffs.split_enqueued(driver_rows(self.conn, _STORE_AND_ENQUEUE_SQL, params))


def store_if_queued_statement(
    record: PreparedRecord, row: Mapping[str, Any], *, actor: str, now: datetime
) -> tuple[str, dict[str, Any]]:
    """PostgreSQL only: one version in one statement that is whole on its own, so it may
    commit by itself (`Database.execute_whole`). It queues the handoff and stores the record
    together, or, if the handoff is refused (the reference has unfinished work, or a later
    version), writes nothing at all. Its rows are those of `ENQUEUE_CTES` (see
    `split_enqueued`): a duplicate pair comes back as an existing handoff; a refused one not
    at all."""
    params = {**record_params([record], now), **enqueue_params([row], actor=actor, now=now)}
    return _STORE_IF_QUEUED_ONE_SQL, _scalars(params)


def _scalars(params: Mapping[str, Any]) -> dict[str, Any]:
    """The column arrays of one version as the scalars `_ONE` binds."""
    return {k: v[0] if isinstance(v, list) else v for k, v in params.items()}


_BATCH = """
    WITH v AS (
        SELECT * FROM unnest(
            CAST(:refs AS text[]), CAST(:hashes AS text[]), CAST(:sources AS text[]),
            CAST(:urls AS text[]), CAST(:fetched AS timestamptz[]),
            CAST(:statuses AS integer[]), CAST(:types AS text[]), CAST(:headers AS jsonb[]),
            CAST(:bodies AS bytea[]), CAST(:fields AS jsonb[])
        ) WITH ORDINALITY AS v(
            reference_id, payload_hash, source, url, fetched_at, http_status, content_type,
            headers, body, fields, n
        )
    ),"""

# One record: the same statement over scalar parameters (dumping one-element arrays cost a
# quarter of a one-record submission's client CPU).
_ONE = """
    WITH v AS (
        SELECT CAST(:refs AS text) AS reference_id, CAST(:hashes AS text) AS payload_hash,
               CAST(:sources AS text) AS source, CAST(:urls AS text) AS url,
               CAST(:fetched AS timestamptz) AS fetched_at,
               CAST(:statuses AS integer) AS http_status, CAST(:types AS text) AS content_type,
               CAST(:headers AS jsonb) AS headers, CAST(:bodies AS bytea) AS body,
               CAST(:fields AS jsonb) AS fields, 1 AS n
    ),"""


def _store_records(rest: str) -> str:
    """CTE `r`: the versions of `v` (filtered and ordered by `rest`) as scrape records, those
    stored already skipped."""
    return f"""
    r AS (
        INSERT INTO scrape_records (
            reference_id, payload_hash, source, url, fetched_at, http_status, content_type,
            headers, body, fields, created_at
        )
        SELECT reference_id, payload_hash, source, url, fetched_at, http_status, content_type,
               headers, body, fields, :now
        FROM v {rest}
        ON CONFLICT (reference_id, payload_hash) DO NOTHING
    ),
    """


_STORE_AND_ENQUEUE = _store_records("ORDER BY n")
_STORE_AND_ENQUEUE_ONE = _store_records("")
# The record is stored only with its handoff: one CTE `h` inserted, or one the pair already had
# (a duplicate brings back a record purged since). A refused version is left whole to the
# transaction that resolves it.
_STORE_IF_QUEUED = _store_records(
    """
        WHERE EXISTS (SELECT 1 FROM h)
           OR EXISTS (
               SELECT 1 FROM ingestion_handoffs x
               WHERE x.reference_id = v.reference_id AND x.payload_hash = v.payload_hash
           )"""
)
_STORE_AND_ENQUEUE_SQL = pg_text(text(_BATCH + _STORE_AND_ENQUEUE + ENQUEUE_CTES))
_STORE_AND_ENQUEUE_ONE_SQL = pg_text(
    text(_ONE + _STORE_AND_ENQUEUE_ONE + ENQUEUE_INSERT_ONE + ENQUEUE_RESULT_ONE)
)
_STORE_IF_QUEUED_ONE_SQL = pg_text(
    text(_ONE + ENQUEUE_INSERT_ONE + _STORE_IF_QUEUED + ENQUEUE_RESULT_ONE)
)
