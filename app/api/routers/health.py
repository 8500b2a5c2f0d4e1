"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import DB, AppSettings
from app.db import migrations

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(db: DB, settings: AppSettings) -> dict[str, str]:
    """The database answers and its schema is current (else 503 with the reason)."""
    db.ping()
    migrations.ensure_current(settings.database_url, settings.migrations_dir)
    return {"status": "ready"}
