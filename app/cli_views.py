"""How `handoff handoffs …` shows its answers to people (Rich tables on stdout, progress on
stderr), and the `--json` shapes only the CLI has. The commands are in `app.cli_handoffs`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from app.api.handoff_models import (
    DocumentOut,
    HandoffDetail,
    HandoffOut,
    HandoffPage,
    ReplayResponse,
    Stats,
)
from app.domain.reconcile import REPAIRS, Kind
from app.domain.states import HandoffState, ReasonCode
from app.domain.why import when


def stdout() -> Console:
    return Console()  # made per use: it reads the terminal width (COLUMNS) when made


def stderr() -> Console:
    return Console(stderr=True)


def short(moment: datetime | None) -> str:
    return when(moment) if moment is not None else ""


def state_of(h: HandoffOut | HandoffState) -> str:
    state = h.state if isinstance(h, HandoffOut) else h
    colour = {
        HandoffState.SUCCEEDED: "green",
        HandoffState.FAILED: "red",
        HandoffState.RUNNING: "cyan",
        HandoffState.RETRY_WAIT: "yellow",
        HandoffState.CANCELLED: "magenta",
    }.get(state, "")
    return f"[{colour}]{state.value}[/]" if colour else state.value


class WhyItem(BaseModel):
    id: int
    payload_hash: str
    fetched_at: datetime
    state: HandoffState
    reason_code: ReasonCode
    why: str


class WhyAnswer(BaseModel):
    """`handoff handoffs why --json`: the reference's handoffs, newest first, each with why it
    is in its state (only the one asked for when asked by id), and the current document."""

    reference_id: str
    current_document: DocumentOut | None
    handoffs: list[WhyItem]


def age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def show_replay(r: ReplayResponse) -> None:
    table = Table(title="replay" + (" (dry run: nothing changed)" if r.dry_run else ""))
    for column in ("id", "reference_id", "state", "outcome", "reason"):
        table.add_column(column, overflow="fold")
    for i in r.items:
        table.add_row(
            str(i.id), escape(i.reference_id), i.state.value, i.outcome, escape(i.reason or "")
        )
    stdout().print(table)
    verb = "would be requeued" if r.dry_run else "requeued"
    stdout().print(f"matched {r.matched}: {r.requeued} {verb}, {r.refused} refused")
    if r.truncated:
        stdout().print(f"only the oldest {r.limit} were considered: run again for the rest")


class ReapItem(BaseModel):
    id: int
    reference_id: str
    lease_owner: str | None = None  # the worker whose lease expired
    lease_expires_at: datetime | None = None
    state: HandoffState  # where the rescuer moves it (in a dry run: would move it)
    reason_code: ReasonCode


class ReapAnswer(BaseModel):
    """`handoff handoffs reap --json`: the expired leases returned (or, in a dry run, that
    would be)."""

    dry_run: bool
    returned: int
    items: list[ReapItem]


class FindingOut(BaseModel):
    kind: Kind
    reference_id: str
    payload_hash: str
    handoff_id: int | None
    record_id: int | None
    attempt_id: int | None
    state: HandoffState | None = None  # the handoff's state when found
    detail: str  # what is wrong
    repair: str  # what --repair does
    outcome: Literal["found", "repaired", "skipped"]
    result: str | None  # what the repair did, or why it skipped the row


class ReconcileAnswer(BaseModel):
    """`handoff handoffs reconcile --json`."""

    repair: bool  # whether repairs were made (false for a report or a dry run)
    found: int
    repaired: int
    skipped: int
    counts: dict[Kind, int]  # findings per kind, every kind present
    findings: list[FindingOut]


class Bars:
    """reconcile.Progress drawn as Rich bars on stderr."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None

    def phase(self, label: str, total: int | None) -> None:
        self.close()
        suffix = " found" if total is None else f" of {total}"
        self.task = self.progress.add_task(label, total=total, suffix=suffix)

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task, n)

    def close(self) -> None:
        if self.task is not None:
            done = next(t.completed for t in self.progress.tasks if t.id == self.task)
            self.progress.update(self.task, total=done, completed=done)
            self.task = None


def show_reconcile(a: ReconcileAnswer, show: int, *, dry_run: bool) -> None:
    counts = Table(title="reconcile" + (" (dry run: nothing changed)" if dry_run else ""))
    counts.add_column("kind", overflow="fold")
    counts.add_column("found", justify="right", overflow="fold")
    counts.add_column("repair", overflow="fold")
    for kind in Kind:
        counts.add_row(kind.value, str(a.counts[kind]), REPAIRS[kind])
    stdout().print(counts)
    if a.findings:
        rows = Table(title="findings")
        for column in ("kind", "handoff", "record", "detail", "outcome"):
            rows.add_column(column, overflow="fold")
        shown: dict[Kind, int] = {}
        for f in a.findings:
            shown[f.kind] = shown.get(f.kind, 0) + 1
            if shown[f.kind] > show:
                continue
            outcome = f.outcome if f.result is None else f"{f.outcome}: {f.result}"
            rows.add_row(
                f.kind.value,
                "" if f.handoff_id is None else str(f.handoff_id),
                "" if f.record_id is None else str(f.record_id),
                escape(f.detail),
                escape(outcome),
            )
        stdout().print(rows)
        hidden = sum(max(0, n - show) for n in shown.values())
        if hidden:
            stdout().print(f"… {hidden} more (--show N, or --json for all)")
    if a.repair:
        stdout().print(
            f"found {a.found}: repaired {a.repaired}, skipped {a.skipped} (changed meanwhile)"
        )
    elif a.found:
        stdout().print(f"found {a.found}; run with --repair to repair them")
    else:
        stdout().print("nothing to reconcile")


