"""Handoff core vs Procrastinate: enqueue and drain throughput on one PostgreSQL server.

Run from the repository root:

    .venv/bin/python bench/core_vs_procrastinate.py --out docs/bench-core.json

Each system gets its own fresh database on the server (created and dropped here). Every timed
phase starts from emptied tables (TRUNCATE, VACUUM ANALYZE, CHECKPOINT) so neither system pays
for the other's, or its own earlier, garbage. Figures are jobs per second; ratios are
handoff / procrastinate, so above 1 means Handoff is faster. See docs/benchmarks.md.

Measured, for each system:

* enqueue_per_row: N jobs, one transaction (one client call) each, from one client.
  Handoff: `prepare_all` + `store_and_hand_off` of one record per `Database.run` (the scrape
  record with a small HTML body is persisted too). Procrastinate: `defer_async` of one job.
* enqueue_batched: the same, 100 per call (`store_and_hand_off` of 100 records /
  `batch_defer_async` of 100 jobs).
* drain_1x4 / drain_2x4: M pre-filled jobs, no-op handler, 1 or 2 worker processes of
  concurrency 4; timed from the moment the (already started, connected) workers are told to
  go until no job is left unfinished (polled in the database).

The script also runs itself as a worker subprocess (`--child handoff|procrastinate`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO, Any, Literal

import procrastinate
import psycopg
from psycopg import sql

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere: `app` is the repo's package
    sys.path.insert(0, str(REPO_ROOT))

from app import log as app_log  # noqa: E402
from app.db import migrations  # noqa: E402
from app.db.notify import Listener  # noqa: E402
from app.db.uow import Database, UnitOfWork  # noqa: E402
from app.domain.records import PreparedRecord, ScrapeSubmission  # noqa: E402
from app.services import scrape_storage  # noqa: E402
from app.services.ingestion_handoff import EnqueueResult  # noqa: E402
from app.worker.handler import NoopHandler  # noqa: E402
from app.worker.runner import Worker, WorkerConfig  # noqa: E402

# Procrastinate warns when an App is built in `__main__` (tasks named by module path would not
# be found by workers); the benchmark's task has an explicit name, so the warning is noise.
logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)

System = Literal["handoff", "procrastinate"]
SYSTEMS: tuple[System, ...] = ("handoff", "procrastinate")

DEFAULT_ADMIN_URL = os.environ.get(
    "HANDOFF_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MIGRATIONS_DIR = REPO_ROOT / "db" / "migrations"
TASK_NAME = "bench_noop"
ACTOR = "client:bench"
MAX_BODY_BYTES = 20 * 1024 * 1024
PREFILL_CHUNK = 500  # Handoff's default max batch; both systems pre-fill drains in chunks of it
MONITOR_EVERY = 0.05  # seconds between "how many jobs are left" polls during a drain (~1 ms each)
DRAIN_TIMEOUT = 600.0

HANDOFF_TABLES = ("scrape_records", "ingestion_handoffs", "handoff_events", "ingestion_jobs")
HANDOFF_TABLES_ALL = (*HANDOFF_TABLES, "documents")
PROCRASTINATE_TABLES = (
    "procrastinate_jobs",
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_workers",
)
REMAINING_SQL: dict[System, sql.SQL] = {
    "handoff": sql.SQL(
        "SELECT count(*) FROM ingestion_handoffs"
        " WHERE state IN ('queued', 'running', 'retry_wait', 'waiting')"
    ),
    "procrastinate": sql.SQL(
        "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
    ),
}
DONE_SQL: dict[System, sql.SQL] = {
    "handoff": sql.SQL("SELECT count(*) FROM ingestion_handoffs WHERE state = 'succeeded'"),
    "procrastinate": sql.SQL("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"),
}
QUEUED_SQL: dict[System, sql.SQL] = {
    "handoff": sql.SQL("SELECT count(*) FROM ingestion_handoffs WHERE state = 'queued'"),
    "procrastinate": sql.SQL("SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'"),
}


# -- sizes and configuration ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sizes:
    per_row: int
    batched: int
    batch_size: int
    drain: int
    warmup_per_row: int
    warmup_batches: int
    warmup_drain: int
    repeat: int


FULL = Sizes(
    per_row=2_000,
    batched=20_000,
    batch_size=100,
    drain=5_000,
    warmup_per_row=200,
    warmup_batches=10,
    warmup_drain=500,
    repeat=3,
)
QUICK = Sizes(
    per_row=200,
    batched=2_000,
    batch_size=100,
    drain=1_000,
    warmup_per_row=50,
    warmup_batches=3,
    warmup_drain=100,
    repeat=1,
)


@dataclass(frozen=True, slots=True)
class Tuning:
    """Worker settings applied to both systems alike."""

    concurrency: int = 4
    poll_seconds: float = 1.0  # Handoff poll_every == Procrastinate fetch_job_polling_interval
    listen_notify: bool = True  # Handoff Listener thread / Procrastinate listen_notify


# -- databases -----------------------------------------------------------------------------------


def db_url(admin_url: str, name: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


def admin_execute(admin_url: str, statement: sql.SQL | sql.Composed) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(statement)


def create_database(admin_url: str, name: str) -> None:
    admin_execute(
        admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )
    admin_execute(admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin_url: str, name: str) -> None:
    admin_execute(
        admin_url,
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)),
    )


def make_procrastinate_app(url: str, pool_size: int) -> procrastinate.App:
    """A Procrastinate app on `url` with the benchmark's no-op task registered."""
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=url, min_size=pool_size, max_size=pool_size
        )
    )

    async def noop(reference_id: str) -> None:
        return None

    app.task(name=TASK_NAME)(noop)
    return app


