"""Counts written as text (ids in a path, Content-Length, Retry-After): ASCII digits only.

`str.isdigit` also takes other Unicode digits ('²', '٣'), which `int` then refuses with a
ValueError; a value from a client, a peer or a file must be refused instead."""

from __future__ import annotations


def parse_count(text: str) -> int | None:
    """The non-negative integer `text` spells in ASCII decimal digits; None for anything else."""
    if text.isascii() and text.isdigit():
        return int(text)
    return None
