"""bench/adapter.py speaks the portable job-queue benchmark's JSONL protocol: run it for a few
seconds against a real PostgreSQL database, stop it with SIGTERM, and read what it printed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psycopg

from app.settings import REPO_ROOT

REQUIRED = {
    "claim_p50_ms",
    "claim_p95_ms",
    "claim_p99_ms",
    "enqueue_rate",
    "completion_rate",
    "queue_depth",
}
SAMPLE_KEYS = {"t", "system", "kind", "subject_kind", "subject", "metric", "value", "window_s"}


def test_adapter_emits_the_protocol_and_completes_jobs(pg_url: str) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": pg_url,
        "SCENARIO": "long_horizon",
        "PRODUCER_MODE": "fixed",
        "PRODUCER_RATE": "40",
        "WORKER_COUNT": "4",
        "JOB_WORK_MS": "1",
        "SAMPLE_EVERY_S": "1",
    }
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "bench" / "adapter.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        time.sleep(5.0)
        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        out, err = process.communicate(timeout=15)
        assert time.monotonic() - stopped < 5.0, "SIGTERM must stop the adapter within 5 s"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err[-2000:]
    records = [json.loads(line) for line in out.splitlines()]  # every stdout line is JSON
    assert records[0]["kind"] == "descriptor"
    assert records[0]["system"] == "handoff"
    assert "public.ingestion_handoffs" in records[0]["event_tables"]
    samples = records[1:]
    assert samples, err[-2000:]
    for sample in samples:
        assert set(sample) >= SAMPLE_KEYS, sample
        assert sample["kind"] == "adapter"
        assert isinstance(sample["value"], int | float)
    assert {s["metric"] for s in samples} >= REQUIRED
    completion = [s["value"] for s in samples if s["metric"] == "completion_rate"]
    assert max(completion) > 0
    claim_p50 = [s["value"] for s in samples if s["metric"] == "claim_p50_ms"]
    assert max(claim_p50) > 0
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM ingestion_handoffs WHERE state = 'succeeded'"
        ).fetchone()
    assert row is not None
    assert row[0] > 0
