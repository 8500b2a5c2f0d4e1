"""Chaos scenarios: faults under load, and the invariants that must hold through them.

Each scenario runs the real service — `handoff serve` and `handoff worker` processes — against
its own database: a private PostgreSQL cluster this script initialises in a temporary directory
(as the `postgres` user, on its own port on 127.0.0.1, so restarting or starving it disturbs
nothing else), or a SQLite file. A producer submits records over HTTP at a paced rate (retrying
what the service refuses, as a client should), a monitor samples the database every 0.25 s, and
the scenario injects its fault between a baseline window and a recovery window. Then everything
accepted must drain. Reported per scenario:

* recovery ratio — completions per second in the window after the fault over the window before;
* lost — accepted versions whose handoff never reached a terminal state, or has no row at all;
* duplicates — versions with more than one document, or more than one succeeded attempt;
* max active — the most active handoffs one reference ever had in a sample (must be 1).

    .venv/bin/python bench/chaos.py --scenario all --out docs/reliability.md
    .venv/bin/python bench/chaos.py --scenario postgres_restart --short
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere: `app` is the repo's package
    sys.path.insert(0, str(REPO_ROOT))
from app.db import migrations  # noqa: E402

HANDOFF = str(Path(sys.executable).with_name("handoff"))
PG_BIN = (
    Path("/usr/lib/postgresql")
    / (
        sorted(os.listdir("/usr/lib/postgresql"))[-1]
        if Path("/usr/lib/postgresql").exists()
        else "15"
    )
    / "bin"
)
ACTIVE = ("queued", "running", "retry_wait")
TERMINAL = ("succeeded", "failed", "cancelled", "superseded")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- a private PostgreSQL cluster -----------------------------------------------------------------


class PrivateCluster:
    """A throwaway PostgreSQL cluster: initdb into a new temporary directory (which `postgres`
    owns), listening on 127.0.0.1:`port` only; removed when it stops."""

    def __init__(self, *, max_connections: int = 60) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="handoff-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.max_connections = max_connections

    def _as_postgres(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check)

    def init(self) -> None:
        self.root.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        conf = self.data / "postgresql.conf"
        with conf.open("a") as f:
            f.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                f"max_connections = {self.max_connections}\n"
                "fsync = off\nfull_page_writes = off\nshared_buffers = 64MB\n"
                "log_min_messages = fatal\n"
            )

    def start(self) -> None:
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
            "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False
        )

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def admin(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            cur = conn.execute(sql.encode())
            return list(cur.fetchall()) if cur.description else []

    @contextmanager
    def running(self) -> Iterator[PrivateCluster]:
        self.init()
        self.start()
        try:
            yield self
        finally:
            self.stop("immediate")
            shutil.rmtree(self.root, ignore_errors=True)


# -- the service under test -----------------------------------------------------------------------


@dataclass
class Service:
    """`handoff serve` plus worker processes on one database."""

    url: str
    workdir: Path
    workers: int = 2
    concurrency: int = 4
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    port: int = 0
    restarts: int = 0
    crash_retry: float = 15.0  # the product's default

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HANDOFF_DATABASE_URL": self.url,
            "HANDOFF_AUTH_ENABLED": "false",
            "HANDOFF_LEASE_SECONDS": "4",
            "HANDOFF_HEARTBEAT_SECONDS": "1",
            "HANDOFF_RESCUE_SECONDS": "1",
            "HANDOFF_CRASH_RETRY_SECONDS": str(self.crash_retry),
            "HANDOFF_POLL_SECONDS": "0.2",
            "HANDOFF_SHUTDOWN_GRACE_SECONDS": "2",
            "HANDOFF_WORKER_CONCURRENCY": str(self.concurrency),
        }

    def _spawn(self, name: str, *args: str) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [HANDOFF, *args], env=self.env(), stdout=log, stderr=log, cwd=REPO_ROOT
        )

    def start(self) -> None:
        # As `handoff migrate` does, without a process of its own to start.
        migrations.apply(self.url, REPO_ROOT / "db" / "migrations")
        for n in range(self.workers):
            self.start_worker(n)
        for _ in range(3):  # a port found free can be taken before the API binds it: retry
            self.port = free_port()
            self._spawn("api", "serve", "--port", str(self.port))
            deadline = time.monotonic() + 90  # a busy machine imports slowly
            while time.monotonic() < deadline and self.procs["api"].poll() is None:
                with suppress(httpx.HTTPError):
                    if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                        return
                time.sleep(0.1)
        raise RuntimeError(f"the API did not start; see {self.workdir / 'api.log'}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_worker(self, n: int) -> None:
        self._spawn(f"worker{n}", "worker")

    def kill_worker(self, n: int) -> None:
        proc = self.procs[f"worker{n}"]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def crashed(self) -> list[str]:
        """Processes that exited on their own (the API and workers must outlive faults)."""
        return [n for n, p in self.procs.items() if p.poll() is not None]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


# -- load and observation -------------------------------------------------------------------------


def observer(url: str) -> Any:
    """An engine for reading the service's database from outside (waits out SQLite's lock)."""
    from sqlalchemy import create_engine

    if url.startswith("sqlite"):
        return create_engine(url, connect_args={"timeout": 30})
    return create_engine(url.replace("postgresql://", "postgresql+psycopg://"), pool_size=1)


class Producer:
    """Submits records over HTTP at `rate` per second in batches, retrying refusals until each
    is accepted; remembers every accepted version."""

    def __init__(self, base: str, tag: str, *, rate: float, batch: int = 10) -> None:
        self.base, self.tag, self.rate, self.batch = base, tag, rate, batch
        self.accepted: set[tuple[str, str]] = set()
        self.refusals = 0
        self.sequence = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _records(self, n: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            self.sequence += 1
            ref = f"{self.tag}-{self.sequence % 5000}"  # references repeat: new versions of them
            out.append(
                {
                    "source": "chaos",
                    "reference_id": ref,
                    "content_type": "text/plain",
                    "body": f"version {self.sequence} of {ref}: chaos payload",
                }
            )
        return out

    def submit(self, records: list[dict[str, Any]]) -> None:
        """Post until accepted (a client that got no answer cannot know, so it resends)."""
        delay = 0.05
        with httpx.Client(timeout=10) as client:
            while True:
                try:
                    response = client.post(
                        f"{self.base}/v1/scrape-records", json={"records": records}
                    )
                except httpx.HTTPError:
                    response = None
                if response is not None and response.status_code in (200, 201):
                    with self._lock:
                        for r in response.json()["results"]:
                            self.accepted.add((r["reference_id"], r["payload_hash"]))
                    return
                self.refusals += 1
                if self._stop.is_set() and response is not None and response.status_code < 500:
                    raise RuntimeError(f"refused for good: {response.status_code} {response.text}")
                time.sleep(delay)
                delay = min(1.0, delay * 2)

    def _run(self) -> None:
        interval = self.batch / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.submit(self._records(self.batch))
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    def burst(self, n: int, batch: int = 100) -> None:
        """Submit `n` records as fast as the API takes them, `batch` per request."""
        for _ in range(n // batch):
            self.submit(self._records(batch))

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=60)


class Monitor:
    """Samples completions and the most active handoffs of any one reference."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, int]] = []  # (time, succeeded so far)
        self.max_active = 0
        self.errors = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> tuple[int, int]:
        from sqlalchemy import text

        engine = getattr(self, "_engine", None)
        if engine is None:
            engine = self._engine = observer(self.url)
        with engine.connect() as conn:
            done = conn.execute(
                text("SELECT count(*) FROM ingestion_handoffs WHERE state = 'succeeded'")
            ).scalar_one()
            active = conn.execute(
                text(
                    "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM "
                    "ingestion_handoffs WHERE state IN ('queued', 'running', 'retry_wait') "
                    "GROUP BY reference_id) AS a"
                )
            ).scalar_one()
        return int(done), int(active)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                done, active = self.sample()
            except Exception:  # the database may be down: that is the point
                self.errors += 1
                engine = getattr(self, "_engine", None)
                if engine is not None:
                    engine.dispose()
            else:
                self.samples.append((time.monotonic(), done))
                self.max_active = max(self.max_active, active)
            time.sleep(0.25)

    def rate(self, start: float, end: float) -> float:
        inside = [(t, d) for t, d in self.samples if start <= t <= end]
        if len(inside) < 2:
            return 0.0
        (t0, d0), (t1, d1) = inside[0], inside[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)


