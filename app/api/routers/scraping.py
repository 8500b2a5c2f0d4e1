"""Scrapers push records here: each version is persisted and handed off in one transaction."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body
from pydantic import BaseModel, Field

from app.api.auth import require
from app.api.deps import DB, AppClock, AppSettings, InlineWorker, WorkerWake
from app.domain.errors import InvalidInput
from app.domain.records import ScrapeSubmission
from app.domain.states import EnqueueOutcome, HandoffState
from app.domain.tokens import Scope
from app.services import scrape_storage

router = APIRouter(prefix="/v1", tags=["scraping"])


class SubmitBatch(BaseModel):
    records: list[ScrapeSubmission] = Field(min_length=1)


class SubmitResult(BaseModel):
    reference_id: str
    payload_hash: str
    handoff_id: int
    state: HandoffState
    outcome: EnqueueOutcome
    first_outcome: EnqueueOutcome


class SubmitResponse(BaseModel):
    results: list[SubmitResult]


@router.post("/scrape-records", response_model=SubmitResponse, dependencies=[require(Scope.INGEST)])
def submit_records(
    payload: Annotated[ScrapeSubmission | SubmitBatch, Body()],
    db: DB,
    clock: AppClock,
    settings: AppSettings,
    inline: InlineWorker,
    wake: WorkerWake,
) -> SubmitResponse:
    """Persist one record, or a batch as `{"records": [...]}`, and hand each version off.

    Re-posting a version returns its existing handoff with outcome `duplicate`."""
    is_batch = isinstance(payload, SubmitBatch)
    subs = payload.records if isinstance(payload, SubmitBatch) else [payload]
    if len(subs) > settings.max_batch_records:
        raise InvalidInput(
            f"a batch holds at most {settings.max_batch_records} records", field="records"
        )
    now = clock.now()
    prepared = scrape_storage.prepare_all(
        subs, now=now, max_body_bytes=settings.max_body_bytes, batch=is_batch
    )
    results = db.run(
        lambda uow: scrape_storage.store_and_hand_off(uow, prepared, now=now, actor=_actor(subs))
    )
    if inline is not None:
        inline.drain()
    if wake is not None:
        wake.set()
    return SubmitResponse(
        results=[
            SubmitResult(
                reference_id=r.reference_id,
                payload_hash=r.payload_hash,
                handoff_id=r.handoff_id,
                state=r.state,
                outcome=r.outcome,
                first_outcome=r.first_outcome,
            )
            for r in results
        ]
    )


def _actor(subs: list[ScrapeSubmission]) -> str:
    sources = sorted({s.source for s in subs})
    return "client:" + (sources[0] if len(sources) == 1 else "batch")
