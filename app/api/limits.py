"""A request body limit, as pure ASGI middleware: a 413 problem document naming the limit.

Checked twice: from Content-Length before anything is read (the client is answered at once and
its body never read), and while reading, for chunked bodies that declare no length or bodies
longer than they declared. Pure ASGI rather than a FastAPI dependency so the limit holds before
any router, validation or JSON parsing buffers the body.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.domain.errors import RequestTooLarge
from app.domain.numbers import parse_count


class _Exceeded(Exception):
    """Raised into the app from `receive` once the body outgrows the limit."""


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = parse_count(Headers(scope=scope).get("content-length", ""))
        if declared is not None and declared > self.max_bytes:
            await self.refuse(scope, receive, send)
            return
        await _LimitedRequest(self, scope, receive, send).run()

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = {
            "type": "about:blank",
            "title": RequestTooLarge.__name__,
            "status": RequestTooLarge.status,
            "detail": f"the request body is larger than the limit of {_size(self.max_bytes)}",
            "limit_bytes": self.max_bytes,
        }
        response = JSONResponse(
            body,
            status_code=RequestTooLarge.status,
            media_type="application/problem+json",
            headers={"Connection": "close"},  # the rest of the body is not read
        )
        await response(scope, receive, send)


class _LimitedRequest:
    """One request under the limit: counts the body as the app reads it."""

    def __init__(self, limit: BodyLimit, scope: Scope, receive: Receive, send: Send) -> None:
        self.limit, self.scope, self._receive, self._send = limit, scope, receive, send
        self.received = 0
        self.exceeded = False
        self.started = False

    async def run(self) -> None:
        try:
            await self.limit.app(self.scope, self.receive, self.send)
        except Exception:
            # The app may let the cut-off read escape, or turn it into any other error: once
            # the limit is exceeded, the client gets the 413 either way.
            if not self.exceeded or self.started:
                raise
        if self.exceeded and not self.started:
            await self.limit.refuse(self.scope, self._receive, self._send)

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit.max_bytes:
                self.exceeded = True
                raise _Exceeded
        return message

    async def send(self, message: Message) -> None:
        if self.exceeded and not self.started:
            return  # whatever the app answers to a cut-off body (a 400, a 422), the 413 wins
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


def _size(n: int) -> str:
    """`2000 bytes`, `33554432 bytes (32 MiB)`: the exact figure, and a readable one if whole."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n} bytes ({n // scale} {unit})"
    return f"{n} bytes"