def set_up_schema(system: System, url: str) -> None:
    if system == "handoff":
        migrations.apply(url, MIGRATIONS_DIR)
        return

    async def apply() -> None:
        app = make_procrastinate_app(url, 1)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    asyncio.run(apply())


def reset_tables(system: System, url: str) -> None:
    """Empty the system's tables so every phase starts from the same state."""
    tables = HANDOFF_TABLES_ALL if system == "handoff" else PROCRASTINATE_TABLES
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in tables)
            )
        )


def settle(system: System, url: str) -> None:
    """VACUUM ANALYZE the system's tables and CHECKPOINT: fresh statistics, no dead rows, no
    checkpoint debt carried into the timed phase."""
    tables = HANDOFF_TABLES if system == "handoff" else PROCRASTINATE_TABLES[:2]
    with psycopg.connect(url, autocommit=True) as conn:
        for table in tables:
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
        conn.execute("CHECKPOINT")


def scalar(url: str, query: sql.SQL | sql.Composed) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


# -- what the database did (pg_stat_database of the system's own database) -------------------


@dataclass(frozen=True, slots=True)
class DbCounters:
    xacts: int
    inserted: int
    updated: int
    deleted: int
    wal_lsn: str


def read_counters(admin_url: str, name: str) -> DbCounters:
    """Counters of database `name`, read from the admin database so reading them does not
    count. Backends flush their counters when they exit: callers close their pools first."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback, tup_inserted, tup_updated, tup_deleted,"
            " pg_current_wal_lsn()::text FROM pg_stat_database WHERE datname = %s",
            (name,),
        ).fetchone()
    assert row is not None
    return DbCounters(int(row[0]), int(row[1]), int(row[2]), int(row[3]), str(row[4]))


def wal_bytes(admin_url: str, start: str, end: str) -> int:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (end, start)
        ).fetchone()
    assert row is not None
    return int(row[0])


def per_job_counters(
    admin_url: str, before: DbCounters, after: DbCounters, jobs: int, extra_xacts: int = 0
) -> dict[str, float]:
    """What the database did per job during a phase. `extra_xacts` are the monitor's own
    polling transactions, subtracted. WAL bytes are server-wide (other activity counts too)."""
    return {
        "transactions": round((after.xacts - before.xacts - extra_xacts) / jobs, 3),
        "rows_inserted": round((after.inserted - before.inserted) / jobs, 3),
        "rows_updated": round((after.updated - before.updated) / jobs, 3),
        "rows_deleted": round((after.deleted - before.deleted) / jobs, 3),
        "wal_bytes": round(wal_bytes(admin_url, before.wal_lsn, after.wal_lsn) / jobs, 1),
    }


def wait_for_stats_flush() -> None:
    """Closed backends report their counters as they exit; give them a moment."""
    time.sleep(0.5)


# -- enqueue -------------------------------------------------------------------------------------


def html_body(reference_id: str) -> str:
    return (
        "<!doctype html><html><head><title>Listing "
        f"{reference_id}</title></head><body><h1>Listing {reference_id}</h1>"
        f"<p>Price: {len(reference_id) * 7} EUR. A small scraped page for the benchmark.</p>"
        "</body></html>"
    )


def submissions(prefix: str, count: int) -> list[ScrapeSubmission]:
    """`count` scraped pages, each its own reference (so every one is new work)."""
    return [
        ScrapeSubmission(
            source="bench",
            reference_id=f"{prefix}-{i}",
            url=f"https://shop.example/listing/{prefix}-{i}",
            status=200,
            content_type="text/html; charset=utf-8",
            body=html_body(f"{prefix}-{i}"),
        )
        for i in range(count)
    ]


def payloads(prefix: str, count: int) -> list[dict[str, Any]]:
    return [{"reference_id": f"{prefix}-{i}"} for i in range(count)]


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _store(prepared: list[PreparedRecord], now: datetime) -> Callable[[UnitOfWork], Any]:
    def work(uow: UnitOfWork) -> list[EnqueueResult]:
        return scrape_storage.store_and_hand_off(uow, prepared, now=now, actor=ACTOR)

    return work


def handoff_enqueue(db: Database, batches: Sequence[Sequence[ScrapeSubmission]]) -> None:
    """What the submit endpoint does per call: prepare (hash) the batch, then persist the
    records and their handoffs in one transaction."""
    for batch in batches:
        now = datetime.now(UTC)
        prepared = scrape_storage.prepare_all(batch, now=now, max_body_bytes=MAX_BODY_BYTES)
        results = db.run(_store(prepared, now))
        if len(results) != len(batch):  # pragma: no cover - a broken run must not report
            raise RuntimeError(f"expected {len(batch)} results, got {len(results)}")


async def procrastinate_enqueue(
    app: procrastinate.App, batches: Sequence[Sequence[dict[str, Any]]]
) -> None:
    deferrer = app.configure_task(TASK_NAME)
    for batch in batches:
        if len(batch) == 1:
            await deferrer.defer_async(**batch[0])
        else:
            await deferrer.batch_defer_async(*batch)


def run_enqueue(system: System, url: str, batches: Sequence[Sequence[Any]]) -> float:
    """Enqueue `batches` with a fresh, already connected client; returns the seconds taken.
    The client is closed before returning (its backend exits and flushes its counters)."""
    if system == "handoff":
        db = Database(url, pool_size=1)
        try:
            db.ping()
            started = time.perf_counter()
            handoff_enqueue(db, batches)
            return time.perf_counter() - started
        finally:
            db.dispose()

    async def go() -> float:
        app = make_procrastinate_app(url, 1)
        async with app.open_async():
            await app.check_connection_async()
            started = time.perf_counter()
            await procrastinate_enqueue(app, batches)
            return time.perf_counter() - started

    return asyncio.run(go())


def make_batches(system: System, prefix: str, count: int, size: int) -> list[Sequence[Any]]:
    items: Sequence[Any] = (
        submissions(prefix, count) if system == "handoff" else payloads(prefix, count)
    )
    return chunks(items, size)


def enqueue_phase(
    system: System, admin_url: str, name: str, count: int, size: int, warmup_calls: int
) -> dict[str, Any]:
    url = db_url(admin_url, name)
    reset_tables(system, url)
    tag = uuid.uuid4().hex[:6]
    # Warm-up: the same calls on the same tables, untimed (connections, plans, caches).
    run_enqueue(system, url, make_batches(system, f"warm{tag}", warmup_calls * size, size))
    settle(system, url)
    batches = make_batches(system, f"run{tag}", count, size)  # built before the clock starts
    wait_for_stats_flush()
    before = read_counters(admin_url, name)
    load = _loadavg()
    seconds = run_enqueue(system, url, batches)
    wait_for_stats_flush()
    after = read_counters(admin_url, name)
    queued = scalar(url, QUEUED_SQL[system])
    if queued != count + warmup_calls * size:
        raise RuntimeError(
            f"{system}: {queued} jobs queued, expected {count + warmup_calls * size}"
        )
    return {
        "jobs": count,
        "calls": len(batches),
        "seconds": round(seconds, 4),
        "jobs_per_s": round(count / seconds, 1),
        "loadavg_1m_before": load,
        "per_job": per_job_counters(admin_url, before, after, count),
    }


# -- drain ---------------------------------------------------------------------------------------


def prefill(system: System, url: str, count: int) -> None:
    run_enqueue(
        system, url, make_batches(system, f"fill{uuid.uuid4().hex[:6]}", count, PREFILL_CHUNK)
    )


@dataclass
class Child:
    system: System
    process: subprocess.Popen[str]
    stderr: IO[str]

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def expect(self, line: str, timeout: float = 60.0) -> None:
        assert self.process.stdout is not None
        got: list[str] = []
        reader = threading.Thread(
            target=lambda: got.append(
                self.process.stdout.readline() if self.process.stdout else ""
            ),
            daemon=True,  # left blocked on a silent worker, it must not keep us alive
        )
        reader.start()
        reader.join(timeout)
        if not got or got[0].strip() != line:
            raise RuntimeError(
                f"{self.system} worker did not say {line!r} (got {got!r}): {self.tail()}"
            )

    def tail(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()[-3000:]


def spawn(system: System, url: str, tuning: Tuning) -> Child:
    # The worker's log, shown if it fails; closed by stop_children.
    err = tempfile.TemporaryFile("w+")  # noqa: SIM115
    process = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            system,
            "--child-url",
            url,
            "--concurrency",
            str(tuning.concurrency),
            "--poll",
            str(tuning.poll_seconds),
            *([] if tuning.listen_notify else ["--no-listen"]),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        cwd=REPO_ROOT,
    )
    return Child(system, process, err)


def stop_children(children: Sequence[Child]) -> None:
    for child in children:
        with contextlib.suppress(BrokenPipeError, OSError):
            child.send("stop")
            assert child.process.stdin is not None
            child.process.stdin.close()  # end of input also stops a worker not yet told to go
    for child in children:
        try:
            code = child.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
            raise RuntimeError(f"{child.system} worker did not stop: {child.tail()}") from None
        if code != 0:
            raise RuntimeError(f"{child.system} worker exited {code}: {child.tail()}")
        child.stderr.close()


@contextlib.contextmanager
def _spawned(system: System, url: str, processes: int, tuning: Tuning) -> Iterator[list[Child]]:
    """Workers starting while the block prepares their jobs; killed if the block fails."""
    children = [spawn(system, url, tuning) for _ in range(processes)]
    try:
        yield children
    except BaseException:
        for child in children:
            child.process.kill()
            child.process.wait()
            child.stderr.close()
        raise


def run_drain(system: System, url: str, children: Sequence[Child]) -> tuple[float, int]:
    """Release the (started, connected) workers all at once; returns the seconds until no job is
    left unfinished, and how many polls the monitor made. Stops the workers."""
    try:
        for child in children:
            child.expect("ready")
        with psycopg.connect(url, autocommit=True) as monitor:
            polls = 0
            started = time.perf_counter()
            for child in children:
                child.send("go")
            while True:
                row = monitor.execute(REMAINING_SQL[system]).fetchone()
                polls += 1
                assert row is not None
                if int(row[0]) == 0:
                    break
                if time.perf_counter() - started > DRAIN_TIMEOUT:
                    raise RuntimeError(f"{system} drain timed out with {row[0]} jobs left")
                for child in children:
                    if child.process.poll() is not None:
                        raise RuntimeError(f"{system} worker died: {child.tail()}")
                time.sleep(MONITOR_EVERY)
            seconds = time.perf_counter() - started
    finally:
        stop_children(children)
    return seconds, polls


def drain_phase(
    system: System,
    admin_url: str,
    name: str,
    count: int,
    processes: int,
    tuning: Tuning,
    warmup: int,
) -> dict[str, Any]:
    """Pre-fill `count` jobs into emptied tables and drain them with `processes` workers. The
    workers start (import, connect, LISTEN) while the tables are filled, and wait to be told to
    go. A `warmup` > 0 first runs an untimed drain of that many jobs the same way."""
    url = db_url(admin_url, name)
    if warmup:
        with _spawned(system, url, processes, tuning) as children:
            reset_tables(system, url)
            prefill(system, url, warmup)
        run_drain(system, url, children)
    with _spawned(system, url, processes, tuning) as children:
        reset_tables(system, url)
        prefill(system, url, count)
        settle(system, url)
        wait_for_stats_flush()
        before = read_counters(admin_url, name)
    load = _loadavg()
    seconds, polls = run_drain(system, url, children)
    wait_for_stats_flush()
    after = read_counters(admin_url, name)
    done = scalar(url, DONE_SQL[system])
    if done != count:
        raise RuntimeError(f"{system}: {done} jobs succeeded, expected {count}")
    return {
        "jobs": count,
        "processes": processes,
        "concurrency": tuning.concurrency,
        "seconds": round(seconds, 4),
        "jobs_per_s": round(count / seconds, 1),
        "loadavg_1m_before": load,
        # Includes the workers' start-up (register, rescuer, first claims) and heartbeat rows;
        # excludes the monitor's polls.
        "per_job": per_job_counters(admin_url, before, after, count, extra_xacts=polls),
    }


def _loadavg() -> float:
    """Other work on this 2-core machine skews figures; each run records the load it met."""
    return round(os.getloadavg()[0], 2)


# -- worker subprocesses -------------------------------------------------------------------------


def _read_stdin_until(word: str) -> None:
    for line in sys.stdin:
        if line.strip() == word:
            return


def _say(word: str) -> None:
    sys.stdout.write(word + "\n")
    sys.stdout.flush()


def handoff_worker_config(tuning: Tuning) -> WorkerConfig:
    """The app's defaults (prefetch, claim batch, lease, ...) but for the shared settings."""
    return WorkerConfig(concurrency=tuning.concurrency, poll_every=tuning.poll_seconds)


