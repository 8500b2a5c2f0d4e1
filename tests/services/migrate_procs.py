"""Process body for test_migrations.py: migrate one database from a spawned OS process."""

from __future__ import annotations

import traceback
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from app.db import migrations


def migrate(url: str, migrations_dir: Path, barrier: Barrier, results: Queue[object]) -> None:
    """Wait for the others, then apply; report the ids applied, or the traceback."""
    try:
        barrier.wait(timeout=60)
        results.put(migrations.apply(url, migrations_dir))
    except Exception:
        results.put(traceback.format_exc())
