"""Documents: what ingestion makes of one scraped version, and what search finds."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Kind = Literal["html", "json", "text"]


def document_id(reference_id: str, payload_hash: str) -> str:
    """Deterministic: the same version always yields the same document id."""
    return "doc_" + hashlib.sha256(f"{reference_id}\0{payload_hash}".encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Document:
    """One version's extracted document, as every sink receives it."""

    id: str
    reference_id: str
    payload_hash: str
    source: str
    url: str | None
    fetched_at: datetime
    content_type: str
    kind: Kind
    text: str
    title: str | None
    language: str | None
    canonical_url: str | None
    published: str | None  # ISO date, as the page declares it


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """A document as the document store keeps it: current, or superseded by a newer version."""

    document: Document
    created_at: datetime
    updated_at: datetime
    superseded_at: datetime | None
    superseded_by: str | None

    @property
    def current(self) -> bool:
        return self.superseded_at is None


WriteOutcome = Literal["created", "updated"]


@dataclass(frozen=True, slots=True)
class DocumentWrite:
    """What writing a document did: `created` the first time, `updated` on a rerun."""

    id: str
    outcome: WriteOutcome
    current: bool
    superseded: str | None  # the id of the older document this one replaced, if any


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A search result: the document (its `text` left empty: results carry a snippet and the
    text's length instead) and a score (higher is better; comparable within one result list)."""

    document: Document
    text_length: int
    current: bool
    score: float
    snippet: str
