"""Reconcile: find where scrape records, handoffs and attempt rows disagree, and repair on request.

Finding reads in keyset pages (one read transaction each). Each repair is its own transaction:
it looks at the row again, changes it with a guarded UPDATE (the state it was found in, and the
lease token for a running handoff), and writes one event naming the reconcile. A row that moved
meanwhile (a worker finished it, another reconcile repaired it) is skipped, never overwritten,
and the partial unique indexes still refuse a second active handoff per reference. Repaired
rows no longer match any finding, so a second run finds nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from app.db.uow import Database, UnitOfWork
from app.domain.errors import Conflict
from app.domain.models import Handoff, Lease, NewEvent
from app.domain.reconcile import REPAIRS, Kind, Suspect, attempt_outcome_for
from app.domain.records import PreparedRecord, matches_hash
from app.domain.states import ACTIVE_STATES, TERMINAL_STATES, HandoffState, ReasonCode
from app.services import ingestion_handoff

PAGE = 500  # rows per read page
HASH_PAGE = 50  # handoffs per page of the hash check, which reads their payloads
Outcome = Literal["found", "repaired", "skipped"]


class Progress(Protocol):
    """Where a long reconcile reports how far it got (the CLI draws bars)."""

    def phase(self, label: str, total: int | None) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class _Quiet:
    def phase(self, label: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Finding:
    suspect: Suspect
    detail: str  # what is wrong, in plain words
    outcome: Outcome = "found"
    result: str | None = None  # what the repair did, or why it skipped

    @property
    def repair(self) -> str:
        return REPAIRS[self.suspect.kind]


@dataclass(slots=True)
class Report:
    repair: bool
    findings: list[Finding] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Findings per kind, every kind present (zeros included)."""
        counts = {k.value: 0 for k in Kind}
        for f in self.findings:
            counts[f.suspect.kind.value] += 1
        return counts

    def tally(self, outcome: Outcome) -> int:
        return sum(1 for f in self.findings if f.outcome == outcome)


def find(db: Database, progress: Progress | None = None) -> list[Finding]:
    """Every inconsistency, in a fixed order: by kind, then by id. Reads only."""
    p = progress or _Quiet()
    found: list[Finding] = []
    for label, pages in (
        ("records without handoff", _pages(db, lambda uow, a: _records(uow, a))),
        ("handoffs without record", _pages(db, lambda uow, a: _without_record(uow, a))),
        ("payload hashes", _pages(db, lambda uow, a: _hash_mismatches(uow, a))),
        ("running handoffs", _pages(db, lambda uow, a: _running(uow, a))),
        ("open attempts", _pages(db, lambda uow, a: _open_attempts(uow, a))),
        ("finished handoffs", _pages(db, lambda uow, a: _finished(uow, a))),
    ):
        p.phase(f"checking {label}", None)
        for page in pages:
            found.extend(page)
            p.advance(len(page))
    return found


def repair(
    db: Database,
    findings: list[Finding],
    *,
    now: Callable[[], datetime],
    actor: str,
    progress: Progress | None = None,
) -> list[Finding]:
    """Repair each finding in its own transaction; returns them with their outcome."""
    p = progress or _Quiet()
    p.phase("repairing", len(findings))
    done = []
    for f in findings:
        outcome, result = db.run(_fixing(f.suspect, now(), actor))
        done.append(Finding(f.suspect, f.detail, outcome, result))
        p.advance()
    return done


def run(
    db: Database,
    *,
    repair_them: bool,
    now: Callable[[], datetime],
    actor: str,
    progress: Progress | None = None,
) -> Report:
    """Find, and with `repair_them` repair, every inconsistency."""
    findings = find(db, progress)
    if repair_them and findings:
        findings = repair(db, findings, now=now, actor=actor, progress=progress)
    return Report(repair_them, findings)


# -- finding ------------------------------------------------------------------------------------

Page = tuple[list[Finding], int | None]  # findings, and the id to continue after (None: done)


def _pages(db: Database, read: Callable[[UnitOfWork, int], Page]) -> Iterator[list[Finding]]:
    after: int | None = 0
    while after is not None:
        findings, after = db.run(_reading(read, after), write=False)
        yield findings


