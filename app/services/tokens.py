"""Creating, listing, revoking and checking API tokens."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from app.db.uow import UnitOfWork
from app.domain.errors import InvalidInput, NotFound
from app.domain.tokens import ApiToken, Scope, new_token, same_hash, token_hash


def create(
    uow: UnitOfWork, name: str, scopes: Iterable[Scope], *, now: datetime
) -> tuple[ApiToken, str]:
    """A new token; returns it with its secret, which is not stored and cannot be shown again."""
    wanted = set(scopes)
    if not wanted:
        raise InvalidInput("a token needs at least one scope", field="scopes")
    secret = new_token()
    return uow.tokens.add(name, token_hash(secret), wanted, now), secret


def authenticate(uow: UnitOfWork, secret: str) -> ApiToken | None:
    """The live token whose secret this is, or None."""
    hashed = token_hash(secret)
    found = uow.tokens.by_hash(hashed)
    if found is None:
        return None
    token, stored = found
    if not same_hash(stored, hashed) or token.revoked_at is not None:
        return None
    return token


def revoke(uow: UnitOfWork, token_id: int, *, now: datetime) -> ApiToken:
    revoked = uow.tokens.revoke(token_id, now)
    if revoked is None:
        raise NotFound(f"no live token {token_id}", field="token_id")
    return revoked
