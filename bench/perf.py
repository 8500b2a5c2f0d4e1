"""Handoff vs Procrastinate vs a raw-SQL queue: one PostgreSQL server, one run, side by side.

Run from the repository root:

    .venv/bin/python bench/perf.py --out docs/bench-perf.json --docs   # full run
    .venv/bin/python bench/perf.py --quick                              # smoke run, under 1 min

Three systems, each in its own fresh database on the server (created and dropped here):

* handoff: the app's real service functions (`prepare_all` + `submit`) and worker
  (`app.worker.runner.Worker` + `NoopHandler`, `Listener` for LISTEN/NOTIFY);
* procrastinate: Procrastinate 3.10.0 (`defer_async` / `batch_defer_async`, `run_worker_async`);
* raw_sql: the minimal queue on psycopg 3, the practical limit of this machine: a `raw_jobs`
  table; `INSERT … ON CONFLICT DO NOTHING` to enqueue; `UPDATE … WHERE id IN (SELECT … FOR
  UPDATE SKIP LOCKED LIMIT 1) RETURNING` to claim; `UPDATE … SET status = done` to finish, one
  transaction each; a statement-level trigger NOTIFYs on insert.

Figures (see docs/benchmarks.md, "Performance harness"):

1. enqueue (jobs/s): per row from 1 client and from 4 client processes, batched (100 per call),
   and with 50 % duplicates (half the rows already enqueued), per row and batched;
2. drain (jobs/s) with a no-op handler: 1 process x 4 and 2 processes x 4;
3. pickup latency (ms, enqueue -> handler start) p50/p95/p99 at a paced rate, LISTEN/NOTIFY on;
4. claim cost (ms per claim) with 10,000 / 100,000 / 1,000,000 queued rows, and Handoff's claim
   plan (EXPLAIN ANALYZE, BUFFERS) at the largest backlog;
5. Handoff and the raw reference on SQLite (a file in a temp dir): enqueue and drain.

Every timed phase starts from the same state (emptied tables, VACUUM ANALYZE, CHECKPOINT), after
an untimed warm-up (and, for enqueues, half the phase's job count queued); systems run back to
back, alternating which goes first; figures are medians over the rounds. Ratios are handoff /
procrastinate and handoff / raw_sql (above 1: Handoff is faster, or for latencies and claim
times, slower).

The script also runs itself as a worker subprocess (`--child SYSTEM`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import multiprocessing
import os
import platform
import queue
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import procrastinate
import psycopg
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate.jobs import Status as ProcrastinateStatus
from psycopg import sql
from psycopg.types.json import Jsonb

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere: `app` is the repo's package
    sys.path.insert(0, str(REPO_ROOT))

from app import log as app_log  # noqa: E402
from app.db import migrations  # noqa: E402
from app.db.uow import Database  # noqa: E402
from app.domain import payload as payload_mod  # noqa: E402
from app.domain.models import ClaimedJob, Lease  # noqa: E402
from app.domain.records import ScrapeSubmission  # noqa: E402
from app.heap import freeze_startup_heap  # noqa: E402
from app.services import ingestion, scrape_storage  # noqa: E402
from app.worker.runner import Worker, WorkerConfig  # noqa: E402

# Procrastinate warns when an App is built in `__main__` (tasks named by module path would not
# be found by workers); the benchmark's task has an explicit name, so the warning is noise.
logging.getLogger("procrastinate.blueprints").setLevel(logging.ERROR)

System = Literal["handoff", "procrastinate", "raw_sql"]
SYSTEMS: tuple[System, ...] = ("handoff", "procrastinate", "raw_sql")
LiteSystem = Literal["handoff", "raw_sql"]
LITE_SYSTEMS: tuple[LiteSystem, ...] = ("handoff", "raw_sql")
ChildKind = Literal["handoff", "procrastinate", "raw_sql", "raw_sqlite"]

DEFAULT_ADMIN_URL = os.environ.get(
    "HANDOFF_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MIGRATIONS_DIR = REPO_ROOT / "db" / "migrations"
TASK_NAME = "bench_noop"
ACTOR = "client:bench"
MAX_BODY_BYTES = 20 * 1024 * 1024
PREFILL_CHUNK = 500  # Handoff's default max batch; all systems pre-fill drains in chunks of it
MONITOR_EVERY = 0.05  # seconds between "how many jobs are left" polls during a drain (~1 ms each)
DRAIN_TIMEOUT = 600.0
CONTENT_TYPE = "text/html; charset=utf-8"

HANDOFF_TABLES = ("scrape_records", "ingestion_handoffs", "handoff_events", "ingestion_jobs")
HANDOFF_TABLES_ALL = (*HANDOFF_TABLES, "documents")
PROCRASTINATE_TABLES = (
    "procrastinate_jobs",
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_workers",
)
RAW_TABLES = ("raw_jobs",)
TABLES: dict[System, tuple[str, ...]] = {
    "handoff": HANDOFF_TABLES_ALL,
    "procrastinate": PROCRASTINATE_TABLES,
    "raw_sql": RAW_TABLES,
}
VACUUMED: dict[System, tuple[str, ...]] = {
    "handoff": HANDOFF_TABLES,
    "procrastinate": PROCRASTINATE_TABLES[:2],
    "raw_sql": RAW_TABLES,
}
REMAINING_SQL: dict[str, str] = {
    "handoff": "SELECT count(*) FROM ingestion_handoffs"
    " WHERE state IN ('queued', 'running', 'retry_wait', 'waiting')",
    "procrastinate": "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')",
    "raw_sql": "SELECT count(*) FROM raw_jobs WHERE status < 2",
}
DONE_SQL: dict[str, str] = {
    "handoff": "SELECT count(*) FROM ingestion_handoffs WHERE state = 'succeeded'",
    "procrastinate": "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'",
    "raw_sql": "SELECT count(*) FROM raw_jobs WHERE status = 2",
}
QUEUED_SQL: dict[str, str] = {
    "handoff": "SELECT count(*) FROM ingestion_handoffs WHERE state = 'queued'",
    "procrastinate": "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'",
    "raw_sql": "SELECT count(*) FROM raw_jobs WHERE status = 0",
}

# -- the raw-SQL reference -------------------------------------------------------------------------

# status: 0 queued, 1 running, 2 done. `job_key` is the dedup key (ON CONFLICT target).
RAW_SCHEMA_PG = """
CREATE TABLE raw_jobs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_key     TEXT NOT NULL UNIQUE,
    payload     JSONB NOT NULL,
    status      SMALLINT NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    claimed_at  TIMESTAMPTZ,
    done_at     TIMESTAMPTZ
);
CREATE INDEX raw_jobs_queued ON raw_jobs (id) WHERE status = 0;
CREATE FUNCTION raw_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('raw_jobs', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER raw_jobs_notify AFTER INSERT ON raw_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION raw_jobs_notify();
"""
RAW_ENQUEUE_PG = (
    "INSERT INTO raw_jobs (job_key, payload)"
    " SELECT * FROM unnest(%s::text[], %s::jsonb[]) ON CONFLICT (job_key) DO NOTHING"
)
RAW_CLAIM_PG = (
    "UPDATE raw_jobs SET status = 1, claimed_at = now() WHERE id IN"
    " (SELECT id FROM raw_jobs WHERE status = 0 ORDER BY id FOR UPDATE SKIP LOCKED LIMIT %s)"
    " RETURNING id, payload"
)
RAW_FINISH_PG = "UPDATE raw_jobs SET status = 2, done_at = now() WHERE id = %s"

RAW_SCHEMA_SQLITE = """
CREATE TABLE raw_jobs (
    id          INTEGER PRIMARY KEY,
    job_key     TEXT NOT NULL UNIQUE,
    payload     TEXT NOT NULL,
    status      INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    claimed_at  TEXT,
    done_at     TEXT
);
CREATE INDEX raw_jobs_queued ON raw_jobs (id) WHERE status = 0;
"""
RAW_ENQUEUE_SQLITE = "INSERT INTO raw_jobs (job_key, payload) VALUES (?, ?) ON CONFLICT DO NOTHING"
RAW_CLAIM_SQLITE = (
    "UPDATE raw_jobs SET status = 1, claimed_at = CURRENT_TIMESTAMP WHERE id IN"
    " (SELECT id FROM raw_jobs WHERE status = 0 ORDER BY id LIMIT ?) RETURNING id, payload"
)
RAW_FINISH_SQLITE = "UPDATE raw_jobs SET status = 2, done_at = CURRENT_TIMESTAMP WHERE id = ?"


def sqlite_connect(path: str) -> sqlite3.Connection:
    """The same pragmas as the app's SQLite engine (WAL, synchronous=NORMAL)."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


# -- sizes and configuration -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sizes:
    per_row: int
    batched: int
    batch_size: int
    clients: int
    drain: int
    warmup_per_row: int
    warmup_batches: int
    warmup_drain: int
    repeat: int
    latency_rate: float
    latency_seconds: float
    latency_warmup_seconds: float
    backlogs: tuple[int, ...]
    claims: int
    sqlite_per_row: int
    sqlite_batched: int
    sqlite_drain: int
    drain_processes: tuple[int, ...] = (1, 2)


FULL = Sizes(
    # Each enqueue phase runs for a few seconds (2,000 per-row jobs took about one): on this
    # machine, shorter ones drifted by as much as half from round to round.
    per_row=5_000,
    batched=50_000,
    batch_size=100,
    clients=4,
    drain=5_000,
    warmup_per_row=200,
    warmup_batches=10,
    warmup_drain=500,
    repeat=5,
    latency_rate=200.0,
    latency_seconds=15.0,
    latency_warmup_seconds=2.0,
    backlogs=(10_000, 100_000, 1_000_000),
    claims=300,
    sqlite_per_row=2_000,
    sqlite_batched=20_000,
    sqlite_drain=5_000,
)
QUICK = Sizes(
    per_row=100,
    batched=1_000,
    batch_size=100,
    clients=4,
    drain=400,
    warmup_per_row=20,
    warmup_batches=2,
    warmup_drain=0,
    repeat=1,
    latency_rate=200.0,
    latency_seconds=1.5,
    latency_warmup_seconds=0.3,
    backlogs=(1_000, 10_000),
    claims=30,
    sqlite_per_row=100,
    sqlite_batched=1_000,
    sqlite_drain=400,
    drain_processes=(1,),  # the 2-process drains run the same code: left to full runs
)


@dataclass(frozen=True, slots=True)
class Tuning:
    """Worker settings applied to every system alike."""

    concurrency: int = 4
    poll_seconds: float = 1.0  # Handoff poll_every == Procrastinate fetch_job_polling_interval
    listen_notify: bool = True  # Handoff Listener thread / Procrastinate listen_notify / raw


# -- databases -------------------------------------------------------------------------------------


def db_url(admin_url: str, name: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


def admin_execute(admin_url: str, statement: sql.Composed) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(statement)


def create_database(admin_url: str, name: str) -> None:
    drop_database(admin_url, name)
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
    elif system == "raw_sql":
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(RAW_SCHEMA_PG.encode())
    else:

        async def apply() -> None:
            app = make_procrastinate_app(url, 1)
            async with app.open_async():
                await app.schema_manager.apply_schema_async()

        asyncio.run(apply())


def reset_tables(system: System, url: str) -> None:
    """Empty the system's tables so every phase starts from the same state."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in TABLES[system])
            )
        )


def settle(system: System, url: str, *, analyze: bool = True, checkpoint: bool = True) -> None:
    """VACUUM ANALYZE the system's tables and CHECKPOINT: fresh statistics, no dead rows, no
    checkpoint debt carried into the timed phase. Without `analyze`, statistics are left to
    autovacuum, as in production: for tables about to fill from empty (see `latency_phase`).
    Without `checkpoint`, the pages written since the last one need no full-page image when
    they are written again (see `--claims-without-checkpoint`)."""
    vacuum = "VACUUM ANALYZE {}" if analyze else "VACUUM {}"
    with psycopg.connect(url, autocommit=True) as conn:
        for table in VACUUMED[system]:
            conn.execute(sql.SQL(vacuum).format(sql.Identifier(table)))
        if checkpoint:
            conn.execute("CHECKPOINT")


def analyze(system: System, url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for table in VACUUMED[system]:
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))


def scalar(url: str, query: str) -> int:
    """One integer from a PostgreSQL URL or a SQLite file path."""
    if url.startswith("postgresql"):
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(query.encode()).fetchone()
    else:
        conn_lite = sqlite3.connect(url, timeout=30)
        try:
            row = conn_lite.execute(query).fetchone()
        finally:
            conn_lite.close()
    assert row is not None
    return int(row[0])


# -- what the database did (pg_stat_database of the system's own database) -------------------------


@dataclass(frozen=True, slots=True)
class DbCounters:
    xacts: int
    inserted: int
    updated: int
    deleted: int
    wal_lsn: str


def read_counters(admin_url: str, name: str) -> DbCounters:
    """Counters of database `name`, read from the admin database so reading them does not
    count. Backends flush their counters when they exit: callers close their clients first."""
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
    time.sleep(0.3)


def _loadavg() -> float:
    """Other work on this 2-core machine skews figures; each run records the load it met."""
    return round(os.getloadavg()[0], 2)


# -- jobs to enqueue -------------------------------------------------------------------------------


def html_body(reference_id: str) -> str:
    return (
        "<!doctype html><html><head><title>Listing "
        f"{reference_id}</title></head><body><h1>Listing {reference_id}</h1>"
        f"<p>Price: {len(reference_id) * 7} EUR. A small scraped page for the benchmark.</p>"
        "</body></html>"
    )


def reference_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(count)]


def make_items(system: System, refs: Sequence[str]) -> list[Any]:
    """What each system's client enqueues for one job: Handoff a scraped page (the record is
    persisted too), Procrastinate the task's kwargs, raw SQL a (key, payload) pair."""
    if system == "handoff":
        return [
            ScrapeSubmission(
                source="bench",
                reference_id=ref,
                url=f"https://shop.example/listing/{ref}",
                status=200,
                content_type=CONTENT_TYPE,
                body=html_body(ref),
            )
            for ref in refs
        ]
    if system == "procrastinate":
        return [{"reference_id": ref} for ref in refs]
    return [(ref, {"reference_id": ref}) for ref in refs]


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def item_ref(item: Any) -> str:
    if isinstance(item, ScrapeSubmission):
        return str(item.reference_id)
    if isinstance(item, dict):
        return str(item["reference_id"])
    return str(item[0])


# -- enqueue clients -------------------------------------------------------------------------------


class Client(Protocol):
    def enqueue_all(self, batches: Sequence[Sequence[Any]]) -> None: ...

    def close(self) -> None: ...


class HandoffClient:
    """What the submit endpoint does per call: prepare (hash) the batch, then persist the
    records and their handoffs in one transaction."""

    def __init__(self, url: str) -> None:
        self.db = Database(url, pool_size=1)
        self.db.ping()  # connected before the clock starts, as the other systems' clients are:
        if self.db.dialect == "postgresql":  # the pool's, and the autocommit lane's
            self.db.execute_whole("SELECT 1 AS ok", {})

    def enqueue_all(self, batches: Sequence[Sequence[Any]]) -> None:
        for batch in batches:
            now = datetime.now(UTC)
            prepared = scrape_storage.prepare_all(batch, now=now, max_body_bytes=MAX_BODY_BYTES)
            results = scrape_storage.submit(self.db, prepared, now=now, actor=ACTOR)
            if len(results) != len(batch):  # pragma: no cover - a broken run must not report
                raise RuntimeError(f"expected {len(batch)} results, got {len(results)}")

    def close(self) -> None:
        self.db.dispose()


class ProcrastinateClient:
    """`defer_async` per job, `batch_defer_async` per batch. With `locked`, each job carries a
    queueing lock (its reference): a second defer of a queued job raises AlreadyEnqueued,
    which is Procrastinate's way of refusing a duplicate (caught and counted as done)."""

    def __init__(self, url: str, *, locked: bool = False) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = make_procrastinate_app(url, 1)
        self.locked = locked
        self.loop.run_until_complete(self.app.open_async())
        self.loop.run_until_complete(self.app.check_connection_async())

    async def _enqueue(self, batches: Sequence[Sequence[Any]]) -> None:
        deferrer = self.app.configure_task(TASK_NAME)
        for batch in batches:
            if self.locked:
                if len(batch) != 1:
                    raise ValueError("a queueing lock is per job: per-row defers only")
                job = batch[0]
                locked = self.app.configure_task(TASK_NAME, queueing_lock=job["reference_id"])
                with contextlib.suppress(procrastinate_exceptions.AlreadyEnqueued):
                    await locked.defer_async(**job)
            elif len(batch) == 1:
                await deferrer.defer_async(**batch[0])
            else:
                await deferrer.batch_defer_async(*batch)

    def enqueue_all(self, batches: Sequence[Sequence[Any]]) -> None:
        self.loop.run_until_complete(self._enqueue(batches))

    def close(self) -> None:
        self.loop.run_until_complete(self.app.close_async())
        self.loop.close()


class RawClient:
    """One `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING` per call (autocommit)."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)

    def enqueue_all(self, batches: Sequence[Sequence[Any]]) -> None:
        for batch in batches:
            keys = [key for key, _ in batch]
            payloads = [Jsonb(body) for _, body in batch]
            self.conn.execute(RAW_ENQUEUE_PG, (keys, payloads), prepare=True)

    def close(self) -> None:
        self.conn.close()


class RawSqliteClient:
    """`INSERT … ON CONFLICT DO NOTHING` (executemany) in one transaction per call."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite_connect(path)

    def enqueue_all(self, batches: Sequence[Sequence[Any]]) -> None:
        for batch in batches:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                RAW_ENQUEUE_SQLITE, [(key, json.dumps(body)) for key, body in batch]
            )
            self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


