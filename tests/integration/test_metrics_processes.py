"""Metrics across processes: `handoff worker` serves its own counters on its metrics port (not
the database's per-state figures, which the API serves), and `handoff run` shows the worker's
counters at the API's /metrics, since both live in one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.db.uow import Database
from app.domain.clock import SystemClock
from app.domain.records import ScrapeSubmission
from app.services import scrape_storage
from tests.support import free_port, wait_for

HANDOFF = str(Path(sys.executable).with_name("handoff"))


def samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(url).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def submit(db: Database, *reference_ids: str) -> None:
    now = SystemClock().now()
    subs = [ScrapeSubmission(source="t", reference_id=r, body=f"<p>{r}</p>") for r in reference_ids]
    prepared = scrape_storage.prepare_all(subs, now=now, max_body_bytes=10_000)
    db.run(lambda uow: scrape_storage.store_and_hand_off(uow, prepared, now=now, actor="client:t"))


def test_a_worker_process_serves_its_counters_on_its_metrics_port(
    db: Database, db_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    env |= {
        "HANDOFF_DATABASE_URL": db_url,
        "HANDOFF_WORKER_METRICS_PORT": str(port),
        "HANDOFF_POLL_SECONDS": "0.2",
        "HANDOFF_LOG_FORMAT": "json",
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [HANDOFF, "worker", "--concurrency", "2"], env=env, stdout=log_file, stderr=log_file
        )
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            wait_for(lambda: httpx.get(url).status_code == 200, tolerate=(httpx.TransportError,))
            submit(db, "w1", "w2")
            claimed = frozenset(
                {("from_state", "queued"), ("to_state", "running"), ("reason_code", "claimed")}
            )

            def both_done() -> bool:
                found = samples(url)
                return (
                    value(found, "handoff_job_duration_seconds_count", outcome="succeeded") == 2
                    and found.get(("handoff_transitions_total", claimed)) == 2
                )

            wait_for(both_done)
            found = samples(url)
            assert value(found, "handoff_claim_latency_seconds_count") == 2
            # The per-state figures come from the API, not from every worker.
            assert not any(name == "handoff_rows" for name, _ in found)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    claims = [line for line in lines if line["event"] == "worker.claimed"]
    assert sorted(line["reference_id"] for line in claims) == ["w1", "w2"]
    assert all(line["lease_token"] == 1 for line in claims)


def test_handoff_run_shows_the_workers_counters_at_the_apis_metrics(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    env |= {"HANDOFF_AUTH_ENABLED": "false", "HANDOFF_POLL_SECONDS": "0.2"}
    with (tmp_path / "run.log").open("w") as log_file:
        proc = subprocess.Popen(
            [HANDOFF, "run", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=log_file,
            stderr=log_file,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(
                lambda: httpx.get(f"{base}/readyz").status_code == 200,
                tolerate=(httpx.TransportError,),
            )
            record = {"source": "e2e", "url": "https://example.com/m", "body": "<p>m</p>"}
            assert httpx.post(f"{base}/v1/scrape-records", json=record).status_code == 200

            def ingested() -> bool:
                found = samples(f"{base}/metrics")
                return (
                    value(found, "handoff_rows", state="succeeded") == 1
                    and value(found, "handoff_job_duration_seconds_count", outcome="succeeded") == 1
                )

            wait_for(ingested)
            found = samples(f"{base}/metrics")
            assert value(found, "handoff_enqueued_total", outcome="created") == 1
            assert value(found, "handoff_job_duration_seconds_count", outcome="succeeded") == 1
            assert value(found, "handoff_claim_latency_seconds_count") == 1
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
