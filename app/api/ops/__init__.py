"""The operators' dashboard at `/ops`: server-rendered pages over the `/v1` handlers, a
cookie login for browsers, static files from this package. Not part of the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from app.api.ops import router as routes
from app.api.ops.pages import render
from app.api.ops.session import CsrfRejected, LoginRequired, NotAllowed

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Serve the dashboard from `app`: its routes, its static files, its refusal pages."""
    app.include_router(routes.router)
    app.mount("/ops/static", StaticFiles(directory=STATIC), name="ops-static")

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _: Exception) -> Response:
        return routes.login_redirect(request)

    @app.exception_handler(NotAllowed)
    async def not_allowed(request: Request, exc: Exception) -> Response:
        message = exc.message if isinstance(exc, NotAllowed) else str(exc)
        return render(request, None, "error.html", status=403, message=message)

    @app.exception_handler(CsrfRejected)
    async def csrf_rejected(request: Request, _: Exception) -> Response:
        message = (
            "This form was refused: it came from another site, or the page was too old. "
            "Reload the page and try again."
        )
        return render(request, None, "error.html", status=403, message=message)
