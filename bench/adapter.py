"""Handoff as an adapter of the portable long-horizon Postgres job-queue benchmark.

The benchmark (the "portable" bench of the Awa project, `benchmarks/portable/`) runs each queue
system as one long-running process that reads its settings from the environment and writes
JSONL telemetry to stdout (logs go to stderr). This is Handoff's adapter:

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/handoff_bench PRODUCER_RATE=200 \
        WORKER_COUNT=8 SAMPLE_EVERY_S=2 .venv/bin/python bench/adapter.py

Environment in (defaults as in the contract):

| variable | meaning |
|---|---|
| `DATABASE_URL` | the database (created by the harness); Handoff's migrations are applied |
| `SCENARIO` | `long_horizon` (the steady producer + consumer loop) or `migrate_only` |
| `PRODUCER_MODE` | `fixed` (enqueue at `PRODUCER_RATE`) or `depth-target` |
| `PRODUCER_RATE` | jobs/s in `fixed` mode (default 800) |
| `PRODUCER_RATE_CONTROL_FILE` | if set, a file holding a new rate, re-read before each job |
| `TARGET_DEPTH` | queued jobs to keep in `depth-target` mode (default 1000) |
| `WORKER_COUNT` | handler slots of the worker (default 32) |
| `JOB_PAYLOAD_BYTES` | approximate size of each scraped page (default 256) |
| `JOB_WORK_MS` | time each handler sleeps (default 1) |
| `SAMPLE_EVERY_S` | seconds between samples (default 10), aligned to the wall clock |
| `BENCH_INSTANCE_ID` | replica index (default 0); only replica 0 reports `queue_depth` |
| `DURATION_S` | (this adapter only) stop by itself after that many seconds; 0 = until SIGTERM |

JSONL out: one descriptor line at start-up
(`{"kind": "descriptor", "system": "handoff", "event_tables": [...], ...}`), then every
`SAMPLE_EVERY_S` one line per metric
(`{"t": ..., "system": "handoff", "kind": "adapter", "subject_kind": "adapter", "subject": "",
"metric": ..., "value": ..., "window_s": ..., "instance_id": ...}`):

* `claim_p50_ms`, `claim_p95_ms`, `claim_p99_ms`: pickup latency (the handoff's `created_at`,
  stamped at enqueue, to the handler's start), over the last 30 s;
* `end_to_end_p50_ms`, `end_to_end_p95_ms`, `end_to_end_p99_ms`: enqueue to handler return;
* `producer_call_p50_ms`, `producer_call_p95_ms`, `producer_call_p99_ms`: one enqueue call;
* `enqueue_rate`, `completion_rate`: jobs enqueued / handled per second since the last sample;
* `queue_depth`: queued (not yet claimed) handoffs now; `producer_target_rate`.

Percentiles come from histograms of 3 significant figures kept per second for the last 30 s:
memory is bounded however long the run. On SIGTERM (or SIGINT) the adapter emits a last sample
and exits 0 within a few seconds.

Each job is what Handoff does for a scraped page: `prepare_all` + `submit` (the
scrape record is persisted with its handoff, one transaction per job), claimed and completed by
the app's `Worker` (LISTEN/NOTIFY on) with a handler that sleeps `JOB_WORK_MS`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere: `app` is the repo's package
    sys.path.insert(0, str(REPO_ROOT))

from app import log as app_log  # noqa: E402
from app.db import migrations  # noqa: E402
from app.db.uow import Database  # noqa: E402
from app.domain.models import ClaimedJob  # noqa: E402
from app.domain.records import ScrapeSubmission  # noqa: E402
from app.domain.states import HandoffState  # noqa: E402
from app.heap import freeze_startup_heap  # noqa: E402
from app.services import handoff_queries, scrape_storage  # noqa: E402
from app.worker.runner import Worker, WorkerConfig  # noqa: E402

SYSTEM = "handoff"
MIGRATIONS_DIR = REPO_ROOT / "db" / "migrations"
EVENT_TABLES = (
    "public.ingestion_handoffs",
    "public.handoff_events",
    "public.ingestion_jobs",
    "public.scrape_records",
    "public.handoff_counts",
)
OBSERVER_METRICS = frozenset({"queue_depth", "producer_target_rate"})
WINDOW_S = 30
COMPACT_EVERY_S = 60.0


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_str(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Histogram:
    """Counts of values rounded to 3 significant figures: at most 900 buckets per decade."""

    def __init__(self) -> None:
        self.counts: Counter[float] = Counter()

    def add(self, value: float) -> None:
        self.counts[_round3(value)] += 1

    def merge(self, other: Histogram) -> None:
        self.counts.update(other.counts)

    def percentiles(self, *qs: float) -> list[float]:
        total = sum(self.counts.values())
        if total == 0:
            return [0.0 for _ in qs]
        ordered = sorted(self.counts.items())
        out: list[float] = []
        for q in qs:
            rank = max(1, math.ceil(q * total))
            seen = 0
            for value, n in ordered:
                seen += n
                if seen >= rank:
                    out.append(value)
                    break
        return out


def _round3(value: float) -> float:
    if value <= 0:
        return 0.0
    digits = 2 - math.floor(math.log10(value))
    return round(value, digits)


class Window:
    """Per-second histograms of the last `seconds` seconds (bounded memory), thread-safe."""

    def __init__(self, seconds: int = WINDOW_S) -> None:
        self.seconds = seconds
        self.slots: deque[tuple[int, Histogram]] = deque()
        self.lock = threading.Lock()

    def add(self, value: float) -> None:
        second = int(time.monotonic())
        with self.lock:
            if not self.slots or self.slots[-1][0] != second:
                self.slots.append((second, Histogram()))
                while self.slots and self.slots[0][0] <= second - self.seconds:
                    self.slots.popleft()
            self.slots[-1][1].add(value)

    def percentiles(self) -> tuple[float, float, float]:
        cutoff = int(time.monotonic()) - self.seconds
        merged = Histogram()
        with self.lock:
            for second, hist in self.slots:
                if second > cutoff:
                    merged.merge(hist)
        p50, p95, p99 = merged.percentiles(0.50, 0.95, 0.99)
        return p50, p95, p99


class Adapter:
    def __init__(self, env: dict[str, str]) -> None:
        self.url = env["DATABASE_URL"]
        self.mode = env_str("PRODUCER_MODE", "fixed")
        self.rate = env_int("PRODUCER_RATE", 800)
        self.rate_file = os.environ.get("PRODUCER_RATE_CONTROL_FILE")
        self.target_depth = env_int("TARGET_DEPTH", 1000)
        self.workers = env_int("WORKER_COUNT", 32)
        self.payload_bytes = env_int("JOB_PAYLOAD_BYTES", 256)
        self.work_ms = env_int("JOB_WORK_MS", 1)
        self.sample_every = max(1, env_int("SAMPLE_EVERY_S", 10))
        self.instance = env_int("BENCH_INSTANCE_ID", 0)
        self.duration = env_int("DURATION_S", 0)
        self.stop = threading.Event()
        self.claim = Window()
        self.end_to_end = Window()
        self.producer_call = Window()
        self.enqueued = 0
        self.completed = 0
        self.depth = 0
        self.target_rate = float(self.rate)
        self.count_lock = threading.Lock()
        self.out_lock = threading.Lock()

    # -- output --------------------------------------------------------------------------------

    def emit(self, record: dict[str, Any]) -> None:
        record.setdefault("instance_id", self.instance)
        with self.out_lock:
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()

    def descriptor(self) -> None:
        self.emit(
            {
                "kind": "descriptor",
                "system": SYSTEM,
                "event_tables": list(EVENT_TABLES),
                "extensions": [],
                "version": _version(),
                "schema_version": _schema_version(),
                "db_name": self.url.rsplit("/", 1)[-1].split("?", 1)[0],
                "started_at": now_iso(),
            }
        )

    def sample(self, elapsed: float, enqueued: int, completed: int) -> None:
        t = now_iso()
        claim = self.claim.percentiles()
        e2e = self.end_to_end.percentiles()
        call = self.producer_call.percentiles()
        metrics: list[tuple[str, float, float]] = [
            ("claim_p50_ms", claim[0], WINDOW_S),
            ("claim_p95_ms", claim[1], WINDOW_S),
            ("claim_p99_ms", claim[2], WINDOW_S),
            ("end_to_end_p50_ms", e2e[0], WINDOW_S),
            ("end_to_end_p95_ms", e2e[1], WINDOW_S),
            ("end_to_end_p99_ms", e2e[2], WINDOW_S),
            ("producer_call_p50_ms", call[0], WINDOW_S),
            ("producer_call_p95_ms", call[1], WINDOW_S),
            ("producer_call_p99_ms", call[2], WINDOW_S),
            ("enqueue_rate", enqueued / elapsed, float(self.sample_every)),
            ("completion_rate", completed / elapsed, float(self.sample_every)),
            ("queue_depth", float(self.depth), 0.0),
            ("producer_target_rate", self.target_rate, 0.0),
        ]
        for metric, value, window in metrics:
            if metric in OBSERVER_METRICS and self.instance != 0:
                continue
            self.emit(
                {
                    "t": t,
                    "system": SYSTEM,
                    "kind": "adapter",
                    "subject_kind": "adapter",
                    "subject": "",
                    "metric": metric,
                    "value": round(float(value), 3),
                    "window_s": window,
                }
            )

    # -- loops ---------------------------------------------------------------------------------

    def handler(self, job: ClaimedJob) -> None:
        started = time.time()
        created = job.handoff.created_at.timestamp()
        self.claim.add(max(0.0, (started - created) * 1000))
        if self.work_ms:
            time.sleep(self.work_ms / 1000)
        self.end_to_end.add(max(0.0, (time.time() - created) * 1000))
        with self.count_lock:
            self.completed += 1

    def current_rate(self) -> int:
        if not self.rate_file:
            return self.rate
        try:
            return int(float(Path(self.rate_file).read_text().strip()))
        except (OSError, ValueError):
            return self.rate

    def producer(self, db: Database) -> None:
        padding = "x" * max(0, self.payload_bytes - 160)
        seq = 0
        tag = f"{self.instance}-{os.getpid()}-{int(time.time())}"
        next_at = time.monotonic()
        while not self.stop.is_set():
            if self.mode == "depth-target":
                self.target_rate = 0.0
                if self.depth >= self.target_depth:
                    self.stop.wait(0.05)
                    continue
            else:
                rate = self.current_rate()
                self.target_rate = float(rate)
                if rate <= 0:
                    next_at = time.monotonic()
                    self.stop.wait(0.1)
                    continue
                next_at = max(next_at + 1.0 / rate, time.monotonic() - 1.0)
                delay = next_at - time.monotonic()
                if delay > 0 and self.stop.wait(delay):
                    break
            ref = f"lh-{tag}-{seq}"
            seq += 1
            submission = ScrapeSubmission(
                source="bench",
                reference_id=ref,
                url=f"https://shop.example/listing/{ref}",
                status=200,
                content_type="text/html; charset=utf-8",
                body=f"<html><body><h1>{ref}</h1><p>{padding}</p></body></html>",
            )
            began = time.monotonic()
            try:
                now = datetime.now(UTC)
                prepared = scrape_storage.prepare_all(
                    [submission], now=now, max_body_bytes=20 * 1024 * 1024
                )
                scrape_storage.submit(db, prepared, now=now, actor="client:bench")
            except Exception as exc:
                print(f"[handoff] enqueue failed: {exc}", file=sys.stderr, flush=True)
                self.stop.wait(0.05)
                continue
            self.producer_call.add((time.monotonic() - began) * 1000)
            with self.count_lock:
                self.enqueued += 1

    def depth_poller(self, db: Database) -> None:
        compacted = time.monotonic()
        while not self.stop.is_set():
            try:
                if time.monotonic() - compacted > COMPACT_EVERY_S:
                    db.run(handoff_queries.compact_counts)
                    compacted = time.monotonic()
                counts = db.run(lambda uow: uow.queries.counts(), write=False)
                self.depth = sum(n for (state, _), n in counts.items() if state == _QUEUED)
            except Exception as exc:
                print(f"[handoff] depth poll failed: {exc}", file=sys.stderr, flush=True)
            self.stop.wait(1.0)

    def sampler(self) -> None:
        # Clock-aligned: the first sample at the next multiple of SAMPLE_EVERY_S.
        first = self.sample_every - (time.time() % self.sample_every)
        if self.stop.wait(first):
            return
        last = time.monotonic()
        with self.count_lock:
            last_enq, last_cmp = self.enqueued, self.completed
        while True:
            stopping = self.stop.wait(self.sample_every - (time.time() % self.sample_every))
            now = time.monotonic()
            with self.count_lock:
                enq, cmp_ = self.enqueued, self.completed
            self.sample(max(0.001, now - last), enq - last_enq, cmp_ - last_cmp)
            last, last_enq, last_cmp = now, enq, cmp_
            if stopping:
                return

    def run(self) -> None:
        migrations.apply(self.url, MIGRATIONS_DIR)
        self.descriptor()
        db = Database(self.url, pool_size=self.workers + 4)
        db.ping()
        worker = Worker(db, self.handler, config=WorkerConfig(concurrency=self.workers))
        listener = worker.start_listener(self.stop)
        listener.listening.wait(30)
        freeze_startup_heap()  # as `handoff worker` does once started
        threads = [
            threading.Thread(target=worker.run, args=(self.stop,), name="worker"),
            threading.Thread(target=self.producer, args=(db,), name="producer", daemon=True),
            threading.Thread(target=self.depth_poller, args=(db,), name="depth", daemon=True),
        ]
        sampler = threading.Thread(target=self.sampler, name="sampler")
        for thread in [*threads, sampler]:
            thread.start()
        if self.duration:
            self.stop.wait(self.duration)
        else:
            while not self.stop.wait(0.5):
                pass
        self.stop.set()
        worker.wake.set()
        sampler.join(3)  # the last sample
        threads[0].join(3)  # in-flight handlers finish, their completions commit
        db.dispose()


_QUEUED = HandoffState.QUEUED


def _version() -> str:
    head = REPO_ROOT / ".git"
    try:
        import subprocess

        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=5,
        )
        return done.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown" if not head.exists() else "git"


def _schema_version() -> str:
    names = sorted(p.stem for p in MIGRATIONS_DIR.glob("*.sql"))
    return names[-1] if names else "none"


def main() -> int:
    app_log.configure(json=True, level="WARNING")  # to stderr: stdout is telemetry only
    if not os.environ.get("DATABASE_URL"):
        print("DATABASE_URL must be set", file=sys.stderr)
        return 2
    scenario = env_str("SCENARIO", "long_horizon")
    adapter = Adapter(dict(os.environ))
    if scenario == "migrate_only":
        migrations.apply(adapter.url, MIGRATIONS_DIR)
        return 0
    if scenario != "long_horizon":
        print(f"unsupported SCENARIO: {scenario}", file=sys.stderr)
        return 2

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        adapter.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    adapter.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
