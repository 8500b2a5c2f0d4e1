"""Reading WARC / WARC.gz / ARC / ARC.gz files with warcio, one record at a time.

Only the transfer encoding is undone here (chunked); the HTTP payload keeps its
Content-Encoding so that Handoff's own capped decoder (`app.domain.payload.decode_body`)
undoes it: warcio's decompressing stream has no output cap. Raw payloads are read up to a
cap too, so memory stays bounded whatever the file holds.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from warcio.archiveiterator import ArchiveIterator
from warcio.bufferedreaders import ChunkedDataReader
from warcio.exceptions import ArchiveLoadFailed

from app.domain.numbers import parse_count

#: HTTP headers describing the stored bytes rather than the payload; dropped once undone.
_FRAMING_HEADERS = frozenset({"transfer-encoding", "content-length"})


class ArchiveError(Exception):
    """A truncated or corrupt archive: names the file and the offset of the bad record."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}: record at offset {offset}: {reason}")
        self.path, self.offset, self.reason = path, offset, reason


@dataclass(frozen=True, slots=True)
class ArchiveRecord:
    """One record. `body` is the HTTP payload (dechunked, still content-encoded) for
    responses with HTTP headers; None otherwise or when it is larger than the cap."""

    rec_type: str
    offset: int
    url: str | None
    date: str | None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    too_large: bool = False
    payload_digest: str | None = None
    refers_to_uri: str | None = None
    refers_to_date: str | None = None
    #: How many bytes of the file have been read once this record was parsed.
    position: int = 0


#: What warcio raises on malformed input. Besides its own ArchiveLoadFailed and the value,
#: EOF and I/O errors, some damage reaches code that never expected it (a truncated header
#: line gives an AttributeError deep in its record loader): all of it is a corrupt record.
_MALFORMED = (
    ArchiveLoadFailed,
    ValueError,
    EOFError,
    OSError,
    AttributeError,
    TypeError,
    IndexError,
    KeyError,
    zlib.error,
)


def iter_records(path: Path, *, max_body_bytes: int) -> Iterator[ArchiveRecord]:
    """Every record of `path`, in order. Raises ArchiveError on a corrupt record."""
    with path.open("rb") as raw:
        yield from _records(path, raw, max_body_bytes=max_body_bytes)


def read_at(path: Path, offset: int, *, max_body_bytes: int) -> ArchiveRecord:
    """The one record that starts at `offset` (to re-read a revisit's original)."""
    with path.open("rb") as raw:
        raw.seek(offset)
        for record in _records(path, raw, max_body_bytes=max_body_bytes, base=offset):
            return record
    raise ArchiveError(path, offset, "no record at this offset")


def _records(
    path: Path, raw: IO[bytes], *, max_body_bytes: int, base: int = 0
) -> Iterator[ArchiveRecord]:
    iterator = ArchiveIterator(raw, arc2warc=True)
    next_start = base  # where the record being read starts, as far as we know

    def where() -> int:  # reads the record to its end: call once its payload is read
        return base + int(iterator.get_record_offset())

    while True:
        try:
            record = next(iterator)
            parsed = _parse(path, record, where, max_body_bytes)
            # A gzip member holding several records has no length of its own (negative):
            # the next record is then only known to be inside the member at `offset`.
            next_start = parsed.offset + max(0, int(iterator.get_record_length()))
        except StopIteration:
            return
        except ArchiveError:
            raise
        except _MALFORMED as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            if not isinstance(exc, (ArchiveLoadFailed, ValueError, EOFError, OSError)):
                reason = f"unreadable record ({type(exc).__name__}: {reason})"
            raise ArchiveError(path, next_start, reason) from exc
        yield _with_position(parsed, raw.tell())


def _with_position(record: ArchiveRecord, position: int) -> ArchiveRecord:
    return ArchiveRecord(
        **{name: getattr(record, name) for name in ArchiveRecord.__slots__ if name != "position"},
        position=position,
    )


def _parse(path: Path, record: Any, where: Callable[[], int], max_body_bytes: int) -> ArchiveRecord:
    rec = record.rec_headers
    declared = rec.get_header("Content-Length")
    if declared is None or parse_count(declared.strip()) is None:
        raise ArchiveError(path, where(), f"invalid record Content-Length {declared!r}")
    common: dict[str, Any] = {
        "rec_type": record.rec_type,
        "url": rec.get_header("WARC-Target-URI"),
        "date": rec.get_header("WARC-Date"),
        "payload_digest": rec.get_header("WARC-Payload-Digest"),
        "refers_to_uri": rec.get_header("WARC-Refers-To-Target-URI"),
        "refers_to_date": rec.get_header("WARC-Refers-To-Date"),
    }
    http = record.http_headers
    if record.rec_type not in ("response", "revisit") or http is None:
        return ArchiveRecord(**common, offset=where())
    headers: dict[str, str] = {}
    for name, value in http.headers:
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    try:
        status = int(http.get_statuscode())
    except (TypeError, ValueError):
        status = None
    if status is not None and not 100 <= status <= 599:
        status = None
    if record.rec_type == "revisit":
        return ArchiveRecord(
            **common, offset=where(), status=status, headers=_payload_headers(headers)
        )
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    stream = (
        ChunkedDataReader(record.raw_stream, decomp_type=None) if chunked else record.raw_stream
    )
    body = stream.read(max_body_bytes + 1)
    offset = where()
    if len(body) > max_body_bytes:
        return ArchiveRecord(**common, offset=offset, status=status, too_large=True)
    length = parse_count(headers.get("content-length", "").strip())
    if not chunked and length is not None and length != len(body):
        raise ArchiveError(
            path,
            offset,
            f"HTTP Content-Length {length} but the record holds {len(body)} payload bytes",
        )
    return ArchiveRecord(
        **common, offset=offset, status=status, headers=_payload_headers(headers), body=body
    )


def _payload_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in _FRAMING_HEADERS}
