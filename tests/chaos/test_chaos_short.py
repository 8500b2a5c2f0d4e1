"""The short version of every chaos scenario (bench/chaos.py), on each engine it applies to:
the real API and worker processes under load, a fault injected, then the invariants — nothing
lost, nothing done twice, never two active handoffs for one reference, no process crashed.

PostgreSQL scenarios run on a private cluster the harness starts itself, so a restart or a
starved connection limit disturbs nothing else."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from app.settings import REPO_ROOT


def _load_chaos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chaos", REPO_ROOT / "bench" / "chaos.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chaos"] = module
    spec.loader.exec_module(module)
    return module


chaos = _load_chaos()
CASES = [(name, engine) for name, (_, engines) in chaos.SCENARIOS.items() for engine in engines]


@pytest.mark.chaos
@pytest.mark.parametrize(("scenario", "engine"), CASES, ids=[f"{n}-{e}" for n, e in CASES])
def test_scenario_keeps_the_invariants(scenario: str, engine: str, tmp_path: Path) -> None:
    outcome = chaos.run_scenario(scenario, engine, short=True, workdir=tmp_path / "run")
    assert outcome.accepted > 0
    assert outcome.crashed == [], f"processes died: {outcome.crashed}"
    assert outcome.lost == 0, outcome
    assert outcome.duplicates == 0, outcome
    assert outcome.max_active == 1, outcome
    assert outcome.recovery_rate > 0, outcome  # work completed after the fault
