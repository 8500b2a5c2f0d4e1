"""Extraction: a scrape record's main text and metadata, from HTML, JSON or plain text.

Pure: no database. Content that cannot be parsed raises `PermanentError` with
`PERMANENT_VALIDATION_ERROR`, since retrying the same bytes cannot help.
"""

from __future__ import annotations

import codecs
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import trafilatura
from charset_normalizer import from_bytes
from lxml import etree  # type: ignore[import-untyped]  # lxml ships no stubs
from lxml import html as lxml_html

from app.domain.documents import Kind
from app.domain.failures import PermanentError
from app.domain.models import ScrapeRecord
from app.domain.payload import canonical_json
from app.domain.states import ReasonCode

#: The options bench/extraction_quality.py measured best: favor_precision lifts macro F1 from
#: 0.958 (defaults) to 0.965; favor_recall, no tables or comments all score lower.
#: `deduplicate` stays off: its cache is process-wide state, so output would depend on history.
TRAFILATURA_OPTIONS: dict[str, Any] = {
    "favor_precision": True,
    "favor_recall": False,
    "include_comments": False,
    "include_tables": True,
    "deduplicate": False,
}
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_JSON_TYPES = ("application/json", "text/json")
_TEXT_TYPES = ("application/xml",)
_TEXT_KEYS = ("text", "body", "content", "articleBody", "description")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)


@dataclass(frozen=True, slots=True)
class Extracted:
    text: str
    title: str | None
    language: str | None
    canonical_url: str | None
    published: str | None  # ISO date
    content_type: str
    kind: Kind


def _invalid(message: str) -> PermanentError:
    return PermanentError(message, reason=ReasonCode.PERMANENT_VALIDATION_ERROR)


def _known(charset: str | None) -> str | None:
    if not charset:
        return None
    try:
        return codecs.lookup(charset.strip().strip("\"'")).name
    except LookupError:
        return None  # an unknown declared charset falls through to sniffing, not a failure


def _decode(body: bytes, declared: str | None, *, html: bool) -> str:
    """Declared charset, then a `<meta charset>` in the head, then UTF-8 (or a guess)."""
    charset = _known(declared)
    if charset is None and html:
        match = _META_CHARSET.search(body[:4096])
        charset = _known(match.group(1).decode("ascii")) if match else None
    if charset is not None:
        return body.decode(charset, errors="replace")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # not UTF-8: charset_normalizer's best guess (on a bounded sample), else lossy UTF-8
    guess = from_bytes(body[:65536]).best()
    encoding = guess.encoding if guess is not None else "utf-8"
    return body.decode(encoding, errors="replace")


def _check_size(text: str, max_decoded_bytes: int) -> str:
    if len(text) > max_decoded_bytes or len(text.encode()) > max_decoded_bytes:
        raise _invalid(f"decoded text exceeds {max_decoded_bytes} bytes")
    return text


def _visible_text(html: str) -> str:
    """The page's visible text; the fallback when trafilatura finds no main content."""
    try:  # lxml directly: trafilatura's load_html refuses fragments such as "<p>hi</p>"
        root = lxml_html.fromstring(html)
    except (etree.LxmlError, ValueError):
        return ""
    for node in root.xpath("//script|//style|//noscript|//template"):
        node.drop_tree()
    return " ".join(root.text_content().split())


# trafilatura parses every page with one module-level lxml parser, and lxml parsers must not be
# used by two threads at once: a worker's handler threads extracting together aborted the
# process inside libxml2. One extraction at a time per process.
_TRAFILATURA = threading.Lock()


def extract_html(html: str, url: str | None, content_type: str) -> Extracted:
    with _TRAFILATURA:
        document = trafilatura.bare_extraction(
            html, url=url, with_metadata=True, **TRAFILATURA_OPTIONS
        )
    meta: Mapping[str, Any] = {}
    if document is not None:
        meta = document if isinstance(document, dict) else document.as_dict()
    text = (meta.get("text") or "").strip() or _visible_text(html)
    if not text:
        raise _invalid("HTML yields no text")
    return Extracted(
        text=text,
        title=meta.get("title") or None,
        language=meta.get("language") or None,
        canonical_url=meta.get("url") or None,
        published=meta.get("date") or None,
        content_type=content_type,
        kind="html",
    )


def _str_field(value: Mapping[str, Any], key: str) -> str | None:
    field = value.get(key)
    return field if isinstance(field, str) else None


def _json_text(value: Any, content_type: str) -> Extracted:
    """Declared text fields (title first) if the object has any, else its canonical JSON."""
    if not isinstance(value, dict):
        return Extracted(json.dumps(value), None, None, None, None, content_type, "json")
    title, url = _str_field(value, "title"), _str_field(value, "url")
    parts = [_str_field(value, key) for key in _TEXT_KEYS]
    if any(part is not None for part in parts):
        text = "\n\n".join(part for part in (title, *parts) if part and part.strip())
    else:
        text = canonical_json(value).decode()
    return Extracted(text, title, None, url, None, content_type, "json")


def extract(record: ScrapeRecord, *, max_decoded_bytes: int) -> Extracted:
    """Extract a record's text by its content type; raises `PermanentError` if it cannot."""
    media, _, params = record.content_type.partition(";")
    media = media.strip().lower()
    declared = params.partition("charset=")[2].split(";")[0] or None
    if not record.body and record.fields is not None:
        return _json_text(dict(record.fields), record.content_type)
    if media in _HTML_TYPES or (media == "" and record.body.lstrip()[:1] == b"<"):
        html = _check_size(_decode(record.body, declared, html=True), max_decoded_bytes)
        return extract_html(html, record.url, record.content_type)
    if media in _JSON_TYPES or media.endswith("+json"):
        raw = _check_size(_decode(record.body, declared, html=False), max_decoded_bytes)
        try:
            return _json_text(json.loads(raw), record.content_type)
        except ValueError as exc:
            raise _invalid(f"invalid JSON: {exc}") from exc
    if media.startswith("text/") or media in _TEXT_TYPES or media == "":
        if b"\x00" in record.body[:4096]:
            raise _invalid("binary content is not text")
        text = _check_size(_decode(record.body, declared, html=False), max_decoded_bytes)
        return Extracted(text, None, None, None, None, record.content_type, "text")
    raise _invalid(f"cannot extract text from content type {media!r}")
