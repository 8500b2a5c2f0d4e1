"""`handoff handoffs …` on both engines, through Typer's runner on a real database, and once as
the installed console script: every command, its `--json` read back (in the HTTP API's own
shapes, and equal to what the API answers), confirmations, `--dry-run` writing nothing, and
failures that exit non-zero with one clear line instead of a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update
from typer.testing import CliRunner, Result

from app.api.app import create_app
from app.api.handoff_models import HandoffDetail, HandoffOut, HandoffPage, ReplayResponse, Stats
from app.cli import app
from app.db import tables
from app.db.uow import Database
from app.domain.clock import FakeClock, SystemClock
from app.domain.retry import RetryPolicy
from app.domain.states import HandoffState, ReasonCode, RetryClass
from app.services import ingestion
from app.services.ingestion import Failure
from app.settings import REPO_ROOT, Settings
from tests.support import TABLES, WORKER, claim_one, events, get, hand_off_one, version

HANDOFF = str(Path(sys.executable).with_name("handoff"))


@dataclass
class Cli:
    db: Database
    clock: FakeClock  # for setting up rows; the CLI itself reads the system clock
    runner: CliRunner

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return self.runner.invoke(app, ["handoffs", *args], input=input)

    def ok(self, *args: str, input: str | None = None) -> Result:
        result = self(*args, input=input)
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        return result

    def json(self, *args: str, input: str | None = None) -> Any:
        return json.loads(self.ok(*args, "--json", input=input).stdout)

    def fails(self, code: int, *args: str, input: str | None = None) -> str:
        """Runs a command that must fail with `code`, one message and no traceback."""
        result = self(*args, input=input)
        assert result.exit_code == code, (result.stdout, result.stderr)
        assert isinstance(result.exception, SystemExit)  # an exit, not a crash
        assert "Traceback" not in result.stderr
        return " ".join(result.stderr.split())

    def snapshot(self) -> dict[str, list[Any]]:
        with self.db.transaction(write=False) as uow:
            return {
                t.name: [tuple(r) for r in uow.conn.execute(select(t).order_by(t.c.id))]
                for t in TABLES
            }


@pytest.fixture
def cli(db: Database, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("HANDOFF_DATABASE_URL", db.url)
    monkeypatch.setenv("COLUMNS", "200")
    return Cli(db, FakeClock(SystemClock().now()), CliRunner())


@pytest.fixture
def api(db: Database) -> Iterator[TestClient]:
    """The HTTP API on the same database, to compare answers with."""
    settings = Settings(database_url=db.url, auth_enabled=False)
    with TestClient(create_app(settings)) as client:
        yield client


def failed(cli: Cli, reference_id: str, body: str = "x") -> int:
    hid = hand_off_one(cli.db, cli.clock, version(reference_id, body)).handoff_id
    job = claim_one(cli.db, cli.clock)
    with cli.db.transaction() as uow:
        ingestion.fail(
            uow,
            job.lease,
            Failure(RetryClass.PERMANENT, "cannot parse"),
            now=cli.clock.now(),
            worker_id=WORKER,
            policy=RetryPolicy(),
        )
    return hid


def test_list_filters_and_pages_in_the_shape_the_api_answers(cli: Cli, api: TestClient) -> None:
    bad = failed(cli, "bad")
    queued = [hand_off_one(cli.db, cli.clock, version(f"q{i}", "x")).handoff_id for i in range(3)]
    first = HandoffPage.model_validate(cli.json("list", "--limit", "2"))
    assert [h.id for h in first.items] == [queued[2], queued[1]]
    assert first.next_cursor is not None
    rest = cli.json("list", "--limit", "2", "--cursor", first.next_cursor)
    assert [h["id"] for h in rest["items"]] == [queued[0], bad]
    assert rest["next_cursor"] is None
    assert rest == api.get("/v1/handoffs", params={"limit": 2, "cursor": first.next_cursor}).json()

    def ids(*options: str) -> list[int]:
        return [h["id"] for h in cli.json("list", *options)["items"]]

    assert ids("--state", "failed") == [bad]
    assert ids("--state", "failed", "--state", "queued") == [*queued[::-1], bad]
    assert ids("--reason", "permanent_error") == [bad]
    assert ids("--reference", "q1") == [queued[1]]
    assert ids("--source", "shop", "--since", "1h") == [*queued[::-1], bad]
    assert ids("--until", "1h") == []
    assert ids("--since", "2000-01-01T00:00:00+00:00", "--not-stuck", "--limit", "1") == [queued[2]]
    assert ids("--stuck") == []
    table = cli.ok("list", "--state", "failed").stdout
    assert "bad" in table
    assert "permanent_error" in table


def test_bad_options_name_the_option_and_exit_2(cli: Cli) -> None:
    assert "--limit" in cli.fails(2, "list", "--limit", "0")
    assert "--since" in cli.fails(2, "list", "--since", "yesterday")
    assert "--reference" in cli.fails(2, "list", "--reference", " padded")
    assert "--cursor" in cli.fails(2, "list", "--cursor", "not-a-cursor")
    assert "--state" in cli.fails(2, "replay", "--state", "nonsense")


def test_show_prints_the_detail_with_timeline_attempts_and_why(cli: Cli, api: TestClient) -> None:
    hid = failed(cli, "page")
    detail = HandoffDetail.model_validate(cli.json("show", str(hid)))
    assert detail.handoff.state is HandoffState.FAILED
    assert [e.to_state for e in detail.events] == [
        HandoffState.QUEUED,
        HandoffState.RUNNING,
        HandoffState.FAILED,
    ]
    assert [a.outcome for a in detail.attempts] == ["failed"]
    assert "cannot parse" in detail.why
    assert detail.model_dump(mode="json") == api.get(f"/v1/handoffs/{hid}").json()
    text = cli.ok("show", str(hid)).stdout
    for expected in ("why:", "events", "attempts", "permanent_error", "cannot parse"):
        assert expected in text
    assert "no handoff 999" in cli.fails(1, "show", "999")


def test_why_explains_a_handoff_or_every_handoff_of_a_reference(cli: Cli) -> None:
    old = failed(cli, "shop:item", "v1")
    cli.clock.advance(1)
    new = hand_off_one(cli.db, cli.clock, version("shop:item", "v2", fetched_at=cli.clock.now()))
    by_reference = cli.json("why", "shop:item")
    assert by_reference["reference_id"] == "shop:item"
    assert by_reference["current_document"] is None
    assert [(h["id"], h["state"]) for h in by_reference["handoffs"]] == [
        (new.handoff_id, "queued"),
        (old, "failed"),
    ]
    assert by_reference["handoffs"][1]["why"].startswith("Failed permanently")
    by_id = cli.json("why", str(old))
    assert [h["id"] for h in by_id["handoffs"]] == [old]
    assert by_id["reference_id"] == "shop:item"
    text = cli.ok("why", "shop:item").stdout
    assert "Queued since" in text
    assert "current document: none yet" in text
    assert "no reference 'nowhere'" in cli.fails(1, "why", "nowhere")
    assert "no handoff or reference '777'" in cli.fails(1, "why", "777")
    assert "no reference '1'" in cli.fails(1, "why", "1", "--reference")


def test_stats_prints_the_api_stats_with_every_state_and_reason(cli: Cli, api: TestClient) -> None:
    failed(cli, "a")
    hand_off_one(cli.db, cli.clock, version("b", "x"))
    stats = Stats.model_validate(cli.json("stats"))
    assert stats.counts[HandoffState.FAILED][ReasonCode.PERMANENT_ERROR] == 1
    assert stats.counts[HandoffState.WAITING][ReasonCode.ENQUEUED] == 0  # zeros are present
    assert len(stats.counts) == len(HandoffState)
    assert stats.totals[HandoffState.QUEUED] == 1
    from_api = api.get("/v1/handoffs/stats").json()
    ours = stats.model_dump(mode="json")
    for key in ("counts", "totals", "stuck", "stuck_after_seconds", "last_60_minutes"):
        assert ours[key] == from_api[key]
    text = cli.ok("stats").stdout
    assert "poison_suspected" in text
    assert "stuck: 0" in text


def test_retry_asks_first_rehearses_with_dry_run_and_refuses_what_the_api_refuses(
    cli: Cli,
) -> None:
    hid = failed(cli, "r")
    before = cli.snapshot()
    rehearsed = HandoffOut.model_validate(cli.json("retry", str(hid), "--dry-run"))
    assert (rehearsed.state, rehearsed.reason_code) == (
        HandoffState.QUEUED,
        ReasonCode.OPERATOR_RETRY,
    )
    assert "would be requeued" in cli.ok("retry", str(hid), "--dry-run").stdout
    assert "Aborted" in cli.fails(1, "retry", str(hid), input="n\n")
    assert cli.snapshot() == before
    done = cli.ok("retry", str(hid), input="y\n")
    assert "requeued: handoff" in done.stdout
    assert get(cli.db, hid).state is HandoffState.QUEUED
    last = events(cli.db, hid)[-1]
    assert (last.reason_code, last.actor.startswith("operator:cli")) == (
        ReasonCode.OPERATOR_RETRY,
        True,
    )
    refusal = cli.fails(1, "retry", str(hid), "--yes")
    assert f"refused: only failed or cancelled handoffs can be retried; {hid} is queued" in refusal
    assert "refused" in cli.fails(1, "retry", str(hid), "--dry-run")
    assert "no handoff 4242" in cli.fails(1, "retry", "4242", "--yes")


def test_cancel_changes_nothing_in_a_dry_run_and_cancels_with_yes(cli: Cli) -> None:
    hid = hand_off_one(cli.db, cli.clock, version("c", "x")).handoff_id
    before = cli.snapshot()
    assert cli.json("cancel", str(hid), "--dry-run")["state"] == "cancelled"
    assert cli.snapshot() == before
    assert cli.json("cancel", str(hid), "--yes")["reason_code"] == "operator_cancelled"
    assert get(cli.db, hid).state is HandoffState.CANCELLED
    assert "is already cancelled" in cli.fails(1, "cancel", str(hid), "--yes")


def test_replay_previews_asks_and_requeues_by_filter(cli: Cli) -> None:
    ids = [failed(cli, f"p{i}") for i in range(2)]
    hand_off_one(cli.db, cli.clock, version("p0", "newer", fetched_at=cli.clock.now()))
    before = cli.snapshot()
    preview = ReplayResponse.model_validate(cli.json("replay", "--dry-run"))
    assert (preview.dry_run, preview.matched, preview.requeued, preview.refused) == (
        True,
        2,
        1,
        1,
    )
    assert preview.items[0].reason is not None
    assert "already has active handoff" in preview.items[0].reason
    assert cli.snapshot() == before
    asked = cli("replay", "--reason", "permanent_error", input="n\n")
    assert asked.exit_code == 1
    assert "Requeue 1 handoff(s)?" in asked.stderr
    assert "would be requeued" in asked.stdout  # the preview came first
    assert cli.snapshot() == before
    done = cli.json("replay", "--yes")
    assert (done["dry_run"], done["requeued"]) == (False, 1)
    assert get(cli.db, ids[1]).state is HandoffState.QUEUED
    assert get(cli.db, ids[0]).state is HandoffState.FAILED
    assert cli.json("replay", "--state", "queued", "--yes")["matched"] == 0


def test_reap_returns_expired_leases_once_and_dry_run_only_lists_them(cli: Cli) -> None:
    past = FakeClock()  # leases taken on this clock expired long ago in real time
    hid = hand_off_one(cli.db, past, version("stuck", "x")).handoff_id
    claim_one(cli.db, past)
    before = cli.snapshot()
    preview = cli.json("reap", "--dry-run")
    assert (preview["dry_run"], preview["returned"]) == (True, 1)
    assert preview["items"][0] | {"lease_expires_at": None} == {
        "id": hid,
        "reference_id": "stuck",
        "lease_owner": WORKER,
        "lease_expires_at": None,
        "state": "retry_wait",
        "reason_code": "lease_expired",
    }
    assert cli.snapshot() == before
    assert "Aborted" in cli.fails(1, "reap", input="n\n")
    assert cli.snapshot() == before
    reaped = cli.json("reap", "--yes")
    assert [(i["id"], i["state"], i["lease_owner"]) for i in reaped["items"]] == [
        (hid, "retry_wait", WORKER)
    ]
    assert events(cli.db, hid)[-1].actor == "system:rescuer"
    assert get(cli.db, hid).reason_code is ReasonCode.LEASE_EXPIRED
    assert cli.json("reap", "--yes")["returned"] == 0
    assert "no expired lease" in cli.ok("reap", "--yes").stdout


def plant(cli: Cli) -> dict[str, int]:
    """A record without handoff, a deleted payload, a corrupted payload and a running handoff
    whose attempt says it finished."""
    db, clock = cli.db, cli.clock
    records, jobs = tables.scrape_records, tables.ingestion_jobs
    running = hand_off_one(db, clock, version("running", "x")).handoff_id
    claim_one(db, clock)
    with db.transaction() as uow:
        uow.conn.execute(update(jobs).values(finished_at=clock.now(), outcome="succeeded"))
        uow.records.insert([version("orphan", "no handoff")], clock.now())
    gone = hand_off_one(db, clock, version("gone", "x")).handoff_id
    corrupt = hand_off_one(db, clock, version("corrupt", "original")).handoff_id
    with db.transaction() as uow:
        uow.conn.execute(delete(records).where(records.c.reference_id == "gone"))
        uow.conn.execute(
            update(records).where(records.c.reference_id == "corrupt").values(body=b"changed")
        )
    return {"running": running, "gone": gone, "corrupt": corrupt}


def test_reconcile_reports_repairs_each_planted_inconsistency_and_then_finds_nothing(
    cli: Cli,
) -> None:
    planted = plant(cli)
    before = cli.snapshot()
    report = cli.json("reconcile")
    assert (report["repair"], report["found"]) == (False, 4)
    assert {k: n for k, n in report["counts"].items() if n} == {
        "record_without_handoff": 1,
        "payload_missing": 1,
        "payload_hash_mismatch": 1,
        "running_without_open_attempt": 1,
    }
    assert len(report["counts"]) == 7  # every kind, zeros included
    assert {f["outcome"] for f in report["findings"]} == {"found"}
    rehearsal = cli.json("reconcile", "--repair", "--dry-run")
    assert (rehearsal["repair"], rehearsal["found"]) == (False, 4)
    assert "Aborted" in cli.fails(1, "reconcile", "--repair", input="n\n")
    assert cli.snapshot() == before
    text = cli.ok("reconcile").stdout
    assert "found 4; run with --repair" in text
    assert "record_without_handoff" in text

    repaired = cli.json("reconcile", "--repair", "--yes")
    assert (repaired["repair"], repaired["repaired"], repaired["skipped"]) == (True, 4, 0)
    assert get(cli.db, planted["gone"]).reason_code is ReasonCode.PAYLOAD_MISSING
    assert get(cli.db, planted["corrupt"]).reason_code is ReasonCode.PAYLOAD_HASH_MISMATCH
    assert get(cli.db, planted["running"]).reason_code is ReasonCode.LEASE_RELEASED
    for hid in planted.values():
        assert events(cli.db, hid)[-1].actor.startswith("operator:cli")
    again = cli.json("reconcile", "--repair", "--yes")
    assert (again["found"], again["findings"]) == (0, [])
    assert "nothing to reconcile" in cli.ok("reconcile").stdout


def test_commands_refuse_an_outdated_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDOFF_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    runner = CliRunner()
    for command in (["list"], ["show", "1"], ["reconcile"], ["reap", "--dry-run"]):
        result = runner.invoke(app, ["handoffs", *command])
        assert result.exit_code == 2
        assert "handoff migrate" in " ".join(result.stderr.split())  # Rich wraps long lines


def test_the_console_script_lists_retries_and_reconciles(db: Database) -> None:
    clock = FakeClock(SystemClock().now())
    cli = Cli(db, clock, CliRunner())
    hid = failed(cli, "script")
    env = {**os.environ, "HANDOFF_DATABASE_URL": db.url, "COLUMNS": "200"}

    def handoff(*args: str) -> Any:
        done = subprocess.run(
            [HANDOFF, "handoffs", *args, "--json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO_ROOT,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert [h["id"] for h in handoff("list", "--state", "failed")["items"]] == [hid]
    assert handoff("retry", str(hid), "--yes")["state"] == "queued"
    assert handoff("reconcile", "--repair", "--yes")["found"] == 0
    refused = subprocess.run(
        [HANDOFF, "handoffs", "cancel", str(hid)],  # no --yes and no terminal: nobody agrees
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert refused.returncode == 1
    assert get(db, hid).state is HandoffState.QUEUED
