"""GET /metrics through the real app, on both engines: every state is emitted (zeros on an
empty database), and counters, histograms and gauges move as a lifecycle runs — submit, claim,
succeed, fail and retry, rescue.

Counters are per process and shared by every test of the process, so the tests compare a
counter before and after; the per-state gauges are read from the test's own database, so they
are compared as they are."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.api.app import create_app
from app.db.uow import Database, UnitOfWork
from app.domain.clock import FakeClock
from app.domain.failures import PermanentError, TransientError
from app.domain.models import ClaimedJob
from app.domain.retry import RetryPolicy
from app.domain.states import HandoffState
from app.domain.tokens import Scope
from app.services import tokens
from app.services.scrape_storage import store_and_hand_off
from app.settings import Settings
from app.worker.runner import Worker, WorkerConfig
from tests.support import version

Labels = dict[str, str]


def read(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@dataclass
class Scrape:
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    def get(self, name: str, **labels: str) -> float:
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)


@dataclass
class Outcomes:
    """What the test handler does with each reference: raise this, or succeed."""

    raises: dict[str, Exception] = field(default_factory=dict)

    def __call__(self, job: ClaimedJob) -> None:
        error = self.raises.get(job.handoff.reference_id)
        if error is not None:
            raise error


@dataclass
class Env:
    client: TestClient
    db: Database
    clock: FakeClock
    handler: Outcomes
    worker: Worker

    def scrape(self) -> Scrape:
        response = self.client.get("/metrics")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        return Scrape(read(response.text))

    def submit(self, reference_id: str, body: str) -> dict[str, object]:
        response = self.client.post(
            "/v1/scrape-records",
            json={
                "source": "shop",
                "reference_id": reference_id,
                "body": body,
                "content_type": "text/plain",
                "fetched_at": self.clock.now().isoformat(),
            },
        )
        assert response.status_code == 200, response.text
        result: dict[str, object] = response.json()["results"][0]
        return result


@pytest.fixture
def env(db: Database, clock: FakeClock) -> Iterator[Env]:
    _, secret = db.run(lambda uow: tokens.create(uow, "m", [Scope.ADMIN], now=clock.now()))
    settings = Settings(database_url=db.url)
    handler = Outcomes()
    policy = RetryPolicy()
    worker = Worker(db, handler, config=WorkerConfig(policy=policy), clock=clock, worker_id="m1")
    headers = {"Authorization": f"Bearer {secret}"}
    with TestClient(create_app(settings, clock=clock), headers=headers) as client:
        yield Env(client, db, clock, handler, worker)


def test_every_state_is_emitted_at_zero_on_an_empty_database(env: Env) -> None:
    scrape = env.scrape()
    assert scrape.get("handoff_database_up") == 1
    for state in HandoffState:
        assert ("handoff_rows", (("state", state.value),)) in scrape.samples
        assert scrape.get("handoff_rows", state=state.value) == 0
        assert ("handoff_oldest_age_seconds", (("state", state.value),)) in scrape.samples
        assert scrape.get("handoff_oldest_age_seconds", state=state.value) == 0
    for outcome in ("created", "duplicate", "superseded_previous", "queued_behind_running"):
        assert ("handoff_enqueued_total", (("outcome", outcome),)) in scrape.samples


def test_metrics_move_as_the_lifecycle_runs(env: Env) -> None:
    before = env.scrape()
    env.submit("ok", "fine")
    env.submit("flaky", "flaky")
    env.submit("bad", "broken")
    env.submit("ok", "fine")  # the same version again: a duplicate
    env.clock.advance(30)
    queued = env.scrape()
    assert queued.get("handoff_rows", state="queued") == 3
    assert queued.get("handoff_oldest_age_seconds", state="queued") == 30
    assert _delta(before, queued, "handoff_enqueued_total", outcome="created") == 3
    assert _delta(before, queued, "handoff_enqueued_total", outcome="duplicate") == 1
    created = {"from_state": "none", "to_state": "queued", "reason_code": "enqueued"}
    assert _delta(before, queued, "handoff_transitions_total", **created) == 3

    env.handler.raises = {
        "flaky": TransientError("downstream timed out"),
        "bad": PermanentError("cannot parse"),
    }
    assert env.worker.run_once() == 3
    ran = env.scrape()
    assert ran.get("handoff_rows", state="queued") == 0
    assert ran.get("handoff_rows", state="succeeded") == 1
    assert ran.get("handoff_rows", state="retry_wait") == 1
    assert ran.get("handoff_rows", state="failed") == 1
    claimed = {"from_state": "queued", "to_state": "running", "reason_code": "claimed"}
    assert _delta(queued, ran, "handoff_transitions_total", **claimed) == 3
    assert _delta(queued, ran, "handoff_claim_latency_seconds_count") == 3
    # Each waited the 30 s the clock moved since they were queued.
    assert _delta(queued, ran, "handoff_claim_latency_seconds_sum") == pytest.approx(90)
    for outcome in ("succeeded", "retry", "failed"):
        assert _delta(queued, ran, "handoff_job_duration_seconds_count", outcome=outcome) == 1
    retried = {"from_state": "running", "to_state": "retry_wait", "reason_code": "transient_error"}
    assert _delta(queued, ran, "handoff_transitions_total", **retried) == 1

    env.handler.raises = {}
    env.clock.advance(timedelta(hours=1))  # past the retry's backoff
    assert env.worker.run_once() == 1
    retried_ok = env.scrape()
    assert retried_ok.get("handoff_rows", state="succeeded") == 2
    assert retried_ok.get("handoff_rows", state="retry_wait") == 0
    claimed_again = {"from_state": "retry_wait", "to_state": "running", "reason_code": "claimed"}
    assert _delta(ran, retried_ok, "handoff_transitions_total", **claimed_again) == 1
    assert _delta(ran, retried_ok, "handoff_job_duration_seconds_count", outcome="succeeded") == 1


def test_the_rescuer_is_counted_when_a_lease_expires(env: Env) -> None:
    env.submit("lost", "a worker will die holding it")
    jobs = env.worker._commit_and_claim(1)  # claimed, never finished: the worker "died"
    assert len(jobs) == 1
    before = env.scrape()
    assert before.get("handoff_rows", state="running") == 1
    env.clock.advance(timedelta(minutes=5))  # past the lease
    env.worker._rescue()
    after = env.scrape()
    assert _delta(before, after, "handoff_rescued_total", reason_code="lease_expired") == 1
    lost = {"from_state": "running", "to_state": "retry_wait", "reason_code": "lease_expired"}
    assert _delta(before, after, "handoff_transitions_total", **lost) == 1
    assert after.get("handoff_rows", state="running") == 0
    assert after.get("handoff_rows", state="retry_wait") == 1


def test_a_rolled_back_transaction_counts_nothing(env: Env) -> None:
    before = env.scrape()

    def give_up(uow: UnitOfWork) -> None:
        store_and_hand_off(uow, [version("gone", "x")], now=env.clock.now(), actor="client:t")
        raise RuntimeError("the caller gives up before the commit")

    with pytest.raises(RuntimeError):
        env.db.run(give_up)
    after = env.scrape()
    assert _delta(before, after, "handoff_enqueued_total", outcome="created") == 0
    created = {"from_state": "none", "to_state": "queued", "reason_code": "enqueued"}
    assert _delta(before, after, "handoff_transitions_total", **created) == 0
    assert after.get("handoff_rows", state="queued") == 0


def test_metrics_are_open_by_default_and_can_require_a_read_token(db: Database) -> None:
    with TestClient(create_app(Settings(database_url=db.url))) as client:
        assert client.get("/metrics").status_code == 200
    settings = Settings(database_url=db.url, metrics_require_token=True)
    _, read = db.run(lambda uow: tokens.create(uow, "r", [Scope.READ], now=FakeClock().now()))
    _, ingest = db.run(lambda uow: tokens.create(uow, "i", [Scope.INGEST], now=FakeClock().now()))
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 401
        denied = client.get("/metrics", headers={"Authorization": f"Bearer {ingest}"})
        assert denied.status_code == 403
        allowed = client.get("/metrics", headers={"Authorization": f"Bearer {read}"})
        assert allowed.status_code == 200
        assert "handoff_rows" in allowed.text


def test_metrics_stay_out_of_the_v1_contract(env: Env) -> None:
    assert "/metrics" not in env.client.get("/openapi.json").json()["paths"]


def _delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.get(name, **labels) - before.get(name, **labels)
