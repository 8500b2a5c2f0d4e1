"""`api_tokens`: hashed bearer tokens with scopes."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from app.db.tables import api_tokens
from app.domain.tokens import ApiToken, Scope


def _to_token(row: Row[Any]) -> ApiToken:
    m = row._mapping
    return ApiToken(
        id=m["id"],
        name=m["name"],
        scopes=frozenset(Scope(s) for s in m["scopes"].split()),
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
    )


class TokenStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, name: str, hashed: str, scopes: Iterable[Scope], now: datetime) -> ApiToken:
        row = self.conn.execute(
            insert(api_tokens)
            .values(
                name=name,
                token_hash=hashed,
                scopes=" ".join(sorted(s.value for s in scopes)),
                created_at=now,
            )
            .returning(*api_tokens.c)
        ).one()
        return _to_token(row)

    def by_hash(self, hashed: str) -> tuple[ApiToken, str] | None:
        row = self.conn.execute(select(api_tokens).where(api_tokens.c.token_hash == hashed)).first()
        return None if row is None else (_to_token(row), str(row.token_hash))

    def all(self) -> list[ApiToken]:
        rows = self.conn.execute(select(api_tokens).order_by(api_tokens.c.id))
        return [_to_token(r) for r in rows]

    def revoke(self, token_id: int, now: datetime) -> ApiToken | None:
        row = self.conn.execute(
            update(api_tokens)
            .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
            .returning(*api_tokens.c)
        ).first()
        return None if row is None else _to_token(row)
