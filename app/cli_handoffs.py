"""`handoff handoffs …`: list, show, why, stats, retry, cancel, replay, reap, reconcile.

Every command works on the database through the services the HTTP API uses, and `--json` prints
the API's own response models (`app/api/handoff_models.py`), so scripts read the same shapes from
either; the shapes only the CLI has are defined below. Failures print one line on stderr and
exit 1 (no such handoff, a state that refuses the action, the database); bad options exit 2.
Commands that change something ask first (`--yes` skips the question) and take `--dry-run`,
which writes nothing."""

from __future__ import annotations

import getpass
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

from app import cli_views as views
from app.api.handoff_models import (
    AttemptOut,
    DocumentOut,
    EventOut,
    HandoffDetail,
    HandoffOut,
    HandoffPage,
    ListParams,
    ReplayRequest,
    ReplayResponse,
    Stats,
)
from app.db import migrations
from app.db.uow import Database, UnitOfWork
from app.domain.clock import SystemClock
from app.domain.errors import HandoffError, InvalidInput, NotFound
from app.domain.numbers import parse_count
from app.domain.queries import MAX_ID, HandoffFilter
from app.domain.reconcile import Kind
from app.domain.states import HandoffState, ReasonCode
from app.services import handoff_queries, ingestion, ingestion_handoff, reconcile
from app.settings import Settings

app = typer.Typer(help="Inspect and repair handoffs.", no_args_is_help=True)


T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output (JSON).")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Say what would change; write nothing.")]
StateOpt = Annotated[
    list[HandoffState] | None,
    typer.Option(
        "--state",
        metavar="STATE",
        help="Any of these states (repeatable): " + ", ".join(HandoffState) + ".",
    ),
]
ReasonOpt = Annotated[
    ReasonCode | None,
    typer.Option("--reason", metavar="REASON", help="This reason code (see the operations guide)."),
]
SourceOpt = Annotated[str | None, typer.Option("--source", help="This source.")]
ReferenceOpt = Annotated[str | None, typer.Option("--reference", help="This reference_id.")]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since", help="Created at or after: ISO 8601 (naive is UTC) or an age like 30m, 2h, 1d."
    ),
]
UntilOpt = Annotated[str | None, typer.Option("--until", help="Created before (same forms).")]
StuckOpt = Annotated[
    bool | None, typer.Option("--stuck/--not-stuck", help="Only stuck handoffs, or only others.")
]
HandoffIdArg = Annotated[int, typer.Argument(min=1, max=MAX_ID, help="The handoff's id.")]

#: API field -> the option that sets it, to name the option in an error.
_OPTIONS = {
    "state": "--state",
    "reason_code": "--reason",
    "source": "--source",
    "reference_id": "--reference",
    "created_after": "--since",
    "created_before": "--until",
    "cursor": "--cursor",
    "limit": "--limit",
}
_AGE = re.compile(r"^(\d{1,6})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


# -- plumbing -----------------------------------------------------------------------------------


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        views.stderr().print(f"[red]invalid settings:[/] {exc}")
        raise typer.Exit(2) from exc


def _open() -> tuple[Settings, Database]:
    """Settings and the database, refusing (exit 2) an outdated schema."""
    settings = _settings()
    try:
        migrations.ensure_current(settings.database_url, settings.migrations_dir)
    except HandoffError as exc:
        views.stderr().print(f"[red]{exc.message}[/]")
        raise typer.Exit(2) from exc
    return settings, Database(settings.database_url)


@contextmanager
def _failures() -> Iterator[None]:
    """A HandoffError becomes one line on stderr and an exit code, never a traceback."""
    try:
        yield
    except InvalidInput as exc:
        option = _OPTIONS.get(exc.field or "", exc.field)
        views.stderr().print(
            f"[red]invalid {option or 'input'}:[/] {escape(exc.message)}", soft_wrap=True
        )
        raise typer.Exit(2) from exc
    except HandoffError as exc:
        label = "not found" if isinstance(exc, NotFound) else "refused" if exc.status == 409 else ""
        head = f"[red]{label}:[/] " if label else "[red]error:[/] "
        views.stderr().print(head + escape(exc.message), soft_wrap=True)
        raise typer.Exit(1) from exc


def _actor() -> str:
    """`operator:cli:<login name>`: the actor of the events the CLI writes."""
    try:
        user = re.sub(r"[^A-Za-z0-9._-]", "", getpass.getuser())[:64]
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        user = ""
    return f"operator:cli:{user}" if user else "operator:cli"


def _emit(model: BaseModel) -> None:
    typer.echo(model.model_dump_json(indent=2))


def _confirm(question: str, yes: bool) -> None:
    if not yes:
        typer.confirm(question, abort=True, err=True)


class _Rehearsal(Exception):
    """Raised to roll a dry run's transaction back."""


def _rehearse(db: Database, work: Callable[[UnitOfWork], T]) -> T:
    """Run `work` exactly as a real run would, then roll it back: a dry run that the service's
    own checks answer, refusals included, and that writes nothing."""
    result: list[T] = []
    try:
        with db.transaction() as uow:
            result.append(work(uow))
            raise _Rehearsal
    except _Rehearsal:
        pass
    return result[0]


def _time(value: str | None, now: datetime) -> str | datetime | None:
    """An age (`2h`) becomes now minus it; anything else is left for the model to parse."""
    if value is None:
        return None
    found = _AGE.match(value.strip())
    if found is None:
        return value
    return now - timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})


