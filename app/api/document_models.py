"""Response models of the document routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.domain.documents import Document, SearchHit, StoredDocument


class DocumentFields(BaseModel):
    id: str = Field(description="Deterministic: derived from reference_id and payload_hash.")
    reference_id: str
    payload_hash: str
    source: str
    url: str | None
    fetched_at: datetime
    content_type: str
    kind: str = Field(description="html, json or text: how the text was extracted.")
    title: str | None
    language: str | None = Field(description="As detected or declared (ISO 639-1), if known.")
    canonical_url: str | None
    published: str | None = Field(description="The publication date the page declares, if any.")

    @classmethod
    def of(cls, doc: Document) -> dict[str, object]:
        return {name: getattr(doc, name) for name in DocumentFields.model_fields}


class SearchHitOut(DocumentFields):
    current: bool = Field(description="False when a newer version of the reference superseded it.")
    score: float = Field(description="Relevance; higher is better, comparable within one answer.")
    snippet: str = Field(description="Matching passages, matches marked « like this ».")
    text_length: int

    @classmethod
    def from_hit(cls, hit: SearchHit) -> SearchHitOut:
        return cls(
            **DocumentFields.of(hit.document),
            current=hit.current,
            score=hit.score,
            snippet=hit.snippet,
            text_length=hit.text_length,
        )


class SearchResultsOut(BaseModel):
    query: str
    limit: int
    offset: int
    next_offset: int | None = Field(
        description="Pass as `offset` for the next page; null at the end."
    )
    results: list[SearchHitOut]


class DocumentOut(DocumentFields):
    text: str
    created_at: datetime
    updated_at: datetime
    current: bool
    superseded_at: datetime | None
    superseded_by: str | None = Field(description="The id of the document that replaced it.")

    @classmethod
    def from_stored(cls, stored: StoredDocument) -> DocumentOut:
        return cls(
            **DocumentFields.of(stored.document),
            text=stored.document.text,
            created_at=stored.created_at,
            updated_at=stored.updated_at,
            current=stored.current,
            superseded_at=stored.superseded_at,
            superseded_by=stored.superseded_by,
        )
