"""Start-up of a long-running process: the heap built so far leaves the collector's sight."""

from __future__ import annotations

import gc

from app.heap import freeze_startup_heap


def test_the_start_up_heap_is_frozen_and_later_objects_are_still_collected() -> None:
    try:
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() > 1000  # this process's modules at least
        cycle: list[object] = []
        cycle.append(cycle)
        gc.collect()
        assert gc.get_freeze_count() == frozen  # new objects are not frozen
        del cycle
        assert gc.collect() >= 1  # and a cycle made after start-up is still found
    finally:
        gc.unfreeze()
