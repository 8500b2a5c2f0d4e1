"""The pluggable ingestion handler interface.

A handler receives one claimed job (the handoff and its persisted scrape record) and performs
ingestion. It must be idempotent for its `(reference_id, payload_hash)`: under at-least-once
execution the same job can run twice (a worker dies after writing, before completing), and the
second run must have the effect of one. It reports failures by raising:

* `app.domain.failures.TransientError` — retried with backoff (counts against the budget);
* `ThrottledError(retry_after=…)` — retried after the delay, without spending the budget;
* `PermanentError(reason=…)` — failed at once;
* anything else — unclassified: retried on a reduced budget.

Returning normally means the side effects are durable; the worker then marks the handoff
`succeeded` (the document write happens before that mark).
"""

from __future__ import annotations

from typing import Protocol

from app.domain.models import ClaimedJob


class IngestionHandler(Protocol):
    def __call__(self, job: ClaimedJob) -> None: ...


class NoopHandler:
    """Does nothing; for benchmarks of the handoff machinery itself."""

    def __call__(self, job: ClaimedJob) -> None:
        return None
