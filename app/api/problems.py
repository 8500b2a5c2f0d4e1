"""The error document every route may answer with (RFC 9457 problem details), for OpenAPI."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    field: str | None = None
    errors: list[dict[str, str]] | None = None  # [{"field": ..., "message": ...}]


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": Problem.model_json_schema()}},
    }


#: Answers any route can give, declared so the OpenAPI document is the whole contract.
COMMON: dict[int | str, dict[str, Any]] = {
    400: _problem("The body could not be read as JSON."),
    413: _problem("The request body is too large."),
    422: _problem("The request is not valid; `field` or `errors` name what is wrong."),
    503: _problem("The database is unreachable or the schema is not current; retry later."),
}
#: Answers of routes that need a token.
PROTECTED: dict[int | str, dict[str, Any]] = {
    **COMMON,
    401: _problem("No bearer token, or an unknown or revoked one."),
    403: _problem("The token lacks the scope this route needs."),
    404: _problem("No such handoff, reference or token."),
}
#: Answers of routes that change state which another writer may have changed first.
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: _problem("The request conflicts with the current state; `detail` says how."),
}
