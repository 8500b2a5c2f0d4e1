"""What the templates show, shaped from the API's own answers: times and ages for people, the
list filter read from a query string, and the throughput chart's geometry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from pydantic import ValidationError
from starlette.datastructures import QueryParams

from app.api.handoff_models import ListParams
from app.services.throughput import Window

#: Query keys of the list filter, as `GET /v1/handoffs` names them (`state` repeats).
FILTER_KEYS = (
    "reason_code",
    "source",
    "reference_id",
    "created_after",
    "created_before",
    "stuck",
    "cursor",
    "limit",
)


def when(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def age(seconds: float | None) -> str:
    """`3d 4h`, `2h 5m`, `4m 7s`, `12s`: the two largest units are enough for a person."""
    if seconds is None:
        return "—"
    s = int(seconds)
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def since(moment: datetime | None, now: datetime) -> str:
    return "—" if moment is None else age(max(0.0, (now - moment).total_seconds()))


def duration(start: datetime, end: datetime | None) -> str:
    if end is None:
        return "—"
    seconds = max(0.0, (end - start).total_seconds())
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else age(seconds)


def size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.1f} MiB"


@dataclass(frozen=True, slots=True)
class ListQuery:
    """The list page's filter as the operator typed it, and what the API made of it."""

    values: dict[str, str]  # single-valued fields, as typed (refilled into the form)
    states: list[str]
    params: ListParams | None  # None when the filter is invalid
    error: str | None

    def link(self, **changes: str | None) -> str:
        """The query string of this filter with some fields changed (None drops one)."""
        values = {**self.values, **changes}
        pairs = [("state", s) for s in self.states]
        pairs += [(k, v) for k in FILTER_KEYS if (v := values.get(k))]
        return urlencode(pairs)


def list_query(query: QueryParams) -> ListQuery:
    """Read the filter the way `GET /v1/handoffs` does (same model, same limits); a bad value
    is an error message naming the field, never an exception."""
    states = [s for s in query.getlist("state") if s][:16]
    values = {k: v for k in FILTER_KEYS if (v := query.get(k, "").strip())}
    raw: dict[str, object] = {**values, "state": states}
    try:
        return ListQuery(values, states, ListParams.model_validate(raw), None)
    except ValidationError as exc:
        errors = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return ListQuery(values, states, None, "; ".join(errors[:5]))


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    ok_y: float  # top of the succeeded part
    ok_height: float
    failed_y: float  # top of the failed part, stacked on the succeeded one
    failed_height: float
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    """An SVG bar chart, drawn by the server: finished handoffs per window (succeeded below,
    failed stacked on top) and the failure rate as a line on a 0-100 % scale."""

    width: int
    height: int
    bars: list[Bar]
    rate_points: str  # the failure-rate polyline, "x,y x,y …"
    peak: int  # the largest window: the bar scale's top
    succeeded: int
    failed: int

    @property
    def rate_dots(self) -> list[tuple[str, str]]:
        return [(x, y) for x, _, y in (p.partition(",") for p in self.rate_points.split())]

    @property
    def failure_rate(self) -> str:
        finished = self.succeeded + self.failed
        return "—" if not finished else f"{100 * self.failed / finished:.1f} %"


CHART_WIDTH, CHART_HEIGHT, _GAP = 600, 160, 4


def chart(windows: list[Window]) -> Chart:
    peak = max((w.finished for w in windows), default=0)
    scale = CHART_HEIGHT / max(peak, 1)
    step = CHART_WIDTH / max(len(windows), 1)
    bars, points = [], []
    for i, w in enumerate(windows):
        x = i * step + _GAP / 2
        ok_h, failed_h = w.succeeded * scale, w.failed * scale
        rate = w.failure_rate
        label = "no handoff finished" if rate is None else f"{100 * rate:.1f} % failed"
        title = f"until {when(w.end)}: {w.succeeded} succeeded, {w.failed} failed ({label})"
        bars.append(
            Bar(
                x,
                step - _GAP,
                CHART_HEIGHT - ok_h,
                ok_h,
                CHART_HEIGHT - ok_h - failed_h,
                failed_h,
                title,
            )
        )
        if rate is not None:
            points.append(f"{x + (step - _GAP) / 2:.1f},{CHART_HEIGHT * (1 - rate):.1f}")
    return Chart(
        CHART_WIDTH,
        CHART_HEIGHT,
        bars,
        " ".join(points),
        peak,
        sum(w.succeeded for w in windows),
        sum(w.failed for w in windows),
    )