# -- scenarios ------------------------------------------------------------------------------------


@dataclass
class Timing:
    baseline: float
    fault: float
    recovery: float
    rate: float
    crash_retry: float = 15.0  # HANDOFF_CRASH_RETRY_SECONDS: the product's default

    @classmethod
    def of(cls, short: bool) -> Timing:
        # Short runs wait 1 s after a crash, so that what the fault left behind drains soon.
        return cls(1.5, 2, 2, 60, crash_retry=1.0) if short else cls(20, 20, 30, 100)


@dataclass
class Outcome:
    scenario: str
    engine: str
    accepted: int
    baseline_rate: float
    recovery_rate: float
    recovery_ratio: float
    lost: int
    duplicates: int
    max_active: int
    crashed: list[str]
    refusals: int
    seconds: float

    @property
    def ok(self) -> bool:
        return (
            self.recovery_ratio >= 0.95
            and self.lost == 0
            and self.duplicates == 0
            and self.max_active <= 1
            and not self.crashed
        )


Fault = Callable[["Context"], None]


@dataclass
class Context:
    service: Service
    producer: Producer
    timing: Timing
    cluster: PrivateCluster | None
    db_url: str


def _fault_postgres_restart(ctx: Context) -> None:
    assert ctx.cluster is not None
    ctx.cluster.stop("fast")
    time.sleep(min(3.0, ctx.timing.fault / 2))
    ctx.cluster.start()
    time.sleep(max(0.0, ctx.timing.fault - 3.0))


