"""The built-in handler: extract a record's main text and store it as its document."""

from __future__ import annotations

from app.db.uow import Database
from app.domain.clock import Clock
from app.domain.models import ClaimedJob, ScrapeRecord
from app.ingest.extract import extract

#: Decoded text above this is refused (permanent): it bounds what one page may cost downstream.
DEFAULT_MAX_DECODED_BYTES = 64 * 1024 * 1024


class StoreTextHandler:
    """Upserts one document per version (deterministic id): running twice equals once.

    Content that cannot be extracted raises `PermanentError` (`permanent_validation_error`).
    """

    def __init__(
        self, db: Database, clock: Clock, *, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    ) -> None:
        self.db = db
        self.clock = clock
        self.max_decoded_bytes = max_decoded_bytes

    def __call__(self, job: ClaimedJob) -> None:
        assert job.record is not None  # the worker fails jobs without a record before this
        self.store(job.record)

    def store(self, record: ScrapeRecord) -> None:
        """Extract `record` and upsert its document in a transaction of its own."""
        extracted = extract(record, max_decoded_bytes=self.max_decoded_bytes)
        with self.db.transaction() as uow:
            uow.documents.upsert(
                record.reference_id,
                record.payload_hash,
                record.content_type,
                extracted.text,
                self.clock.now(),
            )
