"""Backpressure through the real app, on both engines: GET /v1/admission reports the lag, and
past HANDOFF_MAX_BACKLOG the submission routes answer 429 with Retry-After and a problem
document — writing nothing, losing nothing already stored — until workers catch up."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.api.app import create_app
from app.db.uow import Database
from app.domain.clock import FakeClock
from app.domain.tokens import Scope
from app.services import admission, tokens
from app.settings import Settings
from app.worker.handler import NoopHandler
from app.worker.runner import Worker
from tests.support import count_rows

MAX_BACKLOG = 3


@dataclass
class Env:
    client: TestClient
    db: Database
    clock: FakeClock

    def submit(self, reference_id: str) -> Any:
        return self.client.post("/v1/scrape-records", json=record(reference_id))

    def admission(self) -> dict[str, Any]:
        response = self.client.get("/v1/admission")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def stored(self) -> tuple[int, int]:
        return self.db.run(
            lambda uow: (count_rows(uow, "scrape_records"), count_rows(uow, "ingestion_handoffs")),
            write=False,
        )


def record(reference_id: str) -> dict[str, str]:
    return {
        "source": "shop",
        "reference_id": reference_id,
        "body": f"page {reference_id}",
        "content_type": "text/plain",
    }


def make_env(db: Database, clock: FakeClock, **settings: Any) -> Iterator[Env]:
    _, secret = db.run(lambda uow: tokens.create(uow, "p", [Scope.INGEST], now=clock.now()))
    config = Settings(database_url=db.url, **{"admission_cache_seconds": 0, **settings})
    headers = {"Authorization": f"Bearer {secret}"}
    with TestClient(create_app(config, clock=clock), headers=headers) as client:
        yield Env(client, db, clock)


@pytest.fixture
def env(db: Database, clock: FakeClock) -> Iterator[Env]:
    yield from make_env(db, clock, max_backlog=MAX_BACKLOG)


def test_admission_reports_the_backlog_its_age_and_the_limit(env: Env) -> None:
    empty = env.admission()
    assert empty["admitted"] is True
    assert empty["backlog"] == 0
    assert empty["backlog_exact"] is True
    assert empty["oldest_runnable_age_seconds"] is None
    assert empty["max_backlog"] == MAX_BACKLOG
    assert empty["retry_after_seconds"] is None
    env.submit("a")
    env.clock.advance(40)
    env.submit("b")
    env.clock.advance(2)
    report = env.admission()
    assert report["backlog"] == 2
    assert report["oldest_runnable_age_seconds"] == 42
    assert report["admitted"] is True


def test_past_the_backlog_submissions_get_429_with_retry_after_and_nothing_is_lost(
    env: Env,
) -> None:
    for ref in ("a", "b", "c", "d"):  # the 4th passes the limit of 3
        assert env.submit(ref).status_code == 200
    stored = env.stored()
    assert stored == (4, 4)

    refused = env.submit("e")
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert int(refused.headers["Retry-After"]) >= 1
    problem = refused.json()
    assert problem["status"] == 429
    assert problem["backlog"] == MAX_BACKLOG + 1
    assert problem["max_backlog"] == MAX_BACKLOG
    assert problem["retry_after_seconds"] == int(refused.headers["Retry-After"])
    assert "retry" in problem["detail"]
    assert env.stored() == stored  # the refused record wrote nothing; the others are kept

    sync = env.client.post(
        "/v1/scraping/sync", json={"source": "shop", "urls": ["https://example.com/x"]}
    )
    assert sync.status_code == 429  # refused before it fetches anything
    assert "Retry-After" in sync.headers

    report = env.admission()
    assert report["admitted"] is False
    assert report["backlog_exact"] is False  # counted up to max_backlog + 1, no further
    assert report["retry_after_seconds"] == int(refused.headers["Retry-After"])

    scraped = env.client.get("/metrics").text
    rejected = {
        s.labels["route"]: s.value
        for family in text_string_to_metric_families(scraped)
        for s in family.samples
        if s.name == "handoff_submissions_rejected_total"
    }
    assert rejected["/v1/scrape-records"] >= 1
    assert rejected["/v1/scraping/sync"] >= 1


def test_submissions_are_admitted_again_once_workers_catch_up(env: Env) -> None:
    for ref in ("a", "b", "c", "d"):
        env.submit(ref)
    assert env.submit("e").status_code == 429
    Worker(env.db, NoopHandler(), clock=env.clock).drain()
    assert env.admission()["admitted"] is True
    assert env.submit("e").status_code == 200
    assert env.stored() == (5, 5)


def test_a_retry_wait_handoff_not_yet_due_is_not_backlog(env: Env) -> None:
    for ref in ("a", "b", "c", "d"):
        env.submit(ref)
    env.clock.advance(-3600)  # everything was queued "in the future": not runnable yet
    assert env.admission()["backlog"] == 0
    assert env.submit("e").status_code == 200


def test_without_a_limit_everything_is_admitted(db: Database, clock: FakeClock) -> None:
    for env in make_env(db, clock):
        for ref in ("a", "b", "c", "d", "e"):
            assert env.submit(ref).status_code == 200
        report = env.admission()
        assert report["admitted"] is True
        assert report["max_backlog"] is None
        assert report["backlog"] == 5


def test_the_admission_reading_is_shared_for_the_cache_period(
    db: Database, clock: FakeClock
) -> None:
    for env in make_env(db, clock, max_backlog=1, admission_cache_seconds=3600):
        assert env.submit("a").status_code == 200  # reads the backlog: 0
        assert env.submit("b").status_code == 200  # the same reading: still admitted
        assert env.admission()["backlog"] == 0  # the cached reading


def test_the_submission_routes_declare_their_429() -> None:
    app = create_app(Settings(database_url="sqlite:///unused.db"))
    paths = app.openapi()["paths"]
    for path in ("/v1/scrape-records", "/v1/scraping/sync"):
        declared = paths[path]["post"]["responses"]["429"]
        assert "Retry-After" in declared["headers"]
    assert "429" not in paths["/v1/admission"]["get"]["responses"]  # it reports, never refuses


def test_the_suggested_wait_follows_the_finishing_rate() -> None:
    assert admission.suggest_retry_after(100, 10.0) == 10
    assert admission.suggest_retry_after(1, 10.0) == admission.RETRY_AFTER_MIN
    assert admission.suggest_retry_after(10**6, 1.0) == admission.RETRY_AFTER_MAX
    assert admission.suggest_retry_after(5, 0.0) == admission.RETRY_AFTER_IDLE
