"""What operators ask of handoffs: a filter, a page cursor, and the read models answers carry.

Pure: the SQL that applies a filter lives in `app.db.handoff_queries`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import datetime

from app.domain.errors import InvalidInput
from app.domain.states import HandoffState, ReasonCode

#: Largest id a cursor may name: ids are BIGINT.
MAX_ID = 2**63 - 1
_CURSOR = re.compile(r"^h:([1-9][0-9]{0,18})$")


@dataclass(frozen=True, slots=True)
class HandoffFilter:
    """Handoffs to list or replay. Every field narrows; an empty filter matches everything.

    `created_after` is inclusive, `created_before` exclusive. `stuck` keeps only stuck handoffs
    (True) or only the others (False); what counts as stuck is `app.db.handoff_queries`'s rule,
    given `now` and the threshold."""

    states: frozenset[HandoffState] = field(default_factory=frozenset)
    reason_code: ReasonCode | None = None
    source: str | None = None
    reference_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    stuck: bool | None = None


def encode_cursor(last_id: int) -> str:
    """An opaque page cursor: the id the next page starts after."""
    return base64.urlsafe_b64encode(f"h:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id a cursor from `encode_cursor` carries; InvalidInput naming `cursor` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        raw = ""
    found = _CURSOR.match(raw)
    if found is None or int(found.group(1)) > MAX_ID:
        raise InvalidInput("cursor is not one this API gave out", field="cursor")
    return int(found.group(1))


@dataclass(frozen=True, slots=True)
class StateSummary:
    """Figures of one state, measured at `now`: when its oldest handoff was created, how many
    finished within the last 5 and 60 minutes."""

    oldest_created_at: datetime | None
    finished_last_5m: int
    finished_last_60m: int


@dataclass(frozen=True, slots=True)
class ReplayCandidate:
    """A failed or cancelled handoff matching a replay filter, with what could refuse it."""

    id: int
    reference_id: str
    state: HandoffState
    active_id: int | None  # the reference's active handoff, if any
    active_state: HandoffState | None
    has_newer_version: bool  # a later-fetched version of the reference was handed off


@dataclass(frozen=True, slots=True)
class Version:
    """One stored scrape of a reference, without its body."""

    payload_hash: str
    source: str
    url: str | None
    fetched_at: datetime
    content_type: str
    size: int
    stored_at: datetime


@dataclass(frozen=True, slots=True)
class DocumentSummary:
    """A document, with the start of its text rather than all of it."""

    id: str
    payload_hash: str
    content_type: str
    text_length: int
    excerpt: str
    created_at: datetime
    updated_at: datetime