ClientKind = Literal["handoff", "procrastinate", "procrastinate_locked", "raw_sql", "raw_sqlite"]


def open_client(kind: ClientKind, url: str) -> Client:
    if kind == "handoff":
        return HandoffClient(url)
    if kind == "procrastinate":
        return ProcrastinateClient(url)
    if kind == "procrastinate_locked":
        return ProcrastinateClient(url, locked=True)
    if kind == "raw_sql":
        return RawClient(url)
    return RawSqliteClient(url)


def run_enqueue(kind: ClientKind, url: str, batches: Sequence[Sequence[Any]]) -> float:
    """Enqueue `batches` with a fresh, already connected client; returns the seconds taken.
    The client is closed before returning (its backend exits and flushes its counters)."""
    client = open_client(kind, url)
    try:
        started = time.perf_counter()
        client.enqueue_all(batches)
        return time.perf_counter() - started
    finally:
        client.close()


def _client_process(
    kind: ClientKind,
    url: str,
    batches: Sequence[Sequence[Any]],
    barrier: Any,
    out: Any,
) -> None:
    """One of N forked clients: connect, wait for the others, enqueue, report (start, end)."""
    client = open_client(kind, url)
    try:
        barrier.wait()
        started = time.time()
        client.enqueue_all(batches)
        out.put((started, time.time()))
    finally:
        client.close()


