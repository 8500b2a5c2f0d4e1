"""Backpressure: is ingestion keeping up, and may producers submit more now?

Submissions are refused (HTTP 429) while more than `max_backlog` handoffs are runnable now
(queued or retry_wait with run_after passed) — work waiting for a worker. Nothing stored is
lost: the refused request wrote nothing, and the producer retries after the suggested delay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.db.uow import UnitOfWork

#: Without a limit the backlog is counted up to this many (the count is then a lower bound).
COUNT_CAP = 100_000
#: The window over which the recent finishing rate is measured.
RATE_WINDOW = timedelta(minutes=1)
RETRY_AFTER_MIN = 5
RETRY_AFTER_MAX = 300
RETRY_AFTER_IDLE = 30  # when nothing finished lately, there is no rate to divide by


@dataclass(frozen=True, slots=True)
class Admission:
    backlog: int  # runnable handoffs now, counted up to `counted_up_to`
    counted_up_to: int
    oldest_runnable_age_seconds: float | None
    finished_per_second: float  # over the last minute
    max_backlog: int | None
    admitted: bool
    retry_after_seconds: int | None  # when not admitted: a suggested wait

    @property
    def backlog_exact(self) -> bool:
        return self.backlog < self.counted_up_to


def admission(uow: UnitOfWork, *, now: datetime, max_backlog: int | None) -> Admission:
    """Read the backlog and decide. Costs at most `max_backlog + 1` (or `COUNT_CAP`) index
    entries, one index probe and a one-minute range of the finished index."""
    up_to = max_backlog + 1 if max_backlog is not None else COUNT_CAP
    backlog = uow.queries.runnable_backlog(now=now, up_to=up_to)
    oldest = uow.queries.oldest_runnable(now=now)
    finished = uow.queries.finished_since(now - RATE_WINDOW, now=now)
    rate = finished / RATE_WINDOW.total_seconds()
    admitted = max_backlog is None or backlog <= max_backlog
    return Admission(
        backlog=backlog,
        counted_up_to=up_to,
        oldest_runnable_age_seconds=(
            None if oldest is None else max(0.0, (now - oldest).total_seconds())
        ),
        finished_per_second=round(rate, 3),
        max_backlog=max_backlog,
        admitted=admitted,
        retry_after_seconds=None
        if admitted or max_backlog is None
        else suggest_retry_after(backlog - max_backlog, rate),
    )


def suggest_retry_after(excess: int, finished_per_second: float) -> int:
    """Seconds until the workers, at their recent pace, have worked off the excess; bounded
    to [5, 300] so producers neither hammer nor give up."""
    if finished_per_second <= 0:
        return RETRY_AFTER_IDLE
    seconds = math.ceil(excess / finished_per_second)
    return max(RETRY_AFTER_MIN, min(RETRY_AFTER_MAX, seconds))
