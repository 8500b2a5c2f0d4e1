"""Scrape storage: validate, canonicalise, persist scraped versions and hand them off — the
records and their handoffs in the caller's one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from app.db.uow import Database, UnitOfWork
from app.domain.errors import InvalidInput
from app.domain.records import DEFAULT_VOLATILE_FIELDS, PreparedRecord, ScrapeSubmission, prepare
from app.services import ingestion_handoff
from app.services.ingestion_handoff import EnqueueResult


def prepare_all(
    submissions: Sequence[ScrapeSubmission],
    *,
    now: datetime,
    max_body_bytes: int,
    volatile_fields: frozenset[str] = DEFAULT_VOLATILE_FIELDS,
    batch: bool = True,
) -> list[PreparedRecord]:
    """Prepare every submission or none: the first bad one raises InvalidInput naming its
    field as the client wrote it: `records.<i>.<field>` in a batch, `<field>` alone if not."""
    prepared = []
    for i, sub in enumerate(submissions):
        try:
            prepared.append(
                prepare(
                    sub, now=now, max_body_bytes=max_body_bytes, volatile_fields=volatile_fields
                )
            )
        except InvalidInput as exc:
            parts = [f"records.{i}"] if batch else []
            where = ".".join([*parts, *([exc.field] if exc.field else [])]) or "body"
            raise type(exc)(f"{where}: {exc.message}", field=where) from exc
    return prepared


def store_and_hand_off(
    uow: UnitOfWork, records: Sequence[PreparedRecord], *, now: datetime, actor: str
) -> list[EnqueueResult]:
    """Persist the versions not stored yet and hand every one off, in `uow`'s transaction.

    Idempotent: storing a version again writes nothing and reports `duplicate`.
    """
    return ingestion_handoff.enqueue(uow, records, now=now, actor=actor, store=True)


def submit(
    db: Database, records: Sequence[PreparedRecord], *, now: datetime, actor: str
) -> list[EnqueueResult]:
    """`store_and_hand_off` in a transaction of its own, as a submission runs it.

    On PostgreSQL one record — a new version, or a duplicate — takes a single statement that
    commits by itself: one round trip instead of three (BEGIN, the statement, COMMIT). A
    version that must be decided against its reference's unfinished work takes the full
    transaction; the single statement wrote nothing for it.
    """
    if len(records) == 1 and db.dialect == "postgresql":
        (record,) = records
        done = ingestion_handoff.enqueue_whole(db, record, now=now, actor=actor)
        if done is not None:
            return [done]
    return db.run(lambda uow: store_and_hand_off(uow, records, now=now, actor=actor))
