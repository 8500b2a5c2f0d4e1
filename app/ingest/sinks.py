"""Sinks: where an extracted document goes. The document store is one; a webhook is another.

A sink is anything with a `name` and a `deliver(document, job)` method (`Sink`). Settings pick
the sinks (`HANDOFF_SINKS`, in order); the ingestion handler hands every document to each one,
and only when all have returned does the worker mark the handoff `succeeded`. A sink must be
idempotent per document id — under at-least-once execution it will see reruns, and after a
failure of a later sink the earlier ones run again — and it says how a failure should be
retried by raising the classified errors of `app.domain.failures`:

* `TransientError` — worth retrying soon (timeouts, 5xx, dropped connections);
* `ThrottledError(retry_after=…)` — the destination asked us to slow down;
* `PermanentError` — retrying the same document cannot help (a 4xx).

Anything else it raises counts as unclassified and is retried on a reduced budget.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Protocol

import httpx

from app import __version__
from app.db.uow import Database
from app.domain.clock import Clock
from app.domain.documents import Document, DocumentWrite
from app.domain.failures import PermanentError, ThrottledError, TransientError
from app.domain.models import ClaimedJob
from app.domain.retry import parse_retry_after
from app.domain.states import ReasonCode


class Sink(Protocol):
    name: str

    def deliver(self, document: Document, job: ClaimedJob | None) -> None: ...


class DocumentStoreSink:
    """Upserts the document into the `documents` table (searchable; see `DocumentStore.write`)."""

    name = "documents"

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def deliver(self, document: Document, job: ClaimedJob | None) -> None:
        self.write(document)

    def write(self, document: Document) -> DocumentWrite:
        return self.db.run(lambda uow: uow.documents.write(document, self.clock.now()))


def document_payload(document: Document, job: ClaimedJob | None) -> dict[str, Any]:
    """The JSON a webhook receives: the document, and the handoff attempt that produced it."""
    return {
        "event": "document.ingested",
        "document": {
            "id": document.id,
            "reference_id": document.reference_id,
            "payload_hash": document.payload_hash,
            "source": document.source,
            "url": document.url,
            "fetched_at": document.fetched_at.isoformat(),
            "content_type": document.content_type,
            "kind": document.kind,
            "title": document.title,
            "language": document.language,
            "canonical_url": document.canonical_url,
            "published": document.published,
            "text": document.text,
        },
        "handoff": None
        if job is None
        else {
            "id": job.handoff.id,
            "attempt": job.handoff.attempts,
            "lease_token": job.lease.token,
        },
    }


class WebhookSink:
    """POSTs each document as JSON to a URL the operator configured.

    Headers: `Idempotency-Key` (the document id: identical on every rerun, so the receiver can
    drop repeats) and, when a secret is set, `X-Handoff-Signature: sha256=<hex HMAC of the body>`.
    Redirects are not followed. Answers map onto the retry classes:

    * 2xx — delivered;
    * 429, or 503 with `Retry-After` — throttled (waits the asked delay; spends no retry budget);
    * 408, other 5xx, timeouts and connection errors — transient;
    * any other status (3xx, 4xx) — permanent: resending the same document cannot help.
    """

    name = "webhook"

    def __init__(
        self,
        url: str,
        clock: Clock,
        *,
        timeout_seconds: float = 10.0,
        secret: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url
        self.clock = clock
        self.secret = secret.encode() if secret else None
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout_seconds),
            follow_redirects=False,
            headers={"User-Agent": f"handoff/{__version__}"},
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()

    def deliver(self, document: Document, job: ClaimedJob | None) -> None:
        body = json.dumps(document_payload(document, job), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": document.id}
        if self.secret is not None:
            digest = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
            headers["X-Handoff-Signature"] = f"sha256={digest}"
        try:
            response = self.client.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise TransientError(f"webhook timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"webhook unreachable: {type(exc).__name__}: {exc}") from exc
        classify_response(response.status_code, response.headers.get("Retry-After"), self.clock)


def classify_response(status: int, retry_after: str | None, clock: Clock) -> None:
    """Raise the failure class a webhook's answer stands for; return on success."""
    if 200 <= status < 300:
        return
    delay = parse_retry_after(retry_after, clock.now())
    if status == 429 or (status == 503 and delay is not None):
        raise ThrottledError(f"webhook answered {status}", retry_after=delay)
    if status == 408 or status >= 500:
        raise TransientError(f"webhook answered {status}")
    raise PermanentError(f"webhook answered {status}", reason=ReasonCode.PERMANENT_ERROR)
