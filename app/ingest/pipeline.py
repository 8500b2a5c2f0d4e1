"""The ingestion handler: extract a record's document and hand it to every configured sink."""

from __future__ import annotations

from collections.abc import Sequence

from app.db.uow import Database
from app.domain.clock import Clock
from app.domain.documents import Document, document_id
from app.domain.models import ClaimedJob, ScrapeRecord
from app.ingest.extract import extract
from app.ingest.sinks import DocumentStoreSink, Sink, WebhookSink
from app.settings import Settings

#: Decoded text above this is refused (permanent): it bounds what one page may cost downstream.
DEFAULT_MAX_DECODED_BYTES = 64 * 1024 * 1024


class IngestHandler:
    """Extracts once, then delivers to each sink in order; any sink's failure fails the attempt
    (and a retry delivers to all again, which idempotent sinks absorb).

    Content that cannot be extracted raises `PermanentError` (`permanent_validation_error`).
    """

    def __init__(
        self, sinks: Sequence[Sink], *, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    ) -> None:
        if not sinks:
            raise ValueError("at least one sink is needed")
        self.sinks = list(sinks)
        self.max_decoded_bytes = max_decoded_bytes

    def __call__(self, job: ClaimedJob) -> None:
        assert job.record is not None  # the worker fails jobs without a record before this
        document = self.document(job.record)
        for sink in self.sinks:
            sink.deliver(document, job)

    def document(self, record: ScrapeRecord) -> Document:
        extracted = extract(record, max_decoded_bytes=self.max_decoded_bytes)
        return Document(
            id=document_id(record.reference_id, record.payload_hash),
            reference_id=record.reference_id,
            payload_hash=record.payload_hash,
            source=record.source,
            url=record.url,
            fetched_at=record.fetched_at,
            content_type=record.content_type,
            kind=extracted.kind,
            text=extracted.text,
            title=extracted.title,
            language=extracted.language,
            canonical_url=extracted.canonical_url,
            published=extracted.published,
        )


def build_sinks(settings: Settings, db: Database, clock: Clock) -> list[Sink]:
    """The sinks `settings.sinks` names, in that order."""
    sinks: list[Sink] = []
    for name in settings.sinks:
        if name == "documents":
            sinks.append(DocumentStoreSink(db, clock))
        else:
            assert settings.webhook_url is not None  # Settings refuses webhook without a URL
            secret = settings.webhook_secret
            sinks.append(
                WebhookSink(
                    settings.webhook_url,
                    clock,
                    timeout_seconds=settings.webhook_timeout_seconds,
                    secret=None if secret is None else secret.get_secret_value(),
                )
            )
    return sinks


def build_handler(settings: Settings, db: Database, clock: Clock) -> IngestHandler:
    return IngestHandler(build_sinks(settings, db, clock))
