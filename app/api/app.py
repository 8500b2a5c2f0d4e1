"""The application factory. Everything the app needs comes from `Settings`; nothing at import."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import __version__, metrics
from app.api import admission as admission_gate
from app.api.limits import BodyLimit
from app.api.ops import install as install_ops
from app.api.problems import COMMON, PROTECTED
from app.api.routers import admission, documents, handoffs, health, references, scraping
from app.api.routers import metrics as metrics_route
from app.db import migrations
from app.db.uow import Database
from app.domain.clock import Clock, SystemClock
from app.domain.errors import HandoffError
from app.ingest.pipeline import build_handler
from app.services import handoff_queries
from app.settings import Settings
from app.worker.runner import Wakeup, Worker, WorkerConfig

PROBLEM = "application/problem+json"
log = structlog.get_logger("handoff.api")


def create_app(
    settings: Settings, *, clock: Clock | None = None, wake: Wakeup | None = None
) -> FastAPI:
    """The API. `wake`, when given, is set after each submission commits: it wakes a worker
    running in this same process (`handoff run`) without waiting for its poll."""
    clock = clock or SystemClock()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        migrations.ensure_current(settings.database_url, settings.migrations_dir)
        if not settings.auth_enabled:
            log.warning(
                "auth.disabled",
                message="HANDOFF_AUTH_ENABLED=false: every route is open to anyone who can "
                "reach this port",
            )
        db = Database(settings.database_url)
        app.state.db = db
        app.state.settings = settings
        app.state.clock = clock
        app.state.wake = wake
        app.state.inline_worker = (
            Worker(
                db,
                build_handler(settings, db, clock),
                config=WorkerConfig.from_settings(settings),
                clock=clock,
            )
            if settings.inline_ingestion
            else None
        )
        app.state.metrics_registry = _metrics_registry(db, clock)
        app.state.admission = admission_gate.AdmissionGate(
            db,
            clock,
            max_backlog=settings.max_backlog,
            cache_seconds=settings.admission_cache_seconds,
        )
        yield
        db.dispose()

    app = FastAPI(title="Handoff", version=__version__, lifespan=lifespan)
    app.include_router(scraping.router, responses=PROTECTED)
    app.include_router(handoffs.router, responses=PROTECTED)
    app.include_router(references.router, responses=PROTECTED)
    app.include_router(documents.router, responses=PROTECTED)
    app.include_router(health.router, responses=COMMON)
    install_ops(app)  # the operators' dashboard at /ops (not in the OpenAPI document)
    app.include_router(admission.router, responses=PROTECTED)
    app.include_router(metrics_route.router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    _error_handlers(app)
    admission_gate.install(app)
    return app


def _metrics_registry(db: Database, clock: Clock) -> CollectorRegistry:
    """This process's counters plus rows and oldest age per state, read at each scrape."""

    def read() -> metrics.StateFigures:
        found = db.run(lambda uow: handoff_queries.state_rows(uow, now=clock.now()), write=False)
        return metrics.StateFigures(found.rows, found.oldest_age_seconds)

    return metrics.registry_with([metrics.StateCollector(read)])


def _problem(status: int, title: str, detail: str, **extra: object) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HandoffError)
    async def handoff_error(_: Request, exc: HandoffError) -> JSONResponse:
        extra = {"field": exc.field} if exc.field else {}
        headers = {"Retry-After": "5"} if exc.status == 503 else None
        response = _problem(exc.status, type(exc).__name__, exc.message, **extra)
        if headers:
            response.headers.update(headers)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _field_errors(exc)
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        return _problem(422, "InvalidInput", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _problem(exc.status_code, "HTTPError", str(exc.detail))


_FIELD = re.compile(r"^[a-z_][a-z0-9_]*$")


def _field_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    """Errors as `{field, message}`, fields written as a client knows them (`records.2.url`).

    The submission body may be one record or a batch, so pydantic reports both shapes, each
    under a branch label (`SubmitBatch`, `function-after[…, ScrapeSubmission]`). Only the
    shape the client sent is kept (a batch is an object with `records`), without labels."""
    batch = isinstance(exc.body, dict) and "records" in exc.body
    out: list[dict[str, str]] = []
    for error in exc.errors():
        loc = [str(p) for p in error["loc"]]
        label = loc[1] if len(loc) > 1 and not _FIELD.match(loc[1]) else None
        if label is not None and ("SubmitBatch" in label) != batch:
            continue  # an error of the shape the client did not send
        parts = [p for p in loc[1:] if p != label]
        item = {"field": ".".join(parts) or loc[0], "message": str(error["msg"])}
        if item not in out:
            out.append(item)
    return out or [{"field": "body", "message": "invalid request body"}]
