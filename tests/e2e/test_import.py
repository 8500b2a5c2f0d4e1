"""`handoff import` as a user runs it, on both engines, over the shared WARC / ARC files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from warcio.archiveiterator import ArchiveIterator

from app.db.uow import Database
from app.domain.payload import derive_reference_id
from app.settings import REPO_ROOT

HANDOFF = str(Path(sys.executable).with_name("handoff"))
WARC = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "warc"


def handoff(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HANDOFF_DATABASE_URL": url, "COLUMNS": "200"}
    return subprocess.run(
        [HANDOFF, *args], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120
    )


def summary_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return dict(json.loads(result.stdout))


def stored(db_url: str) -> tuple[set[str], int, int]:
    """(reference ids with a handoff, records, records with exactly one handoff)."""
    db = Database(db_url)
    try:
        with db.transaction(write=False) as uow:
            refs = {
                r[0] for r in uow.conn.execute(text("SELECT reference_id FROM ingestion_handoffs"))
            }
            records = uow.conn.execute(text("SELECT count(*) FROM scrape_records")).scalar()
            paired = uow.conn.execute(text(
                "SELECT count(*) FROM scrape_records r WHERE (SELECT count(*) FROM"
                " ingestion_handoffs h WHERE h.reference_id = r.reference_id"
                " AND h.payload_hash = r.payload_hash) = 1"
            )).scalar()  # fmt: skip
    finally:
        db.dispose()
    return refs, int(records or 0), int(paired or 0)


def warcio_view(path: Path) -> tuple[set[str], set[str], int]:
    """What warcio itself sees: HTML response URLs, revisit URLs, and the response count."""
    html, revisits, responses = set(), set(), 0
    with path.open("rb") as f:
        for record in ArchiveIterator(f):
            url = record.rec_headers.get_header("WARC-Target-URI")
            if record.rec_type == "response":
                responses += 1
                if "text/html" in (record.http_headers.get_header("Content-Type") or ""):
                    html.add(url)
            elif record.rec_type == "revisit":
                revisits.add(url)
    return html, revisits, responses


def test_iana_hands_off_every_response_and_resolves_revisits_then_a_reimport_is_a_no_op(
    db_url: str,
) -> None:
    iana = WARC / "iana.warc.gz"
    html, revisits, responses = warcio_view(iana)
    assert len(html) >= 20
    assert revisits

    first = handoff(db_url, "import", str(iana))
    assert first.returncode == 0, first.stderr
    summary = summary_of(first)
    assert summary["records"]["response"] == responses
    assert summary["records"]["revisit"] == summary["revisits_resolved"] > 0
    assert summary["skipped"] == {"request record": 171, "warcinfo record": 1}
    assert summary["submitted"] == responses + summary["revisits_resolved"]
    assert summary["outcomes"]["created"] > 0
    refs, records, paired = stored(db_url)
    assert {derive_reference_id("warc", u) for u in html} <= refs  # every HTML page
    assert {derive_reference_id("warc", u) for u in revisits} <= refs  # every revisit
    assert records == paired == summary["submitted"] - summary["outcomes"]["duplicate"]

    again = handoff(db_url, "import", str(iana))
    assert again.returncode == 0, again.stderr
    assert summary_of(again)["outcomes"] == {"duplicate": summary["submitted"]}
    assert stored(db_url)[1] == records


@pytest.mark.parametrize(
    ("name", "offset", "created"),
    [
        # The second response's payload is one byte short of its HTTP Content-Length: the
        # first response before it is kept (its revisit, same URL and payload, a duplicate).
        ("example-extra.warc", 3207, 1),
        ("bad.arc", 0, 0),  # an ARC header with length -1 (warcio reads it as empty)
        ("example-bad.warc.gz.bad", 0, 0),  # one gzip member holding several records
    ],
)
def test_a_malformed_file_stops_naming_file_and_offset_and_keeps_the_database_consistent(
    db_url: str, name: str, offset: int, created: int
) -> None:
    result = handoff(db_url, "import", "--batch", "1", str(WARC / name))
    assert result.returncode == 1
    message = f"{WARC / name}: record at offset {offset}:"
    assert message in " ".join(result.stderr.split())
    summary = summary_of(result)
    assert summary["error"].startswith(message)
    assert summary["outcomes"].get("created", 0) == created
    _, records, paired = stored(db_url)
    assert records == paired == created


def test_a_bad_file_stops_the_whole_import_after_committing_the_files_before_it(
    db_url: str,
) -> None:
    good, bad, never = WARC / "example.warc.gz", WARC / "bad.arc", WARC / "example2.warc.gz"
    result = handoff(db_url, "import", str(good), str(bad), str(never))
    assert result.returncode == 1
    summary = summary_of(result)
    assert summary["files"] == [str(good), str(bad)]
    _, records, paired = stored(db_url)
    new = summary["submitted"] - summary["outcomes"].get("duplicate", 0)
    assert records == paired == new > 0


def test_jsonl_imports_like_submit_and_a_bad_line_names_file_and_line(
    db_url: str, tmp_path: Path
) -> None:
    rows = [
        {"source": "cli", "url": f"https://example.com/{i}", "body": f"page {i}"} for i in range(5)
    ]
    good = tmp_path / "in.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = handoff(db_url, "import", "--batch", "2", str(good))
    assert result.returncode == 0, result.stderr
    assert summary_of(result)["outcomes"] == {"created": 5}

    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"source": "cli", "url": "https://example.com/x", "body": "x"}) + "\n{}\n"
    )
    failed = handoff(db_url, "import", str(bad))
    assert failed.returncode == 1
    assert f"{bad}:2:" in " ".join(failed.stderr.split())
    assert summary_of(failed)["outcomes"] == {"created": 1}  # the line before it, committed
    _, records, paired = stored(db_url)
    assert records == paired == 6


def html_bodies(path: Path) -> dict[str, int]:
    """URL -> body length of every HTML response, as warcio reads them (last one wins)."""
    sizes: dict[str, int] = {}
    with path.open("rb") as f:
        for record in ArchiveIterator(f):
            content_type = (
                record.http_headers.get_header("Content-Type") if record.http_headers else ""
            )
            if record.rec_type == "response" and "text/html" in (content_type or ""):
                url = record.rec_headers.get_header("WARC-Target-URI")
                sizes[url] = len(record.content_stream().read())
    return sizes


def test_iana_pages_become_searchable_documents_and_a_phrase_finds_its_page(
    db_url: str,
) -> None:
    iana = WARC / "iana.warc.gz"
    pages = html_bodies(iana)
    assert handoff(db_url, "import", str(iana)).returncode == 0
    drained = handoff(db_url, "worker", "--drain")
    assert drained.returncode == 0, drained.stderr
    assert json.loads(drained.stdout)["ingested"] >= len(pages)

    db = Database(db_url)
    try:
        with db.transaction(write=False) as uow:
            current = {
                row.reference_id: row.title
                for row in uow.conn.execute(
                    text("SELECT reference_id, title FROM documents WHERE superseded_at IS NULL")
                )
            }
            unfinished = uow.conn.execute(
                text("SELECT count(*) FROM ingestion_handoffs WHERE state NOT IN "
                     "('succeeded', 'failed', 'superseded')")
            ).scalar()  # fmt: skip
            failed = {
                row.reference_id: row.reason_code
                for row in uow.conn.execute(
                    text("SELECT reference_id, reason_code FROM ingestion_handoffs "
                         "WHERE state = 'failed'")
                )
            }  # fmt: skip
    finally:
        db.dispose()
    assert unfinished == 0
    with_text = {derive_reference_id("warc", u) for u, size in pages.items() if size > 0}
    empty = {derive_reference_id("warc", u) for u, size in pages.items() if size == 0}
    assert len(with_text) >= 18
    assert with_text <= set(current)  # every HTML page with a body is a current document
    # An empty body (a bare redirect) has nothing to index: it fails permanently, saying why;
    # so do fonts and images (no text to extract) — failed once, not retried in a loop.
    html_failed = {ref for ref in failed if ref in with_text | empty}
    assert html_failed == empty
    assert set(failed.values()) == {"permanent_validation_error"}
    assert current[derive_reference_id("warc", "http://www.iana.org/time-zones")]

    found = handoff(db_url, "search", '"often called tz or zoneinfo"', "--json")
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)["results"]
    assert [r["url"] for r in results] == ["http://www.iana.org/time-zones"]
    assert results[0]["title"] == "Time Zone Database"

    nothing = handoff(db_url, "search", "--", "-excluded")  # -- ends the options
    assert nothing.returncode == 2
    assert "q: give at least one word" in nothing.stderr
