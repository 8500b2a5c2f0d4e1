"""Prometheus metrics of this process, plus per-state figures read from the database.

Not part of the /v1 contract (left out of the OpenAPI document). Open by default, as
Prometheus scrapes usually are; `HANDOFF_METRICS_REQUIRE_TOKEN=true` asks for a `read` token.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from app import metrics
from app.api.auth import require
from app.domain.tokens import Scope

router = APIRouter(tags=["metrics"])
_bearer = HTTPBearer(auto_error=False)
_read_check = require(Scope.READ).dependency


def _maybe_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> None:
    if request.app.state.settings.metrics_require_token:
        _read_check(request, credentials)


@router.get("/metrics", include_in_schema=False, dependencies=[Security(_maybe_token)])
def scrape(request: Request) -> Response:
    """The text exposition format: counters of this process and the database's figures."""
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(metrics.render(registry), media_type=CONTENT_TYPE_LATEST)
