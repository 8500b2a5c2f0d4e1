"""Stats, dashboard and metrics at scale: 1,000,000 handoffs in PostgreSQL.

Run from the repository root:

    .venv/bin/python bench/stats_at_scale.py --out docs/bench-stats.json

It creates a fresh database on the server (`--admin-url`, or `HANDOFF_BENCH_POSTGRES_URL`, by
default `postgresql://postgres@127.0.0.1:5432/postgres`), applies Handoff's migrations, and
generates `--rows` handoffs (default 1,000,000) with their scrape records, events and attempt
rows in a few `INSERT … SELECT generate_series` statements, spread over states and reason codes
as a busy production queue would be (most succeeded, some superseded and failed, a backlog of
queued and retrying work, a few running and waiting) and over the last 30 days, with the last
hour busier. It then runs `VACUUM ANALYZE` (as autovacuum would on such a table), starts the
real app under uvicorn on a free loopback port, and times, over `--requests` sequential requests
each after a few untimed warm-up requests:

* `GET /v1/handoffs/stats` (the stats endpoint),
* `GET /ops` (the dashboard's main page) when the app serves it,
* `GET /metrics` (a Prometheus scrape, which reads per-state rows and ages from the database),
* `GET /v1/admission` (the backpressure answer producers poll).

It prints the result as JSON (p50, p95, max in milliseconds per route), writes it to `--out`
and drops the database (unless `--keep`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere: `app` is the repo's package
    sys.path.insert(0, str(REPO_ROOT))

from app.db import migrations  # noqa: E402

DEFAULT_ADMIN_URL = os.environ.get(
    "HANDOFF_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MIGRATIONS_DIR = REPO_ROOT / "db" / "migrations"
ROUTES = ("/v1/handoffs/stats", "/ops", "/metrics", "/v1/admission")

# Per mille of the rows in each (state, reason_code): a production-like mix. Sums to 1000.
MIX: list[tuple[str, str, int]] = [
    ("succeeded", "succeeded", 850),
    ("superseded", "superseded_by_newer_payload", 45),
    ("superseded", "stale_payload", 10),
    ("failed", "permanent_validation_error", 12),
    ("failed", "permanent_error", 4),
    ("failed", "retries_exhausted", 6),
    ("failed", "payload_missing", 1),
    ("failed", "payload_hash_mismatch", 1),
    ("failed", "throttle_deadline_exceeded", 1),
    ("failed", "poison_suspected", 1),
    ("cancelled", "operator_cancelled", 4),
    ("queued", "enqueued", 35),
    ("queued", "promoted", 3),
    ("queued", "operator_retry", 2),
    ("queued", "lease_released", 1),
    ("retry_wait", "transient_error", 8),
    ("retry_wait", "rate_limited", 4),
    ("retry_wait", "unclassified_error", 2),
    ("retry_wait", "lease_expired", 2),
    ("running", "claimed", 4),
    ("waiting", "queued_behind_running", 4),
]
assert sum(n for _, _, n in MIX) == 1000

_ENQUEUE_OUTCOME = {
    "stale_payload": "rejected_stale",
    "queued_behind_running": "queued_behind_running",
}


def _bucket_sql() -> str:
    """A CASE over `b` (0..999) giving `state|reason` by the MIX per mille."""
    parts, upper = [], 0
    for state, reason, n in MIX:
        upper += n
        parts.append(f"WHEN b < {upper} THEN '{state}|{reason}'")
    return "CASE " + " ".join(parts) + " END"


def generate(url: str, rows: int) -> dict[str, Any]:
    """Fill the migrated database at `url` with `rows` handoffs and their satellite rows."""
    started = time.perf_counter()
    outcome = "CASE reason " + " ".join(
        f"WHEN '{r}' THEN '{o}'" for r, o in _ENQUEUE_OUTCOME.items()
    )
    outcome += " ELSE 'created' END"
    # A row's creation time: spread over 30 days, the newest 5 % in the last hour.
    created = (
        "CASE WHEN i % 20 = 0 THEN now() - (i % 3600) * interval '1 second' "
        "ELSE now() - interval '1 hour' - ((i * 7919) % 2592000) * interval '1 second' END"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute(
            f"""
            CREATE TEMP TABLE gen AS
            SELECT i, split_part(sr, '|', 1) AS state, split_part(sr, '|', 2) AS reason,
                   created AS created_at
            FROM (
                SELECT i, {_bucket_sql()} AS sr, {created} AS created
                FROM (SELECT i, (i * 104729) % 1000 AS b
                      FROM generate_series(1::bigint, {int(rows)}) AS i) x
            ) y
            """.encode()
        )
        conn.execute(
            b"""
            INSERT INTO scrape_records (reference_id, payload_hash, source, url, fetched_at,
                http_status, content_type, headers, body, created_at)
            SELECT 'bench:' || i, 'sha256:' || encode(sha256(i::text::bytea), 'hex'),
                   'bench' || (i % 7), 'https://example.com/p/' || i, created_at, 200,
                   'text/html', '{}'::jsonb,
                   convert_to('<html><body><h1>Page ' || i || '</h1><p>'
                              || repeat('lorem ipsum ', 12) || '</p></body></html>', 'UTF8'),
                   created_at
            FROM gen
            """
        )
        conn.execute(
            f"""
            INSERT INTO ingestion_handoffs (reference_id, payload_hash, source, fetched_at, state,
                reason_code, enqueue_outcome, run_after, attempts, failures, crashes,
                lease_token, lease_owner, lease_expires_at, last_error, created_at, updated_at,
                finished_at)
            SELECT 'bench:' || i, 'sha256:' || encode(sha256(i::text::bytea), 'hex'),
                   'bench' || (i % 7), created_at, state, reason, {outcome},
                   CASE WHEN state = 'retry_wait' THEN now() + interval '2 minutes'
                        ELSE created_at END,
                   CASE WHEN state IN ('queued', 'waiting', 'superseded', 'cancelled') THEN 0
                        ELSE 1 END,
                   CASE WHEN reason IN ('transient_error', 'unclassified_error') THEN 1
                        WHEN reason = 'retries_exhausted' THEN 5 ELSE 0 END,
                   CASE WHEN reason = 'poison_suspected' THEN 3
                        WHEN reason = 'lease_expired' THEN 1 ELSE 0 END,
                   CASE WHEN state IN ('queued', 'waiting', 'superseded', 'cancelled') THEN 0
                        ELSE 1 END,
                   CASE WHEN state = 'running' THEN 'bench-worker' END,
                   CASE WHEN state = 'running' THEN now() + interval '60 seconds' END,
                   CASE WHEN state IN ('failed', 'retry_wait') THEN 'bench: ' || reason END,
                   created_at,
                   created_at + interval '2 seconds',
                   CASE WHEN state IN ('succeeded', 'failed', 'cancelled', 'superseded')
                        THEN created_at + interval '2 seconds' END
            FROM gen
            """.encode()
        )
        # Every handoff: its creation event; claimed ones a claim and an end event.
        conn.execute(
            b"""
            INSERT INTO handoff_events (handoff_id, at, actor, from_state, to_state,
                reason_code, lease_token, detail)
            SELECT h.id, h.created_at, 'client:' || h.source, NULL,
                   CASE WHEN h.reason_code IN ('stale_payload', 'queued_behind_running')
                        THEN h.state ELSE 'queued' END,
                   CASE WHEN h.reason_code IN ('stale_payload', 'queued_behind_running')
                        THEN h.reason_code ELSE 'enqueued' END,
                   NULL, h.enqueue_outcome
            FROM ingestion_handoffs h
            UNION ALL
            SELECT h.id, h.created_at + interval '1 second', 'worker:bench', 'queued', 'running',
                   'claimed', 1, NULL
            FROM ingestion_handoffs h WHERE h.lease_token = 1
            UNION ALL
            SELECT h.id, h.updated_at, 'worker:bench', 'running', h.state, h.reason_code, 1, NULL
            FROM ingestion_handoffs h WHERE h.lease_token = 1 AND h.state <> 'running'
            UNION ALL
            SELECT h.id, h.updated_at, 'client:' || h.source, 'queued', h.state, h.reason_code,
                   NULL, NULL
            FROM ingestion_handoffs h
            WHERE h.reason_code IN ('superseded_by_newer_payload', 'operator_cancelled')
            """
        )
        conn.execute(
            """
            INSERT INTO ingestion_jobs (handoff_id, lease_token, attempt, worker_id, claimed_at,
                finished_at, outcome, retry_class, reason_code, error)
            SELECT h.id, 1, 1, 'bench', h.created_at + interval '1 second',
                   CASE WHEN h.state <> 'running' THEN h.updated_at END,
                   CASE WHEN h.state = 'succeeded' THEN 'succeeded'
                        WHEN h.state = 'failed' THEN 'failed'
                        WHEN h.state = 'retry_wait' AND h.reason_code = 'lease_expired'
                            THEN 'lease_expired'
                        WHEN h.state = 'retry_wait' THEN 'retry' END,
                   CASE WHEN h.reason_code IN ('transient_error', 'retries_exhausted')
                            THEN 'transient'
                        WHEN h.reason_code = 'rate_limited' THEN 'throttled'
                        WHEN h.reason_code IN ('lease_expired', 'poison_suspected') THEN 'crash'
                        WHEN h.reason_code = 'unclassified_error' THEN 'unclassified'
                        WHEN h.state = 'failed' THEN 'permanent' END,
                   CASE WHEN h.state <> 'running' THEN h.reason_code END,
                   h.last_error
            FROM ingestion_handoffs h WHERE h.lease_token = 1
            """
        )
        conn.execute("VACUUM ANALYZE")
        counts = {
            table: conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()[0]  # type: ignore[index]
            for table in (
                "ingestion_handoffs",
                "scrape_records",
                "handoff_events",
                "ingestion_jobs",
            )
        }
    return {"rows": counts, "seconds": round(time.perf_counter() - started, 1)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start_server(url: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "HANDOFF_DATABASE_URL": url,
        "HANDOFF_AUTH_ENABLED": "false",  # the bench times queries, not token look-ups
        "HANDOFF_LOG_FORMAT": "json",
    }
    return subprocess.Popen(
        [sys.executable, "-c", "from app.cli import main; main()", "serve", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_ready(client: httpx.Client, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the server did not start")


def time_route(client: httpx.Client, path: str, requests: int, warmup: int) -> dict[str, Any]:
    first = client.get(path)
    if first.status_code == 404:
        return {"served": False}
    first.raise_for_status()
    for _ in range(warmup):
        client.get(path).raise_for_status()
    samples = []
    for _ in range(requests):
        t0 = time.perf_counter()
        client.get(path).raise_for_status()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return {
        "served": True,
        "requests": requests,
        "p50_ms": round(statistics.median(samples), 1),
        "p95_ms": round(samples[max(0, int(len(samples) * 0.95) - 1)], 1),
        "max_ms": round(samples[-1], 1),
        "bytes": len(first.content),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", action="store_true", help="Keep the database (print its URL).")
    parser.add_argument("--reuse", help="Time against this already generated database URL.")
    args = parser.parse_args()

    base, _, _ = args.admin_url.rpartition("/")
    if args.reuse:
        url, generated = args.reuse, {"reused": True}
    else:
        name = f"bench_stats_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(args.admin_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}".encode())
        url = f"{base}/{name}"
        migrations.apply(url, MIGRATIONS_DIR)
        generated = generate(url, args.rows)
    load_before = round(os.getloadavg()[0], 2)
    port = _free_port()
    server = _start_server(url, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            _wait_ready(client)
            timings = {p: time_route(client, p, args.requests, args.warmup) for p in ROUTES}
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = {
        "generated": generated,
        "timings": timings,
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_1m_before": load_before,
            "load_average_1m_after": round(os.getloadavg()[0], 2),
            "date": datetime.now(UTC).date().isoformat(),
        },
    }
    if not args.reuse and not args.keep:
        with psycopg.connect(args.admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())
    elif args.keep:
        result["database_url"] = url
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
