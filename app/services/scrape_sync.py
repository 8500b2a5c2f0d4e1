"""Scrape-sync: fetch URLs now on a client's behalf, behind the SSRF guard, then persist and hand
off each page exactly as a record submitted to POST /v1/scrape-records.

Three steps, so no transaction is open while the network is slow:
`fetch_all` (network only) → `prepare` (the submission rules) → `store` (in the caller's
transaction: every page of one sync and its handoff commit together, like a batch).

Decisions a caller must know:
* Any response that arrived is persisted with its status, 4xx and 5xx included: the scrape log
  says what the site answered, and the status travels with the record. A URL that produced no
  response (refused, timed out, too large, unreachable) stores nothing and reports why.
* The body is read as sent, with its Content-Encoding, up to `max_response_bytes`, and decoded
  by the same bounded decoder as submitted bodies (`payload.decode_body`, capped at
  `max_body_bytes`): httpx's own decoders have no output cap, so a small compressed body could
  expand without bound. The stored body is decoded and Content-Encoding is not stored.
* The record's `url` (and the `reference_id` derived from it) is the URL asked for, not where
  redirects ended: re-syncing a URL updates the same reference even if its redirects move.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

import httpx
from pydantic import ValidationError

from app import __version__
from app.db.uow import UnitOfWork
from app.domain import ssrf
from app.domain.clock import Clock
from app.domain.errors import BodyTooLarge, FetchRefused, InvalidInput
from app.domain.numbers import parse_count
from app.domain.payload import normalise_content_type
from app.domain.records import PreparedRecord, ScrapeSubmission
from app.services import scrape_storage
from app.services.guarded_http import GuardedTransport, check_url
from app.services.ingestion_handoff import EnqueueResult
from app.settings import Settings

_REQUEST_HEADERS = {
    "User-Agent": f"Handoff/{__version__} (scrape-sync)",
    "Accept": "*/*",
    "Accept-Encoding": "gzip, deflate, br",  # exactly what payload.decode_body undoes
}
#: Headers about the bytes on the wire, false once the body is stored decoded.
_WIRE_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


class FetchError(StrEnum):
    REFUSED = "refused"
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    CONNECTION_FAILED = "connection_failed"
    INVALID_RESPONSE = "invalid_response"
    INVALID_URL = "invalid_url"


@dataclass(frozen=True, slots=True)
class SyncConfig:
    connect_timeout: float
    read_timeout: float
    deadline: float
    max_redirects: int
    max_response_bytes: int
    max_body_bytes: int
    concurrency: int
    allow: tuple[ssrf.IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> SyncConfig:
        return cls(
            connect_timeout=settings.sync_connect_timeout_seconds,
            read_timeout=settings.sync_read_timeout_seconds,
            deadline=settings.sync_deadline_seconds,
            max_redirects=settings.sync_max_redirects,
            max_response_bytes=settings.sync_max_response_bytes,
            max_body_bytes=settings.max_body_bytes,
            concurrency=settings.sync_concurrency,
            allow=ssrf.parse_networks(settings.sync_allow_networks),
        )


@dataclass(frozen=True, slots=True)
class Page:
    """A response as it arrived: headers lower-cased, body still content-encoded."""

    url: str
    final_url: str
    status: int
    headers: dict[str, str]
    body: bytes
    fetched_at: datetime


@dataclass(frozen=True, slots=True)
class UrlResult:
    """What became of one URL: an error, or a record (after `prepare`) and its handoff."""

    url: str
    final_url: str | None = None
    status: int | None = None
    error: FetchError | None = None
    message: str | None = None
    record: PreparedRecord | None = None
    enqueued: EnqueueResult | None = None


class _Failed(Exception):
    def __init__(self, error: FetchError, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


def fetch_all(
    urls: Sequence[str],
    config: SyncConfig,
    *,
    clock: Clock,
    transport: httpx.BaseTransport | None = None,
) -> list[Page | UrlResult]:
    """Fetch every URL, `config.concurrency` at a time; results in the order given. One URL's
    failure is its result (a UrlResult with `error`), never an exception. Opens no
    transaction. Every connection goes through the SSRF guard unless `transport` is given."""
    timeout = httpx.Timeout(
        connect=config.connect_timeout,
        read=config.read_timeout,
        write=config.read_timeout,
        pool=config.deadline,
    )
    with (
        httpx.Client(
            transport=transport or GuardedTransport(config.allow),
            timeout=timeout,
            follow_redirects=False,  # each hop is checked again below, then by the transport
            headers=_REQUEST_HEADERS,
            trust_env=False,
        ) as client,
        ThreadPoolExecutor(max_workers=min(config.concurrency, len(urls) or 1)) as pool,
    ):
        return list(pool.map(lambda url: fetch(client, url, config, clock=clock), urls))


def fetch(client: httpx.Client, url: str, config: SyncConfig, *, clock: Clock) -> Page | UrlResult:
    """Fetch one URL, following at most `config.max_redirects` redirects, each hop re-checked."""
    try:
        return _follow(client, url, config, clock, time.monotonic() + config.deadline)
    except _Failed as exc:
        return UrlResult(url=url, error=exc.error, message=exc.message)
    except FetchRefused as exc:
        return UrlResult(url=url, error=FetchError.REFUSED, message=exc.message)
    except httpx.TimeoutException as exc:
        return UrlResult(url=url, error=FetchError.TIMEOUT, message=_timeout_message(exc, config))
    except httpx.NetworkError as exc:
        return UrlResult(url=url, error=FetchError.CONNECTION_FAILED, message=_text(exc))
    except httpx.InvalidURL as exc:  # the API validates URLs first: only direct callers
        return UrlResult(url=url, error=FetchError.INVALID_URL, message=_text(exc))
    except httpx.HTTPError as exc:  # a protocol violation, a Location that is no URL…
        return UrlResult(url=url, error=FetchError.INVALID_RESPONSE, message=_text(exc))


def _follow(
    client: httpx.Client, url: str, config: SyncConfig, clock: Clock, deadline: float
) -> Page:
    target = httpx.URL(url)
    for _ in range(config.max_redirects + 1):
        check_url(target)  # the scheme and credentials of this hop; its address on connect
        with client.stream("GET", target) as response:
            if response.next_request is None:  # not a redirect: this is the page
                body = _read(response, config, deadline)
                headers = {k.lower(): v for k, v in response.headers.items()}
                return Page(
                    url=url,
                    final_url=str(target),
                    status=response.status_code,
                    headers={k: v for k, v in headers.items() if k not in _WIRE_HEADERS},
                    body=body,
                    fetched_at=clock.now(),
                )
            target = response.next_request.url
        _check_deadline(deadline, config)
    raise _Failed(FetchError.TOO_MANY_REDIRECTS, f"more than {config.max_redirects} redirects")


def _read(response: httpx.Response, config: SyncConfig, deadline: float) -> bytes:
    """The body as sent, refused as soon as it outgrows the limit (declared or streamed)."""
    limit = config.max_response_bytes
    declared = parse_count(response.headers.get("content-length", ""))
    if declared is not None and declared > limit:
        raise _Failed(FetchError.TOO_LARGE, f"the response declares {declared} bytes (> {limit})")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_raw():
        size += len(chunk)
        if size > limit:
            raise _Failed(FetchError.TOO_LARGE, f"the response is larger than {limit} bytes")
        chunks.append(chunk)
        _check_deadline(deadline, config)
    return b"".join(chunks)


def _check_deadline(deadline: float, config: SyncConfig) -> None:
    if time.monotonic() > deadline:
        raise _Failed(FetchError.TIMEOUT, f"took longer than {config.deadline:g} s")


def _timeout_message(exc: httpx.TimeoutException, config: SyncConfig) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {config.connect_timeout:g} s"
    return f"the server sent nothing for {config.read_timeout:g} s"


def _text(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def prepare(
    source: str,
    fetched: Sequence[Page | UrlResult],
    reference_ids: Sequence[str | None] | None,
    *,
    config: SyncConfig,
    now: datetime,
) -> list[UrlResult]:
    """Each page as a record prepared by the rules of POST /v1/scrape-records; a page those
    rules refuse (too large once decoded, unknown encoding) becomes its URL's error."""
    ids = reference_ids or [None] * len(fetched)
    return [
        _prepare_page(source, item, ref, config, now) if isinstance(item, Page) else item
        for item, ref in zip(fetched, ids, strict=True)
    ]


