"""`handoff import`: JSONL and WARC / ARC files into scrape records and their handoffs.

Files are read one record at a time and committed in batches: each batch is one transaction
holding its records and their handoffs, so a file that turns out to be corrupt half-way
leaves exactly the batches before the bad record. A bad file stops the whole import (the
files after it are not read): an import is one request, and a partial run is easy to see and
re-run, since re-importing is idempotent (every pair already stored is a `duplicate`).

WARC mapping: a `response` with HTTP headers becomes a version of its WARC-Target-URI at its
WARC-Date, its payload hashed by Handoff (WARC-Payload-Digest is only used to find the
original of a revisit). A `revisit` means the same payload was seen again at its URL and
date: it resolves to the original response (by WARC-Refers-To-Target-URI and -Date, else by
payload digest), re-read from the file at its offset, and hands off as that URL's version
with the original payload. `request`, `warcinfo`, `metadata` and `resource` records are
counted and skipped (a `resource` is not an HTTP capture: there is no status or headers).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from app.db.uow import Database
from app.domain.clock import Clock
from app.domain.errors import InvalidInput
from app.domain.records import PreparedRecord, ScrapeSubmission, prepare
from app.ingest.warc import ArchiveError, ArchiveRecord, iter_records, read_at
from app.services import scrape_storage

#: A batch is also committed once its bodies reach this size, so memory stays bounded.
BATCH_BYTES = 8 * 1024 * 1024
#: How many originals the revisit index remembers (oldest forgotten first): bounded memory.
INDEX_LIMIT = 200_000
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


class ImportFailed(Exception):
    """A file that cannot be imported: names the file and where (line or record offset)."""


@dataclass
class ImportSummary:
    files: list[str] = field(default_factory=list)
    records: Counter[str] = field(default_factory=Counter)
    submitted: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    revisits_resolved: int = 0
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "records": dict(self.records),
            "submitted": self.submitted,
            "outcomes": dict(self.outcomes),
            "revisits_resolved": self.revisits_resolved,
            "skipped": dict(self.skipped),
            **({"error": self.error} if self.error else {}),
        }


@dataclass(frozen=True, slots=True)
class _Original:
    path: Path
    offset: int


class Importer:
    """One import run over several files; the revisit index spans the run's files."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        source: str,
        max_body_bytes: int,
        batch: int = 100,
        actor: str = "client:import",
    ) -> None:
        self.db, self.clock, self.source, self.actor = db, clock, source, actor
        self.max_body_bytes, self.batch = max_body_bytes, batch
        self.summary = ImportSummary()
        self._by_target: OrderedDict[tuple[str, str], _Original] = OrderedDict()
        self._by_digest: OrderedDict[str, _Original] = OrderedDict()
        self._chunk: list[PreparedRecord] = []
        self._pairs: set[tuple[str, str]] = set()  # the pairs in `_chunk`
        self._chunk_bytes = 0

    def import_file(self, path: Path, progress: Callable[[int], None] = lambda _: None) -> None:
        """Import one file; raises ImportFailed (after committing the batches before it)."""
        self.summary.files.append(str(path))
        try:
            if _is_archive(path):
                for record in iter_records(path, max_body_bytes=self.max_body_bytes):
                    self._archive_record(path, record)
                    progress(record.position)
            else:
                for number, position, sub in _jsonl(path, max_line_bytes(self.max_body_bytes)):
                    self.summary.records["jsonl"] += 1
                    self._add(sub, where=f"{path}:{number}")
                    progress(position)
        except ArchiveError as exc:
            self.flush()  # the records before the bad one are whole: keep them
            raise ImportFailed(str(exc)) from exc
        except ImportFailed:
            self.flush()
            raise
        self.flush()

    def flush(self) -> None:
        if not self._chunk:
            return
        chunk, self._chunk = self._chunk, []
        self._pairs.clear()
        self._chunk_bytes = 0
        now = self.clock.now()
        results = scrape_storage.submit(self.db, chunk, now=now, actor=self.actor)
        self.summary.submitted += len(results)
        self.summary.outcomes.update(r.outcome.value for r in results)

    def _add(
        self, sub: ScrapeSubmission, *, where: str | None = None, raw_body: bytes | None = None
    ) -> None:
        """Queue one submission. A JSONL line (`where`) that does not prepare stops the
        import, as `submit` would; an archive record is the crawler's, so it is skipped."""
        try:
            prepared = prepare(
                sub, now=self.clock.now(), max_body_bytes=self.max_body_bytes, raw_body=raw_body
            )
        except InvalidInput as exc:
            if where is not None:
                raise ImportFailed(f"{where}: {exc.message}") from exc
            self.summary.skipped[f"invalid {exc.field or 'record'}"] += 1
            return
        pair = (prepared.reference_id, prepared.payload_hash)
        if pair in self._pairs:  # seen earlier in this batch (a revisit, say): nothing new
            self.summary.submitted += 1
            self.summary.outcomes["duplicate"] += 1
            return
        self._pairs.add(pair)
        self._chunk.append(prepared)
        self._chunk_bytes += len(prepared.body)
        if len(self._chunk) >= self.batch or self._chunk_bytes >= BATCH_BYTES:
            self.flush()

    def _archive_record(self, path: Path, record: ArchiveRecord) -> None:
        self.summary.records[record.rec_type] += 1
        if record.rec_type == "response":
            self._response(path, record)
        elif record.rec_type == "revisit":
            self._revisit(path, record)
        else:
            self.summary.skipped[f"{record.rec_type} record"] += 1

    def _response(self, path: Path, record: ArchiveRecord) -> None:
        if record.too_large:
            self.summary.skipped["body larger than max_body_bytes"] += 1
            return
        sub = self._submission(record, url=record.url, date=record.date)
        if sub is None:
            return
        original = _Original(path, record.offset)
        if record.url and record.date:
            _remember(self._by_target, (record.url, record.date), original)
        if record.payload_digest:
            _remember(self._by_digest, record.payload_digest, original)
        self._add(sub, raw_body=record.body)

    def _revisit(self, path: Path, record: ArchiveRecord) -> None:
        original = None
        if record.refers_to_uri and record.refers_to_date:
            original = self._by_target.get((record.refers_to_uri, record.refers_to_date))
        if original is None and record.payload_digest:
            original = self._by_digest.get(record.payload_digest)
        if original is None:
            self.summary.skipped["revisit of a response not in the import"] += 1
            return
        try:
            found = read_at(original.path, original.offset, max_body_bytes=self.max_body_bytes)
        except ArchiveError as exc:  # it was read once already: the file changed under us
            raise ImportFailed(f"{path}: revisit at offset {record.offset}: {exc}") from exc
        sub = self._submission(found, url=record.url, date=record.date)
        if sub is None:
            return
        self.summary.revisits_resolved += 1
        self._add(sub, raw_body=found.body)

    def _submission(
        self, record: ArchiveRecord, *, url: str | None, date: str | None
    ) -> ScrapeSubmission | None:
        if record.body is None:
            self.summary.skipped["response without HTTP headers"] += 1
            return None
        try:
            return ScrapeSubmission(
                source=self.source,
                url=url,
                fetched_at=_warc_date(date),
                status=record.status,
                headers=record.headers,
                body="",  # the body travels as bytes beside the submission: see `_add`
            )
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"]) or "record"
            self.summary.skipped[f"invalid {where}"] += 1
            return None


