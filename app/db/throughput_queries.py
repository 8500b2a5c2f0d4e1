"""Handoffs finished per time bucket: the dashboard's throughput chart. One statement, both
engines; the buckets are counted by the database, never by a loop over rows."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, case, func, select

from app.db.tables import handoffs
from app.domain.states import HandoffState


def finished_per_bucket(
    conn: Connection,
    states: tuple[HandoffState, ...],
    *,
    now: datetime,
    bucket: timedelta,
    buckets: int,
) -> dict[HandoffState, list[int]]:
    """Per state of `states`, how many handoffs in it finished in each of the `buckets`
    windows of length `bucket` that end at `now`, oldest window first (zeros included).

    A window is (start, end]: the same bounds as the stats' "last N minutes" figures, so the
    windows of the last hour add up to the stats' `last_60_minutes`."""
    c = handoffs.c
    since = now - bucket * buckets

    def window(i: int) -> object:
        start, end = since + bucket * i, since + bucket * (i + 1)
        inside = and_(c.finished_at > start, c.finished_at <= end)
        return func.coalesce(func.sum(case((inside, 1), else_=0)), 0).label(f"b{i}")

    stmt = (
        select(c.state, *[window(i) for i in range(buckets)])
        .where(c.state.in_([s.value for s in states]), c.finished_at > since, c.finished_at <= now)
        .group_by(c.state)
    )
    found = {s: [0] * buckets for s in states}
    for row in conn.execute(stmt):
        found[HandoffState(row.state)] = [int(row[i + 1]) for i in range(buckets)]
    return found
