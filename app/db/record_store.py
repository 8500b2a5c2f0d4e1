"""Scrape storage: persisted versions, one row per (reference_id, payload_hash)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import Connection, select, text, tuple_

from app.db.rows import to_record, upsert_insert
from app.db.tables import scrape_records
from app.domain.models import ScrapeRecord
from app.domain.records import PreparedRecord

Pair = tuple[str, str]


class RecordStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def insert(self, records: Sequence[PreparedRecord], now: datetime) -> set[Pair]:
        """Insert versions not stored yet (one statement); returns the pairs that were new.

        An existing pair is left untouched: a version's first stored copy is the one kept.
        """
        if not records:
            return set()
        if self.conn.dialect.name == "postgresql":
            return self._insert_pg(records, now)
        stmt = (
            upsert_insert(self.conn, scrape_records)
            .on_conflict_do_nothing(index_elements=["reference_id", "payload_hash"])
            .returning(scrape_records.c.reference_id, scrape_records.c.payload_hash)
        )
        # One row per statement on SQLite (in-process: no round trips to save). A multi-row
        # statement's text varies with the batch size, and sqlite3 caches each prepared
        # statement with a copy of the blobs last bound to it: batches of different sizes
        # would keep a batch of bodies each alive (imports grew by 200 MB). One fixed text
        # keeps one body at most.
        new: set[Pair] = set()
        for r in records:
            row = self.conn.execute(
                stmt,
                {
                    "reference_id": r.reference_id,
                    "payload_hash": r.payload_hash,
                    "source": r.source,
                    "url": r.url,
                    "fetched_at": r.fetched_at,
                    "http_status": r.http_status,
                    "content_type": r.content_type,
                    "headers": dict(r.headers),
                    "body": r.body,
                    "fields": r.fields,
                    "created_at": now,
                },
            ).first()
            if row is not None:
                new.add((row.reference_id, row.payload_hash))
        return new

    def _insert_pg(self, records: Sequence[PreparedRecord], now: datetime) -> set[Pair]:
        # Arrays in: one fixed query text for any batch size (parsed once, prepared by the
        # server) instead of a VALUES list that grows with the batch.
        rows = self.conn.execute(_INSERT_PG, record_params(records, now))
        return {(row.reference_id, row.payload_hash) for row in rows}

    def load(self, pairs: Iterable[Pair]) -> dict[Pair, ScrapeRecord]:
        wanted = list(set(pairs))
        if not wanted:
            return {}
        key = tuple_(scrape_records.c.reference_id, scrape_records.c.payload_hash)
        rows = self.conn.execute(select(scrape_records).where(key.in_(wanted)))
        return {(r.reference_id, r.payload_hash): to_record(r) for r in rows}

    def get(self, reference_id: str, payload_hash: str) -> ScrapeRecord | None:
        return self.load([(reference_id, payload_hash)]).get((reference_id, payload_hash))


def record_params(records: Sequence[PreparedRecord], now: datetime) -> dict[str, Any]:
    """Versions as column arrays, for the `unnest` statements of PostgreSQL."""
    return {
        "refs": [r.reference_id for r in records],
        "hashes": [r.payload_hash for r in records],
        "sources": [r.source for r in records],
        "urls": [r.url for r in records],
        "fetched": [r.fetched_at for r in records],
        "statuses": [r.http_status for r in records],
        "types": [r.content_type for r in records],
        "headers": [Jsonb(dict(r.headers)) for r in records],
        "bodies": [r.body for r in records],
        "fields": [None if r.fields is None else Jsonb(dict(r.fields)) for r in records],
        "now": now,
    }


_INSERT_PG = text(
    """
    INSERT INTO scrape_records (
        reference_id, payload_hash, source, url, fetched_at, http_status, content_type,
        headers, body, fields, created_at
    )
    SELECT v.*, CAST(:now AS timestamptz) FROM unnest(
        CAST(:refs AS text[]), CAST(:hashes AS text[]), CAST(:sources AS text[]),
        CAST(:urls AS text[]), CAST(:fetched AS timestamptz[]), CAST(:statuses AS integer[]),
        CAST(:types AS text[]), CAST(:headers AS jsonb[]), CAST(:bodies AS bytea[]),
        CAST(:fields AS jsonb[])
    ) AS v
    ON CONFLICT (reference_id, payload_hash) DO NOTHING
    RETURNING reference_id, payload_hash
    """
)
