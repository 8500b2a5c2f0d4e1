"""A Scrapy item pipeline that hands scraped items off to Handoff.

Enable it with two settings in a Scrapy project::

    ITEM_PIPELINES = {"app.integrations.scrapy.HandoffPipeline": 300}
    HANDOFF_URL = "http://127.0.0.1:8000"   # over the HTTP API ...
    HANDOFF_TOKEN = "..."                   # ... with a token of scope `ingest`
    # or, directly to the database (one transaction per batch):
    HANDOFF_DATABASE_URL = "postgresql://..."

Optional: HANDOFF_SOURCE (default: the spider's name), HANDOFF_BATCH_SIZE (100),
HANDOFF_MAX_RETRIES (5), HANDOFF_MAX_RETRY_WAIT (60 s), HANDOFF_TIMEOUT (30 s),
HANDOFF_MAX_BODY_BYTES (20 MiB, database mode).

An item (a dict, a scrapy.Item, any item `itemadapter` reads) becomes one scrape record:
`url`, `reference_id`, `fetched_at`, `status`, `content_type`, `headers` map onto the record's
fields of the same name; the body is `body` (str, or bytes: sent base64), `body_base64`, `html`
or `text`; `fields` (a dict) and every other key go to the record's structured `fields`.
`handoff_item(response)` builds such an item from a Scrapy response.

Items are sent in batches and the last batch is flushed when the spider closes. Over HTTP, a
429 or 503 is retried after its Retry-After a bounded number of times; any other refusal raises
`HandoffError` naming the status and the problem the API reported.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx
from itemadapter import ItemAdapter
from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.http import Response

from app.db.uow import Database
from app.domain.clock import SystemClock
from app.domain.errors import InvalidInput
from app.domain.records import ScrapeSubmission
from app.services import scrape_storage

logger = logging.getLogger(__name__)

#: Item keys that map onto a scrape record field of the same name.
RECORD_KEYS = ("url", "reference_id", "fetched_at", "status", "content_type", "headers")
#: Item keys read as the body, in this order.
BODY_KEYS = ("body", "body_base64", "html", "text")
#: Response headers that describe the transfer, not the (already decoded) body.
_TRANSFER_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class HandoffError(RuntimeError):
    """Handoff refused a batch, or could not be reached after the allowed retries."""


def handoff_item(response: Response, **fields: Any) -> dict[str, Any]:
    """An item for `HandoffPipeline` from a response: url, status, headers, content type and
    the body (base64, so any bytes survive). Keyword arguments become structured fields."""
    headers: dict[str, str] = {}
    for key, values in response.headers.items():
        name = bytes(key).decode("latin-1")
        if name.lower() not in _TRANSFER_HEADERS:
            headers[name] = ", ".join(bytes(v).decode("latin-1") for v in values)
    content_type = response.headers.get("Content-Type")
    item: dict[str, Any] = {
        "url": response.url,
        "status": response.status,
        "headers": headers,
        "body_base64": base64.b64encode(response.body).decode("ascii"),
    }
    if content_type:
        item["content_type"] = bytes(content_type).decode("latin-1")
    if fields:
        item["fields"] = dict(fields)
    return item


def item_to_record(item: Any, *, source: str) -> dict[str, Any]:
    """The scrape record (a JSON-ready dict) for one item; see the module docstring."""
    data = ItemAdapter(item).asdict()
    record: dict[str, Any] = {"source": data.pop("source", None) or source}
    for key in RECORD_KEYS:
        value = data.pop(key, None)
        if value is not None:
            record[key] = value
    if "headers" in record:
        record["headers"] = {str(k): str(v) for k, v in dict(record["headers"]).items()}
    if "fetched_at" in record and not isinstance(record["fetched_at"], str):
        record["fetched_at"] = record["fetched_at"].isoformat()
    bodies = {k: data.pop(k) for k in BODY_KEYS if data.get(k) is not None}
    for key in BODY_KEYS:
        data.pop(key, None)
    if bodies:
        key, value = next(iter(bodies.items()))
        if isinstance(value, bytes | bytearray | memoryview):
            record["body_base64"] = base64.b64encode(bytes(value)).decode("ascii")
        elif key == "body_base64":
            record["body_base64"] = str(value)
        else:
            record["body"] = str(value)
    fields = dict(data.pop("fields", None) or {})
    fields.update(data)
    if fields:
        # Round-trip through JSON so dates and other scalars arrive as the API would read them.
        record["fields"] = json.loads(json.dumps(fields, default=str))
    return record


class HandoffPipeline:
    """Hands every item off to Handoff, in batches, over HTTP or straight to the database."""

    def __init__(
        self,
        *,
        url: str | None = None,
        token: str | None = None,
        database_url: str | None = None,
        source: str | None = None,
        batch_size: int = 100,
        max_retries: int = 5,
        max_retry_wait: float = 60.0,
        timeout: float = 30.0,
        max_body_bytes: int = 20 * 1024 * 1024,
    ) -> None:
        if bool(url) == bool(database_url):
            raise NotConfigured("set HANDOFF_URL (with HANDOFF_TOKEN) or HANDOFF_DATABASE_URL")
        if url and not token:
            raise NotConfigured("HANDOFF_URL needs HANDOFF_TOKEN (a token of scope ingest)")
        if batch_size < 1:
            raise NotConfigured("HANDOFF_BATCH_SIZE must be at least 1")
        self.url = url.rstrip("/") if url else None
        self.token = token
        self.database_url = database_url
        self.source = source
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        self.crawler: Crawler | None = None
        self._batch: list[dict[str, Any]] = []
        self._client: httpx.Client | None = None
        self._db: Database | None = None
        self.outcomes: dict[str, int] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> HandoffPipeline:
        s = crawler.settings
        pipeline = cls(
            url=s.get("HANDOFF_URL"),
            token=s.get("HANDOFF_TOKEN"),
            database_url=s.get("HANDOFF_DATABASE_URL"),
            source=s.get("HANDOFF_SOURCE"),
            batch_size=s.getint("HANDOFF_BATCH_SIZE", 100),
            max_retries=s.getint("HANDOFF_MAX_RETRIES", 5),
            max_retry_wait=s.getfloat("HANDOFF_MAX_RETRY_WAIT", 60.0),
            timeout=s.getfloat("HANDOFF_TIMEOUT", 30.0),
            max_body_bytes=s.getint("HANDOFF_MAX_BODY_BYTES", 20 * 1024 * 1024),
        )
        pipeline.crawler = crawler
        crawler.signals.connect(pipeline._spider_opened, signal=signals.spider_opened)
        return pipeline

    def _spider_opened(self) -> None:
        if self.source is None and self.crawler is not None and self.crawler.spider is not None:
            self.source = self.crawler.spider.name

    def open_spider(self) -> None:
        if self.url:
            self._client = httpx.Client(
                base_url=self.url,
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=self.timeout,
            )
        else:
            assert self.database_url is not None
            self._db = Database(self.database_url, pool_size=1)

    def process_item(self, item: Any) -> Any:
        if self.source is None:
            self._spider_opened()
        self._batch.append(item_to_record(item, source=self.source or "scrapy"))
        if len(self._batch) >= self.batch_size:
            self.flush()
        return item

    def close_spider(self) -> None:
        try:
            self.flush()
        finally:
            if self._client is not None:
                self._client.close()
            if self._db is not None:
                self._db.dispose()
            logger.info("handoff outcomes: %s", self.outcomes)

    def flush(self) -> None:
        """Send the pending batch (both modes: the whole batch is handed off or none of it)."""
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        try:
            outcomes = self._send_http(batch) if self._client is not None else self._store(batch)
        except Exception:
            self._count("failed", len(batch))
            raise
        for outcome in outcomes:
            self._count(outcome, 1)

    def _count(self, outcome: str, n: int) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n
        if self.crawler is not None and self.crawler.stats is not None:
            self.crawler.stats.inc_value(f"handoff/{outcome}", n)

    def _store(self, batch: list[dict[str, Any]]) -> list[str]:
        assert self._db is not None
        try:
            subs = [ScrapeSubmission.model_validate(r) for r in batch]
            now = SystemClock().now()
            prepared = scrape_storage.prepare_all(subs, now=now, max_body_bytes=self.max_body_bytes)
        except (ValueError, InvalidInput) as exc:  # pydantic's ValidationError is a ValueError
            raise HandoffError(f"a batch of {len(batch)} items was refused: {exc}") from exc
        actor = "client:" + (self.source or "scrapy")  # the events table knows client actors
        results = scrape_storage.submit(self._db, prepared, now=now, actor=actor)
        return [str(r.outcome) for r in results]

    def _send_http(self, batch: list[dict[str, Any]]) -> list[str]:
        assert self._client is not None
        for attempt in range(self.max_retries + 1):
            try:
                response = self._client.post("/v1/scrape-records", json={"records": batch})
            except httpx.TransportError as exc:
                if attempt == self.max_retries:
                    raise HandoffError(f"Handoff at {self.url} cannot be reached: {exc}") from exc
                time.sleep(min(2.0**attempt, self.max_retry_wait))
                continue
            if response.status_code == 200:
                return [str(r["outcome"]) for r in response.json()["results"]]
            if response.status_code in (429, 503) and attempt < self.max_retries:
                wait = _retry_after(response.headers.get("Retry-After"), default=2.0**attempt)
                logger.warning("Handoff answered %s; retrying in %.1fs", response.status_code, wait)
                time.sleep(min(wait, self.max_retry_wait))
                continue
            raise HandoffError(
                f"Handoff refused a batch of {len(batch)} items: HTTP {response.status_code}"
                f" {_problem(response)}"
            )
        raise AssertionError("unreachable")  # pragma: no cover


def _retry_after(value: str | None, *, default: float) -> float:
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default  # an HTTP date: not worth parsing for a bounded wait


def _problem(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, Mapping):
        return str(body.get("detail") or body.get("title") or body)[:500]
    return str(body)[:500]
