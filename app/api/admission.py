"""Backpressure at the door: the admission gate in front of the submission routes.

One backlog reading (`services.admission`) is shared by every request for
`admission_cache_seconds`, so a burst of submissions costs one bounded count per second, not
one per request. Past `max_backlog`, a submission is refused before it reads or writes
anything: 429, `Retry-After`, and a problem document naming the backlog and the limit.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from app import metrics
from app.api.handoff_models import problem_response
from app.db.uow import Database
from app.domain.clock import Clock
from app.domain.errors import Overloaded
from app.services import admission
from app.services.admission import Admission

#: The 429 of the submission routes, for OpenAPI.
OVERLOADED: dict[int | str, dict[str, Any]] = {
    429: {
        **problem_response(
            "Ingestion is behind: more handoffs are runnable than `max_backlog`. Nothing was "
            "stored; retry after `Retry-After` seconds. `backlog` and `max_backlog` say how far."
        ),
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before submitting again.",
                "schema": {"type": "integer"},
            }
        },
    }
}


class AdmissionGate:
    def __init__(
        self, db: Database, clock: Clock, *, max_backlog: int | None, cache_seconds: float
    ) -> None:
        self.db = db
        self.clock = clock
        self.max_backlog = max_backlog
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._reading: tuple[float, Admission] | None = None

    def current(self) -> Admission:
        """The latest reading, at most `cache_seconds` old. Concurrent callers wait for one
        reading rather than each making their own."""
        with self._lock:
            at = time.monotonic()
            if self._reading is not None and at - self._reading[0] < self.cache_seconds:
                return self._reading[1]
            now = self.clock.now()
            found = self.db.run(
                lambda uow: admission.admission(uow, now=now, max_backlog=self.max_backlog),
                write=False,
            )
            self._reading = (at, found)
            return found

    def check(self, route: str) -> None:
        """Raise `Overloaded` (429) when the backlog is past the limit."""
        if self.max_backlog is None:
            return  # no limit: not even a reading
        reading = self.current()
        if reading.admitted:
            return
        metrics.REJECTED.labels(route).inc()
        raise Overloaded(
            f"{reading.backlog} handoffs are waiting for a worker, more than the limit of "
            f"{self.max_backlog}; retry in {reading.retry_after_seconds} s",
            retry_after=reading.retry_after_seconds or 1,
            backlog=reading.backlog,
            max_backlog=self.max_backlog,
        )


def _admit(request: Request) -> None:
    gate: AdmissionGate = request.app.state.admission
    route = request.scope.get("route")
    gate.check(getattr(route, "path", request.url.path))


#: Put after the scope check on a submission route: `dependencies=[require(...), ADMIT]`.
ADMIT = Depends(_admit)


def install(app: FastAPI) -> None:
    """Render `Overloaded` as a 429 problem document with `Retry-After`."""

    @app.exception_handler(Overloaded)
    async def overloaded(_: Request, exc: Overloaded) -> JSONResponse:
        body = {
            "type": "about:blank",
            "title": "Overloaded",
            "status": 429,
            "detail": exc.message,
            "backlog": exc.backlog,
            "max_backlog": exc.max_backlog,
            "retry_after_seconds": exc.retry_after,
        }
        return JSONResponse(
            body,
            status_code=429,
            media_type="application/problem+json",
            headers={"Retry-After": str(exc.retry_after)},
        )
