"""A worker process for tests: `python -m tests.integration.worker_proc DB_URL MODE MARKER`.

MODE `hang` runs a handler that writes MARKER and then blocks (to be SIGKILLed); `slow` writes
MARKER and takes a second; `forever` writes MARKER and blocks for a minute (to be released)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

from app.db.uow import Database
from app.domain.models import ClaimedJob
from app.worker.runner import Worker, WorkerConfig


def main() -> None:
    url, mode, marker = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    grace = float(sys.argv[4]) if len(sys.argv) > 4 else 30.0

    def handler(job: ClaimedJob) -> None:
        # Written beside and renamed into place, so a reader that sees MARKER sees it whole.
        partial = marker.with_suffix(".partial")
        partial.write_text(f"{job.handoff.id} {job.handoff.lease_token}")
        partial.replace(marker)
        time.sleep({"hang": 3600.0, "slow": 1.0, "forever": 60.0}[mode])

    db = Database(url)
    config = WorkerConfig(
        concurrency=1,
        lease=timedelta(seconds=2),
        heartbeat_every=0.5,
        poll_every=0.1,
        rescue_every=3600,
        shutdown_grace=grace,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    Worker(db, handler, config=config, worker_id=f"proc-{mode}").run(stop)


if __name__ == "__main__":
    main()
