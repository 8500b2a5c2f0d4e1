"""Retry classes as data: what happens after a failed attempt, decided without I/O."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from app.domain.numbers import parse_count
from app.domain.states import HandoffState, ReasonCode, RetryClass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with 'equal jitter': half the delay is fixed, half is random."""

    base_seconds: float
    factor: float
    cap_seconds: float

    def delay(self, failures: int, rand: Callable[[], float]) -> timedelta:
        raw = min(self.cap_seconds, self.base_seconds * self.factor ** max(0, failures - 1))
        return timedelta(seconds=raw / 2 + rand() * raw / 2)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Budgets per retry class. Defaults keep a bad handoff visible within about an hour."""

    # transient: the failure counts; retried until `transient_max_failures` failures.
    transient_max_failures: int = 5
    transient_backoff: Backoff = Backoff(base_seconds=30, factor=2, cap_seconds=600)
    # unclassified: counts like transient, against a smaller budget.
    unclassified_max_failures: int = 3
    # throttled: spends no failures; waits `retry_after` (or the backoff) until the deadline.
    throttle_deadline: timedelta = timedelta(hours=1)
    throttle_backoff: Backoff = Backoff(base_seconds=30, factor=2, cap_seconds=900)
    throttle_max_wait: timedelta = timedelta(minutes=15)
    # crash: a lost lease; after `crash_max` losses the handoff is suspected poison. The
    # rescuer applies it to many rows in one UPDATE, so the delay is fixed, not jittered.
    crash_max: int = 3
    crash_delay: timedelta = timedelta(seconds=15)


@dataclass(frozen=True, slots=True)
class Counters:
    """The per-handoff counters a decision reads (as stored on the handoff row)."""

    failures: int
    crashes: int
    throttled_since: datetime | None


@dataclass(frozen=True, slots=True)
class Decision:
    state: HandoffState
    reason: ReasonCode
    run_after: datetime | None
    failures: int
    crashes: int
    throttled_since: datetime | None


def decide(
    policy: RetryPolicy,
    retry_class: RetryClass,
    counters: Counters,
    now: datetime,
    *,
    retry_after: timedelta | None = None,
    permanent_reason: ReasonCode = ReasonCode.PERMANENT_ERROR,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """What a failed attempt of `retry_class` leads to. Pure: same inputs, same answer."""
    failures, crashes = counters.failures, counters.crashes
    if retry_class is RetryClass.PERMANENT:
        return Decision(HandoffState.FAILED, permanent_reason, None, failures, crashes, None)
    if retry_class is RetryClass.THROTTLED:
        return _throttled(policy, counters, now, retry_after, rand)
    if retry_class is RetryClass.CRASH:
        crashes += 1
        if crashes >= policy.crash_max:
            return Decision(
                HandoffState.FAILED, ReasonCode.POISON_SUSPECTED, None, failures, crashes, None
            )
        return Decision(
            HandoffState.RETRY_WAIT,
            ReasonCode.LEASE_EXPIRED,
            now + policy.crash_delay,
            failures,
            crashes,
            None,
        )
    failures += 1
    if retry_class is RetryClass.TRANSIENT:
        budget, reason = policy.transient_max_failures, ReasonCode.TRANSIENT_ERROR
    else:
        budget, reason = policy.unclassified_max_failures, ReasonCode.UNCLASSIFIED_ERROR
    if failures >= budget:
        return Decision(
            HandoffState.FAILED, ReasonCode.RETRIES_EXHAUSTED, None, failures, crashes, None
        )
    wait = policy.transient_backoff.delay(failures, rand)
    return Decision(HandoffState.RETRY_WAIT, reason, now + wait, failures, crashes, None)


def _throttled(
    policy: RetryPolicy,
    counters: Counters,
    now: datetime,
    retry_after: timedelta | None,
    rand: Callable[[], float],
) -> Decision:
    since = counters.throttled_since or now
    elapsed = max(0.0, (now - since).total_seconds())
    # The backoff grows with how long we have been throttled, in units of its base.
    steps = 1 + int(elapsed // policy.throttle_backoff.base_seconds).bit_length()
    wait = retry_after if retry_after is not None else policy.throttle_backoff.delay(steps, rand)
    wait = min(max(wait, timedelta(0)), policy.throttle_max_wait)
    if now + wait > since + policy.throttle_deadline:
        return Decision(
            HandoffState.FAILED,
            ReasonCode.THROTTLE_DEADLINE_EXCEEDED,
            None,
            counters.failures,
            counters.crashes,
            since,
        )
    return Decision(
        HandoffState.RETRY_WAIT,
        ReasonCode.RATE_LIMITED,
        now + wait,
        counters.failures,
        counters.crashes,
        since,
    )


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """An HTTP `Retry-After` (delay seconds or an HTTP date) as a delay from `now`.

    None when absent or unreadable, so the caller falls back to its backoff; a date in the past
    is no delay at all.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    seconds = parse_count(text)
    if seconds is not None:
        return timedelta(seconds=seconds)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT; an odd one without a zone is read as such
        when = when.replace(tzinfo=UTC)
    return max(timedelta(0), when - now)
