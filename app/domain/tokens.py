"""API tokens: scopes, generation and hashing. Tokens are random; only their SHA-256 is kept."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

TOKEN_PREFIX = "hnd_"  # noqa: S105 - a visible prefix, not a secret


class Scope(StrEnum):
    INGEST = "ingest"  # push scrape records
    READ = "read"  # read handoffs, stats, documents
    OPERATE = "operate"  # retry, cancel, replay
    ADMIN = "admin"  # everything


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: int
    name: str
    scopes: frozenset[Scope]
    created_at: datetime
    revoked_at: datetime | None

    def allows(self, scope: Scope) -> bool:
        return self.revoked_at is None and (scope in self.scopes or Scope.ADMIN in self.scopes)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_hash(a: str, b: str) -> bool:
    """Constant-time comparison, so timing says nothing about how much of a token matched."""
    return hmac.compare_digest(a.encode(), b.encode())
