"""Rows as frozen dataclasses: what stores return and services pass around."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from app.domain.states import EnqueueOutcome, HandoffState, ReasonCode


@dataclass(frozen=True, slots=True)
class Handoff:
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


class HandedOff(NamedTuple):
    """What an enqueue statement tells of each pair it was given: the pair's handoff, the state
    it is in, and how it was first handed off. `Handoff` has these fields and more; a batch of
    hundreds reads only these."""

    id: int
    reference_id: str
    payload_hash: str
    state: HandoffState
    reason_code: ReasonCode
    enqueue_outcome: EnqueueOutcome


@dataclass(frozen=True, slots=True)
class HandoffEvent:
    id: int
    handoff_id: int
    at: datetime
    actor: str
    from_state: HandoffState | None
    to_state: HandoffState
    reason_code: ReasonCode
    lease_token: int | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to write: one per transition, in the transaction that makes the transition."""

    handoff_id: int
    actor: str
    from_state: HandoffState | None
    to_state: HandoffState
    reason_code: ReasonCode
    lease_token: int | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class ScrapeRecord:
    id: int
    reference_id: str
    payload_hash: str
    source: str
    url: str | None
    fetched_at: datetime
    http_status: int | None
    content_type: str
    headers: Mapping[str, str]
    body: bytes
    fields: Mapping[str, Any] | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Lease:
    """Proof of a claim. Heartbeat, complete and fail must present the current token."""

    handoff_id: int
    token: int


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    handoff: Handoff
    record: ScrapeRecord | None  # None: the payload is gone; the job fails as payload_missing

    @property
    def lease(self) -> Lease:
        return Lease(self.handoff.id, self.handoff.lease_token)


@dataclass(frozen=True, slots=True)
class Attempt:
    id: int
    handoff_id: int
    lease_token: int
    attempt: int
    worker_id: str
    claimed_at: datetime
    finished_at: datetime | None
    outcome: str | None
    retry_class: str | None
    reason_code: str | None
    error: str | None
