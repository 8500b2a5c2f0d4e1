"""A smoke test of bench/perf.py's pieces at tiny sizes: each system enqueues, the claim-cost
phase claims through each system's own claim (Handoff's explained), and the docs render."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.bench._load import load
from tests.conftest import PG_ADMIN_URL

perf = load("perf")
perf_docs = load("perf_docs")


def test_tiny_phases_and_rendering(tmp_path: Path) -> None:
    names = {s: f"bench_t_{s}_{uuid.uuid4().hex[:8]}" for s in perf.SYSTEMS}
    report = perf.Report()
    spec = perf.EnqueueSpec(count=20, size=10, clients=1, duplicates=0.5, warmup_calls=1)
    try:
        for system in perf.SYSTEMS:
            perf.create_database(PG_ADMIN_URL, names[system])
            perf.set_up_schema(system, perf.db_url(PG_ADMIN_URL, names[system]))
            if system != "procrastinate":  # it has no batched-with-duplicates figure
                result = perf.enqueue_phase(system, PG_ADMIN_URL, names[system], spec)
                assert result["jobs_per_s"] > 0
                report.add("enqueue_dup_batched", system, result)
            for backlog in (50, 100):
                claims = perf.claim_phase(
                    system, PG_ADMIN_URL, names[system], backlog, 5, explain=backlog == 100
                )
                assert claims["claim_ms_median"] > 0
                report.add("claim_cost", system, claims)
    finally:
        for name in names.values():
            perf.drop_database(PG_ADMIN_URL, name)
    claims_summary = perf.summarise_claims(report, (50, 100))
    plan = claims_summary["handoff"]["explain_claim_largest"]
    assert "ingestion_handoffs_runnable" in plan["indexes"]
    figures = perf.summarise_throughput(report)
    assert figures["enqueue_dup_batched"]["ratio_handoff_raw_sql"] > 0
    result = {
        "created_at": "now",
        "mode": "tiny",
        "wall_seconds": 1.0,
        "command": "bench/perf.py --tiny",
        "machine": {
            "handoff_commit": "abc",
            "cpu_count": 2,
            "python": "3",
            "postgresql": "PostgreSQL 15",
            "loadavg_at_start": [1.0],
            "loadavg_at_end": [1.0],
        },
        "sizes": {"repeat": 1, "claims": 5, "latency_rate": 200.0, "latency_seconds": 1.0},
        "figures": figures,
        "latency": {},
        "claim_cost": claims_summary,
        "sqlite": {},
        "targets": perf.targets(figures, {}, claims_summary),
    }
    (tmp_path / "benchmarks.md").write_text(f"x\n{perf_docs.BEGIN}\nold\n{perf_docs.END}\ny\n")
    perf_docs.render(result, tmp_path)
    text = (tmp_path / "benchmarks.md").read_text()
    assert "old" not in text
    assert "Claim cost" in text
    assert text.startswith("x\n")
    assert text.endswith("y\n")
    for png in perf_docs.PNGS:
        assert (tmp_path / png).stat().st_size > 0


@pytest.mark.parametrize("system", perf.LITE_SYSTEMS)
def test_tiny_sqlite_enqueue_phases(system: str, tmp_path: Path) -> None:
    spec = perf.EnqueueSpec(count=20, size=1, clients=1, duplicates=0.0, warmup_calls=2)
    result = perf.sqlite_enqueue_phase(system, tmp_path, spec)
    assert result["jobs"] == 20
    assert result["jobs_per_s"] > 0


def test_a_client_that_fails_fails_its_phase_at_once() -> None:
    """The forked clients cannot connect (no such database): the phase raises, naming the exit
    code, as soon as one has exited, instead of waiting out the timeout for their reports."""
    url = perf.db_url(PG_ADMIN_URL, f"bench_missing_{uuid.uuid4().hex[:8]}")
    batches = perf.chunks(perf.make_items("raw_sql", perf.reference_ids("r", 4)), 1)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="raw_sql client exited 1 before reporting"):
        perf.run_enqueue_parallel("raw_sql", url, batches, 2)
    assert time.monotonic() - started < 30 < perf.DRAIN_TIMEOUT
