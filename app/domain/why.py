"""A plain-language answer to "why is this handoff in this state?", built from facts the caller
looked up (the handoff, its last event, the handoff ahead of it or the one that replaced it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from app.domain.models import Handoff, HandoffEvent
from app.domain.states import REASON_DESCRIPTIONS, HandoffState, ReasonCode

_ERROR_CHARS = 300  # a sentence quotes the start of a long error, not all of it


@dataclass(frozen=True, slots=True)
class WhyFacts:
    handoff: Handoff
    now: datetime
    #: The transition into the current state (the handoff's newest event), if recorded.
    last_event: HandoffEvent | None = None
    #: For a waiting handoff: the active handoff of the same reference it waits behind.
    ahead: Handoff | None = None
    #: For a superseded handoff: the newer handoff of the same reference that replaced it.
    newer: Handoff | None = None


def explain(facts: WhyFacts) -> str:
    """One or two sentences saying why the handoff is where it is and what happens next."""
    return _BY_STATE[facts.handoff.state](facts)


def when(moment: datetime) -> str:
    """`2026-03-01T12:00:00Z`: seconds are precise enough for a person."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _since(facts: WhyFacts) -> datetime:
    return facts.last_event.at if facts.last_event is not None else facts.handoff.updated_at


def _reason(code: ReasonCode) -> str:
    return f" Reason: {code.value} ({_described(code)})."


def _described(code: ReasonCode) -> str:
    """The reason's description as a clause: lower-case start, no final stop."""
    text = REASON_DESCRIPTIONS[code].rstrip(".")
    return text[0].lower() + text[1:]


def _last_error(h: Handoff) -> str:
    if not h.last_error:
        return ""
    error = h.last_error if len(h.last_error) <= _ERROR_CHARS else h.last_error[:_ERROR_CHARS] + "…"
    return f" Last error: {error}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _queued(facts: WhyFacts) -> str:
    h = facts.handoff
    return f"Queued since {when(_since(facts))}, for a worker to claim it.{_reason(h.reason_code)}"


def _running(facts: WhyFacts) -> str:
    h = facts.handoff
    owner = h.lease_owner or "unknown"
    attempt = f"attempt {h.attempts}"
    if h.lease_expires_at is None:  # the lease CHECK forbids it; say what we know
        return f"Running on worker {owner} ({attempt})."
    if h.lease_expires_at < facts.now:
        return (
            f"Lease held by worker {owner} expired at {when(h.lease_expires_at)} ({attempt}); "
            "the rescuer will return the handoff to retry_wait."
        )
    return f"Lease held by worker {owner} until {when(h.lease_expires_at)} ({attempt})."


def _retry_wait(facts: WhyFacts) -> str:
    h = facts.handoff
    at = when(h.run_after)
    due = " (due now, for a worker to claim it)" if h.run_after <= facts.now else ""
    if h.reason_code is ReasonCode.RATE_LIMITED:
        since = f" since {when(h.throttled_since)}" if h.throttled_since else ""
        head = f"Throttled downstream{since}; retrying at {at}{due}"
    elif h.reason_code is ReasonCode.LEASE_EXPIRED:
        head = f"Retrying at {at}{due} after losing its lease {_plural(h.crashes, 'time')}"
    else:
        head = f"Retrying at {at}{due} after {_plural(h.failures, 'failure')}"
    return f"{head}.{_reason(h.reason_code)}{_last_error(h)}"


def _waiting(facts: WhyFacts) -> str:
    ahead = facts.ahead
    if ahead is None:
        return (
            "Waiting for the active handoff of its reference to end; none is active now, so it "
            "is about to be queued."
        )
    if ahead.state is HandoffState.RUNNING:
        return (
            f"Waiting behind handoff {ahead.id}, which is running on worker "
            f"{ahead.lease_owner or 'unknown'}; queued when that one ends."
        )
    return f"Waiting behind handoff {ahead.id} ({ahead.state.value}); queued when that one ends."


def _failed(facts: WhyFacts) -> str:
    h = facts.handoff
    return (
        f"Failed permanently{_at(h.finished_at)} because {_described(h.reason_code)} "
        f"({h.reason_code.value}).{_last_error(h)}"
    )


def _superseded(facts: WhyFacts) -> str:
    h, newer = facts.handoff, facts.newer
    by = f" by handoff {newer.id} ({newer.state.value})" if newer is not None else ""
    return f"Superseded{by}{_at(h.finished_at)}.{_reason(h.reason_code)}"


def _succeeded(facts: WhyFacts) -> str:
    h = facts.handoff
    return (
        f"Succeeded{_at(h.finished_at)} after {_plural(h.attempts, 'attempt')}; "
        "the document was written."
    )


def _cancelled(facts: WhyFacts) -> str:
    event = facts.last_event
    actor = event.actor if event is not None and event.to_state is HandoffState.CANCELLED else None
    return f"Cancelled by {actor or 'an operator'}{_at(facts.handoff.finished_at)}."


def _at(moment: datetime | None) -> str:
    return f" at {when(moment)}" if moment is not None else ""


_BY_STATE: dict[HandoffState, Callable[[WhyFacts], str]] = {
    HandoffState.QUEUED: _queued,
    HandoffState.RUNNING: _running,
    HandoffState.RETRY_WAIT: _retry_wait,
    HandoffState.WAITING: _waiting,
    HandoffState.FAILED: _failed,
    HandoffState.SUPERSEDED: _superseded,
    HandoffState.SUCCEEDED: _succeeded,
    HandoffState.CANCELLED: _cancelled,
}
