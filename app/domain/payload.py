"""The canonical payload of a scraped version, its hash, and the reference it belongs to.

`payload_hash` = sha256 over a framed, canonical payload: the decoded body bytes (content-encoding
removed), the normalised content type, and canonical JSON of the structured fields minus volatile
keys. Fetch time, headers other than Content-Type/Content-Encoding, and request ids never enter it,
so re-scraping unchanged content produces the same hash.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import zlib
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import brotli
from w3lib.url import canonicalize_url

from app.domain.errors import BodyTooLarge, InvalidInput

HASH_PREFIX = "sha256:"
_FRAME = b"handoff-payload-v1"
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Headers never stored: they carry credentials or session state, not content.
SECRET_HEADERS = frozenset({"set-cookie", "cookie", "authorization", "proxy-authorization"})
#: Headers not stored with a record: the secret ones, and the encoding the body no longer has.
UNSTORED_HEADERS = SECRET_HEADERS | {"content-encoding"}
REFERENCE_ID_MAX = 512


def canonical_json(value: Any) -> bytes:
    """Key-sorted, whitespace-free UTF-8 JSON: equal data gives equal bytes."""
    if isinstance(value, dict) and not value:
        return b"{}"  # most versions carry no fields: no encoder run for them
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def normalise_content_type(value: str | None) -> str:
    """`Text/HTML; Charset="UTF-8"` -> `text/html; charset=utf-8`; other parameters dropped.
    Short values are cached: a crawl sends a handful of distinct ones."""
    if value is not None and len(value) <= 255:
        return _cached_content_type(value)
    return _normalise_content_type(value)


@functools.lru_cache(maxsize=1024)
def _cached_content_type(value: str) -> str:
    return _normalise_content_type(value)


def _normalise_content_type(value: str | None) -> str:
    if not value or not value.strip():
        return ""
    media, *params = (part.strip() for part in value.split(";"))
    charset = next(
        (
            p.split("=", 1)[1].strip().strip('"').lower()
            for p in params
            if p.lower().startswith("charset=")
        ),
        None,
    )
    media = media.lower()
    return f"{media}; charset={charset}" if charset else media


def payload_hash(body: bytes, content_type: str, fields: Mapping[str, Any] | None) -> str:
    """The `sha256:<hex>` of the canonical payload (see module docstring)."""
    digest = hashlib.sha256(_FRAME)
    for part in (content_type.encode(), body, canonical_json(dict(fields or {}))):
        # Length-prefix every part so no two different payloads frame to the same bytes.
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return HASH_PREFIX + digest.hexdigest()


def decode_body(body: bytes, content_encodings: Iterable[str], *, max_bytes: int) -> bytes:
    """Undo Content-Encoding (gzip, deflate, br), refusing output larger than `max_bytes`."""
    codings = [c.strip().lower() for c in content_encodings if c.strip()]
    for coding in reversed(codings):  # the last encoding applied is undone first
        if coding in ("identity", ""):
            continue
        if coding in ("gzip", "x-gzip", "deflate"):
            body = _inflate(body, coding, max_bytes)
        elif coding == "br":
            body = _unbrotli(body, max_bytes)
        else:
            raise InvalidInput(f"unsupported Content-Encoding {coding!r}", field="headers")
    if len(body) > max_bytes:
        raise BodyTooLarge(f"body is larger than {max_bytes} bytes", field="body")
    return body


def _inflate(body: bytes, coding: str, max_bytes: int) -> bytes:
    # wbits 47 accepts gzip and zlib headers; raw deflate (no header) is tried after.
    for wbits in (47,) if coding != "deflate" else (47, -15):
        try:
            return _inflate_members(body, wbits, coding, max_bytes)
        except zlib.error:
            continue
    raise InvalidInput(f"body is not valid {coding} data", field="body")


def _inflate_members(body: bytes, wbits: int, coding: str, max_bytes: int) -> bytes:
    """Every member of a (possibly multi-member) stream, or an error if it stops short."""
    if not body:  # an empty body (a redirect, a HEAD) says Content-Encoding all the same
        return body
    out = b""
    rest = body
    while True:
        inflater = zlib.decompressobj(wbits)
        out += inflater.decompress(rest, max_bytes + 1 - len(out))
        if len(out) > max_bytes or inflater.unconsumed_tail:
            raise BodyTooLarge(f"decoded body is larger than {max_bytes} bytes", field="body")
        if not inflater.eof:
            raise InvalidInput(f"body is truncated {coding} data", field="body")
        rest = inflater.unused_data
        if not rest.startswith(b"\x1f\x8b"):  # trailing bytes that start no member: ignored
            return out


def _unbrotli(body: bytes, max_bytes: int) -> bytes:
    inflater = brotli.Decompressor()
    try:
        out: bytes = inflater.process(body, output_buffer_limit=max_bytes + 1)
    except brotli.error as exc:
        raise InvalidInput("body is not valid br data", field="body") from exc
    if len(out) > max_bytes or not inflater.can_accept_more_data():
        raise BodyTooLarge(f"decoded body is larger than {max_bytes} bytes", field="body")
    if not inflater.is_finished():
        raise InvalidInput("body is truncated br data", field="body")
    return out


def canonical_url(url: str) -> str:
    """Scheme and host lower-cased, default port, fragment dropped, query sorted."""
    canon = canonicalize_url(url.strip(), keep_fragments=False)
    parts = urlsplit(canon)
    host = (parts.hostname or "").lower()
    netloc = (
        host if parts.port in (None, _DEFAULT_PORTS.get(parts.scheme)) else f"{host}:{parts.port}"
    )
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, ""))


def derive_reference_id(source: str, url: str) -> str:
    """`<source>:<canonical url>`; a URL too long for that is replaced by its sha256."""
    candidate = f"{source}:{canonical_url(url)}"
    if len(candidate) <= REFERENCE_ID_MAX:
        return candidate
    return f"{source}:sha256:{hashlib.sha256(canonical_url(url).encode()).hexdigest()}"


def is_unicode(text: str) -> bool:
    """Whether `text` encodes as UTF-8: JSON may carry lone surrogates (`"\\ud800"`); no
    database column or byte string can."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def has_nul(value: object) -> bool:
    """Whether a JSON value holds NUL in a key or string (PostgreSQL's jsonb and text refuse it)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\0" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def is_single_line(text: str) -> bool:
    """No C0 control character but tab (so no CR, LF or NUL) and no lone surrogate: safe to
    store in any text column and to send on as an HTTP field or URL."""
    return _CONTROL.search(text) is None and is_unicode(text)


def validate_reference_id(value: str) -> str:
    if not value or len(value) > REFERENCE_ID_MAX:
        raise InvalidInput(
            f"reference_id must be 1 to {REFERENCE_ID_MAX} characters", field="reference_id"
        )
    if not value.isprintable() or value != value.strip():
        raise InvalidInput(
            "reference_id must be printable, with no surrounding whitespace",
            field="reference_id",
        )
    return value