def _is_archive(path: Path) -> bool:
    """JSONL by its suffix, else by its content: a JSON object starts with `{`; anything
    else (gzip, `WARC/`, an ARC `filedesc://` line) is read as an archive."""
    if path.name.lower().endswith(_JSONL_SUFFIXES):
        return False
    with path.open("rb") as head:
        return not head.read(4096).lstrip().startswith(b"{")


def _remember(index: OrderedDict[Any, _Original], key: Any, value: _Original) -> None:
    index[key] = value
    index.move_to_end(key)
    if len(index) > INDEX_LIMIT:
        index.popitem(last=False)


def _warc_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def max_line_bytes(max_body_bytes: int) -> int:
    """The longest JSONL line read: a body in base64 (4/3) or JSON-escaped, plus the rest."""
    return 4 * max_body_bytes + 1024 * 1024


def _jsonl(path: Path, max_line: int) -> Iterator[tuple[int, int, ScrapeSubmission]]:
    """(line number, bytes read so far, submission) per non-blank line; a bad line, or one
    longer than `max_line` bytes (read no further: memory stays bounded), raises ImportFailed."""
    position = 0
    with path.open("rb") as lines:
        for number, line in enumerate(iter(lambda: lines.readline(max_line + 1), b""), start=1):
            if len(line) > max_line:
                raise ImportFailed(f"{path}:{number}: line longer than {max_line} bytes")
            position += len(line)
            if not line.strip():
                continue
            try:
                yield number, position, ScrapeSubmission.model_validate_json(line)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "record"
                raise ImportFailed(f"{path}:{number}: {where}: {first['msg']}") from exc
