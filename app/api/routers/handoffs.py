"""Operators read handoffs here: counts by state x reason, one handoff with its history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from app.api.auth import require
from app.api.deps import DB
from app.domain.errors import NotFound
from app.domain.tokens import Scope
from app.services import ingestion_handoff

router = APIRouter(prefix="/v1/handoffs", tags=["handoffs"])
READ = [require(Scope.READ)]


class Stats(BaseModel):
    counts: dict[str, dict[str, int]]
    totals: dict[str, int]


class HandoffDetail(BaseModel):
    handoff: dict[str, Any]
    events: list[dict[str, Any]]
    attempts: list[dict[str, Any]]


@router.get("/stats", response_model=Stats, dependencies=READ)
def stats(db: DB) -> Stats:
    """Counts by state x reason code; every state and reason present, zeros included."""
    counts = db.run(ingestion_handoff.stats, write=False)
    return Stats(counts=counts, totals={s: sum(r.values()) for s, r in counts.items()})


@router.get("/{handoff_id}", response_model=HandoffDetail, dependencies=READ)
def get_handoff(handoff_id: int, db: DB) -> HandoffDetail:
    with db.transaction(write=False) as uow:
        found = uow.handoffs.get(handoff_id)
        if found is None:
            raise NotFound(f"no handoff {handoff_id}", field="handoff_id")
        events = uow.handoffs.events(handoff_id)
        attempts = uow.jobs.of_handoff(handoff_id)
    return HandoffDetail(
        handoff=_plain(found),
        events=[_plain(e) for e in events],
        attempts=[_plain(a) for a in attempts],
    )


def _plain(obj: Any) -> dict[str, Any]:
    out = {}
    for name in obj.__slots__:
        value = getattr(obj, name)
        out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out
