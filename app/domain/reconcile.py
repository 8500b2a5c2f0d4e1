"""What the reconciler looks for: the kinds of inconsistency between scrape records, handoffs
and attempts, and the row that shows one. Pure: the SQL that finds them is in
`app.db.reconcile_queries`, the repairs in `app.services.reconcile`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.domain.states import HandoffState


class Kind(StrEnum):
    """One kind of inconsistency; the value is what reports and `--json` print."""

    #: A stored version that no handoff accounts for (written around the outbox).
    RECORD_WITHOUT_HANDOFF = "record_without_handoff"
    #: An unfinished handoff whose scrape record is gone.
    PAYLOAD_MISSING = "payload_missing"
    #: An unfinished handoff whose stored payload no longer hashes to its payload_hash.
    PAYLOAD_HASH_MISMATCH = "payload_hash_mismatch"
    #: A running handoff whose current lease has no open attempt row (missing or finished).
    RUNNING_WITHOUT_OPEN_ATTEMPT = "running_without_open_attempt"
    #: An attempt row still open although its handoff is not running under that lease.
    ATTEMPT_LEFT_OPEN = "attempt_left_open"
    #: A succeeded handoff whose last attempt did not succeed (or that has no attempt).
    SUCCEEDED_WITHOUT_SUCCESSFUL_ATTEMPT = "succeeded_without_successful_attempt"
    #: A failed or cancelled handoff whose last attempt succeeded.
    SUCCESSFUL_ATTEMPT_NOT_SUCCEEDED = "successful_attempt_not_succeeded"


#: What `--repair` does for each kind, in one line (reports print it).
REPAIRS: dict[Kind, str] = {
    Kind.RECORD_WITHOUT_HANDOFF: "hand the version off (as a submission would)",
    Kind.PAYLOAD_MISSING: "fail the handoff as payload_missing",
    Kind.PAYLOAD_HASH_MISMATCH: "fail the handoff as payload_hash_mismatch",
    Kind.RUNNING_WITHOUT_OPEN_ATTEMPT: "give the lease back (queued / lease_released)",
    Kind.ATTEMPT_LEFT_OPEN: "close the attempt with the outcome the handoff's state implies",
    Kind.SUCCEEDED_WITHOUT_SUCCESSFUL_ATTEMPT: "queue it again to re-ingest (idempotent)",
    Kind.SUCCESSFUL_ATTEMPT_NOT_SUCCEEDED: "queue it again to re-ingest (idempotent)",
}


@dataclass(frozen=True, slots=True)
class Suspect:
    """A row that shows one inconsistency, as found (the repair checks it again)."""

    kind: Kind
    reference_id: str
    payload_hash: str
    handoff_id: int | None = None  # None for a record without handoff
    record_id: int | None = None  # the scrape record, where one exists
    state: HandoffState | None = None  # the handoff's state when found
    lease_token: int | None = None  # the handoff's lease token, or the open attempt's
    attempt_id: int | None = None  # the attempt row involved, if any
    attempt_outcome: str | None = None


def attempt_outcome_for(state: HandoffState, reason_lease_lost: bool) -> str:
    """The outcome an attempt row gets when it is closed after its handoff moved on: what the
    handoff's current state says happened (a lost lease says `lease_expired`)."""
    if reason_lease_lost:
        return "lease_expired"
    return {
        HandoffState.SUCCEEDED: "succeeded",
        HandoffState.FAILED: "failed",
        HandoffState.CANCELLED: "cancelled",
        HandoffState.RETRY_WAIT: "retry",
    }.get(state, "released")