def _client_spans(
    kind: ClientKind, processes: Sequence[Any], out: Any
) -> list[tuple[float, float]]:
    """Each client's (start, end) as it reports them. A client that exits without reporting
    (it failed; its traceback is on stderr) fails the phase at once, not after the timeout."""
    spans: list[tuple[float, float]] = []
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while len(spans) < len(processes):
        try:
            spans.append(out.get(timeout=0.5))
        except queue.Empty:
            failed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"{kind} client exited {failed[0]} before reporting") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} clients did not finish in {DRAIN_TIMEOUT} s") from None
    return spans


def run_enqueue_parallel(
    kind: ClientKind, url: str, batches: Sequence[Sequence[Any]], clients: int
) -> float:
    """Enqueue `batches` split round robin over `clients` forked processes, each with its own
    connection; the time is from the first client starting to the last one finishing."""
    if clients == 1:
        return run_enqueue(kind, url, batches)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(clients)
    out = ctx.Queue()
    parts = [batches[i::clients] for i in range(clients)]
    processes = [
        ctx.Process(target=_client_process, args=(kind, url, part, barrier, out)) for part in parts
    ]
    for p in processes:
        p.start()
    try:
        spans = _client_spans(kind, processes, out)
    except BaseException:
        for p in processes:
            p.terminate()  # the others would wait at the barrier for the one that failed
            p.join(60)
        raise
    for p in processes:
        p.join(60)
        if p.exitcode != 0:
            raise RuntimeError(f"{kind} client exited {p.exitcode}")
    return float(max(end for _, end in spans) - min(start for start, _ in spans))


# -- enqueue phases --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnqueueSpec:
    """One enqueue figure: `count` jobs, `size` per call, from `clients` connections, of which
    a `duplicates` share (0 or 0.5) were enqueued (untimed) before."""

    count: int
    size: int
    clients: int
    duplicates: float
    warmup_calls: int


def client_kind(system: System, spec: EnqueueSpec) -> ClientKind:
    if system == "procrastinate":
        return "procrastinate_locked" if spec.duplicates else "procrastinate"
    return system


#: The share of a phase's job count queued (untimed) before its timed calls.
PREFILL_SHARE = 0.5


def prefill_refs(refs: Sequence[str], spec: EnqueueSpec) -> tuple[list[str], list[str]]:
    """What a phase queues before its clock starts: (its own jobs, other jobs). Every phase
    starts with as many jobs queued. With duplicates, those are every other job of the timed
    set, so each call meets duplicates and new jobs alike; without, as many other jobs, each
    keyed next to a timed one, so the timed inserts land on index pages as full, written
    before the CHECKPOINT, as the duplicates phase's new jobs do (a page's first change after
    one writes a full-page image). An all-new phase on empty tables had an easier start."""
    if spec.duplicates:
        return list(refs[:: round(1 / spec.duplicates)]), []
    return [], [f"{ref}p" for ref in refs[:: round(1 / PREFILL_SHARE)]]


def enqueue_phase(system: System, admin_url: str, name: str, spec: EnqueueSpec) -> dict[str, Any]:
    url = db_url(admin_url, name)
    kind = client_kind(system, spec)
    reset_tables(system, url)
    tag = uuid.uuid4().hex[:6]
    warm = spec.warmup_calls * spec.size
    # Warm-up: the same calls on the same tables, untimed (connections, plans, caches).
    run_enqueue(kind, url, chunks(make_items(system, reference_ids(f"w{tag}", warm)), spec.size))
    refs = reference_ids(f"r{tag}", spec.count)
    already, others = prefill_refs(refs, spec)
    run_enqueue(kind, url, chunks(make_items(system, already or others), spec.size))
    settle(system, url)
    batches = chunks(make_items(system, refs), spec.size)  # built before the clock starts
    wait_for_stats_flush()
    before = read_counters(admin_url, name)
    load = _loadavg()
    seconds = run_enqueue_parallel(kind, url, batches, spec.clients)
    wait_for_stats_flush()
    after = read_counters(admin_url, name)
    queued = scalar(url, QUEUED_SQL[system])
    if queued != warm + len(others) + spec.count:
        expected = warm + len(others) + spec.count
        raise RuntimeError(f"{system}: {queued} jobs queued, expected {expected}")
    return {
        "jobs": spec.count,
        "already_enqueued": len(already),
        "other_jobs_queued_before": len(others),
        "calls": len(batches),
        "clients": spec.clients,
        "seconds": round(seconds, 4),
        "jobs_per_s": round(spec.count / seconds, 1),
        "loadavg_1m_before": load,
        "per_job": per_job_counters(admin_url, before, after, spec.count),
    }


# -- worker subprocesses ---------------------------------------------------------------------------


def _read_stdin_until(word: str) -> None:
    for line in sys.stdin:
        if line.strip() == word:
            return


def _say(word: str) -> None:
    sys.stdout.write(word + "\n")
    sys.stdout.flush()


class StartLog:
    """Wall-clock time each job's handler started, by reference id (for pickup latency)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.starts: list[tuple[str, float]] = []
        self.lock = threading.Lock()

    def note(self, ref: str) -> None:
        if self.path is not None:
            at = time.time()
            with self.lock:
                self.starts.append((ref, at))

    def save(self) -> None:
        if self.path is not None:
            Path(self.path).write_text(json.dumps(self.starts))


class RecordingHandler:
    """The no-op handler, noting when each job started."""

    def __init__(self, starts: StartLog) -> None:
        self.starts = starts

    def __call__(self, job: ClaimedJob) -> None:
        self.starts.note(job.handoff.reference_id)


def handoff_worker_config(tuning: Tuning) -> WorkerConfig:
    """The app's defaults (prefetch, claim batch, lease, ...) but for the shared settings."""
    return WorkerConfig(concurrency=tuning.concurrency, poll_every=tuning.poll_seconds)


def described(config: WorkerConfig) -> dict[str, Any]:
    """A worker configuration as JSON: every field, as the app defines them at this commit."""
    return {
        f.name: getattr(config, f.name)
        if isinstance(getattr(config, f.name), int | float | bool)
        else str(getattr(config, f.name))
        for f in dataclasses.fields(config)
        if f.name != "policy"
    }


