"""Counts written as text take ASCII digits only: other Unicode digits are refused, not a crash."""

from __future__ import annotations

import pytest

from app.domain.numbers import parse_count


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("42", 42), ("007", 7), (str(2**64), 2**64)])
def test_ascii_digits_are_a_count(text: str, value: int) -> None:
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["", "²", "1²", "٣", "\uff11", "-1", "+1", " 1", "1.0", "0x1"])
def test_anything_else_is_none(text: str) -> None:
    assert parse_count(text) is None
