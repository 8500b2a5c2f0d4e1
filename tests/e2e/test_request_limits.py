"""Oversize request bodies get a 413 problem naming the limit, on any route; nothing changes."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.db.uow import Database
from app.domain.clock import SystemClock
from app.domain.tokens import Scope
from app.services import tokens
from app.settings import Settings

LIMIT = 2000


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    """The app with a 2000-byte request limit and an admin token on every request."""
    db = Database(db_url)
    _, secret = db.run(lambda uow: tokens.create(uow, "t", [Scope.ADMIN], now=SystemClock().now()))
    db.dispose()
    settings = Settings(database_url=db_url, max_request_bytes=LIMIT)
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {secret}"}) as c:
        yield c


def record(size: int) -> dict[str, str]:
    return {"source": "api", "url": "https://example.com/p", "body": "x" * size}


def total_handoffs(client: TestClient) -> int:
    return sum(client.get("/v1/handoffs/stats").json()["totals"].values())


def assert_413(response: httpx.Response) -> None:
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 413
    assert problem["limit_bytes"] == LIMIT
    assert f"limit of {LIMIT} bytes" in problem["detail"]


def test_a_body_declaring_more_than_the_limit_is_a_413(client: TestClient) -> None:
    assert_413(client.post("/v1/scrape-records", json=record(LIMIT)))
    assert total_handoffs(client) == 0


def test_a_chunked_body_over_the_limit_is_a_413(client: TestClient) -> None:
    payload = json.dumps(record(LIMIT)).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is found while reading
        yield from (payload[i : i + 500] for i in range(0, len(payload), 500))

    response = client.post(
        "/v1/scrape-records", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_413(response)
    assert total_handoffs(client) == 0


def test_the_limit_holds_on_every_route(client: TestClient) -> None:
    urls = [f"https://example.com/{'x' * 100}/{i}" for i in range(20)]
    assert_413(client.post("/v1/scraping/sync", json={"source": "s", "urls": urls}))


def test_a_body_under_the_limit_goes_through(client: TestClient) -> None:
    response = client.post("/v1/scrape-records", json=record(LIMIT - 200))
    assert response.status_code == 200
    assert total_handoffs(client) == 1
