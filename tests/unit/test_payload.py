"""payload_hash, content decoding and reference ids: what makes two scrapes "the same version"."""

from __future__ import annotations

import base64
import gzip
import hashlib
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import brotli
import pytest

from app.domain import payload
from app.domain.errors import InvalidInput, PayloadHashMismatch
from app.domain.records import PreparedRecord, ScrapeSubmission, prepare
from app.services.scrape_storage import prepare_all

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MAX_BYTES = 1 << 20
HTML = "<html><body><h1>Kettle</h1><p>1.7 l, 29.90 EUR</p></body></html>"


def prepared(**overrides: Any) -> PreparedRecord:
    """A scrape of one product page; `overrides` change any submission field."""
    fields: dict[str, Any] = {
        "source": "shop",
        "reference_id": "shop:kettle-17",
        "body": HTML,
        "content_type": "text/html; charset=utf-8",
        "fetched_at": NOW,
    }
    fields.update(overrides)
    return prepare(ScrapeSubmission(**fields), now=NOW, max_body_bytes=MAX_BYTES)


def hash_of(**overrides: Any) -> str:
    return prepared(**overrides).payload_hash


def encoded(raw: bytes, coding: str) -> bytes:
    if coding == "gzip":
        return gzip.compress(raw)
    if coding == "deflate":  # the zlib-wrapped form RFC 9110 means by "deflate"
        return zlib.compress(raw)
    if coding == "raw-deflate":  # what some servers send for "deflate" instead
        packer = zlib.compressobj(wbits=-15)
        return packer.compress(raw) + packer.flush()
    assert coding == "br"
    out: bytes = brotli.compress(raw)
    return out


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# -- stability: the same content gives the same hash ----------------------------------------------


def test_the_same_content_always_hashes_the_same() -> None:
    first = hash_of()
    assert hash_of() == first
    assert first.startswith("sha256:")
    assert len(first) == len("sha256:") + 64


def test_the_hash_is_sha256_over_length_framed_content_type_body_and_canonical_fields() -> None:
    # Rebuilt by hand: a change to the canonical form would silently re-ingest every version.
    parts = [b"text/plain", b"hello", b'{"a":[1,2],"b":"\xc3\xa9"}']
    framed = b"handoff-payload-v1" + b"".join(len(p).to_bytes(8, "big") + p for p in parts)
    expected = "sha256:" + hashlib.sha256(framed).hexdigest()
    assert payload.payload_hash(b"hello", "text/plain", {"b": "\u00e9", "a": [1, 2]}) == expected


def test_fetch_time_does_not_enter_the_hash() -> None:
    assert hash_of(fetched_at=NOW) == hash_of(fetched_at=NOW + timedelta(days=3))
    assert hash_of(fetched_at=None) == hash_of()


@pytest.mark.parametrize(
    "volatile", ["fetched_at", "scraped_at", "crawled_at", "retrieved_at", "request_id", "crawl_id"]
)
def test_volatile_structured_fields_do_not_enter_the_hash(volatile: str) -> None:
    base = {"title": "Kettle", "price": "29.90"}
    assert hash_of(fields={**base, volatile: "run-1"}) == hash_of(
        fields={**base, volatile: "run-2"}
    )
    assert hash_of(fields={**base, volatile: "run-1"}) == hash_of(fields=base)


@pytest.mark.parametrize(
    "headers",
    [
        {"Date": "Sun, 01 Mar 2026 12:00:00 GMT"},
        {"Set-Cookie": "session=abc; HttpOnly"},
        {"X-Request-Id": "7f1c"},
        {"ETag": '"v2"', "Cache-Control": "max-age=0", "Server": "nginx"},
    ],
)
def test_headers_other_than_content_type_do_not_enter_the_hash(headers: dict[str, str]) -> None:
    assert hash_of(headers=headers) == hash_of()


def test_key_order_of_structured_fields_does_not_matter() -> None:
    assert hash_of(fields={"a": 1, "b": {"y": 2, "x": 1}}) == hash_of(
        fields={"b": {"x": 1, "y": 2}, "a": 1}
    )


def test_content_type_is_compared_after_normalising_case_quotes_and_extra_parameters() -> None:
    plain = hash_of(content_type="text/html; charset=utf-8")
    assert hash_of(content_type='Text/HTML; Charset="UTF-8"') == plain
    assert hash_of(content_type="text/html; charset=utf-8; boundary=x") == plain
    assert hash_of(content_type=None, headers={"Content-Type": "text/html; charset=UTF-8"}) == plain


# -- what does change the hash --------------------------------------------------------------------