def described(config: WorkerConfig) -> dict[str, Any]:
    """A worker configuration as JSON: every field, as the app defines them at this commit."""
    return {
        f.name: str(getattr(config, f.name))
        if not isinstance(getattr(config, f.name), int | float | bool)
        else getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.name != "policy"
    }


def child_handoff(url: str, tuning: Tuning) -> None:
    app_log.configure(json=True, level="WARNING")
    # As `handoff worker` sizes it: the loop thread and each handler thread may hold one.
    db = Database(url, pool_size=tuning.concurrency + 2)
    db.ping()
    worker = Worker(db, NoopHandler(), config=handoff_worker_config(tuning))
    stop = threading.Event()
    if tuning.listen_notify:
        listener = Listener(url, worker.wake, stop)
        listener.start()
        if not listener.listening.wait(30):
            raise RuntimeError("the handoff listener did not connect")
    _say("ready")
    _read_stdin_until("go")

    def stop_on_word() -> None:
        _read_stdin_until("stop")
        stop.set()
        worker.wake.set()

    threading.Thread(target=stop_on_word, daemon=True).start()
    worker.run(stop)
    db.dispose()


async def child_procrastinate(url: str, tuning: Tuning) -> None:
    loop = asyncio.get_running_loop()
    # Jobs in flight plus the worker's own heartbeat and abort polls; the LISTEN connection is
    # a separate one.
    app = make_procrastinate_app(url, tuning.concurrency + 2)
    async with app.open_async():
        await app.check_connection_async()
        _say("ready")
        await loop.run_in_executor(None, _read_stdin_until, "go")
        run = asyncio.create_task(
            app.run_worker_async(
                concurrency=tuning.concurrency,
                wait=True,
                listen_notify=tuning.listen_notify,
                fetch_job_polling_interval=tuning.poll_seconds,
                install_signal_handlers=False,
                delete_jobs="never",
            )
        )
        await loop.run_in_executor(None, _read_stdin_until, "stop")
        run.cancel()  # Procrastinate's graceful stop: no new fetches, in-flight jobs finish
        with contextlib.suppress(asyncio.CancelledError):
            await run