def _model(cls: type[M], values: dict[str, Any]) -> M:
    """Validate options through the API's request model; an error names the option."""
    try:
        return cls.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        option = _OPTIONS.get(field, field or "option")
        views.stderr().print(f"[red]invalid {option}:[/] {escape(first['msg'])}", soft_wrap=True)
        raise typer.Exit(2) from exc


def _filter_values(
    state: list[HandoffState] | None,
    reason: ReasonCode | None,
    source: str | None,
    reference: str | None,
    since: str | None,
    until: str | None,
    stuck: bool | None,
) -> dict[str, Any]:
    now = SystemClock().now()
    return {
        "state": state or None,
        "reason_code": reason,
        "source": source,
        "reference_id": reference,
        "created_after": _time(since, now),
        "created_before": _time(until, now),
        "stuck": stuck,
    }


def _stuck_after(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.stuck_after_seconds)


# -- read ---------------------------------------------------------------------------------------


@app.command("list")
def list_(
    state: StateOpt = None,
    reason: ReasonOpt = None,
    source: SourceOpt = None,
    reference: ReferenceOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    stuck: StuckOpt = None,
    limit: Annotated[int, typer.Option(help="Handoffs per page (1-500).")] = 50,
    cursor: Annotated[str | None, typer.Option(help="`next_cursor` of the previous page.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Handoffs newest first, filtered like GET /v1/handoffs, a page at a time."""
    values = _filter_values(state, reason, source, reference, since, until, stuck)
    params = _model(ListParams, {**values, "limit": limit, "cursor": cursor})
    settings, db = _open()
    with _failures():
        page = db.run(
            lambda uow: handoff_queries.list_handoffs(
                uow,
                params.to_filter(),
                cursor=params.cursor,
                limit=params.limit,
                now=SystemClock().now(),
                stuck_after=_stuck_after(settings),
            ),
            write=False,
        )
    result = HandoffPage(
        items=[HandoffOut.model_validate(h) for h in page.items], next_cursor=page.next_cursor
    )
    if as_json:
        _emit(result)
        return
    views.show_page(result)


def _detail(db: Database, handoff_id: int) -> HandoffDetail:
    found = db.run(
        lambda uow: handoff_queries.detail(uow, handoff_id, now=SystemClock().now()), write=False
    )
    return HandoffDetail(
        handoff=HandoffOut.model_validate(found.handoff),
        events=[EventOut.model_validate(e) for e in found.events],
        attempts=[AttemptOut.model_validate(a) for a in found.attempts],
        why=found.why,
    )


@app.command()
def show(handoff_id: HandoffIdArg, as_json: JsonOpt = False) -> None:
    """One handoff: its fields, why it is in its state, its events and its attempts."""
    _, db = _open()
    with _failures():
        detail = _detail(db, handoff_id)
    if as_json:
        _emit(detail)
        return
    views.show_detail(detail)


_WHY_MAX = 10  # handoffs of a reference explained, newest first


def _why(uow: UnitOfWork, target: str, by_reference: bool) -> views.WhyAnswer:
    now = SystemClock().now()
    ids: list[int] = []
    reference = target
    as_id = None if by_reference else parse_count(target)
    if as_id is not None and 0 < as_id <= MAX_ID:
        found = uow.handoffs.get(as_id)
        if found is not None:
            ids, reference = [found.id], found.reference_id
    if not ids:
        try:
            history = handoff_queries.reference_history(uow, target)
        except NotFound as exc:
            what = "reference" if as_id is None else "handoff or reference"
            raise NotFound(f"no {what} {target!r}") from exc
        ids = [h.id for h in history.handoffs[:_WHY_MAX]]
    items = []
    for handoff_id in ids:
        d = handoff_queries.detail(uow, handoff_id, now=now)
        h = d.handoff
        items.append(views.WhyItem(**_pick(h, views.WhyItem), why=d.why))
    document = uow.queries.current_document(reference)
    return views.WhyAnswer(
        reference_id=reference,
        current_document=DocumentOut.model_validate(document) if document else None,
        handoffs=items,
    )


def _pick(obj: object, cls: type[BaseModel]) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in cls.model_fields if hasattr(obj, name)}


@app.command()
def why(
    target: Annotated[str, typer.Argument(help="A handoff id, or a reference_id.")],
    reference: Annotated[
        bool, typer.Option("--reference", help="Read TARGET as a reference_id even if numeric.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Why a handoff is in its state, or why a reference is (not) ingested: each of its
    handoffs, newest first, explained in plain language."""
    _, db = _open()
    with _failures():
        answer = db.run(lambda uow: _why(uow, target, reference), write=False)
    if as_json:
        _emit(answer)
        return
    views.show_why(answer)


@app.command()
def stats(as_json: JsonOpt = False) -> None:
    """Counts by state x reason code (zeros included), the oldest age per state, how many are
    stuck, and throughput over the last 5 and 60 minutes: GET /v1/handoffs/stats."""
    settings, db = _open()
    with _failures():
        found = db.run(
            lambda uow: handoff_queries.stats(
                uow, now=SystemClock().now(), stuck_after=_stuck_after(settings)
            ),
            write=False,
        )
    result = Stats.model_validate(
        {
            "counts": found.counts,
            "totals": found.totals,
            "oldest_age_seconds": found.oldest_age_seconds,
            "stuck": found.stuck,
            "stuck_after_seconds": settings.stuck_after_seconds,
            "last_5_minutes": vars_of(found.last_5_minutes),
            "last_60_minutes": vars_of(found.last_60_minutes),
        }
    )
    if as_json:
        _emit(result)
        return
    views.show_stats(result)


def vars_of(t: handoff_queries.Throughput) -> dict[str, int]:
    return {"succeeded": t.succeeded, "failed": t.failed}


# -- act ----------------------------------------------------------------------------------------


def _act(
    verb: Literal["retry", "cancel"], handoff_id: int, *, yes: bool, dry_run: bool, as_json: bool
) -> None:
    _, db = _open()
    action = ingestion_handoff.retry if verb == "retry" else ingestion_handoff.cancel
    actor = _actor()

    def work(uow: UnitOfWork) -> HandoffOut:
        return HandoffOut.model_validate(
            action(uow, handoff_id, now=SystemClock().now(), actor=actor)
        )

    with _failures():
        if dry_run:
            moved = _rehearse(db, work)
        else:
            h = _rehearse(db, lambda uow: HandoffOut.model_validate(_current(uow, handoff_id)))
            _rehearse(db, work)  # a refusal ends here, before the question
            _confirm(
                f"{verb.capitalize()} handoff {h.id} ({h.state.value} / {h.reason_code.value}) "
                f"of {h.reference_id!r}?",
                yes,
            )
            moved = db.run(work)
    if as_json:
        _emit(moved)
        return
    done = {"retry": "requeued", "cancel": "cancelled"}[verb]
    head = f"dry run, nothing changed: would be {done}" if dry_run else done
    views.stdout().print(
        f"{head}: handoff {moved.id} is {views.state_of(moved)} / {moved.reason_code.value}"
    )


def _current(uow: UnitOfWork, handoff_id: int) -> object:
    found = uow.handoffs.get(handoff_id)
    if found is None:
        raise NotFound(f"no handoff {handoff_id}")
    return found


@app.command()
def retry(
    handoff_id: HandoffIdArg,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Queue a failed or cancelled handoff again with fresh budgets (refused if its reference
    has active work or a newer version was handed off since)."""
    _act("retry", handoff_id, yes=yes, dry_run=dry_run, as_json=as_json)


@app.command()
def cancel(
    handoff_id: HandoffIdArg,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Cancel an unfinished handoff (refused once it has finished)."""
    _act("cancel", handoff_id, yes=yes, dry_run=dry_run, as_json=as_json)


@app.command()
def replay(
    state: StateOpt = None,
    reason: ReasonOpt = None,
    source: SourceOpt = None,
    reference: ReferenceOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    stuck: StuckOpt = None,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Retry the failed or cancelled handoffs a filter matches, oldest first, at most 1000 per
    run (POST /v1/handoffs/replay). Shows what it would do and asks before doing it."""
    values = _filter_values(state, reason, source, reference, since, until, stuck)
    request = _model(ReplayRequest, values)
    settings, db = _open()
    actor = _actor()

    def replaying(dry: bool) -> Callable[[UnitOfWork], handoff_queries.ReplayReport]:
        return lambda uow: handoff_queries.replay(
            uow,
            request.to_filter(),
            dry_run=dry,
            now=SystemClock().now(),
            actor=actor,
            stuck_after=_stuck_after(settings),
        )

    with _failures():
        with views.stderr().status("matching handoffs…"):
            preview = db.run(replaying(True), write=False)
        report = preview
        if not dry_run and preview.requeued:
            if not yes:
                views.show_replay(ReplayResponse.model_validate(preview))
            _confirm(f"Requeue {preview.requeued} handoff(s)?", yes)
            with views.stderr().status(f"requeueing {preview.requeued} handoff(s)…"):
                report = db.run(replaying(False))
    result = ReplayResponse.model_validate(report)
    if as_json:
        _emit(result)
        return
    views.show_replay(result)


_REAP_LIST = 10_000  # expired leases listed; the rescuer itself returns all of them


@app.command()
def reap(yes: YesOpt = False, dry_run: DryRunOpt = False, as_json: JsonOpt = False) -> None:
    """Run the rescuer once: return every expired lease to retry_wait (lease_expired), or fail
    it as poison_suspected once it has lost its lease too often, as workers do every
    rescue_seconds."""
    settings, db = _open()
    policy = settings.retry_policy()
    with _failures():
        now = SystemClock().now()
        expired = db.run(
            lambda uow: uow.queries.page(
                HandoffFilter(states=frozenset({HandoffState.RUNNING}), stuck=True),
                before_id=None,
                limit=_REAP_LIST,
                now=now,
                cutoff=now,
            ),
            write=False,
        )
        owners = {h.id: h for h in expired}
        items = [
            views.ReapItem(
                id=h.id,
                reference_id=h.reference_id,
                lease_owner=h.lease_owner,
                lease_expires_at=h.lease_expires_at,
                state=HandoffState.FAILED
                if h.crashes + 1 >= policy.crash_max
                else HandoffState.RETRY_WAIT,
                reason_code=ReasonCode.POISON_SUSPECTED
                if h.crashes + 1 >= policy.crash_max
                else ReasonCode.LEASE_EXPIRED,
            )
            for h in sorted(expired, key=lambda h: h.id)
        ]
        if not dry_run and items:
            _confirm(f"Return {len(items)} expired lease(s)?", yes)
            moved = db.run(
                lambda uow: ingestion.rescue(uow, now=SystemClock().now(), policy=policy)
            )
            items = [
                views.ReapItem(
                    id=h.id,
                    reference_id=h.reference_id,
                    lease_owner=owners[h.id].lease_owner if h.id in owners else None,
                    lease_expires_at=owners[h.id].lease_expires_at if h.id in owners else None,
                    state=h.state,
                    reason_code=h.reason_code,
                )
                for h in moved
            ]
    answer = views.ReapAnswer(dry_run=dry_run, returned=len(items), items=items)
    if as_json:
        _emit(answer)
        return
    views.show_reap(answer)


@app.command("reconcile")
def reconcile_(
    repair: Annotated[bool, typer.Option("--repair", help="Repair what is found.")] = False,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    show: Annotated[int, typer.Option(min=0, help="Rows shown per kind in the table.")] = 20,
) -> None:
    """Find scrape records without a handoff, unfinished handoffs whose payload is gone or no
    longer matches its hash, and handoffs whose state disagrees with their last attempt. With
    --repair, repair each (one transaction and one event per repair); a second run finds
    nothing."""
    _, db = _open()
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}{task.fields[suffix]}"),
    )
    with _failures(), Progress(*columns, console=views.stderr(), transient=as_json) as bars:
        scanning = views.Bars(bars)
        findings = reconcile.find(db, scanning)
        scanning.close()
        act = repair and not dry_run and bool(findings)
        if act:
            bars.stop()
            _confirm(
                f"Repair {len(findings)} inconsistenc{'y' if len(findings) == 1 else 'ies'}?", yes
            )
            bars.start()
            repairing = views.Bars(bars)
            findings = reconcile.repair(
                db, findings, now=SystemClock().now, actor=_actor(), progress=repairing
            )
            repairing.close()
    report = reconcile.Report(act, findings)
    answer = views.ReconcileAnswer(
        repair=act,
        found=len(findings),
        repaired=report.tally("repaired"),
        skipped=report.tally("skipped"),
        counts={Kind(k): n for k, n in report.counts.items()},
        findings=[
            views.FindingOut(
                kind=f.suspect.kind,
                reference_id=f.suspect.reference_id,
                payload_hash=f.suspect.payload_hash,
                handoff_id=f.suspect.handoff_id,
                record_id=f.suspect.record_id,
                attempt_id=f.suspect.attempt_id,
                state=f.suspect.state,
                detail=f.detail,
                repair=f.repair,
                outcome=f.outcome,
                result=f.result,
            )
            for f in findings
        ],
    )
    if as_json:
        _emit(answer)
        return
    views.show_reconcile(answer, show, dry_run=dry_run and repair)