def _prepare_page(
    source: str, page: Page, reference_id: str | None, config: SyncConfig, now: datetime
) -> UrlResult:
    done = UrlResult(url=page.url, final_url=page.final_url, status=page.status)
    try:
        submission = ScrapeSubmission(
            source=source,
            url=page.url,
            reference_id=reference_id,
            fetched_at=page.fetched_at,
            status=page.status,
            content_type=normalise_content_type(page.headers.get("content-type")),
            headers=page.headers,
            body_base64=base64.b64encode(page.body).decode(),
        )
        (record,) = scrape_storage.prepare_all(
            [submission], now=now, max_body_bytes=config.max_body_bytes, batch=False
        )
    except BodyTooLarge as exc:
        return replace(done, error=FetchError.TOO_LARGE, message=exc.message)
    except InvalidInput as exc:
        return replace(done, error=FetchError.INVALID_RESPONSE, message=exc.message)
    except ValidationError as exc:  # a status or content type no record may carry
        problems = "; ".join(str(e["msg"]) for e in exc.errors())
        return replace(done, error=FetchError.INVALID_RESPONSE, message=problems)
    return replace(done, record=record)


def store(
    uow: UnitOfWork, results: Sequence[UrlResult], *, now: datetime, actor: str
) -> list[UrlResult]:
    """Persist and hand off every prepared page in `uow`'s transaction (the caller commits);
    failed URLs pass through. Idempotent: an unchanged page is reported `duplicate`."""
    records = [r.record for r in results if r.record is not None]
    enqueued = iter(scrape_storage.store_and_hand_off(uow, records, now=now, actor=actor))
    return [replace(r, enqueued=next(enqueued)) if r.record is not None else r for r in results]
