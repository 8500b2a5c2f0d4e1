"""ScrapeSubmission: what a client may send, and the message it gets when it may not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from app.domain.errors import InvalidInput
from app.domain.records import ScrapeSubmission, prepare

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
VALID: dict[str, Any] = {"source": "shop", "reference_id": "shop:sku-17", "body": "<p>hi</p>"}


def submit(**changes: Any) -> ScrapeSubmission:
    """VALID with `changes`; a change to None removes the key."""
    data = {**VALID, **changes}
    return ScrapeSubmission(**{k: v for k, v in data.items() if v is not None})


def error_of(**changes: Any) -> tuple[str, str]:
    """The (location, message) of the single validation error `changes` cause."""
    with pytest.raises(ValidationError) as caught:
        submit(**changes)
    (error,) = caught.value.errors()
    return ".".join(str(p) for p in error["loc"]), str(error["msg"])


def test_a_minimal_submission_is_accepted() -> None:
    sub = submit()
    assert sub.reference_id == "shop:sku-17"
    assert sub.body == "<p>hi</p>"


def test_fields_alone_are_a_payload() -> None:
    assert submit(body=None, fields={"title": "Kettle"}).fields == {"title": "Kettle"}


def test_a_url_alone_identifies_the_reference() -> None:
    assert submit(reference_id=None, url="https://shop.example/p/17").url is not None


def test_neither_reference_id_nor_url_is_refused() -> None:
    _, message = error_of(reference_id=None)
    assert "give reference_id, or url" in message


def test_body_and_body_base64_together_are_refused() -> None:
    _, message = error_of(body_base64="aGk=")
    assert "not both" in message


def test_a_submission_without_any_payload_is_refused() -> None:
    _, message = error_of(body=None)
    assert "needs a body, body_base64 or fields" in message


@pytest.mark.parametrize("source", ["", " shop", "shop/eu", "-shop", "s" * 101, "shöp"])
def test_a_bad_source_is_refused(source: str) -> None:
    where, _ = error_of(source=source)
    assert where == "source"


@pytest.mark.parametrize("source", ["shop", "shop.eu", "Shop_2-x", "s" * 100])
def test_sources_of_the_documented_pattern_are_accepted(source: str) -> None:
    assert submit(source=source).source == source


@pytest.mark.parametrize("url", ["ftp://shop.example/x", "shop.example/p/17", "https://", "/p/17"])
def test_a_url_that_is_not_absolute_http_is_refused(url: str) -> None:
    where, message = error_of(url=url)
    assert where == "url"
    assert "absolute http(s) URL" in message


def test_an_overlong_url_is_refused() -> None:
    where, _ = error_of(url="https://shop.example/" + "a" * 8192)
    assert where == "url"


@pytest.mark.parametrize("status", [99, 600, -1])
def test_an_http_status_out_of_range_is_refused(status: int) -> None:
    where, _ = error_of(status=status)
    assert where == "status"


@pytest.mark.parametrize(
    "reference_id", [" shop:sku", "shop:sku\n", "shop:\x00", "x" * 513, "\u2028sep"]
)
def test_a_bad_reference_id_is_refused_with_the_rule_it_broke(reference_id: str) -> None:
    where, message = error_of(reference_id=reference_id)
    assert where == "reference_id"
    assert "reference_id" in message or "512" in message


@pytest.mark.parametrize(
    "payload_hash", ["sha256:" + "A" * 64, "sha256:" + "0" * 63, "md5:" + "0" * 32, "0" * 64]
)
def test_a_malformed_payload_hash_is_refused(payload_hash: str) -> None:
    where, _ = error_of(payload_hash=payload_hash)
    assert where == "payload_hash"


def test_unknown_keys_are_refused() -> None:
    where, _ = error_of(colour="blue")
    assert where == "colour"


def test_a_content_type_over_255_characters_is_refused() -> None:
    where, _ = error_of(content_type="text/" + "x" * 251)
    assert where == "content_type"


def test_a_naive_fetch_time_is_read_as_utc() -> None:
    sub = submit(fetched_at=datetime(2026, 3, 1, 9, 30))  # naive on purpose
    assert sub.fetched_at == datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def test_a_fetch_time_in_another_zone_is_stored_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    record = prepare(
        submit(fetched_at=datetime(2026, 3, 1, 13, 0, tzinfo=paris)), now=NOW, max_body_bytes=1024
    )
    assert record.fetched_at == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert record.fetched_at.utcoffset() == timedelta(0)


def test_a_missing_fetch_time_is_the_time_of_receipt() -> None:
    assert prepare(submit(), now=NOW, max_body_bytes=1024).fetched_at == NOW


def test_a_submission_is_immutable() -> None:
    sub = submit()
    with pytest.raises(ValidationError):
        sub.source = "other"  # type: ignore[misc]  # frozen model: the assignment must fail


def test_secret_headers_are_never_stored() -> None:
    headers = {
        "Set-Cookie": "s=1",
        "Cookie": "s=1",
        "Authorization": "Bearer x",
        "Proxy-Authorization": "Basic x",
        "ETag": '"v1"',
    }
    record = prepare(submit(headers=headers), now=NOW, max_body_bytes=1024)
    assert dict(record.headers) == {"etag": '"v1"'}


def test_a_body_over_the_limit_is_refused_naming_the_body() -> None:
    with pytest.raises(InvalidInput) as caught:
        prepare(submit(body="x" * 1025), now=NOW, max_body_bytes=1024)
    assert caught.value.field == "body"


def test_types_are_guessed_when_not_given() -> None:
    text = prepare(submit(), now=NOW, max_body_bytes=1024)
    binary = prepare(submit(body=None, body_base64="AAE="), now=NOW, max_body_bytes=1024)
    structured = prepare(submit(body=None, fields={"a": 1}), now=NOW, max_body_bytes=1024)
    assert text.content_type == "text/plain; charset=utf-8"
    assert binary.content_type == "application/octet-stream"
    assert structured.content_type == "application/json"
