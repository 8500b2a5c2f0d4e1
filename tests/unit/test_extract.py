"""Extraction from real article pages and small synthetic JSON, text and binary records."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.domain.failures import PermanentError
from app.domain.models import ScrapeRecord
from app.domain.states import ReasonCode
from app.ingest.extract import extract

BENCHMARK = (
    Path(__file__).resolve().parents[2].parent / "shared" / "data" / "article-extraction-benchmark"
)
PAGES = [
    "042bb7b5fedab6eac7db576522b89b93904c237d344bcbe14a6a5ab7f7335856",
    "04a6711caa7c687592777718866e781e976e0fe684faebe8b3cedcef8cd0ea34",
    "05844573ca7e1fba714d715bb11ca08c26e25328999c74a1cb3bc8a0e4399f0f",
]
LIMIT = 1024 * 1024
NOW = datetime(2026, 3, 1, tzinfo=UTC)


def record(body: bytes, content_type: str, **changes: object) -> ScrapeRecord:
    base = ScrapeRecord(
        id=1, reference_id="t:1", payload_hash="sha256:" + "0" * 64, source="t",
        url="https://example.com/a", fetched_at=NOW, http_status=200, content_type=content_type,
        headers={}, body=body, fields=None, created_at=NOW,
    )  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]  # test-only field overrides


def page(page_id: str) -> tuple[bytes, str]:
    truth = json.loads((BENCHMARK / "ground-truth.json").read_text())[page_id]["articleBody"]
    return gzip.decompress((BENCHMARK / "html" / f"{page_id}.html.gz").read_bytes()), truth


def assert_permanent_validation(rec: ScrapeRecord, limit: int = LIMIT) -> None:
    with pytest.raises(PermanentError) as caught:
        extract(rec, max_decoded_bytes=limit)
    assert caught.value.reason is ReasonCode.PERMANENT_VALIDATION_ERROR


@pytest.mark.parametrize("page_id", PAGES)
def test_a_real_article_yields_its_body_and_metadata(page_id: str) -> None:
    body, truth = page(page_id)
    result = extract(record(body, "text/html; charset=utf-8"), max_decoded_bytes=LIMIT)
    assert result.kind == "html"
    assert result.title
    words = truth.split()
    assert " ".join(words[:6]) in " ".join(result.text.split())  # the article's opening
    assert len(result.text) < 2 * len(truth)  # the main text, not the whole page


def test_extraction_is_deterministic() -> None:
    body, _ = page(PAGES[0])
    rec = record(body, "text/html")
    assert extract(rec, max_decoded_bytes=LIMIT) == extract(rec, max_decoded_bytes=LIMIT)


def test_html_metadata_is_read_from_the_page() -> None:
    html = (
        b"<html lang='en'><head><title>A title</title>"
        b"<link rel='canonical' href='https://example.com/canonical'>"
        b"<meta property='article:published_time' content='2024-05-06'></head><body><article>"
        + b"<p>" + b"A long enough paragraph of article text for the extractor. " * 8 + b"</p>"
        + b"</article></body></html>"
    )  # fmt: skip
    result = extract(record(html, "text/html"), max_decoded_bytes=LIMIT)
    assert (result.title, result.canonical_url) == ("A title", "https://example.com/canonical")
    assert result.published == "2024-05-06"
    assert result.text.startswith("A long enough paragraph")


def test_tiny_html_falls_back_to_its_visible_text() -> None:
    body = b"<html><head><script>var x = 1;</script></head><p>hello e2e</p></html>"
    assert extract(record(body, "text/html"), max_decoded_bytes=LIMIT).text == "hello e2e"


def test_a_meta_charset_is_honoured_when_the_header_declares_none() -> None:
    body = "<html><head><meta charset='iso-8859-1'></head><p>café crème</p></html>"
    result = extract(record(body.encode("latin-1"), "text/html"), max_decoded_bytes=LIMIT)
    assert result.text == "café crème"


def test_the_declared_charset_wins() -> None:
    body = "naïve text".encode("cp1252")
    result = extract(record(body, "text/plain; charset=windows-1252"), max_decoded_bytes=LIMIT)
    assert (result.text, result.kind) == ("naïve text", "text")


def test_json_declared_fields_become_the_text() -> None:
    body = json.dumps({"title": "T", "body": "The body.", "price": 3}).encode()
    result = extract(record(body, "application/json"), max_decoded_bytes=LIMIT)
    assert (result.kind, result.title, result.text) == ("json", "T", "T\n\nThe body.")


def test_json_without_text_fields_is_its_canonical_text() -> None:
    body = b'{"price": 3, "name": "x"}'
    result = extract(record(body, "application/json"), max_decoded_bytes=LIMIT)
    assert result.text == '{"name":"x","price":3}'


def test_structured_fields_without_a_body_are_extracted_as_json() -> None:
    rec = record(b"", "application/json", fields={"description": "Described."})
    assert extract(rec, max_decoded_bytes=LIMIT).text == "Described."


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
        (b"{not json", "application/json"),
        (b"<html><body><script>x()</script></body></html>", "text/html"),
        (b"\x00\x01\x02binary", "text/plain"),
    ],
    ids=["binary-type", "invalid-json", "html-without-text", "nul-bytes"],
)
def test_unparseable_content_is_a_permanent_validation_error(
    body: bytes, content_type: str
) -> None:
    assert_permanent_validation(record(body, content_type))


def test_decoded_text_over_the_limit_is_refused() -> None:
    assert_permanent_validation(record(b"x" * 101, "text/plain"), limit=100)
