"""Scrape storage: persisted versions, one row per (reference_id, payload_hash)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import Connection, select, tuple_

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
        stmt = (
            upsert_insert(self.conn, scrape_records)
            .on_conflict_do_nothing(index_elements=["reference_id", "payload_hash"])
            .returning(scrape_records.c.reference_id, scrape_records.c.payload_hash)
        )
        rows = self.conn.execute(
            stmt,
            [
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
                }
                for r in records
            ],
        )
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
