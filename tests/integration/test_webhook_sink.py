"""The webhook sink against a real HTTP server on 127.0.0.1, driven by a real worker on both
engines: each answer lands the handoff in the state and reason code the docs promise."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app.db.uow import Database
from app.domain.clock import FakeClock
from app.domain.documents import document_id
from app.domain.states import HandoffState, ReasonCode
from app.ingest.pipeline import IngestHandler, build_handler
from app.ingest.sinks import DocumentStoreSink, WebhookSink
from app.settings import Settings
from app.worker.runner import Worker, WorkerConfig
from tests.support import get, hand_off_one, version

SECRET = "webhook-secret"


@dataclass
class Receiver:
    """A scripted webhook receiver: answers `status` (+ headers), records what it got."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append((dict(self.headers.items()), body))
            time.sleep(state.delay)
            self.send_response(state.status)
            for name, value in state.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    server.shutdown()
    server.server_close()


def worker_for(db: Database, clock: FakeClock, receiver: Receiver) -> Worker:
    settings = Settings(
        database_url=db.url,
        sinks="documents,webhook",  # as the environment gives it
        webhook_url=receiver.url,
        webhook_timeout_seconds=0.5,
        webhook_secret=SECRET,
    )
    handler = build_handler(settings, db, clock)
    assert [s.name for s in handler.sinks] == ["documents", "webhook"]
    return Worker(db, handler, config=WorkerConfig(concurrency=1), clock=clock)


def submit(db: Database, clock: FakeClock, ref: str = "page-1") -> int:
    return hand_off_one(db, clock, version(ref, f"text of {ref}")).handoff_id


@pytest.mark.parametrize(
    ("status", "headers", "state", "reason", "wait"),
    [
        (200, {}, HandoffState.SUCCEEDED, ReasonCode.SUCCEEDED, None),
        (429, {"Retry-After": "120"}, HandoffState.RETRY_WAIT, ReasonCode.RATE_LIMITED, 120),
        (503, {"Retry-After": "30"}, HandoffState.RETRY_WAIT, ReasonCode.RATE_LIMITED, 30),
        (503, {}, HandoffState.RETRY_WAIT, ReasonCode.TRANSIENT_ERROR, None),
        (500, {}, HandoffState.RETRY_WAIT, ReasonCode.TRANSIENT_ERROR, None),
        (400, {}, HandoffState.FAILED, ReasonCode.PERMANENT_ERROR, None),
    ],
)
def test_each_answer_lands_in_its_documented_state_and_reason(
    db: Database,
    clock: FakeClock,
    receiver: Receiver,
    status: int,
    headers: dict[str, str],
    state: HandoffState,
    reason: ReasonCode,
    wait: int | None,
) -> None:
    receiver.status, receiver.headers = status, headers
    handoff_id = submit(db, clock)
    assert worker_for(db, clock, receiver).run_once() == 1
    handoff = get(db, handoff_id)
    assert (handoff.state, handoff.reason_code) == (state, reason)
    if wait is not None:
        assert handoff.run_after == clock.now() + timedelta(seconds=wait)
    if reason is ReasonCode.RATE_LIMITED:
        assert handoff.failures == 0  # throttling spends no retry budget
    if state is not HandoffState.SUCCEEDED:
        assert f"webhook answered {status}" in (handoff.last_error or "")
    assert len(receiver.received) == 1


def test_the_request_carries_the_document_an_idempotency_key_and_a_valid_signature(
    db: Database, clock: FakeClock, receiver: Receiver
) -> None:
    handoff_id = submit(db, clock, "signed")
    worker_for(db, clock, receiver).run_once()
    ((headers, body),) = receiver.received
    sent = json.loads(body)
    doc_id = document_id("signed", get(db, handoff_id).payload_hash)
    assert headers["Idempotency-Key"] == doc_id == sent["document"]["id"]
    assert sent["event"] == "document.ingested"
    assert sent["document"]["text"] == "text of signed"
    assert sent["handoff"]["id"] == handoff_id
    assert sent["handoff"]["lease_token"] >= 1
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Handoff-Signature"] == f"sha256={expected}"
    assert headers["Content-Type"] == "application/json"


def test_throttled_then_accepted_delivers_again_with_one_document(
    db: Database, clock: FakeClock, receiver: Receiver
) -> None:
    receiver.status, receiver.headers = 429, {"Retry-After": "60"}
    handoff_id = submit(db, clock)
    worker = worker_for(db, clock, receiver)
    worker.run_once()
    assert worker.run_once() == 0  # not before its Retry-After
    receiver.status, receiver.headers = 200, {}
    clock.advance(61)
    assert worker.run_once() == 1
    assert get(db, handoff_id).state is HandoffState.SUCCEEDED
    keys = {h["Idempotency-Key"] for h, _ in receiver.received}
    assert len(receiver.received) == 2
    assert len(keys) == 1
    assert db.run(lambda uow: uow.documents.count(), write=False) == 1


def test_a_timeout_and_a_refused_connection_are_transient(
    db: Database, clock: FakeClock, receiver: Receiver
) -> None:
    receiver.delay = 2.0  # the sink waits 0.5 s
    slow = submit(db, clock, "slow")
    worker_for(db, clock, receiver).run_once()
    assert get(db, slow).reason_code is ReasonCode.TRANSIENT_ERROR
    assert "timed out" in (get(db, slow).last_error or "")

    closed = Receiver(url="http://127.0.0.1:9/hook")  # discard port: nothing listens
    refused = submit(db, clock, "refused")
    worker_for(db, clock, closed).run_once()
    assert get(db, refused).state is HandoffState.RETRY_WAIT
    assert get(db, refused).reason_code is ReasonCode.TRANSIENT_ERROR
    assert "unreachable" in (get(db, refused).last_error or "")


def test_a_redirect_is_not_followed_and_is_permanent(
    db: Database, clock: FakeClock, receiver: Receiver
) -> None:
    receiver.status, receiver.headers = 302, {"Location": "http://127.0.0.1:9/elsewhere"}
    handoff_id = submit(db, clock)
    worker_for(db, clock, receiver).run_once()
    assert (get(db, handoff_id).state, get(db, handoff_id).reason_code) == (
        HandoffState.FAILED,
        ReasonCode.PERMANENT_ERROR,
    )
    assert len(receiver.received) == 1


def test_the_webhook_alone_can_be_the_only_sink(
    db: Database, clock: FakeClock, receiver: Receiver
) -> None:
    sink = WebhookSink(receiver.url, clock)
    worker = Worker(db, IngestHandler([sink]), config=WorkerConfig(concurrency=1), clock=clock)
    handoff_id = submit(db, clock)
    worker.run_once()
    sink.close()
    assert get(db, handoff_id).state is HandoffState.SUCCEEDED
    assert db.run(lambda uow: uow.documents.count(), write=False) == 0
    assert "X-Handoff-Signature" not in receiver.received[0][0]  # no secret, no signature


def test_settings_refuse_a_webhook_without_url_and_unknown_sinks() -> None:
    with pytest.raises(ValueError, match="webhook sink needs webhook_url"):
        Settings(sinks="documents,webhook")
    with pytest.raises(ValueError, match="sinks"):
        Settings(sinks="documents,ftp")
    with pytest.raises(ValueError, match="webhook_url"):
        Settings(sinks="webhook", webhook_url="not a url")
    assert Settings().sinks == ["documents"]
    assert DocumentStoreSink.name == "documents"
