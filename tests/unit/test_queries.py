"""domain.queries: page cursors are opaque, round-trip, and refuse anything they did not make."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.errors import InvalidInput
from app.domain.queries import MAX_ID, decode_cursor, encode_cursor


@given(st.integers(min_value=1, max_value=MAX_ID))
def test_a_cursor_round_trips_its_id(last_id: int) -> None:
    assert decode_cursor(encode_cursor(last_id)) == last_id


@given(st.text(max_size=40))
def test_any_other_text_is_refused_naming_the_cursor_or_decodes_to_a_valid_id(text: str) -> None:
    refused: InvalidInput | None = None
    try:
        decoded = decode_cursor(text)
    except InvalidInput as exc:
        refused = exc
    if refused is not None:
        assert refused.field == "cursor"
    else:
        assert 1 <= decoded <= MAX_ID


@pytest.mark.parametrize(
    "raw",
    ["h:0", "h:-1", "h:01", f"h:{MAX_ID + 1}", "x:5", "h:5 ", "h:\uff15"],  # uff15: a wide 5
)
def test_well_encoded_but_wrong_contents_are_refused(raw: str) -> None:
    cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    with pytest.raises(InvalidInput) as refused:
        decode_cursor(cursor)
    assert refused.value.field == "cursor"
