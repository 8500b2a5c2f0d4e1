"""Hostile input through the real app, on both engines.

Three parts: a corpus of regressions (each request once answered a 500 or is on the issue's
list: NUL and lone surrogates in every text field, CR/LF header injection, huge and deeply
nested JSON, invalid UTF-8, decompression bombs, path traversal); hypothesis strategies of our
own per route; and a schemathesis stateful run that follows the OpenAPI links (submit → the
handoff → retry / cancel → the reference). Every case gets a 4xx problem document or is taken
as data; nothing answers 5xx, a refused request leaves the database as it was, and the app's
inline worker is still ingesting at the end.

The budget is bounded for CI: `HANDOFF_FUZZ_EXAMPLES` (default 25) examples per strategy.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import brotli
import pytest
import schemathesis
from fastapi.testclient import TestClient
from httpx import Response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import func, select

from app.api.app import create_app
from app.db import tables
from app.db.uow import Database
from app.domain.clock import SystemClock
from app.domain.states import ACTIVE_STATES, TERMINAL_STATES
from app.domain.tokens import Scope
from app.services import tokens
from app.settings import Settings
from tests.support import wait_for

EXAMPLES = int(os.environ.get("HANDOFF_FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
LEDGER = (
    tables.scrape_records,
    tables.handoffs,
    tables.handoff_events,
    tables.ingestion_jobs,
    tables.documents,
)
MAX_BODY = 1 << 20  # the app under test decodes at most 1 MiB per record


@dataclass
class Api:
    client: TestClient
    db: Database

    def snapshot(self) -> dict[str, int]:
        """Row count and highest id per ledger table: any write moves one of them."""
        with self.db.transaction(write=False) as uow:
            return {
                f"{t.name}.{what}": uow.conn.execute(select(agg)).scalar_one() or 0
                for t in LEDGER
                for what, agg in (("rows", func.count()), ("max", func.max(t.c[_key(t)])))
            }

    def send(self, method: str, path: str, **kwargs: Any) -> Response:
        """The request; a refusal must be a problem document and must not have written."""
        before = self.snapshot()
        response: Response = self.client.request(method, path, **kwargs)
        assert response.status_code < 500, (method, path, response.status_code, response.text)
        if response.status_code >= 400:
            assert response.headers["content-type"] == "application/problem+json", response.text
            problem = response.json()
            assert problem["status"] == response.status_code
            assert problem["detail"], problem
            assert self.snapshot() == before, (method, path, response.text)
        return response

    def active_per_reference(self) -> int:
        return busiest(self.db)

    def all_terminal(self) -> bool:
        with self.db.transaction(write=False) as uow:
            open_ = uow.conn.execute(
                select(func.count()).where(
                    tables.handoffs.c.state.not_in([s.value for s in TERMINAL_STATES])
                )
            ).scalar_one()
        return int(open_) == 0


def busiest(db: Database) -> int:
    """The most active handoffs any one reference has (the contract: at most 1)."""
    with db.transaction(write=False) as uow:
        most = uow.conn.execute(
            select(func.count())
            .where(tables.handoffs.c.state.in_([s.value for s in ACTIVE_STATES]))
            .group_by(tables.handoffs.c.reference_id)
            .order_by(func.count().desc())
            .limit(1)
        ).scalar()
    return int(most or 0)


def _key(table: Any) -> str:
    return "id" if "id" in table.c else "seq"


def make_token(db: Database) -> str:
    _, secret = db.run(
        lambda uow: tokens.create(uow, "fuzz", [Scope.ADMIN], now=SystemClock().now())
    )
    return secret


def app_settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, inline_ingestion=True, max_body_bytes=MAX_BODY)


@pytest.fixture
def api(db: Database) -> Iterator[Api]:
    headers = {"Authorization": f"Bearer {make_token(db)}"}
    with TestClient(create_app(app_settings(db.url)), headers=headers) as client:
        yield Api(client, db)
    assert busiest(db) <= 1


# -- the corpus ------------------------------------------------------------------------------

JSON = {"content-type": "application/json"}
RECORD = {"source": "fuzz", "url": "https://example.com/page", "body": "<p>hello</p>"}


def record(**changes: Any) -> dict[str, Any]:
    return {**RECORD, **changes}


def raw(text: str) -> dict[str, Any]:
    """A request body sent byte for byte (JSON that `json=` could not produce)."""
    return {"content": text.encode("utf-8", "surrogatepass"), "headers": JSON}


def packed(data: bytes, coding: str) -> dict[str, Any]:
    return {
        "json": record(
            body=None,
            body_base64=base64.b64encode(data).decode(),
            headers={"content-encoding": coding},
        )
    }


def bomb(coding: str, size: int) -> bytes:
    """`size` zero bytes, compressed a MiB at a time (nothing that large is ever in memory)."""
    chunk = bytes(1 << 20)
    if coding == "br":
        packer = brotli.Compressor(quality=1)
        parts: list[bytes] = [packer.process(chunk) for _ in range(size >> 20)]
        return b"".join([*parts, packer.finish()])
    level = zlib.compressobj(9, zlib.DEFLATED, 31 if coding == "gzip" else 15)
    return b"".join(level.compress(chunk) for _ in range(size >> 20)) + level.flush()


BOMB = 16 * MAX_BODY  # 16 MiB of zeros once inflated (16x the limit); KiBs on the wire
# Each: (method, path, request keyword arguments, expected status, the field the problem names)
CORPUS: dict[str, tuple[str, str, dict[str, Any], int, str | None]] = {
    "nul-in-fields-string": (
        "POST",
        "/v1/scrape-records",
        {"json": record(fields={"k": "a\0b"})},
        422,
        "fields",
    ),
    "nul-in-fields-key": (
        "POST",
        "/v1/scrape-records",
        {"json": record(fields={"a\0": [1]})},
        422,
        "fields",
    ),
    "nul-deep-in-fields": (
        "POST",
        "/v1/scrape-records",
        {"json": record(fields={"a": [{"b": [[["\0"]]]}]})},
        422,
        "fields",
    ),
    "nul-in-header-value": (
        "POST",
        "/v1/scrape-records",
        {"json": record(headers={"x-a": "1\0"})},
        422,
        "headers",
    ),
    "nul-in-header-name": (
        "POST",
        "/v1/scrape-records",
        {"json": record(headers={"x\0": "1"})},
        422,
        "headers",
    ),
    "crlf-header-injection": (
        "POST",
        "/v1/scrape-records",
        {"json": record(headers={"x-a": "1\r\nSet-Cookie: session=stolen"})},
        422,
        "headers",
    ),
    "header-name-with-colon": (
        "POST",
        "/v1/scrape-records",
        {"json": record(headers={"a: b": "1"})},
        422,
        "headers",
    ),
    "nul-in-url": (
        "POST",
        "/v1/scrape-records",
        {"json": record(url="https://example.com/\0")},
        422,
        "url",
    ),
    "crlf-in-url": (
        "POST",
        "/v1/scrape-records",
        {"json": record(url="https://example.com/a\r\nHost: evil")},
        422,
        "url",
    ),
    "nul-in-content-type": (
        "POST",
        "/v1/scrape-records",
        {"json": record(content_type="text/html\0")},
        422,
        "content_type",
    ),
    "lone-surrogate-in-body": (
        "POST",
        "/v1/scrape-records",
        raw('{"source": "fuzz", "url": "https://example.com/s", "body": "\\ud800"}'),
        422,
        "body",
    ),
    "lone-surrogate-in-header": (
        "POST",
        "/v1/scrape-records",
        raw(
            '{"source": "fuzz", "url": "https://e.com/s", "body": "b", "headers": {"a": "\\udfff"}}'
        ),
        422,
        "headers",
    ),
    "lone-surrogate-in-fields": (
        "POST",
        "/v1/scrape-records",
        raw('{"source": "fuzz", "url": "https://e.com/s", "fields": {"a": "\\udc00"}}'),
        422,
        "fields",
    ),
    "lone-surrogate-in-reference": (
        "POST",
        "/v1/scrape-records",
        raw('{"source": "fuzz", "reference_id": "r\\ud800", "body": "b"}'),
        422,
        "reference_id",
    ),
    "invalid-utf8": (
        "POST",
        "/v1/scrape-records",
        {
            "content": b'{"source": "fuzz", "url": "https://e.com/u", "body": "\xff\xfe"}',
            "headers": JSON,
        },
        400,
        None,
    ),
    "nested-100000-deep": (
        "POST",
        "/v1/scrape-records",
        raw(
            '{"source": "fuzz", "url": "https://e.com/n", "fields": {"a": '
            + "[" * 100_000
            + "]" * 100_000
            + "}}"
        ),
        400,
        None,
    ),
    "integer-of-5000-digits": (
        "POST",
        "/v1/scrape-records",
        raw(
            '{"source": "fuzz", "url": "https://e.com/i", "status": '
            + "9" * 5000
            + ', "body": "b"}'
        ),
        400,
        None,
    ),
    "float-overflow-in-fields": (
        "POST",
        "/v1/scrape-records",
        raw('{"source": "fuzz", "url": "https://e.com/f", "fields": {"a": 1e400}}'),
        422,
        "fields",
    ),
    "nan-in-fields": (
        "POST",
        "/v1/scrape-records",
        raw('{"source": "fuzz", "url": "https://e.com/f", "fields": {"a": NaN}}'),
        422,
        "fields",
    ),
    "status-out-of-range": (
        "POST",
        "/v1/scrape-records",
        {"json": record(status=99999)},
        422,
        "status",
    ),
    "gzip-bomb": (
        "POST",
        "/v1/scrape-records",
        packed(bomb("gzip", BOMB), "gzip"),
        422,
        "body",
    ),
    "deflate-bomb": (
        "POST",
        "/v1/scrape-records",
        packed(bomb("deflate", BOMB), "deflate"),
        422,
        "body",
    ),
    "brotli-bomb": (
        "POST",
        "/v1/scrape-records",
        packed(bomb("br", BOMB), "br"),
        422,
        "body",
    ),
    "gzip-in-gzip-bomb": (
        "POST",
        "/v1/scrape-records",
        packed(gzip.compress(bomb("gzip", BOMB)), "gzip, gzip"),
        422,
        "body",
    ),
    "truncated-gzip": (
        "POST",
        "/v1/scrape-records",
        packed(gzip.compress(b"<p>x</p>" * 100)[:30], "gzip"),
        422,
        "body",
    ),
    "bzip2-is-not-an-http-coding": (
        "POST",
        "/v1/scrape-records",
        packed(bz2.compress(b"<p>x</p>"), "bzip2"),
        422,
        "headers",
    ),
    "bad-base64": (
        "POST",
        "/v1/scrape-records",
        {"json": record(body=None, body_base64="!!")},
        422,
        "body_base64",
    ),
    "gzip-encoded-request": (
        "POST",
        "/v1/scrape-records",
        {
            "content": gzip.compress(json.dumps(RECORD).encode()),
            "headers": {**JSON, "content-encoding": "gzip"},
        },
        400,
        None,
    ),
    "unknown-top-level-field": (
        "POST",
        "/v1/scrape-records",
        {"json": record(__proto__={"admin": True})},
        422,
        "__proto__",
    ),
    "batch-of-non-objects": (
        "POST",
        "/v1/scrape-records",
        {"json": {"records": [1, "a", None]}},
        422,
        "records.0",
    ),
    "reference-path-traversal": (
        "GET",
        "/v1/references/..%2F..%2F..%2Fetc%2Fpasswd",
        {},
        404,
        "reference_id",
    ),
    "reference-nul": ("GET", "/v1/references/a%00b", {}, 422, "reference_id"),
    "reference-invalid-utf8": ("GET", "/v1/references/%ff%fe", {}, 404, "reference_id"),
    "document-nul": ("GET", "/v1/documents/doc_%00", {}, 422, "document_id"),
    "document-traversal": ("GET", "/v1/documents/..%2F..%2Fdb", {}, 404, None),
    "search-too-long": ("GET", "/v1/documents/search?q=" + "a%20" * 600, {}, 422, "q"),
    "search-only-operators": ("GET", "/v1/documents/search?q=-%22%22%20or%20-", {}, 422, "q"),
    "cursor-garbage": ("GET", "/v1/handoffs?cursor=%00%ff", {}, 422, "cursor"),
    "handoff-id-over-int64": ("GET", "/v1/handoffs/9223372036854775808", {}, 422, "handoff_id"),
    "retry-id-over-int64": (
        "POST",
        "/v1/handoffs/9223372036854775808/retry",
        {},
        422,
        "handoff_id",
    ),
    "list-reference-nul": ("GET", "/v1/handoffs?reference_id=a%00", {}, 422, "reference_id"),
    "replay-reference-nul": (
        "POST",
        "/v1/handoffs/replay",
        {"json": {"reference_id": "a\0"}},
        422,
        "reference_id",
    ),
    "replay-invalid-utf8": (
        "POST",
        "/v1/handoffs/replay",
        {"content": b"\xff", "headers": JSON},
        400,
        None,
    ),
    "sync-url-with-nul": (
        "POST",
        "/v1/scraping/sync",
        {"json": {"source": "fuzz", "urls": ["http://x/\0"]}},
        422,
        "urls.0",
    ),
    "static-file-traversal": ("GET", "/ops/static/..%2F..%2F..%2Fsettings.py", {}, 404, None),
    "static-file-dot-dot": ("GET", "/ops/static/../../app.py", {}, 404, None),
}


@pytest.mark.parametrize("case", list(CORPUS), ids=list(CORPUS))
def test_a_hostile_request_is_refused_clearly_and_writes_nothing(api: Api, case: str) -> None:
    method, path, kwargs, status, field = CORPUS[case]
    response = api.send(method, path, **kwargs)
    assert response.status_code == status, response.text
    problem = response.json()
    if field is not None:
        named = [problem.get("field")] + [e["field"] for e in problem.get("errors") or []]
        assert field in named or problem["detail"].startswith(f"{field}:"), problem


def test_authorization_headers_that_are_not_tokens_are_401(api: Api) -> None:
    for value in (b"Bearer \xff\xfe", b"Bearer " + b"a" * 100_000, b"Basic YTpi", b"Bearer"):
        response = api.client.get("/v1/handoffs/stats", headers={"Authorization": value})
        assert response.status_code == 401, (value[:20], response.text)
        assert response.headers["content-type"] == "application/problem+json"


def test_the_worker_keeps_ingesting_after_the_corpus(api: Api) -> None:
    for method, path, kwargs, _, _ in CORPUS.values():
        api.send(method, path, **kwargs)
    ok = api.send("POST", "/v1/scrape-records", json=record(url="https://example.com/after"))
    assert ok.status_code == 200
    wait_for(api.all_terminal, timeout=30)
    handoff = api.client.get(f"/v1/handoffs/{ok.json()['results'][0]['handoff_id']}").json()
    assert handoff["handoff"]["state"] == "succeeded"


# -- hypothesis, per route ----------------------------------------------------------------------

NASTY = ["\0", "\ud800", "\udfff", "\r\n", "\x7f", "\u2028", "\ufeff", "../", "%00", "'", '"', "\\"]
nasty_text = st.one_of(
    st.text(max_size=30),
    st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=5)), max_size=6).map("".join),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | nasty_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=12,
)
submissions = st.fixed_dictionaries(
    {"source": st.one_of(st.just("fuzz"), nasty_text)},
    optional={
        "url": st.one_of(
            st.just("https://example.com/x"), nasty_text.map("https://e.com/".__add__)
        ),
        "reference_id": nasty_text,
        "fetched_at": st.one_of(nasty_text, st.just("2026-01-01T00:00:00Z")),
        "status": st.integers(min_value=-(2**40), max_value=2**40),
        "content_type": nasty_text,
        "headers": st.dictionaries(nasty_text, nasty_text, max_size=3),
        "body": nasty_text,
        "body_base64": st.one_of(
            nasty_text, st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
        ),
        "fields": st.dictionaries(nasty_text, json_values, max_size=4),
        "payload_hash": nasty_text,
        "extra": json_values,
    },
)


def _encode(document: Any) -> bytes:
    """JSON as a client might send it: lone surrogates as \\u escapes, NaN allowed."""
    return json.dumps(document, allow_nan=True).encode()


@FUZZ
@given(body=st.one_of(submissions, st.lists(submissions, max_size=3).map(lambda r: {"records": r})))
def test_any_submission_is_stored_or_refused_never_a_500(api: Api, body: Any) -> None:
    response = api.send("POST", "/v1/scrape-records", content=_encode(body), headers=JSON)
    assert response.status_code in (200, 400, 422), response.text
    assert api.active_per_reference() <= 1


@FUZZ
@given(
    body=st.binary(max_size=200)
    | submissions.map(_encode).flatmap(
        lambda b: st.integers(0, max(len(b) - 1, 0)).map(lambda cut: b[:cut] + b"\xff" + b[cut:])
    )
)
def test_any_bytes_as_a_body_are_refused_never_a_500(api: Api, body: bytes) -> None:
    for path in ("/v1/scrape-records", "/v1/handoffs/replay", "/v1/scraping/sync"):
        api.send("POST", path, content=body, headers=JSON)


def _segment(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@FUZZ
@given(text=nasty_text, number=st.integers(min_value=-(2**70), max_value=2**70))
def test_any_path_or_query_value_is_answered_never_a_500(api: Api, text: str, number: int) -> None:
    q = _segment(text)
    for method, path in (
        ("GET", f"/v1/references/{q}"),
        ("GET", f"/v1/documents/{q}"),
        ("GET", f"/v1/documents/search?q={q}&limit={number}&offset={number}"),
        ("GET", f"/v1/handoffs?reference_id={q}&source={q}&cursor={q}&limit={number}"),
        ("GET", f"/v1/handoffs?state={q}&reason_code={q}&created_after={q}"),
        ("GET", f"/v1/handoffs/{number}"),
        ("POST", f"/v1/handoffs/{number}/retry"),
        ("POST", f"/v1/handoffs/{number}/cancel"),
        ("GET", f"/v1/handoffs/{q}"),
        ("GET", f"/ops/static/{q}"),
    ):
        api.send(method, path)


@FUZZ
@given(reference=nasty_text, source=nasty_text, dry_run=json_values)
def test_any_replay_filter_is_answered_never_a_500(
    api: Api, reference: str, source: str, dry_run: Any
) -> None:
    for body in ({"reference_id": reference}, {"source": source, "dry_run": dry_run}):
        api.send("POST", "/v1/handoffs/replay", content=_encode(body), headers=JSON)


# -- schemathesis: stateful, following the OpenAPI links -----------------------------------------


@pytest.fixture
def linked_schema(db: Database) -> Iterator[Any]:
    app = create_app(app_settings(db.url))
    with TestClient(app):
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        schema.config.headers = {"Authorization": f"Bearer {make_token(db)}"}
        yield schema


def test_the_openapi_links_resolve(linked_schema: Any) -> None:
    """Each link names an operation that exists: the stateful run below has transitions."""
    operations = {
        op.get("operationId")
        for item in linked_schema.raw_schema["paths"].values()
        for op in item.values()
        if isinstance(op, dict)
    }
    linked = {
        link["operationId"]
        for item in linked_schema.raw_schema["paths"].values()
        for op in item.values()
        if isinstance(op, dict)
        for response in op.get("responses", {}).values()
        for link in response.get("links", {}).values()
    }
    assert len(linked) == 4
    assert linked <= operations


def test_stateful_sequences_never_get_a_5xx_or_break_an_invariant(
    linked_schema: Any, db: Database
) -> None:
    base = linked_schema.as_state_machine()
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    calls: list[str] = []

    class Machine(base):  # type: ignore[misc, valid-type]
        def validate_response(
            self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            calls.append(f"{case.method} {case.operation.path} {response.status_code}")
            case.validate_response(response, checks=checks)

        def teardown(self) -> None:
            assert busiest(db) <= 1

    Machine.run(
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    followed = [c for c in calls if "{handoff_id}" in c or "{reference_id}" in c]
    assert followed, calls  # the links were followed, not only the roots


@pytest.fixture
def browser(db: Database) -> Iterator[TestClient]:
    """The dashboard, logged in: its cookie session."""
    with TestClient(create_app(app_settings(db.url)), follow_redirects=False) as client:
        assert client.post("/ops/login", data={"token": make_token(db)}).status_code == 303
        yield client


def test_a_non_ascii_csrf_token_is_refused_not_a_500(browser: TestClient) -> None:
    """Found by the dashboard strategy below: compare_digest raised on a non-ASCII str."""
    for sent in ("\x80", "é" * 43, "\ud800"):
        form = urlencode({"csrf": sent}, encoding="utf-8", errors="surrogatepass")
        response = browser.post(
            "/ops/handoffs/1/retry",
            content=form.encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 403, (sent, response.text[:200])


@FUZZ
@given(text=nasty_text, number=st.integers(min_value=-(2**70), max_value=2**70))
def test_the_dashboard_answers_any_value_without_a_500(
    browser: TestClient, text: str, number: int
) -> None:
    """Every page and form of /ops with hostile values (a non-ASCII CSRF token was a 500)."""
    q = _segment(text)
    for path in (
        f"/ops/handoffs?reference_id={q}&source={q}&cursor={q}&limit={number}",
        f"/ops/handoffs?state={q}&reason_code={q}&created_after={q}",
        f"/ops/live/handoffs?reference_id={q}&cursor={q}",
        f"/ops/handoffs/{q}",
        f"/ops/handoffs/{number}",
        f"/ops/live/handoffs/{number}",
    ):
        response = browser.get(path)
        assert response.status_code < 500, (path, response.text[:200])
    for action in ("/ops/replay", f"/ops/handoffs/{number}/retry", "/ops/handoffs/1/cancel"):
        for form in ({"reference_id": text, "csrf": text}, {"source": text, "dry_run": text}):
            response = browser.post(
                action,
                content=urlencode(form, encoding="utf-8", errors="surrogatepass").encode(),
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            assert response.status_code < 500, (action, form, response.text[:200])
