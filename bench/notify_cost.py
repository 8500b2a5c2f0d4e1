"""What the wake-up NOTIFY costs a per-row enqueue: Handoff as shipped, Handoff with the NOTIFY of
its insert trigger switched off, and Procrastinate, side by side in one run.

    .venv/bin/python bench/notify_cost.py                 # 10 rounds, 4 clients (about 2 min)
    .venv/bin/python bench/notify_cost.py --clients 1

Each round runs bench/perf.py's per-row enqueue phase (the same clients, warm-up, reset and
timing) once per variant, in rotating order; figures are medians. No worker runs, so Handoff
as shipped skips its NOTIFY (nobody is listed as waiting; migration 20260301000037) and pays
only for looking; "without NOTIFY" switches the insert trigger off altogether, the upper
bound of that skip. (A NOTIFY holds PostgreSQL's notification-queue lock through its
transaction's commit, WAL flush included, so concurrent enqueues that notify commit one at a
time.) Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import perf
from psycopg import sql

from app import log as app_log

#: variant -> (system, SQL run once on its fresh database)
VARIANTS: dict[str, tuple[perf.System, str | None]] = {
    "handoff": ("handoff", None),
    "handoff_without_notify": (
        "handoff",
        "ALTER TABLE ingestion_handoffs DISABLE TRIGGER ingestion_handoffs_notify_insert",
    ),
    "procrastinate": ("procrastinate", None),
}


def run(admin_url: str, rounds: int, clients: int, jobs: int) -> dict[str, Any]:
    suffix = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
    names = {v: f"bench_notify_{v}_{suffix}" for v in VARIANTS}
    spec = perf.EnqueueSpec(jobs, 1, clients, 0.0, 200)
    runs: dict[str, list[float]] = {v: [] for v in VARIANTS}
    try:
        for variant, (system, tweak) in VARIANTS.items():
            perf.create_database(admin_url, names[variant])
            url = perf.db_url(admin_url, names[variant])
            perf.set_up_schema(system, url)
            if tweak:
                perf.admin_execute(url, sql.Composed([sql.SQL(tweak)]))
        order = list(VARIANTS)
        for n in range(rounds):
            for variant in order[n % len(order) :] + order[: n % len(order)]:
                system = VARIANTS[variant][0]
                out = perf.enqueue_phase(system, admin_url, names[variant], spec)
                runs[variant].append(out["jobs_per_s"])
                print(f"[notify] round {n + 1} {variant}: {out['jobs_per_s']}", file=sys.stderr)
    finally:
        for name in names.values():
            perf.drop_database(admin_url, name)
    median = {v: statistics.median(r) for v, r in runs.items()}
    return {
        "benchmark": "per-row enqueue with and without the wake-up NOTIFY",
        "clients": clients,
        "jobs_per_round": jobs,
        "rounds": rounds,
        "jobs_per_s_median": median,
        "runs_jobs_per_s": runs,
        "ratio_without_notify_to_shipped": round(
            median["handoff_without_notify"] / median["handoff"], 3
        ),
        "ratio_shipped_to_procrastinate": round(median["handoff"] / median["procrastinate"], 3),
        "ratio_without_notify_to_procrastinate": round(
            median["handoff_without_notify"] / median["procrastinate"], 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-url", default=perf.DEFAULT_ADMIN_URL)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per phase")
    args = parser.parse_args()
    app_log.configure(json=True, level="WARNING")
    print(json.dumps(run(args.admin_url, args.rounds, args.clients, args.jobs), indent=2))


if __name__ == "__main__":
    main()
