"""A scrape submission as a client sends it, and the prepared record that storage persists."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.domain import payload
from app.domain.errors import InvalidInput, PayloadHashMismatch

SOURCE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,99}$"
#: Top-level structured-field keys that change on every scrape and so never enter the hash.
DEFAULT_VOLATILE_FIELDS = frozenset(
    {"fetched_at", "scraped_at", "crawled_at", "retrieved_at", "request_id", "crawl_id"}
)

JSONValue = Any


class ScrapeSubmission(BaseModel):
    """One scraped version, as pushed by a scraper (HTTP, JSONL file, Scrapy, WARC import)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Annotated[str, Field(pattern=SOURCE_PATTERN, description="Scraper or site name.")]
    url: Annotated[str | None, Field(default=None, max_length=8192)] = None
    reference_id: Annotated[
        str | None, Field(default=None, max_length=payload.REFERENCE_ID_MAX)
    ] = None
    fetched_at: datetime | None = None
    status: Annotated[int | None, Field(default=None, ge=100, le=599)] = None
    content_type: Annotated[str | None, Field(default=None, max_length=255)] = None
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    body_base64: str | None = None
    fields: dict[str, JSONValue] | None = None
    payload_hash: Annotated[str | None, Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")] = (
        None
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value, re.IGNORECASE):
            raise ValueError("url must be an absolute http(s) URL")
        if value is not None and not payload.is_single_line(value):
            raise ValueError("url must not contain control characters or lone surrogates")
        return value

    @field_validator("content_type")
    @classmethod
    def _printable_type(cls, value: str | None) -> str | None:
        if value is not None and not payload.is_single_line(value):
            raise ValueError("content_type must not contain control characters")
        return value

    @field_validator("headers")
    @classmethod
    def _header_lines(cls, value: dict[str, str]) -> dict[str, str]:
        # Stored headers may be sent on again (sinks, exports): no CR/LF/NUL may split a line.
        for name, text in value.items():
            if not payload.is_single_line(name) or not name or re.search(r"[\s:]", name):
                raise ValueError(f"header name {name!r} is not a valid HTTP field name")
            if not payload.is_single_line(text):
                raise ValueError(f"header {name!r} has control characters (CR, LF, NUL…)")
        return value

    @field_validator("body")
    @classmethod
    def _encodable(cls, value: str | None) -> str | None:
        if value is not None and not payload.is_unicode(value):
            raise ValueError("body is not valid Unicode text (it has a lone surrogate)")
        return value

    @field_validator("fields")
    @classmethod
    def _storable_json(cls, value: dict[str, JSONValue] | None) -> dict[str, JSONValue] | None:
        if value is not None and payload.has_nul(value):
            raise ValueError("fields must not contain NUL (\\u0000) in keys or strings")
        return value

    @field_validator("reference_id")
    @classmethod
    def _reference(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return payload.validate_reference_id(value)
        except InvalidInput as exc:
            raise ValueError(exc.message) from exc

    @field_validator("fetched_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # naive times are read as UTC
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ScrapeSubmission:
        if self.reference_id is None and self.url is None:
            raise ValueError("give reference_id, or url to derive it from")
        if self.body is not None and self.body_base64 is not None:
            raise ValueError("give body or body_base64, not both")
        if self.body is None and self.body_base64 is None and self.fields is None:
            raise ValueError("a record needs a body, body_base64 or fields")
        return self


@dataclass(frozen=True, slots=True)
class PreparedRecord:
    """A validated, canonicalised scraped version, ready to persist."""

    reference_id: str
    payload_hash: str
    source: str
    url: str | None
    fetched_at: datetime
    http_status: int | None
    content_type: str
    headers: Mapping[str, str]
    body: bytes
    fields: Mapping[str, JSONValue] | None


def prepare(
    sub: ScrapeSubmission,
    *,
    now: datetime,
    max_body_bytes: int,
    volatile_fields: frozenset[str] = DEFAULT_VOLATILE_FIELDS,
    raw_body: bytes | None = None,
) -> PreparedRecord:
    """Decode, canonicalise and hash a submission. Raises InvalidInput naming the field.

    `raw_body`, when given, is the body as received (bytes straight from an archive record),
    used instead of the submission's `body` / `body_base64`: no base64 round trip, no copy.
    """
    headers = {k.lower(): v for k, v in sub.headers.items()}
    raw = _raw_body(sub) if raw_body is None else raw_body
    body = payload.decode_body(
        raw, headers.get("content-encoding", "").split(","), max_bytes=max_body_bytes
    )
    content_type = payload.normalise_content_type(
        sub.content_type
        or headers.get("content-type")
        or ("application/octet-stream" if raw_body is not None else _guess_type(sub))
    )
    hashed_fields = {k: v for k, v in (sub.fields or {}).items() if k not in volatile_fields}
    try:
        digest = payload.payload_hash(body, content_type, hashed_fields)
    except ValueError as exc:  # NaN or infinity in fields
        raise InvalidInput(f"fields are not valid JSON: {exc}", field="fields") from exc
    if sub.payload_hash is not None and sub.payload_hash != digest:
        raise PayloadHashMismatch(
            f"payload_hash {sub.payload_hash} does not match the payload ({digest})",
            field="payload_hash",
        )
    reference_id = sub.reference_id or payload.derive_reference_id(sub.source, sub.url or "")
    stored_headers = {k: v for k, v in headers.items() if k not in payload.UNSTORED_HEADERS}
    return PreparedRecord(
        reference_id=reference_id,
        payload_hash=digest,
        source=sub.source,
        url=sub.url,
        fetched_at=(sub.fetched_at or now).astimezone(UTC),
        http_status=sub.status,
        content_type=content_type,
        headers=stored_headers,
        body=body,
        fields=sub.fields,
    )


def _raw_body(sub: ScrapeSubmission) -> bytes:
    if sub.body_base64 is not None:
        try:
            return base64.b64decode(sub.body_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput("body_base64 is not valid base64", field="body_base64") from exc
    return (sub.body or "").encode()


def _guess_type(sub: ScrapeSubmission) -> str:
    if sub.body is None and sub.body_base64 is None:
        return "application/json"
    return "text/plain; charset=utf-8" if sub.body is not None else "application/octet-stream"


def matches_hash(
    body: bytes,
    content_type: str,
    fields: Mapping[str, JSONValue] | None,
    expected: str,
    volatile_fields: frozenset[str] = DEFAULT_VOLATILE_FIELDS,
) -> bool:
    """Whether a stored payload still hashes to the `payload_hash` it was stored under."""
    kept = {k: v for k, v in (fields or {}).items() if k not in volatile_fields}
    return payload.payload_hash(body, content_type, kept) == expected
