"""Reading documents: full-text search and one document by id."""

from __future__ import annotations

from dataclasses import dataclass

from app.db.uow import UnitOfWork
from app.domain import search as search_syntax
from app.domain.documents import SearchHit, StoredDocument
from app.domain.errors import InvalidInput, NotFound

MAX_LIMIT = 100
MAX_OFFSET = 10_000


@dataclass(frozen=True, slots=True)
class SearchPage:
    query: str
    limit: int
    offset: int
    results: list[SearchHit]

    @property
    def next_offset(self) -> int | None:
        more = len(self.results) == self.limit and self.offset + self.limit <= MAX_OFFSET
        return self.offset + self.limit if more else None


def search(
    uow: UnitOfWork, q: str, *, limit: int = 20, offset: int = 0, include_superseded: bool = False
) -> SearchPage:
    """Documents matching `q` (syntax: `app.domain.search`), best first; current documents
    only unless `include_superseded`. Raises `InvalidInput` naming the bad parameter."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit: between 1 and {MAX_LIMIT}", field="limit")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidInput(f"offset: between 0 and {MAX_OFFSET}", field="offset")
    query = search_syntax.parse(q)
    hits = uow.documents.search(
        query, limit=limit, offset=offset, include_superseded=include_superseded
    )
    return SearchPage(q, limit, offset, hits)


def get(uow: UnitOfWork, document_id: str) -> StoredDocument:
    found = uow.documents.get(document_id)
    if found is None:
        raise NotFound(f"no document {document_id!r}", field="document_id")
    return found
