"""The request body limit, driven as plain ASGI: declared lengths, streamed chunks, pass-through."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from app.api.limits import BodyLimit

LIMIT = 10


async def echo_size(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body and answers its size, as a route parsing JSON would."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


async def answers_400_to_read_errors(scope: Scope, receive: Receive, send: Send) -> None:
    """Turns a failed read into its own error answer, as FastAPI does ("error parsing body")."""
    try:
        await echo_size(scope, receive, send)
    except Exception:
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b"bad body"})


class Call:
    def __init__(self, chunks: list[bytes], content_length: int | str | None = None) -> None:
        self.pending: list[Message] = [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ]
        headers = [(b"content-type", b"application/json")]
        if content_length is not None:
            headers.append((b"content-length", str(content_length).encode("latin-1")))
        self.scope: Scope = {
            "type": "http",
            "method": "POST",
            "path": "/",
            "headers": headers,
            "query_string": b"",
        }
        self.reads = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.reads += 1
        return self.pending.pop(0) if self.pending else {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    def run(self, app: Any, limit: int = LIMIT) -> Call:
        asyncio.run(BodyLimit(app, max_bytes=limit)(self.scope, self.receive, self.send))
        return self

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.sent[0]["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    call = Call([b"x" * 11], content_length=11).run(echo_size)
    assert call.status == 413
    assert call.reads == 0
    assert call.headers["content-type"] == "application/problem+json"
    problem = json.loads(call.body)
    assert problem["title"] == "RequestTooLarge"
    assert problem["limit_bytes"] == LIMIT
    assert f"limit of {LIMIT} bytes" in problem["detail"]


def test_a_declared_length_in_other_digits_is_not_a_length() -> None:
    """'²' is a digit to `str.isdigit` but no number to `int`: the body is read and limited as
    one with no usable Content-Length, instead of the request failing with a 500."""
    call = Call([b"x" * 5], content_length="²").run(echo_size)
    assert call.status == 200
    assert call.body == b"5"


def test_the_default_limit_is_named_in_bytes_and_mebibytes() -> None:
    call = Call([], content_length=40 << 20).run(echo_size, limit=32 << 20)
    detail = json.loads(call.body)["detail"]
    assert detail == "the request body is larger than the limit of 33554432 bytes (32 MiB)"


def test_a_chunked_body_is_cut_off_when_it_outgrows_the_limit() -> None:
    call = Call([b"x" * 4, b"x" * 4, b"x" * 4, b"x" * 4]).run(echo_size)
    assert call.status == 413
    assert call.reads == 3  # the fourth chunk is never read
    assert json.loads(call.body)["status"] == 413


def test_a_body_longer_than_it_declared_is_cut_off_too() -> None:
    call = Call([b"x" * 6, b"x" * 6], content_length=5).run(echo_size)
    assert call.status == 413


def test_the_413_replaces_whatever_the_app_answers_to_a_cut_off_body() -> None:
    call = Call([b"x" * 6, b"x" * 6]).run(answers_400_to_read_errors)
    assert call.status == 413
    assert [m["type"] for m in call.sent] == ["http.response.start", "http.response.body"]


def test_bodies_up_to_the_limit_pass_untouched() -> None:
    call = Call([b"x" * 5, b"x" * 5], content_length=LIMIT).run(echo_size)
    assert (call.status, call.body) == (200, b"10")
    assert Call([b""]).run(echo_size).body == b"0"


def test_other_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def nothing() -> Message:
        return {}

    async def drop(_: Message) -> None:
        return None

    asyncio.run(BodyLimit(app, max_bytes=LIMIT)({"type": "lifespan"}, nothing, drop))
    assert seen == ["lifespan"]