def child_handoff(url: str, tuning: Tuning, starts: StartLog) -> None:
    app_log.configure(json=True, level="WARNING")
    # As `handoff worker` sizes it: the loop, completer and rescuer threads and each handler
    # thread may hold one.
    db = Database(url, pool_size=tuning.concurrency + 3)
    db.ping()
    worker = Worker(db, RecordingHandler(starts), config=handoff_worker_config(tuning))
    stop = threading.Event()
    if tuning.listen_notify and url.startswith("postgresql"):
        listener = worker.start_listener(stop)
        if not listener.listening.wait(30):
            raise RuntimeError("the handoff listener did not connect")
    freeze_startup_heap()  # as `handoff worker` does once started
    _say("ready")
    _read_stdin_until("go")

    def stop_on_word() -> None:
        _read_stdin_until("stop")
        stop.set()
        worker.wake.set()

    threading.Thread(target=stop_on_word, daemon=True).start()
    worker.run(stop)
    db.dispose()


async def child_procrastinate(url: str, tuning: Tuning, starts: StartLog) -> None:
    loop = asyncio.get_running_loop()
    # Jobs in flight plus the worker's own heartbeat and abort polls; the LISTEN connection is
    # a separate one.
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=url, min_size=tuning.concurrency + 2, max_size=tuning.concurrency + 2
        )
    )

    async def noop(reference_id: str) -> None:
        starts.note(reference_id)

    app.task(name=TASK_NAME)(noop)
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


class RawWorker:
    """`concurrency` threads, each with its own connection: claim one job (one transaction),
    run the no-op handler, mark it done (one transaction). Idle threads wait for a
    notification (PostgreSQL) or poll every `poll_seconds`."""

    def __init__(self, target: str, tuning: Tuning, starts: StartLog, *, lite: bool) -> None:
        self.target = target
        self.tuning = tuning
        self.starts = starts
        self.lite = lite
        self.stop = threading.Event()
        self.wake = threading.Condition()
        self.generation = 0

    def _notified(self) -> None:
        with self.wake:
            self.generation += 1
            self.wake.notify_all()

    def listen(self, ready: threading.Event) -> None:
        with psycopg.connect(self.target, autocommit=True) as conn:
            conn.execute("LISTEN raw_jobs")
            ready.set()
            while not self.stop.is_set():
                for _ in conn.notifies(timeout=0.5):
                    self._notified()

    def slot(self) -> None:
        if self.lite:
            self._slot_sqlite()
        else:
            self._slot_pg()

    def _idle(self, seen: int) -> None:
        with self.wake:
            if self.generation == seen:
                self.wake.wait(self.tuning.poll_seconds)

    def _slot_pg(self) -> None:
        with psycopg.connect(self.target, autocommit=True) as conn:
            while not self.stop.is_set():
                seen = self.generation
                row = conn.execute(RAW_CLAIM_PG, (1,), prepare=True).fetchone()
                if row is None:
                    self._idle(seen)
                    continue
                self.starts.note(str(row[1]["reference_id"]))
                conn.execute(RAW_FINISH_PG, (row[0],), prepare=True)

    def _slot_sqlite(self) -> None:
        conn = sqlite_connect(self.target)
        try:
            while not self.stop.is_set():
                seen = self.generation
                conn.execute("BEGIN IMMEDIATE")
                row = conn.execute(RAW_CLAIM_SQLITE, (1,)).fetchone()
                conn.execute("COMMIT")
                if row is None:
                    self._idle(seen)
                    continue
                self.starts.note(str(json.loads(row[1])["reference_id"]))
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(RAW_FINISH_SQLITE, (row[0],))
                conn.execute("COMMIT")
        finally:
            conn.close()


def child_raw(target: str, tuning: Tuning, starts: StartLog, *, lite: bool) -> None:
    worker = RawWorker(target, tuning, starts, lite=lite)
    if tuning.listen_notify and not lite:
        ready = threading.Event()
        threading.Thread(target=worker.listen, args=(ready,), daemon=True).start()
        if not ready.wait(30):
            raise RuntimeError("the raw listener did not connect")
    _say("ready")
    _read_stdin_until("go")
    threads = [threading.Thread(target=worker.slot) for _ in range(tuning.concurrency)]
    for t in threads:
        t.start()
    _read_stdin_until("stop")
    worker.stop.set()
    worker._notified()
    for t in threads:
        t.join()


def run_child(kind: ChildKind, url: str, tuning: Tuning, starts_path: str | None) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    starts = StartLog(starts_path)
    if kind == "handoff":
        child_handoff(url, tuning, starts)
    elif kind == "procrastinate":
        asyncio.run(child_procrastinate(url, tuning, starts))
    else:
        child_raw(url, tuning, starts, lite=kind == "raw_sqlite")
    starts.save()


@dataclass
class Child:
    kind: ChildKind
    process: subprocess.Popen[str]
    stderr: IO[str]

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def expect(self, line: str, timeout: float = 60.0) -> None:
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
                f"{self.kind} worker did not say {line!r} (got {got!r}): {self.tail()}"
            )

    def tail(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()[-3000:]


def spawn(kind: ChildKind, url: str, tuning: Tuning, starts_path: str | None = None) -> Child:
    # The worker's log, shown if it fails; closed by stop_children.
    err = tempfile.TemporaryFile("w+")  # noqa: SIM115
    process = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            kind,
            "--child-url",
            url,
            "--concurrency",
            str(tuning.concurrency),
            "--poll",
            str(tuning.poll_seconds),
            *([] if tuning.listen_notify else ["--no-listen"]),
            *(["--child-starts", starts_path] if starts_path else []),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        cwd=REPO_ROOT,
    )
    return Child(kind, process, err)


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
            raise RuntimeError(f"{child.kind} worker did not stop: {child.tail()}") from None
        if code != 0:
            raise RuntimeError(f"{child.kind} worker exited {code}: {child.tail()}")
        child.stderr.close()


@contextlib.contextmanager
def _spawned(
    kind: ChildKind, url: str, processes: int, tuning: Tuning, starts_path: str | None = None
) -> Iterator[list[Child]]:
    """Workers starting while the block prepares their jobs; killed if the block fails."""
    children = [spawn(kind, url, tuning, starts_path) for _ in range(processes)]
    try:
        yield children
    except BaseException:
        for child in children:
            child.process.kill()
            child.process.wait()
            child.stderr.close()
        raise


def run_drain(
    system: str, target: str, children: Sequence[Child], expected_done: int | None = None
) -> tuple[float, int]:
    """Release the (started, connected) workers all at once; returns the seconds until no job is
    left unfinished, and how many polls the monitor made. Stops the workers."""
    try:
        for child in children:
            child.expect("ready")
        polls = 0
        started = time.perf_counter()
        for child in children:
            child.send("go")
        while True:
            left = scalar(target, REMAINING_SQL[system])
            polls += 1
            if left == 0:
                break
            if time.perf_counter() - started > DRAIN_TIMEOUT:
                raise RuntimeError(f"{system} drain timed out with {left} jobs left")
            for child in children:
                if child.process.poll() is not None:
                    raise RuntimeError(f"{system} worker died: {child.tail()}")
            time.sleep(MONITOR_EVERY)
        seconds = time.perf_counter() - started
    finally:
        stop_children(children)
    return seconds, polls


# -- drain -----------------------------------------------------------------------------------------


def prefill(kind: ClientKind, system: System, target: str, count: int) -> None:
    refs = reference_ids(f"f{uuid.uuid4().hex[:6]}", count)
    run_enqueue(kind, target, chunks(make_items(system, refs), PREFILL_CHUNK))


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
            prefill(system, system, url, warmup)
        run_drain(system, url, children)
    with _spawned(system, url, processes, tuning) as children:
        reset_tables(system, url)
        prefill(system, system, url, count)
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


# -- pickup latency --------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted `values`."""
    if not values:
        return float("nan")
    index = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[index]


def latency_summary(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(percentile(ordered, 0.50), 3),
        "p95_ms": round(percentile(ordered, 0.95), 3),
        "p99_ms": round(percentile(ordered, 0.99), 3),
        "max_ms": round(ordered[-1], 3) if ordered else float("nan"),
    }


class PacedProducer:
    """Enqueues one job per call at a fixed rate with a system's own client, noting for each
    job the wall-clock time before the call and after it returned (committed)."""

    def __init__(self, system: System, url: str) -> None:
        self.system = system
        self.client = open_client(system, url)

    def run(self, refs: Sequence[str], rate: float) -> dict[str, tuple[float, float]]:
        items = make_items(self.system, refs)
        sent: dict[str, tuple[float, float]] = {}
        interval = 1.0 / rate
        next_at = time.perf_counter()
        for item in items:
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            next_at += interval
            before = time.time()
            self.client.enqueue_all([[item]])
            sent[item_ref(item)] = (before, time.time())
        return sent

    def close(self) -> None:
        self.client.close()


