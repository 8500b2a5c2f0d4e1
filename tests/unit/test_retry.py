"""domain.retry.decide: what each retry class does to a failed attempt, and when it gives up."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from app.domain.retry import Backoff, Counters, Decision, RetryPolicy, decide, parse_retry_after
from app.domain.states import HandoffState, ReasonCode, RetryClass
from app.settings import Settings
from app.worker.runner import WorkerConfig

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy()
FRESH = Counters(failures=0, crashes=0, throttled_since=None)


def low() -> float:
    return 0.0


def high() -> float:
    return 0.999999


def seconds(d: Decision) -> float:
    assert d.run_after is not None
    return (d.run_after - NOW).total_seconds()


def test_the_defaults_are_measured_in_minutes_to_an_hour() -> None:
    assert POLICY.transient_max_failures == 5
    assert POLICY.unclassified_max_failures == 3
    assert POLICY.crash_max == 3
    assert POLICY.throttle_deadline == timedelta(hours=1)
    assert POLICY.transient_backoff == Backoff(base_seconds=30, factor=2, cap_seconds=600)
    assert POLICY.throttle_max_wait == timedelta(minutes=15)


# -- transient ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("failures_before", "raw"), [(0, 30), (1, 60), (2, 120), (3, 240)])
def test_a_transient_failure_waits_an_equal_jitter_backoff(failures_before: int, raw: int) -> None:
    counters = Counters(failures_before, 0, None)
    shortest = decide(POLICY, RetryClass.TRANSIENT, counters, NOW, rand=low)
    longest = decide(POLICY, RetryClass.TRANSIENT, counters, NOW, rand=high)
    for d in (shortest, longest):
        assert d.state is HandoffState.RETRY_WAIT
        assert d.reason is ReasonCode.TRANSIENT_ERROR
        assert d.failures == failures_before + 1
        assert d.crashes == 0
    assert seconds(shortest) == raw / 2
    assert raw / 2 < seconds(longest) <= raw


def test_transient_delays_grow_until_the_budget_is_spent() -> None:
    counters, delays = FRESH, []
    decision = decide(POLICY, RetryClass.TRANSIENT, counters, NOW, rand=low)
    while decision.state is HandoffState.RETRY_WAIT:
        delays.append(seconds(decision))
        counters = Counters(decision.failures, decision.crashes, decision.throttled_since)
        decision = decide(POLICY, RetryClass.TRANSIENT, counters, NOW, rand=low)
    assert delays == [15, 30, 60, 120]
    assert decision.state is HandoffState.FAILED
    assert decision.reason is ReasonCode.RETRIES_EXHAUSTED
    assert decision.failures == POLICY.transient_max_failures
    assert decision.run_after is None


def test_a_transient_failure_after_throttling_ends_the_throttle_window() -> None:
    counters = Counters(0, 0, NOW - timedelta(minutes=30))
    assert decide(POLICY, RetryClass.TRANSIENT, counters, NOW).throttled_since is None


def test_the_backoff_is_capped() -> None:
    backoff = Backoff(base_seconds=30, factor=2, cap_seconds=600)
    assert backoff.delay(50, high) <= timedelta(seconds=600)
    assert backoff.delay(50, low) == timedelta(seconds=300)


@given(
    failures=st.integers(min_value=0, max_value=60),
    r=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_every_backoff_delay_lies_within_the_documented_jitter_bounds(
    failures: int, r: float
) -> None:
    backoff = POLICY.transient_backoff
    raw = min(backoff.cap_seconds, backoff.base_seconds * backoff.factor ** max(0, failures - 1))
    delay = backoff.delay(failures, lambda: r).total_seconds()
    assert raw / 2 - 1e-6 <= delay <= raw + 1e-6


# -- unclassified ---------------------------------------------------------------------------------


def test_unclassified_failures_retry_on_a_smaller_budget() -> None:
    first = decide(POLICY, RetryClass.UNCLASSIFIED, FRESH, NOW, rand=low)
    second = decide(POLICY, RetryClass.UNCLASSIFIED, Counters(1, 0, None), NOW, rand=low)
    last = decide(POLICY, RetryClass.UNCLASSIFIED, Counters(2, 0, None), NOW, rand=low)
    assert (first.state, first.reason, seconds(first)) == (
        HandoffState.RETRY_WAIT,
        ReasonCode.UNCLASSIFIED_ERROR,
        15,
    )
    assert (second.state, second.reason, seconds(second)) == (
        HandoffState.RETRY_WAIT,
        ReasonCode.UNCLASSIFIED_ERROR,
        30,
    )
    assert (last.state, last.reason, last.failures) == (
        HandoffState.FAILED,
        ReasonCode.RETRIES_EXHAUSTED,
        3,
    )
    # The same counters under the transient class still have budget left.
    transient = decide(POLICY, RetryClass.TRANSIENT, Counters(2, 0, None), NOW)
    assert transient.state is HandoffState.RETRY_WAIT
    assert POLICY.unclassified_max_failures < POLICY.transient_max_failures


# -- permanent ------------------------------------------------------------------------------------


def test_a_permanent_failure_fails_at_once_with_the_generic_reason() -> None:
    decision = decide(POLICY, RetryClass.PERMANENT, FRESH, NOW)
    assert decision == Decision(HandoffState.FAILED, ReasonCode.PERMANENT_ERROR, None, 0, 0, None)


@pytest.mark.parametrize(
    "reason",
    [
        ReasonCode.PERMANENT_VALIDATION_ERROR,
        ReasonCode.PAYLOAD_MISSING,
        ReasonCode.PAYLOAD_HASH_MISMATCH,
    ],
)
def test_a_permanent_failure_keeps_the_reason_the_worker_gave(reason: ReasonCode) -> None:
    decision = decide(
        POLICY, RetryClass.PERMANENT, Counters(2, 1, None), NOW, permanent_reason=reason
    )
    assert (decision.state, decision.reason) == (HandoffState.FAILED, reason)
    assert (decision.failures, decision.crashes) == (2, 1)  # nothing spent, nothing reset


# -- throttled ------------------------------------------------------------------------------------


def test_throttling_honours_retry_after_and_spends_no_failures() -> None:
    counters = Counters(failures=2, crashes=1, throttled_since=None)
    decision = decide(
        POLICY, RetryClass.THROTTLED, counters, NOW, retry_after=timedelta(seconds=42)
    )
    assert decision.state is HandoffState.RETRY_WAIT
    assert decision.reason is ReasonCode.RATE_LIMITED
    assert decision.run_after == NOW + timedelta(seconds=42)
    assert (decision.failures, decision.crashes) == (2, 1)
    assert decision.throttled_since == NOW  # the throttle window opens now


def test_throttling_keeps_the_window_it_started_in() -> None:
    since = NOW - timedelta(minutes=20)
    decision = decide(
        POLICY, RetryClass.THROTTLED, Counters(0, 0, since), NOW, retry_after=timedelta(minutes=1)
    )
    assert decision.throttled_since == since


def test_a_retry_after_longer_than_the_maximum_wait_is_capped() -> None:
    decision = decide(POLICY, RetryClass.THROTTLED, FRESH, NOW, retry_after=timedelta(hours=6))
    assert decision.run_after == NOW + POLICY.throttle_max_wait


def test_a_negative_retry_after_means_retry_now() -> None:
    decision = decide(POLICY, RetryClass.THROTTLED, FRESH, NOW, retry_after=timedelta(seconds=-5))
    assert decision.run_after == NOW


def test_throttling_without_retry_after_backs_off_within_bounds() -> None:
    shortest = decide(POLICY, RetryClass.THROTTLED, FRESH, NOW, rand=low)
    longest = decide(POLICY, RetryClass.THROTTLED, FRESH, NOW, rand=high)
    assert seconds(shortest) == 15  # first step of Backoff(30, 2, 900): half of 30 s
    assert 15 < seconds(longest) <= 30
    # Throttled for longer, it waits longer (but never past the maximum wait).
    later = Counters(0, 0, NOW - timedelta(minutes=10))
    assert seconds(decide(POLICY, RetryClass.THROTTLED, later, NOW, rand=low)) > 15
    assert seconds(decide(POLICY, RetryClass.THROTTLED, later, NOW, rand=high)) <= 15 * 60


def test_throttling_past_the_deadline_fails() -> None:
    since = NOW - timedelta(minutes=55)
    decision = decide(
        POLICY,
        RetryClass.THROTTLED,
        Counters(1, 0, since),
        NOW,
        retry_after=timedelta(minutes=10),  # would run at 65 min: past the 60 min deadline
    )
    assert decision.state is HandoffState.FAILED
    assert decision.reason is ReasonCode.THROTTLE_DEADLINE_EXCEEDED
    assert decision.run_after is None
    assert decision.failures == 1


def test_a_retry_landing_exactly_on_the_deadline_is_still_allowed() -> None:
    since = NOW - timedelta(minutes=50)
    decision = decide(
        POLICY, RetryClass.THROTTLED, Counters(0, 0, since), NOW, retry_after=timedelta(minutes=10)
    )
    assert decision.state is HandoffState.RETRY_WAIT


# -- crash ----------------------------------------------------------------------------------------


def test_a_lost_lease_retries_after_the_fixed_crash_delay() -> None:
    decision = decide(POLICY, RetryClass.CRASH, Counters(1, 0, None), NOW)
    assert decision.state is HandoffState.RETRY_WAIT
    assert decision.reason is ReasonCode.LEASE_EXPIRED
    assert decision.run_after == NOW + POLICY.crash_delay
    assert (decision.failures, decision.crashes) == (1, 1)


def test_the_crash_budget_ends_in_poison_suspected() -> None:
    decision = decide(POLICY, RetryClass.CRASH, Counters(0, POLICY.crash_max - 1, None), NOW)
    assert decision.state is HandoffState.FAILED
    assert decision.reason is ReasonCode.POISON_SUSPECTED
    assert decision.crashes == POLICY.crash_max


# -- purity ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("retry_class", list(RetryClass))
def test_decide_is_pure_given_the_same_randomness(retry_class: RetryClass) -> None:
    counters = Counters(1, 1, NOW - timedelta(minutes=5))
    first = decide(POLICY, retry_class, counters, NOW, rand=lambda: 0.37)
    again = decide(POLICY, retry_class, counters, NOW, rand=lambda: 0.37)
    assert first == again


@pytest.mark.parametrize("retry_class", list(RetryClass))
def test_a_retry_never_runs_before_now_and_a_failure_never_has_a_run_after(
    retry_class: RetryClass,
) -> None:
    for failures in range(6):
        decision = decide(POLICY, retry_class, Counters(failures, 0, None), NOW)
        if decision.state is HandoffState.RETRY_WAIT:
            assert decision.run_after is not None
            assert decision.run_after >= NOW
        else:
            assert decision.state is HandoffState.FAILED
            assert decision.run_after is None


def test_the_retry_settings_set_a_workers_waits_and_nothing_else() -> None:
    policy = WorkerConfig.from_settings(
        Settings(retry_base_seconds=2, crash_retry_seconds=1)
    ).policy
    assert policy.transient_backoff == Backoff(base_seconds=2, factor=2, cap_seconds=600)
    assert policy.crash_delay == timedelta(seconds=1)
    default = RetryPolicy()
    assert (
        replace(
            policy, transient_backoff=default.transient_backoff, crash_delay=default.crash_delay
        )
        == default
    )
    assert WorkerConfig.from_settings(Settings()).policy == default
    with pytest.raises(ValidationError, match="retry_base_seconds"):
        Settings(retry_base_seconds=0)
    with pytest.raises(ValidationError, match="crash_retry_seconds"):
        Settings(crash_retry_seconds=-1)


@pytest.mark.parametrize(
    ("value", "delay"),
    [("120", timedelta(minutes=2)), (" 7 ", timedelta(seconds=7)), ("²", None), ("soon", None)],
)
def test_a_retry_after_is_delay_seconds_in_ascii_digits_or_none(
    value: str, delay: timedelta | None
) -> None:
    assert parse_retry_after(value, datetime(2026, 1, 1, tzinfo=UTC)) == delay
