"""Hostile files for `handoff import`: adversarial archives and JSONL either import or stop
with an `ImportFailed` naming file and place — never another exception — and the database
stays consistent (every stored version has exactly one handoff, nothing half-written).

The fixed corpus below holds the cases that once mattered; a hypothesis campaign mutates a
small valid WARC (truncations, flipped bytes, spliced garbage) within a bounded budget."""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from app.db.uow import Database
from app.domain.clock import FakeClock
from app.services.importer import Importer, ImportFailed, max_line_bytes

MAX_BODY = 64 * 1024


def warc(responses: list[tuple[str, bytes, list[tuple[str, str]]]], *, gz: bool = False) -> bytes:
    out = io.BytesIO()
    writer = WARCWriter(out, gzip=gz)
    for url, body, headers in responses:
        http = StatusAndHeaders(
            "200 OK", [*headers, ("Content-Length", str(len(body)))], protocol="HTTP/1.1"
        )
        writer.write_record(
            writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http)
        )
    return out.getvalue()


VALID = warc(
    [
        ("https://example.com/a", b"<html><body><p>alpha page</p></body></html>",
         [("Content-Type", "text/html")]),
        ("https://example.com/b", gzip.compress(b"beta " * 50),
         [("Content-Type", "text/plain"), ("Content-Encoding", "gzip")]),
        ("https://example.com/c", b'{"title": "gamma"}', [("Content-Type", "application/json")]),
    ]
)  # fmt: skip


def run_import(db: Database, path: Path) -> tuple[Importer, ImportFailed | None]:
    importer = Importer(db, FakeClock(), source="warc", max_body_bytes=MAX_BODY, batch=2)
    try:
        importer.import_file(path)
    except ImportFailed as exc:
        return importer, exc
    return importer, None


def assert_consistent(db: Database) -> int:
    """Every stored version has exactly one handoff; returns how many versions are stored."""
    with db.transaction(write=False) as uow:
        records = uow.conn.execute(text("SELECT count(*) FROM scrape_records")).scalar_one()
        unpaired = uow.conn.execute(
            text(
                "SELECT count(*) FROM scrape_records r WHERE (SELECT count(*) FROM "
                "ingestion_handoffs h WHERE h.reference_id = r.reference_id "
                "AND h.payload_hash = r.payload_hash) <> 1"
            )
        ).scalar_one()
        orphans = uow.conn.execute(
            text(
                "SELECT count(*) FROM ingestion_handoffs h WHERE NOT EXISTS (SELECT 1 FROM "
                "scrape_records r WHERE r.reference_id = h.reference_id "
                "AND r.payload_hash = h.payload_hash)"
            )
        ).scalar_one()
    assert (unpaired, orphans) == (0, 0)
    return int(records)


def bomb(size: int) -> bytes:
    """A gzip stream of `size` zero bytes: a few KB that inflate to `size`."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 20)
    out = [packer.compress(chunk) for _ in range(size >> 20)]
    return b"".join([*out, packer.flush()])


CORPUS: dict[str, bytes] = {
    "empty": b"",
    "garbage": b"\x00\xff not an archive at all \x89PNG",
    "truncated-header": VALID[:40],
    "truncated-body": VALID[: len(VALID) // 2],
    "huge-declared-length": VALID.replace(b"Content-Length: ", b"Content-Length: 9", 1),
    "negative-length": VALID.replace(b"Content-Length: ", b"Content-Length: -", 1),
    "gzip-then-garbage": gzip.compress(VALID) + b"\x1f\x8b\x08garbage",
    "bomb-body": warc(
        [
            (
                "https://example.com/bomb",
                bomb(64 << 20),
                [("Content-Type", "text/plain"), ("Content-Encoding", "gzip")],
            )
        ]
    ),
    "bad-utf8-headers": warc(
        [
            (
                "https://example.com/\udcff".encode("utf-8", "surrogateescape").decode("latin-1"),
                b"body",
                [("Content-Type", "text/plain; charset=\xff")],
            )
        ]
    ),
    "jsonl-deep": b'{"source": "x", "url": "https://e.com/d", "body": "b", "fields": '
    + b'{"a": ' * 5000
    + b"1"
    + b"}" * 5000
    + b"}\n",
    "jsonl-bad-utf8": b'{"source": "x", "url": "https://e.com/u", "body": "\xff\xfe"}\n',
    "jsonl-nul": b'{"source": "x\\u0000", "body": "b"}\n',
    "jsonl-traversal": b'{"source": "x", "reference_id": "../../etc/passwd", "body": "b"}\n',
    "jsonl-long-line": b'{"source": "x", "url": "https://e.com/l", "body": "'
    + b"a" * (max_line_bytes(MAX_BODY) + 10)
    + b'"}\n',
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_hostile_file_imports_or_stops_cleanly(
    db: Database, tmp_path: Path, name: str
) -> None:
    suffix = ".jsonl" if name.startswith("jsonl") else ".warc"
    path = tmp_path / f"{name}{suffix}"
    path.write_bytes(CORPUS[name])
    importer, failed = run_import(db, path)
    if failed is not None:
        assert str(path) in str(failed)  # names the file (and line or offset)
    stored = assert_consistent(db)
    assert stored == importer.summary.outcomes.get("created", 0)


def test_a_bomb_is_skipped_with_its_count_not_inflated(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "bomb.warc"
    path.write_bytes(CORPUS["bomb-body"])
    importer, failed = run_import(db, path)
    assert failed is None
    assert importer.summary.skipped == {"invalid body": 1}
    assert assert_consistent(db) == 0


def test_a_reference_id_that_looks_like_a_path_is_only_an_id(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "traversal.jsonl"
    path.write_bytes(CORPUS["jsonl-traversal"])
    _, failed = run_import(db, path)
    if failed is None:  # accepted as an opaque id, or refused by validation: never a file
        with db.transaction(write=False) as uow:
            (ref,) = uow.conn.execute(text("SELECT reference_id FROM scrape_records")).scalars()
        assert ref == "../../etc/passwd"
    assert not (tmp_path / "etc").exists()


def test_an_overlong_jsonl_line_is_refused_without_reading_it_whole(
    db: Database, tmp_path: Path
) -> None:
    path = tmp_path / "long.jsonl"
    path.write_bytes(
        b'{"source": "x", "url": "https://e.com/ok", "body": "ok"}\n' + CORPUS["jsonl-long-line"]
    )
    _, failed = run_import(db, path)
    assert failed is not None
    assert f"{path}:2: line longer than" in str(failed)
    assert assert_consistent(db) == 1  # the good line before it was kept


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.data(),
    compressed=st.booleans(),
)
def test_mutated_archives_import_or_stop_cleanly(
    sqlite_url: str, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, compressed: bool
) -> None:
    raw = bytearray(gzip.compress(VALID) if compressed else VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "truncate", "splice"]))
        at = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if kind == "flip" and raw:
            raw[at] ^= data.draw(st.integers(1, 255))
        elif kind == "truncate":
            del raw[at:]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=64))
    path = tmp_path_factory.mktemp("mutant") / "mutant.warc"
    path.write_bytes(bytes(raw))
    db = Database(sqlite_url)
    try:
        importer, failed = run_import(db, path)
        if failed is not None:
            assert str(path) in str(failed)
        assert_consistent(db)
        assert importer.summary.submitted >= 0
    finally:
        db.dispose()
