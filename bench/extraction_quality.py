"""Extraction quality and cost: token P/R/F1 on the article-extraction benchmark, and pages/s.

Quality: for each of the benchmark's pages (`../shared/data/article-extraction-benchmark/`),
`app.ingest.extract.extract` of the page as a `text/html` scrape record is scored against the
page's `articleBody` in `ground-truth.json`. Tokens: lowercased text, punctuation stripped,
split on whitespace; precision/recall are multiset (bag-of-tokens) overlaps. The headline is
the benchmark's usual definition: P/R/F1 per page, averaged over pages (macro); micro (summed
over all pages) is reported too.

Throughput, same pages, same process, `--repeat` passes each, best pass kept:
* bare: `trafilatura.bare_extraction` of the decoded page with the production options;
* full: `IngestHandler` on the scrape record: decoding, extraction, fallback and the document
  store sink's write into a migrated SQLite database (one transaction per page, as the worker does).
Overhead = 1 - full / bare (pages/s).

    .venv/bin/python bench/extraction_quality.py --out docs/bench-extraction.json
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import platform
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trafilatura

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from app.db import migrations  # noqa: E402
from app.db.uow import Database  # noqa: E402
from app.domain.clock import SystemClock  # noqa: E402
from app.domain.models import ScrapeRecord  # noqa: E402
from app.ingest.extract import TRAFILATURA_OPTIONS, extract  # noqa: E402
from app.ingest.pipeline import IngestHandler  # noqa: E402
from app.ingest.sinks import DocumentStoreSink  # noqa: E402

DATA = REPO_ROOT.parent / "shared" / "data" / "article-extraction-benchmark"
MIGRATIONS_DIR = REPO_ROOT / "db" / "migrations"
MAX_DECODED = 64 * 1024 * 1024
_PUNCT = re.compile(r"[^\w\s]")  # any punctuation or symbol, ASCII or not


def tokens(text: str) -> Counter[str]:
    return Counter(_PUNCT.sub(" ", text.lower()).split())


def score(extracted: str, truth: str) -> tuple[int, int, int]:
    """(overlap, extracted tokens, truth tokens) as multisets."""
    got, want = tokens(extracted), tokens(truth)
    return sum((got & want).values()), sum(got.values()), sum(want.values())


def prf(overlap: int, n_got: int, n_want: int) -> tuple[float, float, float]:
    p = overlap / n_got if n_got else (1.0 if not n_want else 0.0)
    r = overlap / n_want if n_want else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def load_pages(data: Path) -> list[tuple[str, bytes, str, str]]:
    truth = json.loads((data / "ground-truth.json").read_text())
    pages = []
    for page_id in sorted(truth):
        body = gzip.decompress((data / "html" / f"{page_id}.html.gz").read_bytes())
        pages.append((page_id, body, truth[page_id]["articleBody"], truth[page_id]["url"]))
    return pages


def record_of(i: int, page_id: str, body: bytes, url: str) -> ScrapeRecord:
    now = datetime.now(UTC)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    return ScrapeRecord(
        id=i, reference_id=f"bench:{page_id}", payload_hash=digest, source="bench", url=url,
        fetched_at=now, http_status=200, content_type="text/html; charset=utf-8", headers={},
        body=body, fields=None, created_at=now,
    )  # fmt: skip


def quality(records: Sequence[ScrapeRecord], truths: Sequence[str]) -> dict[str, Any]:
    per_page, totals = [], [0, 0, 0]
    for record, truth in zip(records, truths, strict=True):
        counts = score(extract(record, max_decoded_bytes=MAX_DECODED).text, truth)
        per_page.append(prf(*counts))
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
    macro = [sum(page[k] for page in per_page) / len(per_page) for k in range(3)]
    micro = prf(*totals)
    worst = sorted(range(len(per_page)), key=lambda i: per_page[i][2])[:5]
    return {
        "pages": len(per_page),
        "headline": "macro: per-page P/R/F1 averaged over pages",
        "macro": dict(zip(("precision", "recall", "f1"), macro, strict=True)),
        "micro": dict(zip(("precision", "recall", "f1"), micro, strict=True)),
        "worst_pages": [
            {"reference_id": records[i].reference_id, "f1": per_page[i][2]} for i in worst
        ],
    }


def best_rate(run: Callable[[], None], n: int, repeat: int) -> float:
    rates = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        rates.append(n / (time.perf_counter() - start))
    return max(rates)


def throughput(records: Sequence[ScrapeRecord], repeat: int) -> dict[str, Any]:
    htmls = [r.body.decode("utf-8") for r in records]

    def bare() -> None:
        for html, record in zip(htmls, records, strict=True):
            trafilatura.bare_extraction(
                html, url=record.url, with_metadata=True, **TRAFILATURA_OPTIONS
            )

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        migrations.apply(url, MIGRATIONS_DIR)
        db = Database(url)
        handler = IngestHandler(
            [DocumentStoreSink(db, SystemClock())], max_decoded_bytes=MAX_DECODED
        )

        def full() -> None:
            for record in records:
                document = handler.document(record)
                for sink in handler.sinks:
                    sink.deliver(document, None)

        bare_rate = best_rate(bare, len(records), repeat)
        full_rate = best_rate(full, len(records), repeat)
        db.engine.dispose()
    return {
        "repeat": repeat,
        "bare_pages_per_s": bare_rate,
        "full_pages_per_s": full_rate,
        "overhead": 1 - full_rate / bare_rate,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    pages = load_pages(args.data)
    records = [record_of(i, pid, body, url) for i, (pid, body, _, url) in enumerate(pages)]
    result = {
        "trafilatura": trafilatura.__version__,
        "options": TRAFILATURA_OPTIONS,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "quality": quality(records, [truth for _, _, truth, _ in pages]),
        "throughput": throughput(records, args.repeat),
        "aims": {"f1": 0.95, "overhead": 0.20},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