def test_a_different_content_type_changes_the_hash() -> None:
    assert hash_of(content_type="text/plain; charset=utf-8") != hash_of()
    assert hash_of(content_type="text/html; charset=latin-1") != hash_of()


def test_a_different_body_changes_the_hash() -> None:
    assert hash_of(body=HTML.replace("29.90", "24.90")) != hash_of()
    assert hash_of(body=HTML + " ") != hash_of()


def test_a_different_non_volatile_field_changes_the_hash() -> None:
    assert hash_of(fields={"price": "29.90"}) != hash_of(fields={"price": "24.90"})
    assert hash_of(fields={"price": "29.90"}) != hash_of()
    assert hash_of(fields={"price": 1}) != hash_of(fields={"price": "1"})


def test_parts_are_framed_so_moving_bytes_between_them_changes_the_hash() -> None:
    assert payload.payload_hash(b"b", "a", None) != payload.payload_hash(b"", "ab", None)
    assert payload.payload_hash(b"{}", "", None) != payload.payload_hash(b"", "", {})


# -- content-encoding -----------------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate", "br"])
def test_an_encoded_body_hashes_like_the_plain_body(coding: str) -> None:
    header = "deflate" if coding == "raw-deflate" else coding
    record = prepared(
        body=None,
        body_base64=b64(encoded(HTML.encode(), coding)),
        headers={"Content-Encoding": header},
    )
    assert record.payload_hash == hash_of()
    assert record.body == HTML.encode()
    assert "content-encoding" not in record.headers


def test_stacked_encodings_are_undone_last_applied_first() -> None:
    twice = encoded(encoded(HTML.encode(), "gzip"), "br")  # gzip first, then br
    record = prepared(body=None, body_base64=b64(twice), headers={"Content-Encoding": "gzip, br"})
    assert record.payload_hash == hash_of()


def test_identity_encoding_changes_nothing() -> None:
    assert hash_of(headers={"Content-Encoding": "identity"}) == hash_of()


