"""The `handoff` command as a user runs it: a real process against a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import REPO_ROOT

HANDOFF = str(Path(sys.executable).with_name("handoff"))


def handoff(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HANDOFF_DATABASE_URL": url, "COLUMNS": "200"}
    return subprocess.run(
        [HANDOFF, *args], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120
    )


@pytest.fixture
def fresh_url(tmp_path: Path) -> str:
    """An empty, unmigrated SQLite database."""
    return f"sqlite:///{tmp_path / 'fresh.db'}"


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_migrate_applies_once_and_then_is_a_no_op(fresh_url: str) -> None:
    first = handoff(fresh_url, "migrate")
    assert first.returncode == 0, first.stderr
    count = len(list((REPO_ROOT / "db" / "migrations").glob("*.sql")))
    assert f"applied {count} migration(s)" in first.stdout
    second = handoff(fresh_url, "migrate")
    assert second.returncode == 0
    assert "applied 0 migration(s)" in second.stdout


@pytest.mark.parametrize("command", [["handoffs", "stats"], ["worker"], ["serve"]])
def test_commands_refuse_an_outdated_schema_and_name_the_fix(
    fresh_url: str, command: list[str]
) -> None:
    result = handoff(fresh_url, *command)
    assert result.returncode == 2
    assert "handoff migrate" in " ".join(result.stderr.split())  # Rich wraps long lines


def test_submit_then_stats_counts_every_outcome_on_both_engines(
    db_url: str, tmp_path: Path
) -> None:
    rows: list[dict[str, object]] = [
        {"source": "cli", "url": f"https://example.com/{i}", "body": f"page {i}"} for i in range(5)
    ]
    jsonl = write_jsonl(tmp_path / "in.jsonl", rows)
    first = handoff(db_url, "submit", str(jsonl), "--batch", "2", "--inline")
    assert first.returncode == 0, first.stderr
    lines = [json.loads(line) for line in first.stdout.splitlines()]
    assert lines[0] == {"submitted": 5, "outcomes": {"created": 5}}
    assert lines[1] == {"ingested": 5}
    again = handoff(db_url, "submit", str(jsonl))
    assert json.loads(again.stdout) == {"submitted": 5, "outcomes": {"duplicate": 5}}

    stats = handoff(db_url, "handoffs", "stats", "--json")
    counts = json.loads(stats.stdout)["counts"]  # the shape of GET /v1/handoffs/stats
    assert counts["succeeded"]["succeeded"] == 5
    assert counts["queued"]["enqueued"] == 0  # zeros are present, not omitted
    assert set(counts) == {
        "queued",
        "running",
        "retry_wait",
        "waiting",
        "succeeded",
        "failed",
        "cancelled",
        "superseded",
    }
    table = handoff(db_url, "handoffs", "stats")
    assert "succeeded" in table.stdout
    assert "poison_suspected" in table.stdout


def test_a_bad_line_names_its_line_and_field_and_writes_nothing(
    db_url: str, tmp_path: Path
) -> None:
    rows: list[dict[str, object]] = [
        {"source": "cli", "url": "https://example.com/ok", "body": "fine"},
        {"source": "cli", "url": "not a url", "body": "bad"},
    ]
    result = handoff(db_url, "submit", str(write_jsonl(tmp_path / "bad.jsonl", rows)))
    assert result.returncode != 0
    assert ":2: url" in result.stderr.replace("\n", "")
    stats = json.loads(handoff(db_url, "handoffs", "stats", "--json").stdout)
    assert sum(stats["totals"].values()) == 0


def test_a_line_that_fails_hashing_is_found_before_anything_is_written(
    db_url: str, tmp_path: Path
) -> None:
    rows: list[dict[str, object]] = [
        {"source": "cli", "url": "https://example.com/ok", "body": "fine"},
        {
            "source": "cli",
            "url": "https://example.com/x",
            "body": "b",
            "payload_hash": "sha256:" + "0" * 64,
        },
    ]
    result = handoff(
        db_url, "submit", str(write_jsonl(tmp_path / "bad.jsonl", rows)), "--batch", "1"
    )
    assert result.returncode != 0
    assert ":2: payload_hash" in result.stderr.replace("\n", "")
    stats = json.loads(handoff(db_url, "handoffs", "stats", "--json").stdout)
    assert sum(stats["totals"].values()) == 0


def test_tokens_are_created_listed_and_revoked_without_showing_secrets(db_url: str) -> None:
    created = handoff(db_url, "tokens", "create", "--name", "ci", "--scope", "read")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert secret.startswith("hnd_")
    listed = json.loads(handoff(db_url, "tokens", "list", "--json").stdout)
    assert [(t["name"], t["scopes"], t["revoked_at"]) for t in listed] == [("ci", "read", None)]
    assert secret not in handoff(db_url, "tokens", "list").stdout
    revoked = handoff(db_url, "tokens", "revoke", str(listed[0]["id"]))
    assert revoked.returncode == 0
    assert json.loads(handoff(db_url, "tokens", "list", "--json").stdout)[0]["revoked_at"]
    again = handoff(db_url, "tokens", "revoke", str(listed[0]["id"]))
    assert again.returncode == 1
    assert "no live token" in again.stderr