def run_child(system: System, url: str, tuning: Tuning) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if system == "handoff":
        child_handoff(url, tuning)
    else:
        asyncio.run(child_procrastinate(url, tuning))


# -- the whole run -------------------------------------------------------------------------------


PG_SETTINGS = (
    "server_version",
    "shared_buffers",
    "fsync",
    "synchronous_commit",
    "wal_level",
    "max_wal_size",
    "jit",
    "max_connections",
)


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    return done.stdout


def machine_info(admin_url: str) -> dict[str, Any]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name, setting || coalesce(' ' || unit, '') FROM pg_settings"
            " WHERE name = ANY(%s) ORDER BY name",
            (list(PG_SETTINGS),),
        ).fetchall()
        settings = {str(name): str(value) for name, value in rows}
        version_row = conn.execute("SELECT version()").fetchone()
    commit = _git("rev-parse", "HEAD").strip()
    # Uncommitted changes to the code under test, if any, are part of what was measured.
    dirty = _git("status", "--porcelain", "--", "app", "db").splitlines()
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgresql": str(version_row[0]) if version_row else "?",
        "postgresql_settings": settings,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "libraries": {
            name: importlib.metadata.version(name)
            for name in ("procrastinate", "psycopg", "psycopg-pool", "sqlalchemy")
        },
        "handoff_commit": commit or None,
        "handoff_uncommitted_changes": [line.strip() for line in dirty],
    }