def test_an_unsupported_encoding_is_refused_naming_the_headers() -> None:
    with pytest.raises(InvalidInput) as caught:
        prepared(headers={"Content-Encoding": "compress"})
    assert caught.value.field == "headers"
    assert "compress" in caught.value.message


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate", "br"])
def test_a_decompression_bomb_is_refused_naming_the_body(coding: str) -> None:
    bomb = encoded(b"\0" * (MAX_BYTES * 16), coding)
    assert len(bomb) < MAX_BYTES // 16  # small on the wire, 16x the limit once inflated
    with pytest.raises(InvalidInput) as caught:
        payload.decode_body(bomb, [coding.removeprefix("raw-")], max_bytes=MAX_BYTES)
    assert caught.value.field == "body"
    assert str(MAX_BYTES) in caught.value.message


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate", "br"])
def test_a_truncated_stream_is_refused_not_stored_in_part(coding: str) -> None:
    """Found by the hostile-API corpus: a cut gzip stream was stored as its first half."""
    whole = encoded(HTML.encode() * 50, coding)
    with pytest.raises(InvalidInput) as caught:
        payload.decode_body(
            whole[: len(whole) // 2], [coding.removeprefix("raw-")], max_bytes=MAX_BYTES
        )
    assert caught.value.field == "body"
    assert "truncated" in caught.value.message or "not valid" in caught.value.message


def test_every_member_of_a_multi_member_gzip_is_decoded() -> None:
    body = gzip.compress(b"<p>first</p>") + gzip.compress(b"<p>second</p>")
    assert payload.decode_body(body, ["gzip"], max_bytes=MAX_BYTES) == b"<p>first</p><p>second</p>"


def test_members_together_are_held_to_the_limit() -> None:
    member = gzip.compress(b"\0" * (MAX_BYTES // 2 + 1))
    with pytest.raises(InvalidInput) as caught:
        payload.decode_body(member + member, ["gzip"], max_bytes=MAX_BYTES)
    assert str(MAX_BYTES) in caught.value.message


def test_an_empty_body_with_an_encoding_is_empty() -> None:
    """Redirects and HEAD answers in archives declare Content-Encoding over no bytes."""
    assert payload.decode_body(b"", ["gzip"], max_bytes=MAX_BYTES) == b""


def test_a_bomb_in_a_batch_names_the_record_and_field() -> None:
    good = ScrapeSubmission(source="shop", reference_id="a", body="ok")
    bomb = ScrapeSubmission(
        source="shop",
        reference_id="b",
        body_base64=b64(gzip.compress(b"\0" * (MAX_BYTES * 4))),
        headers={"Content-Encoding": "gzip"},
    )
    with pytest.raises(InvalidInput) as caught:
        prepare_all([good, bomb], now=NOW, max_body_bytes=MAX_BYTES)
    assert caught.value.field == "records.1.body"
    assert caught.value.message.startswith("records.1.body: ")


def test_a_body_over_the_limit_without_encoding_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        payload.decode_body(b"x" * 11, [], max_bytes=10)
    assert caught.value.field == "body"


def test_corrupt_compressed_data_is_refused_naming_the_body() -> None:
    for coding in ("gzip", "deflate", "br"):
        with pytest.raises(InvalidInput) as caught:
            payload.decode_body(b"definitely not compressed", [coding], max_bytes=MAX_BYTES)
        assert caught.value.field == "body"


def test_invalid_base64_is_refused_naming_body_base64() -> None:
    with pytest.raises(InvalidInput) as caught:
        prepared(body=None, body_base64="***not base64***")
    assert caught.value.field == "body_base64"


def test_non_finite_numbers_in_fields_are_refused_naming_fields() -> None:
    with pytest.raises(InvalidInput) as caught:
        prepared(fields={"price": float("nan")})
    assert caught.value.field == "fields"


# -- the client's hash is verified, never trusted -------------------------------------------------


def test_a_client_hash_that_matches_is_accepted() -> None:
    assert hash_of(payload_hash=hash_of()) == hash_of()


def test_a_client_hash_that_does_not_match_is_refused() -> None:
    wrong = "sha256:" + "0" * 64
    with pytest.raises(PayloadHashMismatch) as caught:
        prepared(payload_hash=wrong)
    assert caught.value.field == "payload_hash"
    assert wrong in caught.value.message
    assert hash_of() in caught.value.message  # tells the client what we computed
    assert caught.value.status == 422


# -- canonical URLs and derived reference ids -----------------------------------------------------


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("HTTP://Example.COM/a?b=2&a=1#frag", "http://example.com/a?a=1&b=2"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("https://example.com:443", "https://example.com/"),
        ("https://example.com:8443/a", "https://example.com:8443/a"),
        ("  https://example.com/a  ", "https://example.com/a"),
        ("https://example.com/a/../b", "https://example.com/b"),
    ],
)
def test_canonical_url_normalises_equivalent_spellings(given: str, canonical: str) -> None:
    assert payload.canonical_url(given) == canonical
    assert payload.canonical_url(canonical) == canonical  # idempotent


def test_a_derived_reference_id_is_the_same_for_equivalent_urls() -> None:
    one = payload.derive_reference_id("shop", "HTTPS://Shop.example:443/p/17?b=2&a=1#reviews")
    other = payload.derive_reference_id("shop", "https://shop.example/p/17?a=1&b=2")
    assert one == other == "shop:https://shop.example/p/17?a=1&b=2"
    assert payload.derive_reference_id("other", "https://shop.example/p/17?a=1&b=2") != one


def test_a_submission_without_reference_id_gets_the_derived_one() -> None:
    record = prepared(reference_id=None, url="https://Shop.example/p/17#top")
    assert record.reference_id == "shop:https://shop.example/p/17"


def test_a_derived_reference_id_never_exceeds_the_bound() -> None:
    long_url = "https://shop.example/" + "a" * 2000
    derived = payload.derive_reference_id("shop", long_url)
    assert len(derived) <= payload.REFERENCE_ID_MAX
    assert derived == payload.derive_reference_id("shop", long_url)
    assert derived.startswith("shop:sha256:")
    assert derived != payload.derive_reference_id("shop", long_url + "b")
    assert payload.validate_reference_id(derived) == derived


def test_a_url_just_under_the_bound_is_kept_readable() -> None:
    prefix = "shop:https://shop.example/"
    url = "https://shop.example/" + "a" * (payload.REFERENCE_ID_MAX - len(prefix))
    derived = payload.derive_reference_id("shop", url)
    assert len(derived) == payload.REFERENCE_ID_MAX
    assert derived.startswith(prefix)


# -- reference id validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "x" * (payload.REFERENCE_ID_MAX + 1),
        " padded",
        "padded ",
        "\tpadded",
        "line\nbreak",
        "nul\x00byte",
        "bell\x07",
        "zero\u200bwidth",
    ],
)
def test_validate_reference_id_refuses_bad_values_naming_the_field(bad: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        payload.validate_reference_id(bad)
    assert caught.value.field == "reference_id"


@pytest.mark.parametrize(
    "good", ["a", "shop:sku-17", "x" * payload.REFERENCE_ID_MAX, "café/ü 17", "with inner space"]
)
def test_validate_reference_id_accepts_printable_bounded_values(good: str) -> None:
    assert payload.validate_reference_id(good) == good
