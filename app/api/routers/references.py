"""The history of one reference: its stored versions, its handoffs and its current document."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.api.auth import require
from app.api.deps import DB
from app.api.handoff_models import ReferenceHistoryOut, problem_response
from app.domain import payload
from app.domain.tokens import Scope
from app.services import handoff_queries

router = APIRouter(prefix="/v1/references", tags=["references"])


@router.get(
    "/{reference_id:path}",
    response_model=ReferenceHistoryOut,
    dependencies=[require(Scope.READ)],
    responses={404: problem_response("Nothing was ever stored or handed off for this reference.")},
)
def reference_history(
    reference_id: Annotated[
        str,
        Path(
            max_length=payload.REFERENCE_ID_MAX,
            description="May contain `:` and `/` (`shop:https://example.com/p/1`).",
        ),
    ],
    db: DB,
) -> ReferenceHistoryOut:
    """A reference's versions (newest fetch first), handoffs (newest first) and the document
    of its newest ingested version (its current document)."""
    payload.validate_reference_id(reference_id)  # a 422 naming reference_id
    history = db.run(lambda uow: handoff_queries.reference_history(uow, reference_id), write=False)
    return ReferenceHistoryOut.model_validate(history)