def latency_phase(
    system: System, admin_url: str, name: str, sizes: Sizes, tuning: Tuning
) -> dict[str, Any]:
    """One worker process (concurrency 4), idle-waiting with LISTEN/NOTIFY on, while a producer
    enqueues jobs one per call at `latency_rate`. The jobs of the first
    `latency_warmup_seconds` are not counted. The tables start empty and are ANALYZEd after the
    warm-up, once they hold jobs: a plan made for a table believed empty and cached for the run
    misleads a worker as the table fills (Procrastinate's fell from 200 jobs/s to a few, p99
    18 s); in production autovacuum keeps statistics current."""
    url = db_url(admin_url, name)
    reset_tables(system, url)
    settle(system, url, analyze=False)
    rate = sizes.latency_rate
    warm_n = int(rate * sizes.latency_warmup_seconds)
    count = int(rate * sizes.latency_seconds)
    tag = uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory() as tmp:
        starts_path = str(Path(tmp) / "starts.json")
        producer = PacedProducer(system, url)
        try:
            with _spawned(system, url, 1, tuning, starts_path) as children:
                pass
            children[0].expect("ready")
            children[0].send("go")
            time.sleep(min(1.0, 2 * sizes.latency_warmup_seconds))  # up and idle-waiting
            load = _loadavg()
            try:
                producer.run(reference_ids(f"l{tag}w", warm_n), rate)
                analyze(system, url)  # statistics of tables holding jobs; cached plans replan
                sent = producer.run(reference_ids(f"l{tag}", count), rate)
                deadline = time.perf_counter() + 60
                while scalar(url, REMAINING_SQL[system]) and time.perf_counter() < deadline:
                    time.sleep(0.1)
            finally:
                stop_children(children)
        finally:
            producer.close()
        starts = dict(json.loads(Path(starts_path).read_text()))
    missing = [ref for ref in sent if ref not in starts]
    if missing:
        raise RuntimeError(f"{system}: {len(missing)} jobs never started")
    from_call = [(starts[ref] - before) * 1000 for ref, (before, _) in sent.items()]
    from_commit = [(starts[ref] - after) * 1000 for ref, (_, after) in sent.items()]
    call_ms = [(after - before) * 1000 for before, after in sent.values()]
    fifth = max(1, len(from_call) // 5)
    return {
        # Whether the worker fell behind the producer: latency still rising at the end.
        "kept_up": statistics.median(from_call[-fifth:])
        < 3 * max(1.0, statistics.median(from_call[:fifth])),
        "jobs": count,
        "rate_per_s": rate,
        "seconds": sizes.latency_seconds,
        "loadavg_1m_before": load,
        # Handler start minus the wall time just before the enqueue call (an upper bound of
        # commit -> start; what the public benchmark calls claim latency).
        "from_enqueue_call": latency_summary(from_call),
        # Handler start minus the wall time when the enqueue call returned (after its commit):
        # a lower bound (the worker can be woken before the producer's client sees the ack).
        "from_commit_ack": latency_summary(from_commit),
        "enqueue_call": latency_summary(call_ms),
    }


# -- claim cost as the backlog grows ---------------------------------------------------------------


def _handoff_fill_sql(count: int, body: bytes, payload_hash: str) -> list[tuple[str, Any]]:
    """Valid queued handoffs, as the app writes them: a scrape record per version (the same
    small page under each reference, so one payload hash), its handoff and creation event."""
    return [
        (
            "INSERT INTO scrape_records (reference_id, payload_hash, source, url, fetched_at,"
            " http_status, content_type, headers, body, fields, created_at)"
            " SELECT 'b-' || g, %(hash)s, 'bench', 'https://shop.example/listing/b-' || g,"
            " now(), 200, %(ct)s, '{}'::jsonb, %(body)s, NULL, now()"
            " FROM generate_series(1, %(n)s) g",
            {"hash": payload_hash, "ct": CONTENT_TYPE, "body": body, "n": count},
        ),
        (
            "INSERT INTO ingestion_handoffs (reference_id, payload_hash, source, fetched_at,"
            " state, reason_code, enqueue_outcome, run_after, created_at, updated_at)"
            " SELECT 'b-' || g, %(hash)s, 'bench', now(), 'queued', 'enqueued', 'created',"
            " now() - interval '1 minute' + g * interval '1 microsecond', now(), now()"
            " FROM generate_series(1, %(n)s) g",
            {"hash": payload_hash, "n": count},
        ),
        (
            "INSERT INTO handoff_events (handoff_id, at, actor, from_state, to_state,"
            " reason_code) SELECT id, created_at, 'client:bench', NULL, 'queued', 'enqueued'"
            " FROM ingestion_handoffs",
            {},
        ),
    ]


def fill_backlog(system: System, url: str, count: int) -> None:
    """`count` queued, claimable jobs written straight in SQL (generate_series)."""
    if system == "handoff":
        body = html_body("backlog").encode()
        statements = _handoff_fill_sql(
            count, body, payload_mod.payload_hash(body, CONTENT_TYPE, {})
        )
    elif system == "procrastinate":
        statements = [
            (
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status)"
                " SELECT 'default', %(task)s, jsonb_build_object('reference_id', 'b-' || g),"
                " 'todo' FROM generate_series(1, %(n)s) g",
                {"task": TASK_NAME, "n": count},
            )
        ]
    else:
        statements = [
            (
                "INSERT INTO raw_jobs (job_key, payload) SELECT 'b-' || g,"
                " jsonb_build_object('reference_id', 'b-' || g) FROM generate_series(1, %(n)s) g",
                {"n": count},
            )
        ]
    with psycopg.connect(url) as conn:
        for statement, params in statements:
            conn.execute(statement.encode(), params)
    if scalar(url, QUEUED_SQL[system]) != count:
        raise RuntimeError(f"{system}: backlog fill did not queue {count} jobs")


class Claimer(Protocol):
    def claim(self) -> Any: ...

    def finish(self, job: Any) -> None: ...

    def close(self) -> None: ...