@dataclass
class Report:
    runs: dict[str, dict[System, list[dict[str, Any]]]] = field(default_factory=dict)

    def add(self, figure: str, system: System, result: dict[str, Any]) -> None:
        self.runs.setdefault(figure, {"handoff": [], "procrastinate": []})[system].append(result)


#: handoff / procrastinate jobs-per-second ratios the product aims for.
AIMS = {"enqueue_per_row": 1.0, "enqueue_batched": 1.0, "drain": 3.0}


def summarise(report: Report) -> dict[str, Any]:
    """Median jobs/s over the repeats, per figure and system, and the ratios."""
    out: dict[str, Any] = {}
    for figure, by_system in report.runs.items():
        entry: dict[str, Any] = {}
        for system in SYSTEMS:
            runs = by_system[system]
            rates = [r["jobs_per_s"] for r in runs]
            median = statistics.median(rates)
            chosen = min(runs, key=lambda r: abs(r["jobs_per_s"] - median))
            entry[system] = {
                "jobs_per_s": round(median, 1),
                "runs_jobs_per_s": rates,
                "per_job": chosen["per_job"],
                "jobs": chosen["jobs"],
            }
        ratio = entry["handoff"]["jobs_per_s"] / entry["procrastinate"]["jobs_per_s"]
        entry["ratio"] = round(ratio, 3)
        aim = AIMS[figure.split("_")[0] if figure.startswith("drain") else figure]
        entry["aim"] = aim
        entry["aim_met"] = ratio >= aim
        out[figure] = entry
    return out


