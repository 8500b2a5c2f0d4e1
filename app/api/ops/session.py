"""Who is looking at the dashboard. A browser cannot send a bearer header, so the operator
pastes a token once at `/ops/login`; it is kept in an HttpOnly, SameSite=Strict cookie (Secure
over https) and checked on every request exactly as a bearer token is (`tokens.authenticate`):
revoking it ends the session at once. With auth off (`HANDOFF_AUTH_ENABLED=false`) the
dashboard is open, like the API.

Forms that change something carry a CSRF token: a random value kept in a second SameSite=Strict
cookie and echoed in the form (double submit). A cross-site page can neither read the cookie nor
make the browser send it, and a POST whose `Origin` names another host is refused outright."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response

from app.db.uow import Database
from app.domain.tokens import ApiToken, Scope
from app.services import tokens

TOKEN_COOKIE = "handoff_ops_token"  # noqa: S105 - the cookie's name, not a secret
CSRF_COOKIE = "handoff_ops_csrf"
CSRF_FIELD = "csrf"
_COOKIE_DAYS = 7


class LoginRequired(Exception):
    """No session, or its token is unknown or revoked: the browser goes to the login page."""


class NotAllowed(Exception):
    """The session's token lacks the scope this page or action needs."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CsrfRejected(Exception):
    """A state-changing request without the session's CSRF token, or from another origin."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """The person behind a dashboard request."""

    token: ApiToken | None  # None: auth is off
    csrf: str  # the CSRF token forms must carry
    new_csrf: bool  # the browser has no CSRF cookie yet: set it with the response

    @property
    def name(self) -> str:
        return "anonymous (auth off)" if self.token is None else self.token.name

    @property
    def scopes(self) -> list[str]:
        if self.token is None:
            return ["all (auth off)"]
        return sorted(s.value for s in self.token.scopes)

    @property
    def can_operate(self) -> bool:
        return self.token is None or self.token.allows(Scope.OPERATE)


def authenticate(request: Request, secret: str) -> ApiToken | None:
    """The live token whose secret this is, looked up like a bearer token."""
    db: Database = request.app.state.db
    return db.run(lambda uow: tokens.authenticate(uow, secret), write=False)


def _viewer(request: Request) -> Viewer:
    csrf = request.cookies.get(CSRF_COOKIE, "")
    new_csrf = len(csrf) < 32
    if new_csrf:
        csrf = secrets.token_urlsafe(32)
    if not request.app.state.settings.auth_enabled:
        return Viewer(None, csrf, new_csrf)
    secret = request.cookies.get(TOKEN_COOKIE)
    token = authenticate(request, secret) if secret else None
    if token is None:
        raise LoginRequired()
    if not token.allows(Scope.READ):
        raise NotAllowed(f"the token {token.name!r} lacks the 'read' scope the dashboard needs")
    return Viewer(token, csrf, new_csrf)


#: A dashboard page's viewer; raises LoginRequired or NotAllowed.
Session = Annotated[Viewer, Depends(_viewer)]


def check_origin(request: Request) -> None:
    """Refuse a POST whose Origin (sent by browsers on every POST) names another host."""
    origin = request.headers.get("origin")
    if origin is None:  # not a browser, or an old one: the CSRF token still has to match
        return
    if urlsplit(origin).netloc != request.headers.get("host", ""):
        raise CsrfRejected()


def check_csrf(request: Request, viewer: Viewer, sent: str | None) -> None:
    """A state-changing request must come from our origin and echo the CSRF cookie."""
    check_origin(request)
    if viewer.new_csrf or not sent:
        raise CsrfRejected()
    # As bytes: compare_digest refuses non-ASCII str, and a form may carry anything.
    if not hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), viewer.csrf.encode()):
        raise CsrfRejected()


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_csrf_cookie(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        CSRF_COOKIE,
        value,
        max_age=_COOKIE_DAYS * 86400,
        path="/ops",
        httponly=True,  # the server writes it into each form; scripts never need it
        samesite="strict",
        secure=_secure(request),
    )


def log_in(request: Request, response: Response, secret: str) -> None:
    """Keep `secret` (already authenticated) as the session, with a fresh CSRF token."""
    response.set_cookie(
        TOKEN_COOKIE,
        secret,
        max_age=_COOKIE_DAYS * 86400,
        path="/ops",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    set_csrf_cookie(request, response, secrets.token_urlsafe(32))


def log_out(response: Response) -> None:
    for name in (TOKEN_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path="/ops", httponly=True, samesite="strict")