class HandoffClaimer:
    """The worker's service calls: `ingestion.claim` of one job (lease, event, attempt row,
    record load) in one transaction, `ingestion.complete` in another."""

    def __init__(self, url: str) -> None:
        self.db = Database(url, pool_size=1)
        self.db.ping()
        self.statements: list[tuple[str, Any]] = []

    def claim(self) -> Any:
        now = datetime.now(UTC)
        jobs = self.db.run(
            lambda uow: ingestion.claim(uow, "bench", 1, now=now, lease=timedelta(seconds=60))
        )
        if len(jobs) != 1:
            raise RuntimeError("handoff: no job claimed")
        return jobs[0].lease

    def finish(self, job: Any) -> None:
        lease: Lease = job
        now = datetime.now(UTC)
        self.db.run(lambda uow: ingestion.complete(uow, [lease], now=now, worker_id="bench"))

    def explain_claim(self) -> dict[str, Any]:
        """EXPLAIN (ANALYZE, BUFFERS) of the claim statement the worker runs (the app's own
        statement text and parameters), inside a transaction that is rolled back."""
        import psycopg

        from app.db.work_store import CLAIM_SQL

        now = datetime.now(UTC)
        params = {
            "limit": 1,
            "now": now,
            "lease_until": now + timedelta(seconds=60),
            "worker": "bench",
            "actor": "worker:bench",
        }
        with self.db.engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert isinstance(raw, psycopg.Connection)
            try:
                with raw.cursor() as cur:
                    cur.execute(
                        ("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + CLAIM_SQL).encode(), params
                    )
                    row = cur.fetchone()
            finally:
                raw.rollback()
        assert row is not None
        plan = row[0][0] if isinstance(row[0], list) else json.loads(row[0])[0]
        return {"statement": CLAIM_SQL, "summary": plan_summary(plan), "plan": plan}

    def close(self) -> None:
        self.db.dispose()


def plan_summary(plan: dict[str, Any]) -> dict[str, Any]:
    """Node types, indexes used, rows and buffers of an EXPLAIN (FORMAT JSON) plan."""
    nodes: list[str] = []
    indexes: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        label = str(node["Node Type"])
        if "Index Name" in node:
            label += f" using {node['Index Name']}"
            indexes.append(str(node["Index Name"]))
        if "Relation Name" in node:
            label += f" on {node['Relation Name']}"
        nodes.append(label)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    hit = int(plan["Plan"].get("Shared Hit Blocks", 0))
    read = int(plan["Plan"].get("Shared Read Blocks", 0))
    return {
        "nodes": nodes,
        "indexes": indexes,
        "seq_scan": any(n.startswith("Seq Scan") for n in nodes),
        "shared_hit_blocks": hit,
        "shared_read_blocks": read,
        "planning_ms": plan.get("Planning Time"),
        "execution_ms": plan.get("Execution Time"),
    }


class ProcrastinateClaimer:
    """`JobManager.fetch_job` (Procrastinate's claim: its `procrastinate_fetch_job` function)
    and `finish_job` as succeeded, as a registered worker."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = make_procrastinate_app(url, 1)
        self.loop.run_until_complete(self.app.open_async())
        self.worker_id = self.loop.run_until_complete(self.app.job_manager.register_worker())

    def claim(self) -> Any:
        job = self.loop.run_until_complete(
            self.app.job_manager.fetch_job(queues=None, worker_id=self.worker_id)
        )
        if job is None:
            raise RuntimeError("procrastinate: no job claimed")
        return job

    def finish(self, job: Any) -> None:
        self.loop.run_until_complete(
            self.app.job_manager.finish_job(
                job, status=ProcrastinateStatus.SUCCEEDED, delete_job=False
            )
        )

    def close(self) -> None:
        self.loop.run_until_complete(self.app.close_async())
        self.loop.close()


class RawClaimer:
    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)

    def claim(self) -> Any:
        row = self.conn.execute(RAW_CLAIM_PG, (1,), prepare=True).fetchone()
        if row is None:
            raise RuntimeError("raw_sql: no job claimed")
        return row[0]

    def finish(self, job: Any) -> None:
        self.conn.execute(RAW_FINISH_PG, (job,), prepare=True)

    def close(self) -> None:
        self.conn.close()


def open_claimer(system: System, url: str) -> Claimer:
    if system == "handoff":
        return HandoffClaimer(url)
    if system == "procrastinate":
        return ProcrastinateClaimer(url)
    return RawClaimer(url)


def claim_phase(
    system: System,
    admin_url: str,
    name: str,
    backlog: int,
    claims: int,
    explain: bool,
    *,
    checkpoint: bool = True,
) -> dict[str, Any]:
    """Fill `backlog` queued jobs, settle, then time `claims` single claims, each followed by
    its completion (timed apart), from one client."""
    url = db_url(admin_url, name)
    reset_tables(system, url)
    filled = time.perf_counter()
    fill_backlog(system, url, backlog)
    fill_seconds = time.perf_counter() - filled
    settle(system, url, checkpoint=checkpoint)
    load = _loadavg()
    durable = _time_claims(system, url, claims, explain=explain)
    # The same again with the client's commits not waiting for the WAL flush (libpq's
    # PGOPTIONS, so all three clients alike): what the claim costs the server besides the
    # disk, which is what grows, or not, with the backlog.
    os.environ["PGOPTIONS"] = "-c synchronous_commit=off"
    try:
        no_flush = _time_claims(system, url, claims, explain=False)
    finally:
        del os.environ["PGOPTIONS"]
    out: dict[str, Any] = {
        "backlog": backlog,
        "claims": claims,
        "fill_seconds": round(fill_seconds, 1),
        "loadavg_1m_before": load,
        **{k: v for k, v in durable.items() if k != "explain_claim"},
        **{f"{k}_no_flush": v for k, v in no_flush.items()},
    }
    if "explain_claim" in durable:
        out["explain_claim"] = durable["explain_claim"]
    return out


def _time_claims(system: System, url: str, claims: int, *, explain: bool) -> dict[str, Any]:
    """`claims` single claims, each followed by its completion (timed apart), after a warm-up."""
    claimer = open_claimer(system, url)
    try:
        warm = max(5, claims // 10)
        for _ in range(warm):  # connection, plans, caches
            claimer.finish(claimer.claim())
        claim_ms: list[float] = []
        finish_ms: list[float] = []
        for _ in range(claims):
            t0 = time.perf_counter()
            job = claimer.claim()
            t1 = time.perf_counter()
            claimer.finish(job)
            t2 = time.perf_counter()
            claim_ms.append((t1 - t0) * 1000)
            finish_ms.append((t2 - t1) * 1000)
        plan = claimer.explain_claim() if explain and isinstance(claimer, HandoffClaimer) else None
    finally:
        claimer.close()
    out: dict[str, Any] = {
        "claim_ms_median": round(statistics.median(claim_ms), 4),
        "claim_ms_mean": round(statistics.fmean(claim_ms), 4),
        "claim_ms_p95": round(percentile(sorted(claim_ms), 0.95), 4),
        "finish_ms_median": round(statistics.median(finish_ms), 4),
    }
    if plan is not None:
        out["explain_claim"] = plan
    return out


# -- SQLite ----------------------------------------------------------------------------------------


def sqlite_target(system: LiteSystem, directory: Path) -> tuple[str, str]:
    """A fresh SQLite file with the system's schema: (URL for the app / path, path)."""
    path = directory / f"{system}-{uuid.uuid4().hex[:6]}.db"
    if system == "handoff":
        url = f"sqlite:///{path}"
        migrations.apply(url, MIGRATIONS_DIR)
        return url, str(path)
    conn = sqlite_connect(str(path))
    conn.executescript(RAW_SCHEMA_SQLITE)
    conn.close()
    return str(path), str(path)


def lite_kind(system: LiteSystem) -> ClientKind:
    return "handoff" if system == "handoff" else "raw_sqlite"


def lite_child(system: LiteSystem) -> ChildKind:
    return "handoff" if system == "handoff" else "raw_sqlite"


def lite_queue_sql(system: LiteSystem, which: dict[str, str]) -> str:
    return which["handoff" if system == "handoff" else "raw_sql"]


def sqlite_enqueue_phase(system: LiteSystem, directory: Path, spec: EnqueueSpec) -> dict[str, Any]:
    """As `enqueue_phase`, on a fresh SQLite file per phase, from one client."""
    target, path = sqlite_target(system, directory)
    try:
        kind = lite_kind(system)
        as_pg: System = system
        tag = uuid.uuid4().hex[:6]
        warm = spec.warmup_calls * spec.size
        run_enqueue(
            kind, target, chunks(make_items(as_pg, reference_ids(f"w{tag}", warm)), spec.size)
        )
        refs = reference_ids(f"r{tag}", spec.count)
        already, others = prefill_refs(refs, spec)
        run_enqueue(kind, target, chunks(make_items(as_pg, already or others), spec.size))
        batches = chunks(make_items(as_pg, refs), spec.size)
        load = _loadavg()
        seconds = run_enqueue(kind, target, batches)
        queued = scalar(path, lite_queue_sql(system, QUEUED_SQL))
        expected = warm + len(others) + spec.count
        if queued != expected:
            raise RuntimeError(f"sqlite {system}: {queued} queued, expected {expected}")
        return {
            "jobs": spec.count,
            "calls": len(batches),
            "seconds": round(seconds, 4),
            "jobs_per_s": round(spec.count / seconds, 1),
            "loadavg_1m_before": load,
        }
    finally:
        _remove_sqlite(path)


def sqlite_drain_phase(
    system: LiteSystem, directory: Path, count: int, processes: int, tuning: Tuning
) -> dict[str, Any]:
    target, path = sqlite_target(system, directory)
    try:
        as_pg: System = system
        with _spawned(lite_child(system), target, processes, tuning) as children:
            prefill(lite_kind(system), as_pg, target, count)
        load = _loadavg()
        seconds, _ = run_drain("handoff" if system == "handoff" else "raw_sql", path, children)
        done = scalar(path, lite_queue_sql(system, DONE_SQL))
        if done != count:
            raise RuntimeError(f"sqlite {system}: {done} jobs succeeded, expected {count}")
        return {
            "jobs": count,
            "processes": processes,
            "concurrency": tuning.concurrency,
            "seconds": round(seconds, 4),
            "jobs_per_s": round(count / seconds, 1),
            "loadavg_1m_before": load,
        }
    finally:
        _remove_sqlite(path)


def _remove_sqlite(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


# -- the whole run ---------------------------------------------------------------------------------


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
        "sqlite": sqlite3.sqlite_version,
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
    runs: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)

    def add(self, figure: str, system: str, result: dict[str, Any]) -> None:
        self.runs.setdefault(figure, {}).setdefault(system, []).append(result)


def _median_run(runs: list[dict[str, Any]], key: str) -> tuple[float, dict[str, Any]]:
    values = [float(r[key]) for r in runs]
    median = statistics.median(values)
    return median, min(runs, key=lambda r: abs(float(r[key]) - median))


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def summarise_throughput(report: Report) -> dict[str, Any]:
    """Median jobs/s over the rounds, per figure and system, and the ratios."""
    out: dict[str, Any] = {}
    for figure, by_system in report.runs.items():
        if not figure.removeprefix("sqlite_").startswith(("enqueue", "drain")):
            continue
        entry: dict[str, Any] = {}
        for system, runs in by_system.items():
            median, chosen = _median_run(runs, "jobs_per_s")
            entry[system] = {
                "jobs_per_s": round(median, 1),
                "runs_jobs_per_s": [r["jobs_per_s"] for r in runs],
                "per_job": chosen.get("per_job"),
                "jobs": chosen["jobs"],
            }
        h = entry.get("handoff", {}).get("jobs_per_s")
        entry["ratio_handoff_procrastinate"] = _ratio(
            h, entry.get("procrastinate", {}).get("jobs_per_s")
        )
        entry["ratio_handoff_raw_sql"] = _ratio(h, entry.get("raw_sql", {}).get("jobs_per_s"))
        out[figure] = entry
    return out


def summarise_latency(report: Report) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for system, runs in report.runs.get("latency", {}).items():
        entry: dict[str, Any] = {}
        for basis in ("from_enqueue_call", "from_commit_ack", "enqueue_call"):
            entry[basis] = {
                p: round(statistics.median(r[basis][p] for r in runs), 3)
                for p in ("p50_ms", "p95_ms", "p99_ms")
            }
        entry["runs"] = [r["from_enqueue_call"] for r in runs]
        entry["kept_up"] = [r.get("kept_up") for r in runs]
        out[system] = entry
    for p in ("p50_ms", "p95_ms", "p99_ms"):
        h = out.get("handoff", {}).get("from_enqueue_call", {}).get(p)
        for other in ("procrastinate", "raw_sql"):
            o = out.get(other, {}).get("from_enqueue_call", {}).get(p)
            out.setdefault(f"ratio_handoff_{other}", {})[p] = _ratio(h, o)
    return out


def summarise_claims(report: Report, backlogs: Sequence[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for system, runs in report.runs.get("claim_cost", {}).items():
        by_size = {r["backlog"]: r for r in runs}
        first, last = by_size[backlogs[0]], by_size[backlogs[-1]]
        out[system] = {
            "claim_ms_median": {str(b): by_size[b]["claim_ms_median"] for b in backlogs},
            "finish_ms_median": {str(b): by_size[b]["finish_ms_median"] for b in backlogs},
            "ratio_largest_to_smallest": _ratio(last["claim_ms_median"], first["claim_ms_median"]),
            "claim_ms_median_no_flush": {
                str(b): by_size[b].get("claim_ms_median_no_flush") for b in backlogs
            },
            "ratio_largest_to_smallest_no_flush": _ratio(
                last.get("claim_ms_median_no_flush"), first.get("claim_ms_median_no_flush")
            ),
        }
        if "explain_claim" in last:
            out[system]["explain_claim_largest"] = last["explain_claim"]["summary"]
    return out


#: Issue 7's "done when", as checks on the summary.
def targets(
    figures: dict[str, Any], latency: dict[str, Any], claims: dict[str, Any]
) -> list[dict[str, Any]]:
    def jps(figure: str, system: str) -> float | None:
        value = figures.get(figure, {}).get(system, {}).get("jobs_per_s")
        return float(value) if value is not None else None

    rows: list[dict[str, Any]] = []

    def add(name: str, value: float | None, aim: str, met: bool | None) -> None:
        rows.append(
            {
                "target": name,
                "value": None if value is None else round(value, 3),
                "aim": aim,
                "met": met,
            }
        )

    for drain in ("drain_1x4", "drain_2x4"):
        r = figures.get(drain, {}).get("ratio_handoff_procrastinate")
        add(f"{drain}: handoff / procrastinate", r, ">= 3", None if r is None else r >= 3)
        r = figures.get(drain, {}).get("ratio_handoff_raw_sql")
        add(f"{drain}: handoff / raw_sql", r, ">= 0.5", None if r is None else r >= 0.5)
    for figure, aim in (
        ("enqueue_per_row", 1.5),
        ("enqueue_per_row_4", 1.5),
        ("enqueue_batched", 1.0),
    ):
        r = figures.get(figure, {}).get("ratio_handoff_procrastinate")
        add(f"{figure}: handoff / procrastinate", r, f">= {aim}", None if r is None else r >= aim)
    for dup, new in (
        ("enqueue_dup_per_row", "enqueue_per_row"),
        ("enqueue_dup_batched", "enqueue_batched"),
    ):
        a, b = jps(dup, "handoff"), jps(new, "handoff")
        r = _ratio(a, b)
        add(f"handoff {dup} / {new}", r, ">= 1", None if r is None else r >= 1)
    for p in ("p50_ms", "p99_ms"):
        r = latency.get("ratio_handoff_procrastinate", {}).get(p)
        add(
            f"pickup latency {p}: handoff / procrastinate", r, "<= 1", None if r is None else r <= 1
        )
    r = claims.get("handoff", {}).get("ratio_largest_to_smallest")
    add(
        "handoff claim ms: largest / smallest backlog", r, "<= 1.3", None if r is None else r <= 1.3
    )
    r = claims.get("handoff", {}).get("ratio_largest_to_smallest_no_flush")
    add(
        "handoff claim ms, no WAL-flush wait: largest / smallest backlog",
        r,
        "<= 1.3",
        None if r is None else r <= 1.3,
    )
    return rows


def bench(args: argparse.Namespace) -> dict[str, Any]:
    sizes = QUICK if args.quick else FULL
    if args.repeat:
        sizes = dataclasses.replace(sizes, repeat=args.repeat)
    if args.backlogs:
        sizes = dataclasses.replace(sizes, backlogs=tuple(int(x) for x in args.backlogs.split(",")))
    if args.tiny:  # for the CI smoke test: every phase, in seconds
        sizes = dataclasses.replace(
            sizes,
            per_row=40,
            batched=200,
            drain=100,
            warmup_per_row=5,
            warmup_batches=1,
            latency_seconds=0.5,
            latency_warmup_seconds=0.2,
            backlogs=(200, 400),
            claims=10,
            sqlite_per_row=40,
            sqlite_batched=200,
            sqlite_drain=100,
        )
    tuning = Tuning(concurrency=args.concurrency, poll_seconds=args.poll)
    admin_url: str = args.admin_url
    suffix = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
    names: dict[System, str] = {s: f"bench_{s}_{suffix}" for s in SYSTEMS}
    only = set(args.only.split(",")) if args.only else None
    started = time.perf_counter()
    info = machine_info(admin_url)
    report = Report()

    def progress(message: str) -> None:
        print(
            f"[bench] {time.perf_counter() - started:6.1f}s {message}", file=sys.stderr, flush=True
        )

    def wanted(section: str) -> bool:
        return only is None or section in only

    # Each duplicates figure right after the all-new one it is compared with: the machine's
    # drift between the two is a minute's less.
    enqueue_specs = {
        "enqueue_per_row": EnqueueSpec(sizes.per_row, 1, 1, 0.0, sizes.warmup_per_row),
        "enqueue_dup_per_row": EnqueueSpec(sizes.per_row, 1, 1, 0.5, sizes.warmup_per_row),
        "enqueue_per_row_4": EnqueueSpec(
            sizes.per_row, 1, sizes.clients, 0.0, sizes.warmup_per_row
        ),
        "enqueue_batched": EnqueueSpec(
            sizes.batched, sizes.batch_size, 1, 0.0, sizes.warmup_batches
        ),
        "enqueue_dup_batched": EnqueueSpec(
            sizes.batched, sizes.batch_size, 1, 0.5, sizes.warmup_batches
        ),
    }
    # Procrastinate refuses a batch holding a job whose queueing lock is taken (the whole
    # batch_defer fails), so it has no batched-with-duplicates figure.
    skip = {("enqueue_dup_batched", "procrastinate")}
    tmp_root = Path(tempfile.mkdtemp(prefix="handoff-bench-"))
    try:
        for system in SYSTEMS:
            create_database(admin_url, names[system])
            set_up_schema(system, db_url(admin_url, names[system]))
        phase_no = 0

        def alternate(figure: str, systems: Sequence[Any], phase: Callable[[Any], Any]) -> None:
            nonlocal phase_no
            # All systems back to back, rotating which goes first, so drift (other load on
            # the machine, caches) hits them alike.
            shift = phase_no % len(systems)
            phase_no += 1
            for system in [*systems[shift:], *systems[:shift]]:
                if (figure, system) in skip:
                    continue
                progress(f"{figure} {system}")
                report.add(figure, system, phase(system))

        for round_no in range(sizes.repeat):
            progress(f"round {round_no + 1}/{sizes.repeat}")
            for figure, spec in enqueue_specs.items():
                if wanted("enqueue") or wanted(figure):  # the section, or this figure alone
                    alternate(
                        figure,
                        SYSTEMS,
                        partial(_enqueue_for, admin_url=admin_url, names=names, spec=spec),
                    )
            if wanted("drain"):
                for processes in sizes.drain_processes:
                    alternate(
                        f"drain_{processes}x{tuning.concurrency}",
                        SYSTEMS,
                        partial(
                            _drain_for,
                            admin_url=admin_url,
                            names=names,
                            count=sizes.drain,
                            processes=processes,
                            tuning=tuning,
                            # Drains warm up in the first round only: later ones start warm.
                            warmup=sizes.warmup_drain if round_no == 0 else 0,
                        ),
                    )
            if wanted("latency"):
                alternate(
                    "latency",
                    SYSTEMS,
                    lambda s: latency_phase(s, admin_url, names[s], sizes, tuning),
                )
            if wanted("sqlite"):
                lite_specs = {
                    "enqueue_per_row": EnqueueSpec(
                        sizes.sqlite_per_row, 1, 1, 0.0, sizes.warmup_per_row
                    ),
                    "enqueue_batched": EnqueueSpec(
                        sizes.sqlite_batched, sizes.batch_size, 1, 0.0, sizes.warmup_batches
                    ),
                    "enqueue_dup_per_row": EnqueueSpec(
                        sizes.sqlite_per_row, 1, 1, 0.5, sizes.warmup_per_row
                    ),
                }
                for figure, spec in lite_specs.items():
                    alternate(
                        f"sqlite_{figure}",
                        LITE_SYSTEMS,
                        partial(sqlite_enqueue_phase, directory=tmp_root, spec=spec),
                    )
                for processes in sizes.drain_processes:
                    alternate(
                        f"sqlite_drain_{processes}x{tuning.concurrency}",
                        LITE_SYSTEMS,
                        partial(
                            sqlite_drain_phase,
                            directory=tmp_root,
                            count=sizes.sqlite_drain,
                            processes=processes,
                            tuning=tuning,
                        ),
                    )
        if wanted("claims"):
            # Once: the fills dominate, and each size is timed on its own settled backlog.
            for backlog in sizes.backlogs:
                alternate(
                    "claim_cost",
                    SYSTEMS,
                    partial(
                        _claims_for,
                        admin_url=admin_url,
                        names=names,
                        backlog=backlog,
                        claims=sizes.claims,
                        explain=backlog == sizes.backlogs[-1],
                        checkpoint=not args.claims_without_checkpoint,
                    ),
                )
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
        if not args.keep_databases:
            for name in names.values():
                drop_database(admin_url, name)
    info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result: dict[str, Any] = {
        "benchmark": "handoff vs procrastinate vs raw SQL",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "bench/perf.py", *sys.argv[1:]]),
        "mode": "tiny" if args.tiny else ("quick" if args.quick else "full"),
        "claims_after_checkpoint": not args.claims_without_checkpoint,
        "machine": info,
        "sizes": dataclasses.asdict(sizes),
        "configuration": {
            "concurrency_per_process": tuning.concurrency,
            "poll_seconds": tuning.poll_seconds,
            "listen_notify": tuning.listen_notify,
            "handoff": {
                "worker": "app.worker.runner.Worker + a no-op handler, WorkerConfig defaults "
                "except concurrency and poll_every; Listener thread on; Database pool of "
                "concurrency+2 (as `handoff worker`)",
                "worker_config": described(handoff_worker_config(tuning)),
                "enqueue": "prepare_all + scrape_storage.submit per call (pool_size=1)",
                "claim_cost": "ingestion.claim(limit=1) then ingestion.complete, one "
                "Database.run each",
            },
            "procrastinate": {
                "worker": "App.run_worker_async(concurrency, wait=True, listen_notify, "
                "fetch_job_polling_interval=poll, delete_jobs='never'), async no-op task, "
                "PsycopgConnector pool of concurrency+2",
                "enqueue": "defer_async / batch_defer_async (pool of 1); duplicates: "
                "configure_task(queueing_lock=reference_id).defer_async, AlreadyEnqueued "
                "caught",
                "claim_cost": "JobManager.fetch_job then finish_job(succeeded) as a "
                "registered worker",
            },
            "raw_sql": {
                "enqueue": RAW_ENQUEUE_PG,
                "claim": RAW_CLAIM_PG,
                "finish": RAW_FINISH_PG,
                "worker": "concurrency threads, one connection each: claim 1 (autocommit), "
                "no-op, finish (autocommit); LISTEN raw_jobs wakes idle threads",
            },
            "sqlite": "a fresh file per phase in a temp dir; Handoff via its SQLAlchemy engine "
            "(WAL, synchronous=NORMAL, BEGIN IMMEDIATE), raw via sqlite3 with the same pragmas; "
            "no LISTEN/NOTIFY (workers poll)",
        },
        "runs": report.runs,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    _summarise_into(result, report, sizes.backlogs)
    return result


def _summarise_into(result: dict[str, Any], report: Report, backlogs: Sequence[int]) -> None:
    throughput = summarise_throughput(report)
    result["figures"] = {k: v for k, v in throughput.items() if not k.startswith("sqlite_")}
    result["sqlite"] = {k: v for k, v in throughput.items() if k.startswith("sqlite_")}
    result["latency"] = summarise_latency(report)
    result["claim_cost"] = summarise_claims(report, backlogs) if "claim_cost" in report.runs else {}
    result["targets"] = targets(result["figures"], result["latency"], result["claim_cost"])


def _enqueue_for(
    system: System, *, admin_url: str, names: dict[System, str], spec: EnqueueSpec
) -> dict[str, Any]:
    return enqueue_phase(system, admin_url, names[system], spec)


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


def _claims_for(
    system: System,
    *,
    admin_url: str,
    names: dict[System, str],
    backlog: int,
    claims: int,
    explain: bool,
    checkpoint: bool,
) -> dict[str, Any]:
    return claim_phase(
        system, admin_url, names[system], backlog, claims, explain, checkpoint=checkpoint
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, help="also write the JSON result to this file")
    parser.add_argument("--quick", action="store_true", help="a smoke run, under a minute")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--docs", action="store_true", help="write the PNGs and the results table into docs/"
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="only write the PNGs and table of a saved result",
    )
    parser.add_argument("--resummarise", type=Path, metavar="JSON", help=argparse.SUPPRESS)
    parser.add_argument(
        "--only",
        help="sections, comma-separated: enqueue,drain,latency,claims,sqlite; or enqueue "
        "figures alone: enqueue_per_row, enqueue_per_row_4, enqueue_batched, ...",
    )
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="a database to connect to")
    parser.add_argument("--repeat", type=int, help="rounds; figures are medians")
    parser.add_argument("--backlogs", help="claim-cost backlog sizes, e.g. 10000,100000,1000000")
    parser.add_argument("--concurrency", type=int, default=4, help="handler slots per worker")
    parser.add_argument("--poll", type=float, default=1.0, help="worker polling interval (s)")
    parser.add_argument("--keep-databases", action="store_true", help="do not drop them")
    parser.add_argument(
        "--claims-without-checkpoint",
        action="store_true",
        help="claim cost with no CHECKPOINT between the backlog fill and the timed claims "
        "(a diagnostic: after one, a page's first write is a full-page image)",
    )
    parser.add_argument(
        "--child",
        choices=("handoff", "procrastinate", "raw_sql", "raw_sqlite"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--child-url", help=argparse.SUPPRESS)
    parser.add_argument("--child-starts", help=argparse.SUPPRESS)
    parser.add_argument("--no-listen", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        tuning = Tuning(args.concurrency, args.poll, listen_notify=not args.no_listen)
        run_child(args.child, args.child_url, tuning, args.child_starts)
        return
    if args.render:
        import perf_docs

        perf_docs.render(json.loads(args.render.read_text()), REPO_ROOT / "docs")
        return
    if args.resummarise:
        # Recompute the summaries of a saved result from its raw runs (after a fix to them).
        saved = json.loads(args.resummarise.read_text())
        _summarise_into(saved, Report(saved["runs"]), tuple(saved["sizes"]["backlogs"]))
        args.resummarise.write_text(json.dumps(saved, indent=2) + "\n")
        return
    # As in the worker children: warnings only, so per-handoff log lines (one per enqueued
    # version at INFO) are not part of what is timed.
    app_log.configure(json=True, level="WARNING")
    # The producers and the enqueue clients of all three systems run in this process (or are
    # forked from it) as plain Python processes: its heap is not frozen, since only Handoff's
    # own processes freeze theirs (its worker children below do, as `handoff worker` does).
    result = bench(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.docs:
        import perf_docs

        perf_docs.render(result, REPO_ROOT / "docs")


if __name__ == "__main__":
    main()
