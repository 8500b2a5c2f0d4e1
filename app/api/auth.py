"""Bearer-token auth. Every route declares its scope with `require(Scope.X)`:

    @router.get("/things", dependencies=[require(Scope.READ)])

A missing or unknown token is a 401, a token without the scope a 403 (problem documents).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.db.uow import Database
from app.domain.errors import Forbidden, Unauthenticated
from app.domain.tokens import ApiToken, Scope
from app.services import tokens

_bearer = HTTPBearer(auto_error=False, description="An API token: `handoff tokens create`.")


def require(scope: Scope) -> Any:
    """A route dependency that admits only tokens carrying `scope` (or `admin`)."""

    def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> ApiToken | None:
        if not request.app.state.settings.auth_enabled:
            return None
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Unauthenticated()
        db: Database = request.app.state.db
        token = db.run(lambda uow: tokens.authenticate(uow, credentials.credentials), write=False)
        if token is None:
            raise Unauthenticated("the bearer token is unknown or revoked")
        if not token.allows(scope):
            raise Forbidden(f"this route needs a token with the {scope.value!r} scope")
        return token

    check.__name__ = f"require_{scope.value}"
    return Depends(check)
