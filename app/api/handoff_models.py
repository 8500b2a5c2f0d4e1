"""Request and response models of the handoffs and references routes: what the OpenAPI
document promises, field by field. Inputs are bounded so no value a client sends reaches SQL
unchecked (a NUL byte or an out-of-range time would otherwise be a driver error)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.api.problems import Problem
from app.domain import payload
from app.domain.errors import InvalidInput
from app.domain.queries import HandoffFilter
from app.domain.records import SOURCE_PATTERN
from app.domain.states import EnqueueOutcome, HandoffState, ReasonCode, RetryClass


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # naive times are read as UTC
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # e.g. year 1 at a positive offset
        raise ValueError("the time is out of range once converted to UTC") from exc


def _reference_id(value: str) -> str:
    try:
        return payload.validate_reference_id(value)
    except InvalidInput as exc:
        raise ValueError(exc.message) from exc


def problem_response(description: str) -> dict[str, Any]:
    """An OpenAPI response entry: a problem document (`application/problem+json`)."""
    schema = Problem.model_json_schema()
    return {"description": description, "content": {"application/problem+json": {"schema": schema}}}


UtcTime = Annotated[datetime, AfterValidator(_utc)]
ReferenceId = Annotated[
    str,
    Field(min_length=1, max_length=payload.REFERENCE_ID_MAX),
    AfterValidator(_reference_id),
]
Source = Annotated[str, Field(pattern=SOURCE_PATTERN)]


class FilterFields(BaseModel):
    """Which handoffs: every field given narrows the match."""

    model_config = ConfigDict(extra="forbid")

    state: list[HandoffState] = Field(
        default_factory=list, max_length=16, description="Any of these states (repeatable)."
    )
    reason_code: ReasonCode | None = None
    source: Source | None = None
    reference_id: ReferenceId | None = None
    created_after: UtcTime | None = Field(
        default=None, description="Created at or after (naive times are UTC)."
    )
    created_before: UtcTime | None = Field(default=None, description="Created before.")
    stuck: bool | None = Field(
        default=None,
        description="true: only stuck handoffs (runnable or waiting past the stuck threshold, "
        "or running on an expired lease); false: only the others.",
    )

    def to_filter(self) -> HandoffFilter:
        return HandoffFilter(
            states=frozenset(self.state),
            reason_code=self.reason_code,
            source=self.source,
            reference_id=self.reference_id,
            created_after=self.created_after,
            created_before=self.created_before,
            stuck=self.stuck,
        )


class ListParams(FilterFields):
    cursor: str | None = Field(
        default=None, max_length=64, description="`next_cursor` of the previous page."
    )
    limit: int = Field(default=50, ge=1, le=500)


class ReplayRequest(FilterFields):
    dry_run: bool = Field(default=True, description="Only say what a replay would do.")


class HandoffOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    reference_id: str
    payload_hash: str
    source: str
    fetched_at: datetime
    state: HandoffState
    reason_code: ReasonCode
    enqueue_outcome: EnqueueOutcome
    run_after: datetime
    attempts: int
    failures: int
    crashes: int
    throttled_since: datetime | None
    lease_token: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class HandoffPage(BaseModel):
    items: list[HandoffOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last.")


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    handoff_id: int
    at: datetime
    actor: str
    from_state: HandoffState | None
    to_state: HandoffState
    reason_code: ReasonCode
    lease_token: int | None
    detail: str | None


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    handoff_id: int
    lease_token: int
    attempt: int
    worker_id: str
    claimed_at: datetime
    finished_at: datetime | None
    outcome: (
        Literal["succeeded", "retry", "failed", "lease_expired", "released", "cancelled"] | None
    )
    retry_class: RetryClass | None
    reason_code: ReasonCode | None
    error: str | None


class HandoffDetail(BaseModel):
    handoff: HandoffOut
    events: list[EventOut] = Field(description="The timeline, oldest first.")
    attempts: list[AttemptOut]
    why: str = Field(description="Why the handoff is in its state, in plain language.")


class Throughput(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    succeeded: int
    failed: int


class Stats(BaseModel):
    counts: dict[HandoffState, dict[ReasonCode, int]] = Field(
        description="Handoffs by state and reason code; every pair present, zeros included."
    )
    totals: dict[HandoffState, int]
    oldest_age_seconds: dict[HandoffState, float | None] = Field(
        description="Per state, seconds since its oldest handoff was created; null if none."
    )
    stuck: int
    stuck_after_seconds: float
    last_5_minutes: Throughput = Field(description="Handoffs finished in the last 5 minutes.")
    last_60_minutes: Throughput


class ReplayItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    reference_id: str
    state: HandoffState = Field(description="Its state before the replay.")
    outcome: Literal["requeued", "refused"]
    reason: str | None = Field(description="Why it is (or would be) refused.")


class ReplayResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    dry_run: bool
    matched: int = Field(description="Failed or cancelled handoffs the filter matches.")
    limit: int = Field(description="Most handoffs one call replays.")
    truncated: bool = Field(
        description="More matched than `limit`: only the oldest `limit` were considered; "
        "call again for the rest."
    )
    requeued: int = Field(description="Requeued (in a dry run: would be).")
    refused: int
    items: list[ReplayItemOut]


class VersionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    payload_hash: str
    source: str
    url: str | None
    fetched_at: datetime
    content_type: str
    size: int = Field(description="Body size in bytes.")
    stored_at: datetime


class ReferenceHandoffOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    payload_hash: str
    fetched_at: datetime
    state: HandoffState
    reason_code: ReasonCode
    enqueue_outcome: EnqueueOutcome
    created_at: datetime
    finished_at: datetime | None


class DocumentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    payload_hash: str
    content_type: str
    text_length: int
    excerpt: str = Field(description="The first 500 characters of the text.")
    created_at: datetime
    updated_at: datetime


class ReferenceHistoryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    reference_id: str
    versions: list[VersionOut] = Field(description="Stored scrapes, newest fetch first.")
    handoffs: list[ReferenceHandoffOut] = Field(description="Newest first.")
    current_document: DocumentOut | None = Field(
        description="The current document: that of the newest version ingested, if any."
    )
