"""Scrapers push records here, or ask Handoff to fetch URLs itself (scrape-sync): each version
is persisted and handed off in one transaction."""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import APIRouter, Body
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from app.api import links
from app.api.admission import ADMIT, OVERLOADED
from app.api.auth import require
from app.api.deps import DB, AppClock, AppSettings, InlineWorker, WorkerWake
from app.domain.errors import InvalidInput
from app.domain.payload import REFERENCE_ID_MAX, validate_reference_id
from app.domain.records import SOURCE_PATTERN, ScrapeSubmission
from app.domain.states import EnqueueOutcome, HandoffState
from app.domain.tokens import Scope
from app.services import scrape_storage, scrape_sync
from app.services.scrape_sync import FetchError, SyncConfig, UrlResult
from app.worker.runner import Wakeup, Worker

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


@router.post(
    "/scrape-records",
    response_model=SubmitResponse,
    dependencies=[require(Scope.INGEST), ADMIT],  # the scope first, then the backlog
    responses={**OVERLOADED, **links.FROM_SUBMISSION},
)
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
    results = scrape_storage.submit(db, prepared, now=now, actor=_actor(subs))
    _after_commit(inline, wake)
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


def _after_commit(inline: Worker | None, wake: Wakeup | None) -> None:
    if inline is not None:
        inline.drain()
    if wake is not None:
        wake.set()


def _actor(subs: list[ScrapeSubmission]) -> str:
    sources = sorted({s.source for s in subs})
    return "client:" + (sources[0] if len(sources) == 1 else "batch")


MAX_SYNC_URLS = 50


def _http_url(value: str) -> str:
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise ValueError(f"not a valid URL: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an absolute http(s) URL")
    return value


def _reference_id(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return validate_reference_id(value)
    except InvalidInput as exc:
        raise ValueError(exc.message) from exc


SyncUrl = Annotated[str, Field(max_length=8192), AfterValidator(_http_url)]
SyncReferenceId = Annotated[
    str | None, Field(max_length=REFERENCE_ID_MAX), AfterValidator(_reference_id)
]


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Annotated[str, Field(pattern=SOURCE_PATTERN, description="Scraper or site name.")]
    urls: list[SyncUrl] = Field(min_length=1, max_length=MAX_SYNC_URLS)
    reference_ids: list[SyncReferenceId] | None = Field(
        default=None,
        description="One per URL, in the same order; null entries (or no list) derive the "
        "reference from source and URL.",
    )

    @field_validator("reference_ids")
    @classmethod
    def _parallel(
        cls, value: list[str | None] | None, info: ValidationInfo
    ) -> list[str | None] | None:
        urls = info.data.get("urls")  # absent when the URLs were invalid: nothing to compare
        if value is not None and urls is not None and len(value) != len(urls):
            raise ValueError(f"give one entry per URL ({len(urls)}), or none at all")
        return value


class SyncResult(BaseModel):
    url: str
    ok: bool = Field(description="A response arrived and was stored (whatever its status).")
    error: FetchError | None = None
    message: str | None = Field(default=None, description="Why the URL failed, for a person.")
    status: int | None = Field(default=None, description="The HTTP status the site answered.")
    final_url: str | None = Field(default=None, description="Where redirects ended.")
    reference_id: str | None = None
    payload_hash: str | None = None
    handoff_id: int | None = None
    state: HandoffState | None = None
    outcome: EnqueueOutcome | None = None
    first_outcome: EnqueueOutcome | None = None


class SyncResponse(BaseModel):
    results: list[SyncResult]


@router.post(
    "/scraping/sync",
    response_model=SyncResponse,
    dependencies=[require(Scope.INGEST), ADMIT],
    responses=OVERLOADED,
)
def sync_urls(
    body: SyncRequest,
    db: DB,
    clock: AppClock,
    settings: AppSettings,
    inline: InlineWorker,
    wake: WorkerWake,
) -> SyncResponse:
    """Fetch the URLs now (behind the SSRF guard: loopback, private, link-local, metadata and
    other internal addresses are refused unless allow-listed), then persist and hand off every
    response that arrived, 4xx and 5xx included, as POST /v1/scrape-records would.

    Each URL gets its own result; one URL failing never fails the others."""
    config = SyncConfig.from_settings(settings)
    fetched = scrape_sync.fetch_all(body.urls, config, clock=clock)  # no transaction open
    now = clock.now()
    results = scrape_sync.prepare(body.source, fetched, body.reference_ids, config=config, now=now)
    if any(r.record is not None for r in results):  # else nothing to write: no transaction
        actor = f"client:sync:{body.source}"  # event actors are client:, worker:, system:…
        prepared = results
        results = db.run(lambda uow: scrape_sync.store(uow, prepared, now=now, actor=actor))
        _after_commit(inline, wake)
    return SyncResponse(results=[_sync_result(r) for r in results])


def _sync_result(result: UrlResult) -> SyncResult:
    out = SyncResult(
        url=result.url,
        ok=result.enqueued is not None,
        error=result.error,
        message=result.message,
        status=result.status,
        final_url=result.final_url,
    )
    if result.enqueued is None:
        return out
    e = result.enqueued
    return out.model_copy(
        update={
            "reference_id": e.reference_id,
            "payload_hash": e.payload_hash,
            "handoff_id": e.handoff_id,
            "state": e.state,
            "outcome": e.outcome,
            "first_outcome": e.first_outcome,
        }
    )