def bench(args: argparse.Namespace) -> dict[str, Any]:
    sizes = QUICK if args.quick else FULL
    sizes = Sizes(
        per_row=args.per_row or sizes.per_row,
        batched=args.batched or sizes.batched,
        batch_size=args.batch_size,
        drain=args.drain or sizes.drain,
        warmup_per_row=sizes.warmup_per_row,
        warmup_batches=sizes.warmup_batches,
        warmup_drain=sizes.warmup_drain,
        repeat=args.repeat or sizes.repeat,
    )
    tuning = Tuning(concurrency=args.concurrency, poll_seconds=args.poll)
    admin_url: str = args.admin_url
    suffix = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
    names: dict[System, str] = {s: f"bench_{s}_{suffix}" for s in SYSTEMS}
    started = time.perf_counter()
    info = machine_info(admin_url)
    report = Report()
    try:
        for system in SYSTEMS:
            create_database(admin_url, names[system])
            set_up_schema(system, db_url(admin_url, names[system]))
        for round_no in range(sizes.repeat):
            first = round_no == 0
            phases: list[tuple[str, Callable[[System], dict[str, Any]]]] = [
                (
                    "enqueue_per_row",
                    lambda system: enqueue_phase(
                        system, admin_url, names[system], sizes.per_row, 1, sizes.warmup_per_row
                    ),
                ),
                (
                    "enqueue_batched",
                    lambda system: enqueue_phase(
                        system,
                        admin_url,
                        names[system],
                        sizes.batched,
                        sizes.batch_size,
                        sizes.warmup_batches,
                    ),
                ),
                *(
                    (
                        f"drain_{processes}x{tuning.concurrency}",
                        partial(
                            _drain_for,
                            admin_url=admin_url,
                            names=names,
                            count=sizes.drain,
                            processes=processes,
                            tuning=tuning,
                            # Drains warm up in the first round only: later ones start warm.
                            warmup=sizes.warmup_drain if first else 0,
                        ),
                    )
                    for processes in (1, 2)
                ),
            ]
            for index, (figure, phase) in enumerate(phases):
                # Both systems back to back, alternating which goes first, so drift (other
                # load on the machine, caches) hits both alike.
                order = SYSTEMS if (round_no + index) % 2 == 0 else SYSTEMS[::-1]
                for system in order:
                    _progress(
                        f"{time.perf_counter() - started:6.1f}s round {round_no + 1}/"
                        f"{sizes.repeat} {figure} {system}"
                    )
                    report.add(figure, system, phase(system))
    finally:
        if not args.keep_databases:
            for name in names.values():
                drop_database(admin_url, name)
    info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return {
        "benchmark": "handoff core vs procrastinate",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "bench/core_vs_procrastinate.py", *sys.argv[1:]]),
        "mode": "quick" if args.quick else "full",
        "machine": info,
        "sizes": {
            "enqueue_per_row_jobs": sizes.per_row,
            "enqueue_batched_jobs": sizes.batched,
            "batch_size": sizes.batch_size,
            "drain_jobs": sizes.drain,
            "warmup_per_row_calls": sizes.warmup_per_row,
            "warmup_batched_calls": sizes.warmup_batches,
            "warmup_drain_jobs": sizes.warmup_drain,
            "repeat": sizes.repeat,
        },
        "configuration": {
            "concurrency_per_process": tuning.concurrency,
            "poll_seconds": tuning.poll_seconds,
            "listen_notify": tuning.listen_notify,
            "handoff": {
                "worker": "app.worker.runner.Worker + NoopHandler, WorkerConfig defaults except "
                "concurrency and poll_every; Listener thread on; Database pool of "
                "concurrency+2 (as `handoff worker`)",
                "worker_config": described(handoff_worker_config(tuning)),
                "engine_pool_pre_ping": _handoff_pre_ping(admin_url),
                "enqueue": "prepare_all + store_and_hand_off per Database.run (pool_size=1)",
            },
            "procrastinate": {
                "worker": "App.run_worker_async(concurrency, wait=True, listen_notify, "
                "fetch_job_polling_interval=poll, delete_jobs='never'), async no-op task, "
                "PsycopgConnector pool of concurrency+2",
                "enqueue": "defer_async / batch_defer_async (pool of 1)",
            },
        },
        "figures": summarise(report),
        "runs": report.runs,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def _handoff_pre_ping(url: str) -> bool:
    """Whether the app's engine checks each connection at checkout (a round trip)."""
    db = Database(url, pool_size=1)
    try:
        return bool(getattr(db.engine.pool, "_pre_ping", False))
    finally:
        db.dispose()


