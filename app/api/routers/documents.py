"""Documents: full-text search over what ingestion produced, and one document by id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.api.auth import require
from app.api.deps import DB
from app.api.document_models import DocumentOut, SearchHitOut, SearchResultsOut
from app.api.handoff_models import problem_response
from app.domain import search as search_syntax
from app.domain.tokens import Scope
from app.services import documents

router = APIRouter(prefix="/v1/documents", tags=["documents"])


@router.get("/search", response_model=SearchResultsOut, dependencies=[require(Scope.READ)])
def search(
    db: DB,
    q: Annotated[
        str,
        Query(
            min_length=1,
            max_length=search_syntax.MAX_QUERY_CHARS,
            description='Words (all must appear), "quoted phrases", -excluded, a or b. '
            "English stemming: `ingesting` finds `ingested`.",
        ),
    ],
    limit: Annotated[int, Query(ge=1, le=documents.MAX_LIMIT)] = 20,
    offset: Annotated[int, Query(ge=0, le=documents.MAX_OFFSET)] = 0,
    include_superseded: Annotated[
        bool, Query(description="Also search documents a newer version replaced.")
    ] = False,
) -> SearchResultsOut:
    """Search the title and text of documents (the first 100,000 characters of each text),
    best match first."""
    page = db.run(
        lambda uow: documents.search(
            uow, q, limit=limit, offset=offset, include_superseded=include_superseded
        ),
        write=False,
    )
    return SearchResultsOut(
        query=page.query,
        limit=page.limit,
        offset=page.offset,
        next_offset=page.next_offset,
        results=[SearchHitOut.from_hit(hit) for hit in page.results],
    )


@router.get(
    "/{document_id}",
    response_model=DocumentOut,
    dependencies=[require(Scope.READ)],
    responses={404: problem_response("No document has this id.")},
)
def get_document(
    db: DB,
    document_id: Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[!-~]+$")],
) -> DocumentOut:
    """One document with its whole text and whether a newer version superseded it."""
    stored = db.run(lambda uow: documents.get(uow, document_id), write=False)
    return DocumentOut.from_stored(stored)
