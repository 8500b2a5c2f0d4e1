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


@pytest.mark.chaos
@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
def test_a_duplicate_storm_under_worker_kills_leaves_one_handoff_per_version(
    engine: str, tmp_path: Path
) -> None:
    """Four processes submit the same two versions of 40 references over HTTP, each twice, in
    their own order and batch sizes, while workers are SIGKILLed and restarted."""
    outcome = chaos.run_duplicate_storm(
        engine, references=40, workdir=tmp_path / "storm", crash_retry=1.0
    )
    assert outcome.worker_kills > 0
    assert outcome.handoffs_per_pair_max == 1, outcome
    assert outcome.documents_per_version_max == 1, outcome
    assert outcome.newest_current == 40, outcome  # each reference ends on its newest version
    assert outcome.lost == 0, outcome
    assert outcome.crashed == [], outcome
