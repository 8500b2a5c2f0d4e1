"""How many handoffs finished, and how many of them failed, over the last hour, window by
window: what the dashboard draws. Reads only, in the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from app.db.throughput_queries import finished_per_bucket
from app.db.uow import UnitOfWork
from app.domain.states import HandoffState

#: The chart's span and resolution: twelve windows of five minutes.
WINDOW = timedelta(minutes=5)
WINDOWS = 12


@dataclass(frozen=True, slots=True)
class Window:
    end: datetime
    succeeded: int
    failed: int

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed

    @property
    def failure_rate(self) -> float | None:
        """Failed over finished; None when nothing finished."""
        return self.failed / self.finished if self.finished else None


def last_hour(
    uow: UnitOfWork, *, now: datetime, window: timedelta = WINDOW, windows: int = WINDOWS
) -> list[Window]:
    """Handoffs that succeeded or failed (by `finished_at`) in each window, oldest first."""
    counts = finished_per_bucket(
        uow.conn,
        (HandoffState.SUCCEEDED, HandoffState.FAILED),
        now=now,
        bucket=window,
        buckets=windows,
    )
    start = now - window * windows
    return [
        Window(
            start + window * (i + 1),
            counts[HandoffState.SUCCEEDED][i],
            counts[HandoffState.FAILED][i],
        )
        for i in range(windows)
    ]