def _service_pids(ctx: Context) -> str:
    db = ctx.db_url.rpartition("/")[2]
    return (
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' "
        "AND pid <> pg_backend_pid()"
    )


def _fault_pg_backend_kill(ctx: Context) -> None:
    assert ctx.cluster is not None
    end = time.monotonic() + ctx.timing.fault
    while time.monotonic() < end:
        ctx.cluster.admin(_service_pids(ctx))
        time.sleep(1.0)


def _fault_pool_exhaustion(ctx: Context) -> None:
    assert ctx.cluster is not None
    in_use = len(
        ctx.cluster.admin("SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'")
    )
    hold = max(0, ctx.cluster.max_connections - 3 - in_use - 4)  # leave a few, like a busy server
    conns = []
    try:
        for _ in range(hold):
            with suppress(psycopg.OperationalError):
                conns.append(psycopg.connect(ctx.cluster.url(), autocommit=True))
        time.sleep(ctx.timing.fault)
    finally:
        for conn in conns:
            conn.close()


def _fault_crash_recovery(ctx: Context) -> None:
    ctx.service.kill_worker(0)
    time.sleep(ctx.timing.fault / 2)
    ctx.service.start_worker(0)
    time.sleep(ctx.timing.fault / 2)


def _fault_repeated_kills(ctx: Context) -> None:
    end = time.monotonic() + ctx.timing.fault
    rng = random.Random(7)
    while time.monotonic() < end:
        n = rng.randrange(ctx.service.workers)
        ctx.service.kill_worker(n)
        time.sleep(0.5)
        ctx.service.start_worker(n)
        time.sleep(2.0)


def _fault_idle_in_tx(ctx: Context) -> None:
    with psycopg.connect(ctx.db_url) as conn:
        conn.execute("SELECT txid_current()")  # a transaction that pins the xmin horizon
        conn.execute("SELECT count(*) FROM ingestion_handoffs")
        time.sleep(ctx.timing.fault)
        conn.rollback()


