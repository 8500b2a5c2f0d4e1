"""Documents produced by ingestion, keyed by the version they come from."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import Connection, func, select

from app.db.rows import upsert_insert
from app.db.tables import documents


def document_id(reference_id: str, payload_hash: str) -> str:
    """Deterministic: the same version always yields the same document id."""
    return "doc_" + hashlib.sha256(f"{reference_id}\0{payload_hash}".encode()).hexdigest()[:32]


class DocumentStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def upsert(
        self, reference_id: str, payload_hash: str, content_type: str, text: str, now: datetime
    ) -> str:
        """Write the document of a version; writing it again changes nothing but updated_at."""
        doc_id = document_id(reference_id, payload_hash)
        stmt = upsert_insert(self.conn, documents).values(
            id=doc_id,
            reference_id=reference_id,
            payload_hash=payload_hash,
            content_type=content_type,
            text=text,
            created_at=now,
            updated_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"], set_={"text": stmt.excluded.text, "updated_at": now}
        )
        self.conn.execute(stmt)
        return doc_id

    def count(self) -> int:
        return int(self.conn.execute(select(func.count()).select_from(documents)).scalar_one())

    def get_text(self, reference_id: str, payload_hash: str) -> str | None:
        row = self.conn.execute(
            select(documents.c.text).where(
                documents.c.id == document_id(reference_id, payload_hash)
            )
        ).first()
        return None if row is None else str(row.text)
