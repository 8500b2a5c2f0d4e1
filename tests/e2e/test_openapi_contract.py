"""The OpenAPI document is the contract: every route declares a scope and keeps to it, and
no generated request (valid or not) gets a 5xx or a response outside the declared schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.api.app import create_app
from app.db.uow import Database
from app.domain.clock import SystemClock
from app.domain.tokens import Scope
from app.services import tokens
from app.settings import Settings

PUBLIC = {"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


def make_token(db_url: str, *scopes: Scope) -> str:
    db = Database(db_url)
    try:
        _, secret = db.run(
            lambda uow: tokens.create(uow, "contract", scopes, now=SystemClock().now())
        )
    finally:
        db.dispose()
    return secret


def concrete(path: str) -> str:
    """A path with every parameter filled in."""
    return path.replace("{handoff_id}", "1").replace("{reference_id}", "r:1")


@pytest.fixture
def app_and_url(db_url: str) -> Iterator[tuple[FastAPI, str]]:
    app = create_app(Settings(database_url=db_url))
    with TestClient(app):  # runs the lifespan: the app's database is open
        yield app, db_url


def test_every_route_needs_a_token_with_its_scope(app_and_url: tuple[FastAPI, str]) -> None:
    """Walks the OpenAPI document: each operation answers 401 without a token, and 403 to a
    token of every scope but exactly one (its own; `admin` grants all)."""
    app, db_url = app_and_url
    client = TestClient(app)
    single = {s: {"Authorization": f"Bearer {make_token(db_url, s)}"} for s in Scope}
    operations = [
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        if path not in PUBLIC
        for method in item
    ]
    assert operations
    for method, path in operations:
        url = concrete(path)
        anonymous = client.request(method, url)
        assert anonymous.status_code == 401, (method, url, anonymous.text)
        assert anonymous.headers["content-type"] == "application/problem+json"
        admitted = [
            scope
            for scope in Scope
            if scope is not Scope.ADMIN
            and client.request(method, url, headers=single[scope]).status_code != 403
        ]
        assert len(admitted) == 1, (method, path, admitted)
        assert client.request(method, url, headers=single[Scope.ADMIN]).status_code != 403


@pytest.fixture
def contract_schema(app_and_url: tuple[FastAPI, str]) -> Any:
    app, db_url = app_and_url
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.config.headers = {"Authorization": f"Bearer {make_token(db_url, Scope.ADMIN)}"}
    return schema


schema = schemathesis.pytest.from_fixture("contract_schema")


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_request_gets_a_5xx_or_an_undeclared_response(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ]
    )
