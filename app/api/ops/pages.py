"""Rendering: one autoescaping Jinja2 environment over the package's templates, the security
headers every dashboard response carries, and the pages for refusals."""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from app import __version__
from app.api.ops import session, views
from app.api.ops.session import Viewer

#: Scripts and styles come from /ops/static only (no inline script, no CDN); no framing.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@cache
def environment() -> jinja2.Environment:
    """Every value is escaped unless a template says otherwise (none does): handoff data
    comes from scrapers and is hostile."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("app.api.ops", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals |= {
        "when": views.when,
        "age": views.age,
        "since": views.since,
        "duration": views.duration,
        "size": views.size,
        "asset_version": __version__,
    }
    env.filters["q"] = lambda value: quote(str(value), safe="")
    return env


def render(
    request: Request, viewer: Viewer | None, template: str, *, status: int = 200, **context: Any
) -> HTMLResponse:
    """A page (or a fragment) for `viewer`; a first visit also gets its CSRF cookie."""
    clock = request.app.state.clock
    context.setdefault("nav", "")
    context.setdefault("error", None)
    context.setdefault("notice", None)
    html = environment().get_template(template).render(
        viewer=viewer, now=clock.now(), auth_enabled=request.app.state.settings.auth_enabled,
        **context,
    )  # fmt: skip
    response = HTMLResponse(html, status_code=status, headers=HEADERS)
    if viewer is not None and viewer.new_csrf:
        session.set_csrf_cookie(request, response, viewer.csrf)
    return response