def show_page(result: HandoffPage) -> None:
    table = Table(title=f"handoffs ({len(result.items)} shown, newest first)")
    for column in ("id", "state", "reason_code", "reference_id", "attempts", "created", "updated"):
        table.add_column(
            column, justify="right" if column in ("id", "attempts") else "left", overflow="fold"
        )
    for h in result.items:
        table.add_row(
            str(h.id),
            state_of(h),
            h.reason_code.value,
            escape(h.reference_id),
            str(h.attempts),
            short(h.created_at),
            short(h.updated_at),
        )
    stdout().print(table)
    if result.next_cursor:
        stdout().print(f"more: add --cursor {result.next_cursor}")


def show_detail(detail: HandoffDetail) -> None:
    h = detail.handoff
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", overflow="fold")
    facts.add_column(overflow="fold")
    for name, value in (
        ("state", f"{state_of(h)} / {h.reason_code.value}"),
        ("reference_id", escape(h.reference_id)),
        ("payload_hash", h.payload_hash),
        ("source", escape(h.source)),
        ("fetched_at", short(h.fetched_at)),
        ("enqueue", h.enqueue_outcome.value),
        ("attempts", f"{h.attempts} (failures {h.failures}, lost leases {h.crashes})"),
        ("run_after", short(h.run_after)),
        ("lease", f"{h.lease_owner} until {short(h.lease_expires_at)}" if h.lease_owner else ""),
        ("last_error", escape(h.last_error or "")),
        ("created / finished", f"{short(h.created_at)} / {short(h.finished_at)}"),
    ):
        if value:
            facts.add_row(name, value)
    stdout().print(f"[b]handoff {h.id}[/]")
    stdout().print(facts)
    stdout().print(f"\n[b]why:[/] {escape(detail.why)}\n")
    events = Table(title="events (oldest first)")
    for column in ("at", "actor", "from", "to", "reason", "lease", "detail"):
        events.add_column(column, overflow="fold")
    for e in detail.events:
        events.add_row(
            short(e.at),
            escape(e.actor),
            e.from_state.value if e.from_state else "",
            e.to_state.value,
            e.reason_code.value,
            "" if e.lease_token is None else str(e.lease_token),
            escape(e.detail or ""),
        )
    stdout().print(events)
    attempts = Table(title="attempts")
    for column in ("#", "worker", "claimed", "finished", "outcome", "class", "reason", "error"):
        attempts.add_column(column, overflow="fold")
    for a in detail.attempts:
        attempts.add_row(
            str(a.attempt),
            a.worker_id,
            short(a.claimed_at),
            short(a.finished_at),
            a.outcome or "(open)",
            a.retry_class.value if a.retry_class else "",
            a.reason_code.value if a.reason_code else "",
            escape((a.error or "")[:120]),
        )
    stdout().print(attempts)


def show_why(answer: WhyAnswer) -> None:
    doc = answer.current_document
    stdout().print(f"[b]reference[/] {escape(answer.reference_id)}")
    stdout().print(
        f"current document: version {doc.payload_hash[:19]}…, updated {short(doc.updated_at)}"
        if doc
        else "current document: none yet"
    )
    for item in answer.handoffs:
        stdout().print(
            f"\n[b]handoff {item.id}[/] ({item.payload_hash[:19]}…, fetched "
            f"{short(item.fetched_at)}): {state_of(item.state)} / {item.reason_code.value}"
        )
        stdout().print(f"  {escape(item.why)}", soft_wrap=True)


def show_stats(result: Stats) -> None:
    table = Table(title="handoffs by state x reason code")
    table.add_column("reason_code", overflow="fold")
    for state in HandoffState:
        table.add_column(state.value, justify="right", overflow="fold")
    for reason in ReasonCode:
        table.add_row(reason.value, *(str(result.counts[s][reason]) for s in HandoffState))
    table.add_row("[b]total[/]", *(f"[b]{result.totals[s]}[/]" for s in HandoffState))
    ages = [
        "" if a is None else age(a) for a in (result.oldest_age_seconds[s] for s in HandoffState)
    ]
    table.add_row("oldest age", *ages)
    stdout().print(table)
    stdout().print(
        f"stuck: {result.stuck} (after {result.stuck_after_seconds:g} s)   finished in the last "
        f"5 min: {result.last_5_minutes.succeeded} succeeded, {result.last_5_minutes.failed} "
        f"failed; 60 min: {result.last_60_minutes.succeeded} succeeded, "
        f"{result.last_60_minutes.failed} failed"
    )


def show_reap(answer: ReapAnswer) -> None:
    items, dry_run = answer.items, answer.dry_run
    if not items:
        stdout().print("no expired lease")
        return
    table = Table(title="expired leases" + (" (dry run: nothing changed)" if dry_run else ""))
    for column in ("id", "reference_id", "worker", "expired", "now"):
        table.add_column(column, overflow="fold")
    for i in items:
        table.add_row(
            str(i.id),
            escape(i.reference_id),
            i.lease_owner or "",
            short(i.lease_expires_at),
            f"{i.state.value} / {i.reason_code.value}",
        )
    stdout().print(table)
    stdout().print(f"{'would return' if dry_run else 'returned'} {len(items)} expired lease(s)")