def _reading(read: Callable[[UnitOfWork, int], Page], after: int) -> Callable[[UnitOfWork], Page]:
    return lambda uow: read(uow, after)


def _next(ids: list[int], limit: int) -> int | None:
    return ids[-1] if len(ids) == limit else None


def _records(uow: UnitOfWork, after: int) -> Page:
    rows = uow.reconcile.records_without_handoff(after=after, limit=PAGE)
    found = [Finding(s, f"scrape record {s.record_id} has no handoff") for s in rows]
    return found, _next([s.record_id or 0 for s in rows], PAGE)


def _without_record(uow: UnitOfWork, after: int) -> Page:
    rows = uow.reconcile.unfinished_without_record(after=after, limit=PAGE)
    found = [Finding(s, f"handoff {s.handoff_id} ({_state(s)}) has no scrape record") for s in rows]
    return found, _next([s.handoff_id or 0 for s in rows], PAGE)


def _hash_mismatches(uow: UnitOfWork, after: int) -> Page:
    rows = uow.reconcile.unfinished_with_record(after=after, limit=HASH_PAGE)
    found = [
        Finding(
            Suspect(
                Kind.PAYLOAD_HASH_MISMATCH,
                h.reference_id,
                h.payload_hash,
                handoff_id=h.id,
                record_id=r.id,
                state=h.state,
                lease_token=h.lease_token,
            ),
            f"the stored payload of handoff {h.id} ({h.state.value}) no longer hashes to its "
            "payload_hash",
        )
        for h, r in rows
        if not matches_hash(r.body, r.content_type, r.fields, h.payload_hash)
    ]
    return found, _next([h.id for h, _ in rows], HASH_PAGE)


def _running(uow: UnitOfWork, after: int) -> Page:
    rows = uow.reconcile.running_without_open_attempt(after=after, limit=PAGE)
    found = []
    for s in rows:
        attempt = (
            "has no attempt row"
            if s.attempt_id is None
            else f"finished as {s.attempt_outcome} (attempt {s.attempt_id})"
        )
        found.append(
            Finding(
                s, f"handoff {s.handoff_id} is running under lease {s.lease_token}, which {attempt}"
            )
        )
    return found, _next([s.handoff_id or 0 for s in rows], PAGE)


def _open_attempts(uow: UnitOfWork, after: int) -> Page:
    rows = uow.reconcile.attempts_left_open(after=after, limit=PAGE)
    found = [
        Finding(
            s,
            f"attempt {s.attempt_id} (lease {s.lease_token}) of handoff {s.handoff_id} is still "
            f"open, but the handoff is {_state(s)}"
            + ("" if s.state is not HandoffState.RUNNING else " under a newer lease"),
        )
        for s in rows
    ]
    return found, _next([s.attempt_id or 0 for s in rows], PAGE)


def _finished(uow: UnitOfWork, after: int) -> Page:
    rows = uow.reconcile.finished_disagreeing(after=after, limit=PAGE)
    found = [
        Finding(
            s,
            f"handoff {s.handoff_id} succeeded, but its last attempt did not"
            if s.kind is Kind.SUCCEEDED_WITHOUT_SUCCESSFUL_ATTEMPT
            else f"handoff {s.handoff_id} is {_state(s)}, but its last attempt succeeded",
        )
        for s in rows
    ]
    return found, _next([s.handoff_id or 0 for s in rows], PAGE)


def _state(s: Suspect) -> str:
    return s.state.value if s.state is not None else "?"


# -- repairing ----------------------------------------------------------------------------------

Fixed = tuple[Outcome, str]


def _hand_off(uow: UnitOfWork, s: Suspect, now: datetime, actor: str) -> Fixed:
    record = uow.records.get(s.reference_id, s.payload_hash)
    if record is None:
        return "skipped", "the record is gone"
    prepared = PreparedRecord(
        reference_id=record.reference_id,
        payload_hash=record.payload_hash,
        source=record.source,
        url=record.url,
        fetched_at=record.fetched_at,
        http_status=record.http_status,
        content_type=record.content_type,
        headers=record.headers,
        body=record.body,
        fields=record.fields,
    )
    (result,) = ingestion_handoff.enqueue(uow, [prepared], now=now, actor=actor)
    if result.outcome.value == "duplicate":
        return "skipped", f"handoff {result.handoff_id} was created meanwhile"
    return "repaired", (
        f"handed off as handoff {result.handoff_id}: {result.state.value} ({result.outcome.value})"
    )


