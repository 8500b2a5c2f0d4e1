"""domain.why.explain: one plain sentence per state, from the facts the caller looked up."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from app.domain.models import Handoff, HandoffEvent
from app.domain.states import EnqueueOutcome, HandoffState, ReasonCode
from app.domain.why import WhyFacts, explain, when

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def handoff(state: HandoffState, reason: ReasonCode, **changes: object) -> Handoff:
    base = Handoff(
        id=7,
        reference_id="shop:1",
        payload_hash="sha256:" + "0" * 64,
        source="shop",
        fetched_at=T0,
        state=state,
        reason_code=reason,
        enqueue_outcome=EnqueueOutcome.CREATED,
        run_after=T0,
        attempts=0,
        failures=0,
        crashes=0,
        throttled_since=None,
        lease_token=0,
        lease_owner=None,
        lease_expires_at=None,
        last_error=None,
        created_at=T0,
        updated_at=T0,
        finished_at=None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]  # test data, checked by the class


def event(to_state: HandoffState, actor: str, at: datetime = T0) -> HandoffEvent:
    return HandoffEvent(1, 7, at, actor, None, to_state, ReasonCode.ENQUEUED, None, None)


def test_times_are_utc_to_the_second() -> None:
    assert when(datetime(2026, 3, 1, 13, 0, 5, 999, tzinfo=UTC)) == "2026-03-01T13:00:05Z"
    east = datetime(2026, 3, 1, 14, 0, tzinfo=UTC).astimezone(datetime.now(UTC).astimezone().tzinfo)
    assert when(east) == "2026-03-01T14:00:00Z"


def test_queued_says_since_when_from_its_last_event() -> None:
    h = handoff(HandoffState.QUEUED, ReasonCode.PROMOTED, updated_at=T0 + timedelta(hours=1))
    facts = WhyFacts(h, T0, last_event=event(HandoffState.QUEUED, "worker:w1"))
    assert explain(facts) == (
        "Queued since 2026-03-01T12:00:00Z, for a worker to claim it. Reason: promoted (the "
        "handoff ahead of it ended, so this waiting payload is now queued)."
    )
    assert explain(WhyFacts(h, T0)).startswith("Queued since 2026-03-01T13:00:00Z")


def test_running_names_the_worker_and_the_lease_end() -> None:
    h = handoff(
        HandoffState.RUNNING,
        ReasonCode.CLAIMED,
        lease_owner="w9",
        lease_expires_at=T0 + timedelta(minutes=1),
        attempts=2,
    )
    assert explain(WhyFacts(h, T0)) == (
        "Lease held by worker w9 until 2026-03-01T12:01:00Z (attempt 2)."
    )
    late = explain(WhyFacts(h, T0 + timedelta(minutes=2)))
    assert late == (
        "Lease held by worker w9 expired at 2026-03-01T12:01:00Z (attempt 2); the rescuer "
        "will return the handoff to retry_wait."
    )


def test_retry_wait_counts_failures_and_quotes_the_error() -> None:
    h = handoff(
        HandoffState.RETRY_WAIT,
        ReasonCode.TRANSIENT_ERROR,
        run_after=T0 + timedelta(seconds=30),
        failures=2,
        last_error="timeout",
    )
    assert explain(WhyFacts(h, T0)) == (
        "Retrying at 2026-03-01T12:00:30Z after 2 failures. Reason: transient_error (a "
        "transient error; retried with backoff until the budget is spent). Last error: timeout"
    )
    assert "(due now, for a worker to claim it)" in explain(WhyFacts(h, T0 + timedelta(hours=1)))


def test_retry_wait_after_a_lost_lease_counts_crashes() -> None:
    h = handoff(HandoffState.RETRY_WAIT, ReasonCode.LEASE_EXPIRED, crashes=1)
    assert explain(WhyFacts(h, T0 - timedelta(seconds=1))).startswith(
        "Retrying at 2026-03-01T12:00:00Z after losing its lease 1 time."
    )


def test_retry_wait_when_throttled_says_since_when() -> None:
    h = handoff(
        HandoffState.RETRY_WAIT,
        ReasonCode.RATE_LIMITED,
        throttled_since=T0 - timedelta(minutes=5),
        run_after=T0 + timedelta(minutes=1),
    )
    assert explain(WhyFacts(h, T0)).startswith(
        "Throttled downstream since 2026-03-01T11:55:00Z; retrying at 2026-03-01T12:01:00Z."
    )


def test_a_long_error_is_cut_short() -> None:
    h = handoff(HandoffState.FAILED, ReasonCode.PERMANENT_ERROR, last_error="x" * 1000)
    sentence = explain(WhyFacts(h, T0))
    assert sentence.endswith("x" * 300 + "…")


def test_waiting_names_the_running_handoff_ahead() -> None:
    h = handoff(HandoffState.WAITING, ReasonCode.QUEUED_BEHIND_RUNNING)
    ahead = handoff(HandoffState.RUNNING, ReasonCode.CLAIMED, id=3, lease_owner="w1")
    assert explain(WhyFacts(h, T0, ahead=ahead)) == (
        "Waiting behind handoff 3, which is running on worker w1; queued when that one ends."
    )
    queued = replace(ahead, state=HandoffState.QUEUED)
    assert explain(WhyFacts(h, T0, ahead=queued)).startswith("Waiting behind handoff 3 (queued)")
    assert "about to be queued" in explain(WhyFacts(h, T0))


def test_failed_says_because_what_and_the_last_error() -> None:
    h = handoff(
        HandoffState.FAILED,
        ReasonCode.RETRIES_EXHAUSTED,
        finished_at=T0,
        last_error="HTTP 503",
    )
    assert explain(WhyFacts(h, T0)) == (
        "Failed permanently at 2026-03-01T12:00:00Z because transient or unclassified "
        "failures used the whole budget (retries_exhausted). Last error: HTTP 503"
    )


def test_superseded_names_the_newer_handoff_when_known() -> None:
    h = handoff(HandoffState.SUPERSEDED, ReasonCode.SUPERSEDED_BY_NEWER_PAYLOAD, finished_at=T0)
    newer = handoff(HandoffState.SUCCEEDED, ReasonCode.SUCCEEDED, id=9)
    assert explain(WhyFacts(h, T0, newer=newer)).startswith(
        "Superseded by handoff 9 (succeeded) at 2026-03-01T12:00:00Z. Reason: "
        "superseded_by_newer_payload"
    )
    assert explain(WhyFacts(h, T0)).startswith("Superseded at 2026-03-01T12:00:00Z.")


def test_succeeded_says_when_and_after_how_many_attempts() -> None:
    h = handoff(HandoffState.SUCCEEDED, ReasonCode.SUCCEEDED, finished_at=T0, attempts=3)
    assert explain(WhyFacts(h, T0)) == (
        "Succeeded at 2026-03-01T12:00:00Z after 3 attempts; the document was written."
    )


def test_cancelled_names_who_cancelled() -> None:
    h = handoff(HandoffState.CANCELLED, ReasonCode.OPERATOR_CANCELLED, finished_at=T0)
    by = event(HandoffState.CANCELLED, "operator:token:ops")
    assert explain(WhyFacts(h, T0, last_event=by)) == (
        "Cancelled by operator:token:ops at 2026-03-01T12:00:00Z."
    )
    assert explain(WhyFacts(h, T0)) == "Cancelled by an operator at 2026-03-01T12:00:00Z."


@pytest.mark.parametrize("state", list(HandoffState))
@pytest.mark.parametrize("reason", list(ReasonCode))
def test_every_state_and_reason_gets_a_sentence(state: HandoffState, reason: ReasonCode) -> None:
    h = handoff(state, reason, lease_expires_at=T0 if state is HandoffState.RUNNING else None)
    sentence = explain(WhyFacts(h, T0))
    assert sentence
    assert sentence[0].isupper()
