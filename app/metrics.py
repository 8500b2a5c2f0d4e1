"""Prometheus metrics. Two kinds, by where the truth lives:

* **Counters and histograms of this process** (`REGISTRY`): what happened here — versions
  handed off (the API, imports), transitions committed, claims, job durations, rescues (the
  workers). Prometheus scrapes every process and sums; each process counts only its own work,
  so nothing is counted twice. They are process-wide by nature, as Prometheus clients are.
* **Figures read from the database at scrape time** (`StateCollector`): rows and oldest age per
  state, the same for every process, so only the API serves them (`/metrics`).

Every change is counted after its transaction commits (`UnitOfWork.on_commit`): a transaction
that rolls back, or is retried whole, counts once or not at all.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.domain.states import EnqueueOutcome, HandoffState, Move, ReasonCode

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

ENQUEUED = Counter(
    "handoff_enqueued",
    "Versions handed off by this process, by enqueue outcome.",
    ["outcome"],
    registry=REGISTRY,
)
TRANSITIONS = Counter(
    "handoff_transitions",
    "State transitions committed by this process (one per event row); from_state is `none` "
    "for a new handoff.",
    ["from_state", "to_state", "reason_code"],
    registry=REGISTRY,
)
CLAIM_LATENCY = Histogram(
    "handoff_claim_latency_seconds",
    "How long a handoff was runnable before a worker of this process claimed it "
    "(claim time minus run_after).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "handoff_job_duration_seconds",
    "Handler run time of one attempt in this process, by outcome (succeeded, retry, failed).",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
    registry=REGISTRY,
)
RESCUED = Counter(
    "handoff_rescued",
    "Expired leases the rescuer of this process returned, by reason code "
    "(lease_expired: to retry_wait; poison_suspected: to failed).",
    ["reason_code"],
    registry=REGISTRY,
)
REJECTED = Counter(
    "handoff_submissions_rejected",
    "Submission requests this process refused with 429 because the runnable backlog was past "
    "max_backlog, by route.",
    ["route"],
    registry=REGISTRY,
)

JOB_OUTCOMES = ("succeeded", "retry", "failed")
REJECTING_ROUTES = ("/v1/scrape-records", "/v1/scraping/sync")
# Series that exist from the start, at zero, so rates and alerts have a baseline. The enqueue
# counters are kept at hand: `labels()` takes a lock and a look-up per call, on the hottest path.
_ENQUEUED_BY = {outcome: ENQUEUED.labels(outcome.value) for outcome in EnqueueOutcome}
for _job in JOB_OUTCOMES:
    JOB_DURATION.labels(_job)
for _reason in (ReasonCode.LEASE_EXPIRED, ReasonCode.POISON_SUSPECTED):
    RESCUED.labels(_reason.value)
for _route in REJECTING_ROUTES:
    REJECTED.labels(_route)


def count_enqueued(outcomes: Iterable[EnqueueOutcome]) -> None:
    # One increment per distinct label set, not per item: a 100-record batch has one or two.
    for outcome, n in Tally(outcomes).items():
        _ENQUEUED_BY[outcome].inc(n)


_TRANSITIONS_BY: dict[Move, Counter] = {}  # each move's series, looked up once


def count_transitions(moves: Iterable[Move]) -> None:
    for move, n in Tally(moves).items():
        _transition_series(move).inc(n)


def count_one_enqueued(outcome: EnqueueOutcome, move: Move | None) -> None:
    """`count_enqueued` and `count_transitions` of one version (the commonest submission),
    without tallying: a new handoff's creation is its `move`, a duplicate has none."""
    _ENQUEUED_BY[outcome].inc()
    if move is not None:
        _transition_series(move).inc()


def _transition_series(move: Move) -> Counter:
    series = _TRANSITIONS_BY.get(move)
    if series is None:
        from_state, to_state, reason = move
        source = from_state.value if from_state is not None else "none"
        series = _TRANSITIONS_BY[move] = TRANSITIONS.labels(source, to_state.value, reason.value)
    return series


@dataclass(frozen=True, slots=True)
class StateFigures:
    """Per state present in the database: how many rows, and the oldest one's age."""

    rows: dict[HandoffState, int]
    oldest_age_seconds: dict[HandoffState, float]


class StateCollector(Collector):
    """Rows and oldest age per state, read from the database at each scrape. Every state is
    emitted, zeros included. If the database does not answer, `handoff_database_up` is 0 and
    the per-state figures are left out rather than reported as zeros."""

    def __init__(self, read: Callable[[], StateFigures]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "handoff_database_up", "1 when the database answered this scrape's query."
        )
        try:
            figures = self.read()
        except Exception:  # a scrape must still answer; the gauge says what went wrong
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        rows = GaugeMetricFamily(
            "handoff_rows", "Handoffs in each state (read from the database).", labels=["state"]
        )
        age = GaugeMetricFamily(
            "handoff_oldest_age_seconds",
            "Age (since creation) of the oldest handoff in each state; 0 when none.",
            labels=["state"],
        )
        for state in HandoffState:
            rows.add_metric([state.value], figures.rows.get(state, 0))
            age.add_metric([state.value], figures.oldest_age_seconds.get(state, 0.0))
        yield rows
        yield age


class _Forward(Collector):
    """Another registry's metrics, as one collector (this process's counters in an app's
    registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


def registry_with(collectors: Sequence[Collector]) -> CollectorRegistry:
    """A registry serving this process's metrics plus `collectors` (e.g. a `StateCollector`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Forward(REGISTRY))
    for collector in collectors:
        registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format (version 0.0.4) of `registry`."""
    return generate_latest(registry)