def _fail_payload(uow: UnitOfWork, s: Suspect, now: datetime, actor: str) -> Fixed:
    h = uow.handoffs.get(s.handoff_id or 0)
    if h is None or h.state in TERMINAL_STATES:
        return "skipped", "the handoff has finished meanwhile"
    record = uow.records.get(h.reference_id, h.payload_hash)
    if s.kind is Kind.PAYLOAD_MISSING:
        reason, still = ReasonCode.PAYLOAD_MISSING, record is None
        error = "the scrape record of this handoff no longer exists"
    else:
        reason = ReasonCode.PAYLOAD_HASH_MISMATCH
        still = record is not None and not matches_hash(
            record.body, record.content_type, record.fields, h.payload_hash
        )
        error = "the stored payload no longer matches its payload_hash"
    if not still:
        return "skipped", "the payload is sound now"
    values = {
        "state": HandoffState.FAILED.value,
        "reason_code": reason.value,
        "lease_owner": None,
        "lease_expires_at": None,
        "last_error": error,
        "finished_at": now,
        "updated_at": now,
    }
    moved = _move(uow, h, values)
    if moved is None:
        return "skipped", "the handoff changed state meanwhile"
    if h.state is HandoffState.RUNNING:  # close the attempt its worker can no longer end
        uow.jobs.finish(
            [(h.id, h.lease_token)],
            outcome="failed",
            now=now,
            retry_class="permanent",
            reason_code=reason.value,
            error=error,
        )
    _event(uow, h, moved, actor, now, s.kind)
    if h.state in ACTIVE_STATES:
        ingestion_handoff.promote_waiting(uow, [h.reference_id], now=now, actor=actor)
    return "repaired", f"failed as {reason.value}"


def _release(uow: UnitOfWork, s: Suspect, now: datetime, actor: str) -> Fixed:
    h = uow.handoffs.get(s.handoff_id or 0)
    if h is None or h.state is not HandoffState.RUNNING or h.lease_token != s.lease_token:
        return "skipped", "the handoff left that lease meanwhile"
    if any(
        a.lease_token == h.lease_token and a.finished_at is None for a in uow.jobs.of_handoff(h.id)
    ):
        return "skipped", "its attempt is open now"
    newer_waits = any(
        w.state is HandoffState.WAITING for w in uow.handoffs.unfinished_of(h.reference_id)
    )
    values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None, "updated_at": now}
    if newer_waits:  # a payload going back to wait yields to the newer one, as workers do
        values |= {
            "state": HandoffState.SUPERSEDED.value,
            "reason_code": ReasonCode.SUPERSEDED_BY_NEWER_PAYLOAD.value,
            "finished_at": now,
        }
    else:
        values |= {
            "state": HandoffState.QUEUED.value,
            "reason_code": ReasonCode.LEASE_RELEASED.value,
            "run_after": now,
        }
    moved = _move(uow, h, values)
    if moved is None:
        return "skipped", "the handoff left that lease meanwhile"
    _event(uow, h, moved, actor, now, s.kind)
    if newer_waits:
        ingestion_handoff.promote_waiting(uow, [h.reference_id], now=now, actor=actor)
    return "repaired", f"{moved.state.value} ({moved.reason_code.value})"


