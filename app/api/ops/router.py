"""The dashboard's pages. Each one is a view over the `/v1` API's own handlers (called as
functions, so the answers, checks and actor names are the API's), rendered by autoescaping
Jinja2 templates. Pages poll a fragment of themselves (`/ops/live/…`) to stay current."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from app.api.deps import DB, AppClock, AppSettings, InlineWorker, WorkerWake
from app.api.handoff_models import HandoffDetail, ListParams, ReplayRequest
from app.api.ops import session
from app.api.ops.pages import HEADERS, render
from app.api.ops.session import CSRF_FIELD, NotAllowed, Session, Viewer
from app.api.ops.views import chart, list_query
from app.api.routers import handoffs
from app.domain.errors import HandoffError, NotFound
from app.domain.numbers import parse_count
from app.domain.queries import MAX_ID
from app.domain.states import HandoffState, ReasonCode
from app.domain.tokens import Scope
from app.services import handoff_queries, throughput

router = APIRouter(prefix="/ops", include_in_schema=False)

_FORM_MAX = 64 * 1024
#: What the handoff page says after an action redirected back to it.
DONE = {
    "retry": "Queued again: a worker will take it shortly.",
    "cancel": "Cancelled.",
}


async def _form(request: Request) -> dict[str, list[str]]:
    """An urlencoded form body (the only kind the dashboard's forms send)."""
    body = await request.body()
    if len(body) > _FORM_MAX:
        return {}
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


Form = Annotated[dict[str, list[str]], Depends(_form)]


def _one(form: dict[str, list[str]], key: str) -> str | None:
    values = form.get(key)
    return values[0] if values else None


# --- overview -----------------------------------------------------------------------------


@router.get("")
def overview(
    request: Request, viewer: Session, db: DB, clock: AppClock, settings: AppSettings
) -> Response:
    context = _overview(db, clock, settings)
    return render(request, viewer, "overview.html", nav="overview", **context)


@router.get("/live/overview")
def overview_live(
    request: Request, viewer: Session, db: DB, clock: AppClock, settings: AppSettings
) -> Response:
    return render(request, viewer, "_overview.html", **_overview(db, clock, settings))


def _overview(db: DB, clock: AppClock, settings: AppSettings) -> dict[str, Any]:
    """One call of the stats handler, plus the ten newest stuck handoffs when there are any."""
    stats = handoffs.stats(db, clock, settings)
    stuck = []
    if stats.stuck:
        params = ListParams(stuck=True, limit=10)
        stuck = handoffs.list_handoffs(params, db, clock, settings).items
    return {
        "stats": stats,
        "stuck": stuck,
        "states": list(HandoffState),
        "reasons": list(ReasonCode),
    }


@router.get("/live/throughput")
def throughput_live(request: Request, viewer: Session, db: DB, clock: AppClock) -> Response:
    now = clock.now()
    windows = db.run(lambda uow: throughput.last_hour(uow, now=now), write=False)
    return render(request, viewer, "_throughput.html", chart=chart(windows), windows=windows)


# --- handoff list -------------------------------------------------------------------------


@router.get("/handoffs")
def handoff_list(
    request: Request, viewer: Session, db: DB, clock: AppClock, settings: AppSettings
) -> Response:
    context = _list(request, db, clock, settings)
    status = 422 if context["error"] else 200
    return render(request, viewer, "list.html", status=status, nav="handoffs", **context)


@router.get("/live/handoffs")
def handoff_list_live(
    request: Request, viewer: Session, db: DB, clock: AppClock, settings: AppSettings
) -> Response:
    context = _list(request, db, clock, settings)
    return render(request, viewer, "_list.html", status=422 if context["error"] else 200, **context)


def _list(request: Request, db: DB, clock: AppClock, settings: AppSettings) -> dict[str, Any]:
    q = list_query(request.query_params)
    page, error = None, q.error
    if q.params is not None:
        try:
            page = handoffs.list_handoffs(q.params, db, clock, settings)
        except HandoffError as exc:  # a cursor this API never gave out
            error = exc.message
    return {
        "q": q,
        "page": page,
        "error": error,
        "states": list(HandoffState),
        "reasons": list(ReasonCode),
    }


# --- one handoff --------------------------------------------------------------------------


def _handoff_id(raw: str) -> int:
    handoff_id = parse_count(raw)
    if handoff_id is None or not 1 <= handoff_id <= MAX_ID:
        raise NotFound(f"no handoff {raw!r}", field="handoff_id")
    return handoff_id


@router.get("/handoffs/{handoff_id}")
def handoff_page(
    request: Request, handoff_id: str, viewer: Session, db: DB, clock: AppClock
) -> Response:
    done = DONE.get(request.query_params.get("done", ""))
    return _handoff_response(request, viewer, db, clock, handoff_id, "handoff.html", notice=done)


@router.get("/live/handoffs/{handoff_id}")
def handoff_live(
    request: Request, handoff_id: str, viewer: Session, db: DB, clock: AppClock
) -> Response:
    return _handoff_response(request, viewer, db, clock, handoff_id, "_handoff.html")


def _handoff_response(
    request: Request,
    viewer: Viewer,
    db: DB,
    clock: AppClock,
    raw_id: str,
    template: str,
    *,
    notice: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    try:
        context = _handoff(db, clock, _handoff_id(raw_id))
    except NotFound as exc:
        return render(request, viewer, "error.html", status=404, message=exc.message)
    return render(
        request,
        viewer,
        template,
        status=status,
        nav="handoffs",
        notice=notice,
        error=error,
        **context,
    )


def _handoff(db: DB, clock: AppClock, handoff_id: int) -> dict[str, Any]:
    """The API's answer for the handoff, and the stored version it carries (from the
    reference's history: the body's size, type and URL, never the body)."""
    detail: HandoffDetail = handoffs.get_handoff(handoff_id, db, clock)
    h = detail.handoff
    history = db.run(
        lambda uow: handoff_queries.reference_history(uow, h.reference_id), write=False
    )
    version = next((v for v in history.versions if v.payload_hash == h.payload_hash), None)
    document = history.current_document
    if document is not None and document.payload_hash != h.payload_hash:
        document = None  # the reference's current document is another version's
    return {"detail": detail, "h": h, "version": version, "document": document}


@router.post("/handoffs/{handoff_id}/retry")
def retry(
    request: Request,
    handoff_id: str,
    viewer: Session,
    form: Form,
    db: DB,
    clock: AppClock,
    inline: InlineWorker,
    wake: WorkerWake,
) -> Response:
    return _act(
        request,
        viewer,
        form,
        db,
        clock,
        handoff_id,
        "retry",
        lambda hid: handoffs.retry(hid, viewer.token, db, clock, inline, wake),
    )


@router.post("/handoffs/{handoff_id}/cancel")
def cancel(
    request: Request, handoff_id: str, viewer: Session, form: Form, db: DB, clock: AppClock
) -> Response:
    return _act(
        request,
        viewer,
        form,
        db,
        clock,
        handoff_id,
        "cancel",
        lambda hid: handoffs.cancel(hid, viewer.token, db, clock),
    )


def _act(
    request: Request,
    viewer: Viewer,
    form: dict[str, list[str]],
    db: DB,
    clock: AppClock,
    raw_id: str,
    name: str,
    action: Any,
) -> Response:
    """Check the CSRF token and the operate scope, run the API's action, and go back to the
    handoff page: with a notice on success, with the refusal (409 …) otherwise."""
    session.check_csrf(request, viewer, _one(form, CSRF_FIELD))
    _need_operate(viewer)
    try:
        handoff_id = _handoff_id(raw_id)
        action(handoff_id)
    except HandoffError as exc:
        return _handoff_response(
            request, viewer, db, clock, raw_id, "handoff.html", error=exc.message, status=exc.status
        )
    return RedirectResponse(f"/ops/handoffs/{handoff_id}?done={name}", 303, headers=HEADERS)


def _need_operate(viewer: Viewer) -> None:
    if not viewer.can_operate:
        raise NotAllowed(f"the token {viewer.name!r} lacks the 'operate' scope this action needs")


# --- replay -------------------------------------------------------------------------------


@router.post("/replay")
def replay(
    request: Request,
    viewer: Session,
    form: Form,
    db: DB,
    clock: AppClock,
    settings: AppSettings,
    inline: InlineWorker,
    wake: WorkerWake,
) -> Response:
    """Replay by the list's filter: a dry run first (the default), then for real."""
    session.check_csrf(request, viewer, _one(form, CSRF_FIELD))
    _need_operate(viewer)
    fields: dict[str, object] = {
        k: v for k in ("reason_code", "source", "reference_id") if (v := _one(form, k))
    }
    fields["state"] = [s for s in form.get("state", []) if s]
    fields["dry_run"] = _one(form, "dry_run") != "false"
    try:
        body = ReplayRequest.model_validate(fields)
    except ValidationError as exc:
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return render(request, viewer, "error.html", status=422, message=message)
    report = handoffs.replay(body, viewer.token, db, clock, settings, inline, wake)
    return render(
        request, viewer, "replay.html", nav="handoffs", report=report, body=body, fields=fields
    )


# --- login --------------------------------------------------------------------------------


def _next(raw: str | None) -> str:
    """Where to go after login: a dashboard path only, never another site."""
    if raw and raw.startswith("/ops") and "//" not in raw and "\\" not in raw:
        return raw
    return "/ops"


@router.get("/login")
def login_page(request: Request, settings: AppSettings) -> Response:
    if not settings.auth_enabled:
        return RedirectResponse("/ops", 303, headers=HEADERS)
    return render(request, None, "login.html", next=_next(request.query_params.get("next")))


@router.post("/login")
def login(request: Request, form: Form) -> Response:
    session.check_origin(request)
    secret = (_one(form, "token") or "").strip()
    target = _next(_one(form, "next"))
    token = session.authenticate(request, secret) if secret else None
    if token is None:
        message = "This token is unknown or revoked."
        return render(request, None, "login.html", status=401, next=target, error=message)
    if not token.allows(Scope.READ):
        message = f"The token {token.name!r} lacks the 'read' scope the dashboard needs."
        return render(request, None, "login.html", status=403, next=target, error=message)
    response = RedirectResponse(target, 303, headers=HEADERS)
    session.log_in(request, response, secret)
    return response


@router.post("/logout")
def logout(request: Request, form: Form) -> Response:
    sent, kept = _one(form, CSRF_FIELD), request.cookies.get(session.CSRF_COOKIE)
    session.check_origin(request)
    if not sent or not kept or sent != kept:
        raise session.CsrfRejected()
    response = RedirectResponse("/ops/login", 303, headers=HEADERS)
    session.log_out(response)
    return response


def login_redirect(request: Request) -> Response:
    """Where LoginRequired leads: the login page (a fragment poll gets a bare 401)."""
    if request.url.path.startswith("/ops/live/"):
        return HTMLResponse("log in again", status_code=401, headers=HEADERS)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = here if request.method == "GET" else "/ops"
    response = RedirectResponse(f"/ops/login?next={quote(target, safe='/')}", 303, headers=HEADERS)
    response.delete_cookie(session.TOKEN_COOKIE, path="/ops")
    return response