def _drain_for(
    system: System,
    *,
    admin_url: str,
    names: dict[System, str],
    count: int,
    processes: int,
    tuning: Tuning,
    warmup: int,
) -> dict[str, Any]:
    return drain_phase(system, admin_url, names[system], count, processes, tuning, warmup)


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, help="also write the JSON result to this file")
    parser.add_argument("--quick", action="store_true", help="a ~30 s smoke run")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="a database to connect to")
    parser.add_argument("--per-row", type=int, help="jobs enqueued one per call")
    parser.add_argument("--batched", type=int, help="jobs enqueued in batches")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--drain", type=int, help="jobs pre-filled for each drain")
    parser.add_argument("--repeat", type=int, help="rounds; figures are medians")
    parser.add_argument("--concurrency", type=int, default=4, help="handler slots per worker")
    parser.add_argument("--poll", type=float, default=1.0, help="worker polling interval (s)")
    parser.add_argument("--keep-databases", action="store_true", help="do not drop them")
    parser.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--child-url", help=argparse.SUPPRESS)
    parser.add_argument("--no-listen", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        tuning = Tuning(args.concurrency, args.poll, listen_notify=not args.no_listen)
        run_child(args.child, args.child_url, tuning)
        return
    # As in the worker children: warnings only, so per-handoff log lines (one per enqueued
    # version at INFO) are not part of what is timed.
    app_log.configure(json=True, level="WARNING")
    result = bench(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
