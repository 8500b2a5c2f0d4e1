"""Operators watch and repair handoffs here: list and filter, one handoff with its timeline and
why it is where it is, stats, retry, cancel and replay by filter."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from app.api import links
from app.api.auth import require
from app.api.deps import DB, AppClock, AppSettings, InlineWorker, WorkerWake
from app.api.handoff_models import (
    HandoffDetail,
    HandoffOut,
    HandoffPage,
    ListParams,
    ReplayRequest,
    ReplayResponse,
    Stats,
    problem_response,
)
from app.domain.queries import MAX_ID
from app.domain.tokens import ApiToken, Scope
from app.services import handoff_queries, ingestion_handoff
from app.worker.runner import Wakeup, Worker

router = APIRouter(prefix="/v1/handoffs", tags=["handoffs"])
_read = require(Scope.READ)
_operate = require(Scope.OPERATE)
READ = [_read]
OPERATE = [_operate]
#: The token of an operate request (None when auth is off); the same dependency as OPERATE,
#: so it runs once per request.
Operator = Annotated[ApiToken | None, _operate]
HandoffId = Annotated[int, Path(ge=1, le=MAX_ID)]


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: problem_response("No handoff with this id.")}
CONFLICT: dict[int | str, dict[str, Any]] = {
    **NOT_FOUND,
    409: problem_response(
        "The handoff's state (or its reference's) does not allow this; see `detail`."
    ),
}


@router.get("", response_model=HandoffPage, dependencies=READ)
def list_handoffs(
    params: Annotated[ListParams, Query()], db: DB, clock: AppClock, settings: AppSettings
) -> HandoffPage:
    """Handoffs matching the filter, newest first, a page at a time."""
    page = db.run(
        lambda uow: handoff_queries.list_handoffs(
            uow,
            params.to_filter(),
            cursor=params.cursor,
            limit=params.limit,
            now=clock.now(),
            stuck_after=timedelta(seconds=settings.stuck_after_seconds),
        ),
        write=False,
    )
    return HandoffPage(
        items=[HandoffOut.model_validate(h) for h in page.items], next_cursor=page.next_cursor
    )


@router.get("/stats", response_model=Stats, dependencies=READ)
def stats(db: DB, clock: AppClock, settings: AppSettings) -> Stats:
    """Counts by state x reason code (zeros included), the oldest age per state, how many are
    stuck, and how many succeeded or failed in the last 5 and 60 minutes."""
    stuck_after = settings.stuck_after_seconds
    found = db.run(
        lambda uow: handoff_queries.stats(
            uow, now=clock.now(), stuck_after=timedelta(seconds=stuck_after)
        ),
        write=False,
    )
    return Stats.model_validate(
        {
            "counts": found.counts,
            "totals": found.totals,
            "oldest_age_seconds": found.oldest_age_seconds,
            "stuck": found.stuck,
            "stuck_after_seconds": stuck_after,
            "last_5_minutes": {
                "succeeded": found.last_5_minutes.succeeded,
                "failed": found.last_5_minutes.failed,
            },
            "last_60_minutes": {
                "succeeded": found.last_60_minutes.succeeded,
                "failed": found.last_60_minutes.failed,
            },
        }
    )


@router.post("/replay", response_model=ReplayResponse, dependencies=OPERATE)
def replay(
    body: ReplayRequest,
    token: Operator,
    db: DB,
    clock: AppClock,
    settings: AppSettings,
    inline: InlineWorker,
    wake: WorkerWake,
) -> ReplayResponse:
    """Retry the failed or cancelled handoffs matching the filter (at most 1000 per call,
    oldest first). With `dry_run` (the default) nothing changes: the answer says how many
    would be requeued and which would be refused, and why."""
    report = db.run(
        lambda uow: handoff_queries.replay(
            uow,
            body.to_filter(),
            dry_run=body.dry_run,
            now=clock.now(),
            actor=operator(token),
            stuck_after=timedelta(seconds=settings.stuck_after_seconds),
        ),
        write=not body.dry_run,
    )
    if report.requeued and not report.dry_run:
        _kick(inline, wake)
    return ReplayResponse.model_validate(report)


@router.get(
    "/{handoff_id}",
    response_model=HandoffDetail,
    dependencies=READ,
    responses={**NOT_FOUND, **links.FROM_HANDOFF_DETAIL},
)
def get_handoff(handoff_id: HandoffId, db: DB, clock: AppClock) -> HandoffDetail:
    """One handoff, its timeline of events, its attempts, and why it is in its state."""
    found = db.run(
        lambda uow: handoff_queries.detail(uow, handoff_id, now=clock.now()), write=False
    )
    return HandoffDetail.model_validate(
        {
            "handoff": HandoffOut.model_validate(found.handoff),
            "events": found.events,
            "attempts": found.attempts,
            "why": found.why,
        },
        from_attributes=True,
    )


@router.post(
    "/{handoff_id}/retry",
    response_model=HandoffOut,
    dependencies=OPERATE,
    responses={**CONFLICT, **links.FROM_HANDOFF},
)
def retry(
    handoff_id: HandoffId,
    token: Operator,
    db: DB,
    clock: AppClock,
    inline: InlineWorker,
    wake: WorkerWake,
) -> HandoffOut:
    """Queue a failed or cancelled handoff again with fresh budgets. 409 if its reference has
    active work or a newer version was handed off since."""
    moved = db.run(
        lambda uow: ingestion_handoff.retry(uow, handoff_id, now=clock.now(), actor=operator(token))
    )
    _kick(inline, wake)
    return HandoffOut.model_validate(moved)


@router.post(
    "/{handoff_id}/cancel",
    response_model=HandoffOut,
    dependencies=OPERATE,
    responses={**CONFLICT, **links.FROM_HANDOFF},
)
def cancel(handoff_id: HandoffId, token: Operator, db: DB, clock: AppClock) -> HandoffOut:
    """Cancel an unfinished handoff (a running one's worker finds its lease gone). 409 if it
    has already finished."""
    moved = db.run(
        lambda uow: ingestion_handoff.cancel(
            uow, handoff_id, now=clock.now(), actor=operator(token)
        )
    )
    return HandoffOut.model_validate(moved)


def operator(token: ApiToken | None) -> str:
    """The event actor of an operator request: the token's name, or anonymous (auth off)."""
    return "operator:anonymous" if token is None else f"operator:token:{token.name}"


def _kick(inline: Worker | None, wake: Wakeup | None) -> None:
    """Requeued work runs now: inline in this process, or by waking a worker here."""
    if inline is not None:
        inline.drain()
    if wake is not None:
        wake.set()