def _close_attempt(uow: UnitOfWork, s: Suspect, now: datetime, actor: str) -> Fixed:
    found = uow.reconcile.open_attempt(s.attempt_id or 0)
    h = uow.handoffs.get(s.handoff_id or 0)
    if found is None or h is None:
        return "skipped", "the attempt was closed meanwhile"
    _, token = found
    if h.state is HandoffState.RUNNING and h.lease_token == token:
        return "skipped", "its handoff runs under that lease again"
    if token == h.lease_token:  # the last attempt: the handoff's state says how it ended
        lost = h.reason_code in (ReasonCode.LEASE_EXPIRED, ReasonCode.POISON_SUSPECTED)
        outcome, reason = attempt_outcome_for(h.state, lost), h.reason_code.value
    else:  # an older lease that was claimed over: it ended unrecorded, as a lost lease does
        outcome, reason = "lease_expired", None
    uow.jobs.finish(
        [(h.id, token)],
        outcome=outcome,
        now=now,
        reason_code=reason,
        error="left open; closed by reconcile",
    )
    uow.handoffs.add_events(
        [
            NewEvent(
                h.id,
                actor,
                h.state,
                h.state,
                h.reason_code,
                token,
                f"reconcile: {s.kind.value}: closed attempt {s.attempt_id} as {outcome}",
            )
        ],
        now,
    )
    return "repaired", f"attempt {s.attempt_id} closed as {outcome}"


def _requeue(uow: UnitOfWork, s: Suspect, now: datetime, actor: str) -> Fixed:
    h = uow.handoffs.get(s.handoff_id or 0)
    if h is None or h.state is not s.state:
        return "skipped", "the handoff changed state meanwhile"
    last = [a for a in uow.jobs.of_handoff(h.id) if a.lease_token == h.lease_token]
    succeeded = any(a.outcome == "succeeded" for a in last)
    if any(a.finished_at is None for a in last) or succeeded == (
        s.kind is Kind.SUCCEEDED_WITHOUT_SUCCESSFUL_ATTEMPT
    ):
        return "skipped", "its attempt agrees with it now"
    busy = [x for x in uow.handoffs.unfinished_of(h.reference_id) if x.state in ACTIVE_STATES]
    newer = uow.handoffs.latest_fetched([h.reference_id])[h.reference_id] > h.fetched_at
    if busy or newer:  # a newer version is (being) ingested: this one is superseded
        values: dict[str, Any] = {
            "state": HandoffState.SUPERSEDED.value,
            "reason_code": ReasonCode.SUPERSEDED_BY_NEWER_PAYLOAD.value,
            "updated_at": now,
        }
        moved = uow.handoffs.transition(h.id, {h.state}, values)
    else:
        try:
            moved = uow.handoffs.requeue(
                h.id, {h.state}, ingestion_handoff.operator_requeue_values(now)
            )
        except Conflict:
            return "skipped", "its reference gained active work meanwhile"
    if moved is None:
        return "skipped", "the handoff changed state meanwhile"
    _event(uow, h, moved, actor, now, s.kind)
    return "repaired", f"{moved.state.value} ({moved.reason_code.value})"


def _fixing(s: Suspect, at: datetime, actor: str) -> Callable[[UnitOfWork], Fixed]:
    fix = _FIXES[s.kind]
    return lambda uow: fix(uow, s, at, actor)


def _move(uow: UnitOfWork, h: Handoff, values: dict[str, Any]) -> Handoff | None:
    """Guarded: from the state it was read in, and for a running one its lease token."""
    if h.state is HandoffState.RUNNING:
        moved = uow.handoffs.finish_leases([Lease(h.id, h.lease_token)], values)
        return moved[0] if moved else None
    return uow.handoffs.transition(h.id, {h.state}, values)


def _event(
    uow: UnitOfWork, h: Handoff, moved: Handoff, actor: str, now: datetime, kind: Kind
) -> None:
    token = h.lease_token if h.state is HandoffState.RUNNING else None
    uow.handoffs.add_events(
        [
            NewEvent(
                h.id, actor, h.state, moved.state, moved.reason_code, token, f"reconcile: {kind}"
            )
        ],
        now,
    )


_FIXES: dict[Kind, Callable[[UnitOfWork, Suspect, datetime, str], Fixed]] = {
    Kind.RECORD_WITHOUT_HANDOFF: _hand_off,
    Kind.PAYLOAD_MISSING: _fail_payload,
    Kind.PAYLOAD_HASH_MISMATCH: _fail_payload,
    Kind.RUNNING_WITHOUT_OPEN_ATTEMPT: _release,
    Kind.ATTEMPT_LEFT_OPEN: _close_attempt,
    Kind.SUCCEEDED_WITHOUT_SUCCESSFUL_ATTEMPT: _requeue,
    Kind.SUCCESSFUL_ATTEMPT_NOT_SUCCEEDED: _requeue,
}
