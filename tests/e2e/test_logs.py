"""Structured logs of a lifecycle, through the real app and a worker, on both engines: every
line is one JSON object; the lines for enqueue, claim, complete, fail, retry and rescue name the
handoff, its version (reference_id, payload_hash) and, for an attempt, its lease token; no
bearer token ever reaches a line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import structlog
from fastapi.testclient import TestClient

from app import log
from app.api.app import create_app
from app.db.uow import Database
from app.domain.clock import FakeClock
from app.domain.failures import PermanentError, TransientError
from app.domain.models import ClaimedJob
from app.domain.tokens import Scope
from app.services import tokens
from app.settings import Settings
from app.worker.runner import Worker

VERSION_FIELDS = {"handoff_id", "reference_id", "payload_hash"}
ATTEMPT_FIELDS = VERSION_FIELDS | {"lease_token"}


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """JSON logging into the captured stderr; the default set-up again afterwards."""
    log.configure_from(Settings(log_format="json", log_level="INFO"))
    yield lambda: [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    structlog.reset_defaults()


def handler(job: ClaimedJob) -> None:
    ref = job.handoff.reference_id
    if ref == "flaky" and job.handoff.attempts == 1:
        raise TransientError("downstream timed out")
    if ref == "bad":
        raise PermanentError("cannot parse")


def test_a_lifecycle_logs_json_lines_naming_handoff_version_and_lease(
    db: Database, clock: FakeClock, json_logs: Any
) -> None:
    _, secret = db.run(lambda uow: tokens.create(uow, "l", [Scope.ADMIN], now=clock.now()))
    headers = {"Authorization": f"Bearer {secret}"}
    worker = Worker(db, handler, clock=clock, worker_id="w-logs")
    app = create_app(Settings(database_url=db.url), clock=clock)
    with TestClient(app, headers=headers) as client:
        for ref in ("ok", "flaky", "bad", "lost"):
            body = {
                "source": "shop",
                "reference_id": ref,
                "body": ref,
                "content_type": "text/plain",
            }
            assert client.post("/v1/scrape-records", json=body).status_code == 200
        worker._commit_and_claim(1)  # "ok" is claimed by a worker that then dies
        clock.advance(timedelta(minutes=5))
        worker._inflight.clear()
        worker._rescue()  # returns "ok" (retry_wait) …
        clock.advance(timedelta(minutes=1))
        worker.drain()  # … and every handoff runs: ok, flaky (retry), bad (fails), lost
        clock.advance(timedelta(hours=1))
        worker.drain()  # flaky again: succeeds
        assert client.get("/v1/handoffs?state=succeeded").json()["items"]

    lines = json_logs()
    assert lines, "no log line"
    by_event: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        assert {"event", "level", "timestamp"} <= set(line)
        by_event.setdefault(line["event"], []).append(line)
    assert len(by_event["handoff.enqueued"]) == 4
    for line in by_event["handoff.enqueued"]:
        assert set(line) >= VERSION_FIELDS
        assert line["outcome"] == "created"
    for event in (
        "worker.claimed",
        "worker.completed",
        "worker.retrying",
        "worker.failed",
        "rescuer.rescued",
    ):
        assert by_event.get(event), f"no {event} line"
        for line in by_event[event]:
            assert set(line) >= ATTEMPT_FIELDS, (event, line)
            assert line["payload_hash"].startswith("sha256:")
            assert isinstance(line["lease_token"], int)
            assert line["lease_token"] >= 1
    assert [line["reference_id"] for line in by_event["worker.retrying"]] == ["flaky"]
    assert [line["reference_id"] for line in by_event["worker.failed"]] == ["bad"]
    assert by_event["worker.failed"][0]["reason_code"] == "permanent_error"
    assert [line["reference_id"] for line in by_event["rescuer.rescued"]] == ["ok"]
    completed = {line["reference_id"] for line in by_event["worker.completed"]}
    assert completed == {"ok", "flaky", "lost"}
    assert secret not in json.dumps(lines)


def test_credential_fields_are_masked_whoever_logs_them(json_logs: Any) -> None:
    structlog.get_logger("t").info(
        "something",
        token="hnd_secret",
        authorization="Bearer hnd_secret",
        db_password="pw",
        lease_token=7,
    )
    (line,) = json_logs()
    assert line["token"] == line["authorization"] == line["db_password"] == log.MASK
    assert line["lease_token"] == 7
    assert "hnd_secret" not in json.dumps(line)


def test_the_console_format_is_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    log.configure_from(Settings(log_format="console"))
    try:
        structlog.get_logger("t").info("hello", handoff_id=3)
        err = capsys.readouterr().err
    finally:
        structlog.reset_defaults()
    assert "hello" in err
    assert "handoff_id" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[0])
