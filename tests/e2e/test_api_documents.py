"""Documents through the real app on both engines: HTML submitted over HTTP, ingested by a real
worker, found by `GET /v1/documents/search`, read by id, and superseded by a newer version."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.db.uow import Database
from app.domain.clock import FakeClock
from app.domain.tokens import Scope
from app.ingest.pipeline import build_handler
from app.services import tokens
from app.settings import Settings
from app.worker.runner import Worker, WorkerConfig

PAGE = """<html lang="en"><head><title>{title}</title>
<link rel="canonical" href="https://example.com/canonical/{slug}">
<meta name="date" content="2025-06-01"></head>
<body><nav>Home | About | Contact</nav><article><h1>{title}</h1>
<p>{text}</p><p>Another paragraph so that the page has a body worth extracting, with
enough words to count as the main content of an article on this site.</p></article>
<footer>Copyright notice</footer></body></html>"""


@dataclass
class Api:
    client: TestClient
    worker: Worker

    def submit(self, slug: str, title: str, text: str, fetched_at: str) -> dict[str, Any]:
        body = PAGE.format(slug=slug, title=title, text=text)
        record = {
            "source": "news",
            "url": f"https://example.com/{slug}",
            "content_type": "text/html; charset=utf-8",
            "body": body,
            "fetched_at": fetched_at,
        }
        response = self.client.post("/v1/scrape-records", json=record)
        assert response.status_code in (200, 201), response.text
        result: dict[str, Any] = response.json()
        return result

    def search(self, q: str, **params: Any) -> dict[str, Any]:
        response = self.client.get("/v1/documents/search", params={"q": q, **params})
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found


@pytest.fixture
def api(db: Database, clock: FakeClock) -> Iterator[Api]:
    _, secret = db.run(lambda uow: tokens.create(uow, "t", [Scope.ADMIN], now=clock.now()))
    settings = Settings(database_url=db.url)
    worker = Worker(db, build_handler(settings, db, clock), config=WorkerConfig(), clock=clock)
    headers = {"Authorization": f"Bearer {secret}"}
    with TestClient(create_app(settings, clock=clock), headers=headers) as client:
        yield Api(client, worker)


def test_an_ingested_page_is_found_with_its_metadata_and_read_by_id(api: Api) -> None:
    api.submit(
        "tides", "Tidal Power", "Tidal turbines harvest the moon's pull.", "2026-01-01T00:00:00Z"
    )
    api.submit("wind", "Wind Farms", "Offshore wind farms face storms.", "2026-01-01T00:00:00Z")
    assert api.worker.drain() == 2

    found = api.search('"tidal turbines"')
    assert [r["url"] for r in found["results"]] == ["https://example.com/tides"]
    (hit,) = found["results"]
    assert hit["title"] == "Tidal Power"
    assert hit["canonical_url"] == "https://example.com/canonical/tides"
    assert hit["kind"] == "html"
    assert hit["current"] is True
    assert "«" in hit["snippet"]
    assert "Home | About" not in hit["snippet"]  # boilerplate is not in the main text
    assert found["next_offset"] is None

    doc = api.client.get(f"/v1/documents/{hit['id']}").json()
    assert "harvest the moon" in doc["text"]
    assert "Copyright notice" not in doc["text"]
    assert (doc["reference_id"], doc["current"], doc["superseded_by"]) == (
        hit["reference_id"],
        True,
        None,
    )


def test_a_newer_version_replaces_the_older_in_search_and_in_the_reference(api: Api) -> None:
    api.submit("story", "Story", "The mayor opened the bridge.", "2026-01-01T00:00:00Z")
    api.worker.drain()
    api.submit("story", "Story", "The mayor closed the bridge again.", "2026-01-02T00:00:00Z")
    api.worker.drain()
    assert api.search("opened")["results"] == []
    assert [r["current"] for r in api.search("opened", include_superseded=True)["results"]] == [
        False
    ]
    (now,) = api.search("closed bridge")["results"]
    history = api.client.get(f"/v1/references/{now['reference_id']}").json()
    assert history["current_document"]["id"] == now["id"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"q": ""}, "q"),
        ({"q": "-only -excluded"}, "q"),
        ({"q": "x" * 501}, "q"),
        ({"q": "ok", "limit": 0}, "limit"),
        ({"q": "ok", "limit": 101}, "limit"),
        ({"q": "ok", "offset": -1}, "offset"),
        ({}, "q"),
    ],
)
def test_bad_search_parameters_are_a_422_naming_the_parameter(
    api: Api, params: dict[str, Any], field: str
) -> None:
    response = api.client.get("/v1/documents/search", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in response.text


def test_an_unknown_document_is_a_404_problem(api: Api) -> None:
    response = api.client.get("/v1/documents/doc_0123")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
