"""Plots and the results table of bench/perf.py, written into docs/ (stub)."""
from __future__ import annotations
from pathlib import Path
from typing import Any


def render(result: dict[str, Any], docs: Path) -> None:
    pass
