"""States, enqueue outcomes, retry classes and reason codes — the vocabulary of a handoff.

Every value here is mirrored by a CHECK constraint in `db/migrations/`; a test keeps the two equal.
"""

from __future__ import annotations

from enum import StrEnum


class HandoffState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRY_WAIT = "retry_wait"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"


#: At most one row per reference may be in one of these (a partial unique index says so).
ACTIVE_STATES = frozenset({HandoffState.QUEUED, HandoffState.RUNNING, HandoffState.RETRY_WAIT})
#: A claim takes rows from these states once `run_after` has passed.
RUNNABLE_STATES = frozenset({HandoffState.QUEUED, HandoffState.RETRY_WAIT})
TERMINAL_STATES = frozenset(
    {HandoffState.SUCCEEDED, HandoffState.FAILED, HandoffState.CANCELLED, HandoffState.SUPERSEDED}
)


class EnqueueOutcome(StrEnum):
    CREATED = "created"
    DUPLICATE = "duplicate"
    SUPERSEDED_PREVIOUS = "superseded_previous"
    QUEUED_BEHIND_RUNNING = "queued_behind_running"
    REJECTED_STALE = "rejected_stale"


class RetryClass(StrEnum):
    """How a failed attempt is retried. See `app.domain.retry` for the budgets."""

    TRANSIENT = "transient"
    THROTTLED = "throttled"
    PERMANENT = "permanent"
    CRASH = "crash"
    UNCLASSIFIED = "unclassified"


class ReasonCode(StrEnum):
    """Why a handoff entered its current state. Each transition's event carries one."""

    ENQUEUED = "enqueued"
    STALE_PAYLOAD = "stale_payload"
    SUPERSEDED_BY_NEWER_PAYLOAD = "superseded_by_newer_payload"
    QUEUED_BEHIND_RUNNING = "queued_behind_running"
    PROMOTED = "promoted"
    CLAIMED = "claimed"
    SUCCEEDED = "succeeded"
    TRANSIENT_ERROR = "transient_error"
    RATE_LIMITED = "rate_limited"
    UNCLASSIFIED_ERROR = "unclassified_error"
    LEASE_EXPIRED = "lease_expired"
    LEASE_RELEASED = "lease_released"
    PAYLOAD_MISSING = "payload_missing"
    PAYLOAD_HASH_MISMATCH = "payload_hash_mismatch"
    PERMANENT_ERROR = "permanent_error"
    PERMANENT_VALIDATION_ERROR = "permanent_validation_error"
    RETRIES_EXHAUSTED = "retries_exhausted"
    THROTTLE_DEADLINE_EXCEEDED = "throttle_deadline_exceeded"
    POISON_SUSPECTED = "poison_suspected"
    OPERATOR_RETRY = "operator_retry"
    OPERATOR_CANCELLED = "operator_cancelled"


#: A transition as counted by metrics: (from state, None for a new handoff; to state; reason).
Move = tuple[HandoffState | None, HandoffState, ReasonCode]

REASON_DESCRIPTIONS: dict[ReasonCode, str] = {
    ReasonCode.ENQUEUED: "A new payload was handed off and is queued for ingestion.",
    ReasonCode.STALE_PAYLOAD: "The scrape is older than one already handed off for this reference.",
    ReasonCode.SUPERSEDED_BY_NEWER_PAYLOAD: "A newer payload for the reference replaced this one "
    "before it ran (or while it waited to be retried).",
    ReasonCode.QUEUED_BEHIND_RUNNING: "A newer payload waits for the running one of the reference.",
    ReasonCode.PROMOTED: "The handoff ahead of it ended, so this waiting payload is now queued.",
    ReasonCode.CLAIMED: "A worker leased the handoff and is ingesting it.",
    ReasonCode.SUCCEEDED: "Ingestion finished; the document was written.",
    ReasonCode.TRANSIENT_ERROR: "A transient error; retried with backoff until the budget "
    "is spent.",
    ReasonCode.RATE_LIMITED: "Throttled downstream; retried after the asked delay without "
    "spending attempts, until the throttle deadline.",
    ReasonCode.UNCLASSIFIED_ERROR: "An error the handler did not classify; retried on a "
    "reduced budget.",
    ReasonCode.LEASE_EXPIRED: "The worker stopped heartbeating (crash, kill, partition); the "
    "rescuer returned the handoff.",
    ReasonCode.LEASE_RELEASED: "The worker shut down and gave the handoff back without "
    "spending an attempt.",
    ReasonCode.PAYLOAD_MISSING: "The scrape record behind the handoff no longer exists.",
    ReasonCode.PAYLOAD_HASH_MISMATCH: "The stored payload no longer matches its payload_hash.",
    ReasonCode.PERMANENT_ERROR: "The handler reported an error that retrying cannot fix.",
    ReasonCode.PERMANENT_VALIDATION_ERROR: "The payload cannot be parsed or fails validation.",
    ReasonCode.RETRIES_EXHAUSTED: "Transient or unclassified failures used the whole budget.",
    ReasonCode.THROTTLE_DEADLINE_EXCEEDED: "Throttling lasted past the throttle deadline.",
    ReasonCode.POISON_SUSPECTED: "The handoff lost its lease too many times; it probably "
    "crashes workers.",
    ReasonCode.OPERATOR_RETRY: "An operator queued the handoff again.",
    ReasonCode.OPERATOR_CANCELLED: "An operator cancelled the handoff.",
}
