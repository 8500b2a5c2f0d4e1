"""Annotated dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.db.uow import Database
from app.domain.clock import Clock
from app.settings import Settings
from app.worker.runner import Wakeup, Worker


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


def _wake(request: Request) -> Wakeup | None:
    wake: Wakeup | None = request.app.state.wake
    return wake


def _inline(request: Request) -> Worker | None:
    worker: Worker | None = request.app.state.inline_worker
    return worker


DB = Annotated[Database, Depends(_db)]
AppSettings = Annotated[Settings, Depends(_settings)]
AppClock = Annotated[Clock, Depends(_clock)]
InlineWorker = Annotated[Worker | None, Depends(_inline)]
WorkerWake = Annotated[Wakeup | None, Depends(_wake)]
