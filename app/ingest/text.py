"""The built-in handler: store the decoded text of a record as its document."""

from __future__ import annotations

from app.db.uow import Database
from app.domain.clock import Clock
from app.domain.failures import PermanentError
from app.domain.models import ClaimedJob, ScrapeRecord
from app.domain.payload import canonical_json
from app.domain.states import ReasonCode

_TEXTUAL = ("text/", "application/json", "application/xml", "application/xhtml+xml")


def decoded_text(record: ScrapeRecord) -> str:
    """The record's body as text (its declared charset, else UTF-8), or its fields as JSON."""
    media, _, params = record.content_type.partition(";")
    if not record.body and record.fields is not None:
        return canonical_json(dict(record.fields)).decode()
    if not media.startswith(_TEXTUAL) and media != "":
        raise PermanentError(
            f"cannot extract text from content type {media!r}",
            reason=ReasonCode.PERMANENT_VALIDATION_ERROR,
        )
    charset = params.partition("charset=")[2].strip() or "utf-8"
    try:
        return record.body.decode(charset, errors="replace")
    except LookupError as exc:
        raise PermanentError(
            f"unknown charset {charset!r}", reason=ReasonCode.PERMANENT_VALIDATION_ERROR
        ) from exc


class StoreTextHandler:
    """Upserts one document per version (deterministic id): running twice equals once."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def __call__(self, job: ClaimedJob) -> None:
        assert job.record is not None  # the worker fails jobs without a record before this
        text = decoded_text(job.record)
        record = job.record
        with self.db.transaction() as uow:
            uow.documents.upsert(
                record.reference_id,
                record.payload_hash,
                record.content_type,
                text,
                self.clock.now(),
            )
