"""Producers ask whether ingestion keeps up before they push more."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from app.api.admission import AdmissionGate
from app.api.auth import require
from app.domain.tokens import Scope

router = APIRouter(prefix="/v1", tags=["scraping"])


class AdmissionOut(BaseModel):
    admitted: bool = Field(description="Whether a submission would be accepted now.")
    backlog: int = Field(
        description="Handoffs runnable now (queued or retry_wait, due), waiting for a worker; "
        "counted up to `counted_up_to`."
    )
    backlog_exact: bool = Field(description="False when the count stopped at `counted_up_to`.")
    counted_up_to: int
    oldest_runnable_age_seconds: float | None = Field(
        description="How long the longest-waiting runnable handoff has been due; null if none."
    )
    finished_per_second: float = Field(
        description="Handoffs workers finished (succeeded or failed) per second, last minute."
    )
    max_backlog: int | None = Field(description="The configured limit; null: none.")
    retry_after_seconds: int | None = Field(
        description="When not admitted: how long to wait before submitting again."
    )


@router.get("/admission", response_model=AdmissionOut, dependencies=[require(Scope.INGEST)])
def admission(request: Request) -> AdmissionOut:
    """Whether ingestion keeps up: the runnable backlog, how long its oldest has waited, the
    recent finishing rate, the limit past which submissions get a 429, and a suggested wait.
    The reading is shared for `HANDOFF_ADMISSION_CACHE_SECONDS`."""
    gate: AdmissionGate = request.app.state.admission
    a = gate.current()
    return AdmissionOut(
        admitted=a.admitted,
        backlog=a.backlog,
        backlog_exact=a.backlog_exact,
        counted_up_to=a.counted_up_to,
        oldest_runnable_age_seconds=a.oldest_runnable_age_seconds,
        finished_per_second=a.finished_per_second,
        max_backlog=a.max_backlog,
        retry_after_seconds=a.retry_after_seconds,
    )