def _fault_sustained_high_load(ctx: Context) -> None:
    original = ctx.producer.rate
    ctx.producer.rate = original * 1.5 * 2  # well past the drain rate of throttled workers
    time.sleep(ctx.timing.fault)
    ctx.producer.rate = original


def _fault_active_readers(ctx: Context) -> None:
    stop = threading.Event()

    def reader(offset: float) -> None:
        time.sleep(offset)
        while not stop.is_set():
            try:
                if ctx.db_url.startswith("sqlite"):
                    import sqlite3

                    lite = sqlite3.connect(ctx.db_url.removeprefix("sqlite:///"), timeout=30)
                    lite.execute("BEGIN")  # a read snapshot held open, as a report would
                    for table in ("ingestion_handoffs", "scrape_records", "documents"):
                        lite.execute(f"SELECT count(*), max(rowid) FROM {table}").fetchall()
                    time.sleep(1.0)
                    lite.rollback()
                    lite.close()
                else:
                    with psycopg.connect(ctx.db_url) as conn:
                        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                        for table in ("ingestion_handoffs", "scrape_records", "documents"):
                            conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchall()
                        time.sleep(1.0)
            except Exception:
                time.sleep(0.2)

    threads = [threading.Thread(target=reader, args=(n * 0.25,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(ctx.timing.fault)
    stop.set()
    for t in threads:
        t.join(timeout=10)


def _fault_event_burst(ctx: Context) -> None:
    ctx.producer.burst(int(ctx.timing.rate * ctx.timing.fault * 2))


SCENARIOS: dict[str, tuple[Fault, tuple[str, ...]]] = {
    "postgres_restart": (_fault_postgres_restart, ("postgres",)),
    "pg_backend_kill": (_fault_pg_backend_kill, ("postgres",)),
    "pool_exhaustion": (_fault_pool_exhaustion, ("postgres",)),
    "crash_recovery": (_fault_crash_recovery, ("postgres", "sqlite")),
    "repeated_kills": (_fault_repeated_kills, ("postgres", "sqlite")),
    "idle_in_tx": (_fault_idle_in_tx, ("postgres",)),
    "sustained_high_load": (_fault_sustained_high_load, ("postgres",)),
    "active_readers": (_fault_active_readers, ("postgres", "sqlite")),
    "event_burst": (_fault_event_burst, ("postgres", "sqlite")),
}


def check(db_url: str, accepted: set[tuple[str, str]]) -> tuple[int, int]:
    """(lost, duplicates) once everything has drained."""
    from sqlalchemy import text

    engine = observer(db_url)
    try:
        with engine.connect() as conn:
            states = {
                (r[0], r[1]): r[2]
                for r in conn.execute(
                    text("SELECT reference_id, payload_hash, state FROM ingestion_handoffs")
                )
            }
            docs = conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT reference_id, payload_hash FROM documents "
                    "GROUP BY reference_id, payload_hash HAVING count(*) > 1) AS d"
                )
            ).scalar_one()
            twice = conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT handoff_id FROM ingestion_jobs WHERE "
                    "outcome = 'succeeded' GROUP BY handoff_id HAVING count(*) > 1) AS j"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    lost = sum(1 for pair in accepted if states.get(pair) not in TERMINAL)
    return lost, int(docs) + int(twice)


def drained(db_url: str) -> bool:
    from sqlalchemy import text

    engine = observer(db_url)
    try:
        with engine.connect() as conn:
            left = conn.execute(
                text(
                    "SELECT count(*) FROM ingestion_handoffs WHERE state IN "
                    "('queued', 'running', 'retry_wait', 'waiting')"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    return int(left) == 0


def run_scenario(name: str, engine: str, *, short: bool, workdir: Path) -> Outcome:
    fault, engines = SCENARIOS[name]
    if engine not in engines:
        raise ValueError(f"{name} does not apply to {engine}")
    timing = Timing.of(short)
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = PrivateCluster() if engine == "postgres" else None
    with cluster.running() if cluster else _nothing():
        db_url = cluster.url() if cluster else f"sqlite:///{workdir / 'chaos.db'}"
        service = Service(db_url, workdir, crash_retry=timing.crash_retry)
        service.start()
        monitor = Monitor(db_url)
        producer = Producer(service.base, f"{name}-{engine}", rate=timing.rate)
        ctx = Context(service, producer, timing, cluster, db_url)
        monitor.start()
        producer.start()
        try:
            time.sleep(timing.baseline)
            t_fault = time.monotonic()
            fault(ctx)
            t_recovered = time.monotonic()
            time.sleep(timing.recovery)
            producer.stop()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with suppress(Exception):
                    if drained(db_url):
                        break
                time.sleep(0.5)
            crashed = service.crashed()
        finally:
            producer.stop()
            monitor.stop()
            service.stop()
        baseline = monitor.rate(t_fault - timing.baseline + 1, t_fault)
        recovery = monitor.rate(t_recovered, t_recovered + timing.recovery)
        lost, duplicates = check(db_url, producer.accepted)
    return Outcome(
        scenario=name,
        engine=engine,
        accepted=len(producer.accepted),
        baseline_rate=round(baseline, 1),
        recovery_rate=round(recovery, 1),
        recovery_ratio=round(recovery / baseline, 3) if baseline else 0.0,
        lost=lost,
        duplicates=duplicates,
        max_active=monitor.max_active,
        crashed=crashed,
        refusals=producer.refusals,
        seconds=round(time.monotonic() - started, 1),
    )


# -- duplicate storm ------------------------------------------------------------------------------


def storm_records(references: int) -> list[dict[str, Any]]:
    """Two versions of each reference, the second fetched a minute after the first."""
    out = []
    for n in range(references):
        for version, fetched in ((1, "2026-01-01T00:00:00Z"), (2, "2026-01-01T00:01:00Z")):
            out.append(
                {
                    "source": "storm",
                    "reference_id": f"storm-{n}",
                    "content_type": "text/plain",
                    "fetched_at": fetched,
                    "body": f"version {version} of storm-{n}",
                }
            )
    return out


def storm_producer(base: str, seed: int, references: int) -> None:
    """One storm process: every record, in its own shuffled order and batch sizes, twice."""
    rng = random.Random(seed)
    records = storm_records(references) * 2
    rng.shuffle(records)
    producer = Producer(base, f"storm{seed}", rate=1.0)
    while records:
        size = rng.randint(1, 25)
        batch, records = records[:size], records[size:]
        producer.submit(batch)
    print(json.dumps(sorted(producer.accepted)))


@dataclass
class StormOutcome:
    engine: str
    processes: int
    references: int
    worker_kills: int
    handoffs_per_pair_max: int
    documents_per_version_max: int
    newest_current: int
    lost: int
    crashed: list[str]

    @property
    def ok(self) -> bool:
        return (
            self.handoffs_per_pair_max == 1
            and self.documents_per_version_max == 1
            and self.newest_current == self.references
            and self.lost == 0
            and not self.crashed
        )


def run_duplicate_storm(
    engine: str,
    *,
    processes: int = 4,
    references: int = 150,
    workdir: Path,
    crash_retry: float = 15.0,
) -> StormOutcome:
    """`processes` producer processes submit the same versions over HTTP, overlapping, while a
    worker is SIGKILLed and restarted every second or so. In the end: one handoff per version,
    one document per ingested version, and each reference's newest version current."""
    from sqlalchemy import text

    workdir.mkdir(parents=True, exist_ok=True)
    cluster = PrivateCluster() if engine == "postgres" else None
    with cluster.running() if cluster else _nothing():
        db_url = cluster.url() if cluster else f"sqlite:///{workdir / 'storm.db'}"
        service = Service(db_url, workdir, crash_retry=crash_retry)
        service.start()
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); import chaos; "
            "chaos.storm_producer(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))"
        )
        producers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    code,
                    str(Path(__file__).parent),
                    service.base,
                    str(seed),
                    str(references),
                ],
                stdout=subprocess.PIPE,
            )
            for seed in range(processes)
        ]
        kills = 0
        rng = random.Random(11)
        try:
            while any(p.poll() is None for p in producers):
                n = rng.randrange(service.workers)
                service.kill_worker(n)
                kills += 1
                time.sleep(0.3)
                service.start_worker(n)
                time.sleep(rng.uniform(0.5, 1.5))
            accepted: set[tuple[str, str]] = set()
            for proc in producers:
                out, _ = proc.communicate()
                if proc.returncode != 0:
                    raise RuntimeError("a storm producer failed")
                accepted |= {(pair[0], pair[1]) for pair in json.loads(out)}
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not drained(db_url):
                time.sleep(0.5)
            crashed = service.crashed()
        finally:
            for proc in producers:
                if proc.poll() is None:
                    proc.kill()
            service.stop()
        lost, _ = check(db_url, accepted)
        sa = observer(db_url)
        try:
            with sa.connect() as conn:
                per_pair = conn.execute(
                    text(
                        "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM "
                        "ingestion_handoffs GROUP BY reference_id, payload_hash) AS x"
                    )
                ).scalar_one()
                per_version = conn.execute(
                    text(
                        "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM documents "
                        "GROUP BY reference_id, payload_hash) AS x"
                    )
                ).scalar_one()
                newest = conn.execute(
                    text(
                        "SELECT count(*) FROM documents WHERE superseded_at IS NULL "
                        "AND text LIKE 'version 2 of %'"
                    )
                ).scalar_one()
        finally:
            sa.dispose()
    return StormOutcome(
        engine=engine,
        processes=processes,
        references=references,
        worker_kills=kills,
        handoffs_per_pair_max=int(per_pair),
        documents_per_version_max=int(per_version),
        newest_current=int(newest),
        lost=lost,
        crashed=crashed,
    )


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def table(outcomes: list[Outcome]) -> str:
    lines = [
        "| scenario | engine | accepted | recovery ratio | lost | duplicates | max active | ok |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.scenario} | {o.engine} | {o.accepted} | {o.recovery_ratio:.0%} | {o.lost} "
            f"| {o.duplicates} | {o.max_active} | {'yes' if o.ok else '**no**'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="all", help="a name, or all")
    parser.add_argument("--engine", choices=("postgres", "sqlite", "both"), default="both")
    parser.add_argument("--short", action="store_true", help="the CI-sized version")
    parser.add_argument("--out", type=Path, help="write the table into this Markdown file")
    parser.add_argument("--storm", action="store_true", help="run the duplicate storm instead")
    args = parser.parse_args(argv)
    if args.storm:
        with tempfile.TemporaryDirectory(prefix="handoff-storm-") as tmp:
            results = [
                run_duplicate_storm(engine, workdir=Path(tmp) / engine)
                for engine in ("postgres", "sqlite")
                if args.engine in ("both", engine)
            ]
        for result in results:
            print(json.dumps({**asdict(result), "ok": result.ok}))
        return 0 if all(r.ok for r in results) else 1
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="handoff-chaos-") as tmp:
        for name in names:
            for engine in SCENARIOS[name][1]:
                if args.engine not in ("both", engine):
                    continue
                outcome = run_scenario(
                    name, engine, short=args.short, workdir=Path(tmp) / f"{name}-{engine}"
                )
                print(json.dumps(asdict(outcome)), flush=True)
                outcomes.append(outcome)
    print(table(outcomes))
    if args.out:
        write_report(args.out, outcomes, short=args.short)
    return 0 if all(o.ok for o in outcomes) else 1


def write_report(path: Path, outcomes: list[Outcome], *, short: bool) -> None:
    marker = "<!-- chaos table -->"
    text = path.read_text() if path.exists() else f"# Reliability\n\n{marker}\n{marker}\n"
    head, _, rest = text.partition(marker)
    _, _, tail = rest.partition(marker)
    body = (
        f"{marker}\nCommand: `.venv/bin/python bench/chaos.py --scenario all"
        f"{' --short' if short else ''} --out {path.as_posix()}`\n\n{table(outcomes)}\n{marker}"
    )
    path.write_text(head + body + tail)


if __name__ == "__main__":
    raise SystemExit(main())
