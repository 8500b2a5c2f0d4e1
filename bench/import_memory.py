"""Import streams: the peak RSS of `handoff import` on a WARC of 200 MB and more.

Builds an uncompressed WARC from the 181 real pages of the article-extraction benchmark (each
page written `--copies` times under its own URL, with a marker comment so every copy is a new
version), plus a few pages padded to `--big-mb` MB to show one large record stays bounded. Then
runs `handoff import` as a child process, once on a tiny WARC (the baseline: interpreter and
libraries) and once on the big one, per engine, and reports the child's peak RSS
(`ru_maxrss`), records/s and MB/s. Prints JSON; `--out` writes it to a file.

    .venv/bin/python bench/import_memory.py --out docs/bench-import.json
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGES = REPO_ROOT.parent / "shared" / "data" / "article-extraction-benchmark" / "html"
HANDOFF = str(Path(sys.executable).with_name("handoff"))
PG_ADMIN = os.environ.get(
    "HANDOFF_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def write_warc(path: Path, pages: list[bytes], copies: int, big: int, big_mb: int) -> int:
    """Write the WARC; returns its number of response records."""
    count = 0
    with path.open("wb") as out:
        writer = WARCWriter(out, gzip=False)

        def response(url: str, body: bytes) -> None:
            headers = StatusAndHeaders(
                "200 OK",
                [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
                protocol="HTTP/1.1",
            )
            record = writer.create_warc_record(
                url, "response", payload=io.BytesIO(body), http_headers=headers
            )
            writer.write_record(record)

        for copy in range(copies):
            for n, page in enumerate(pages):
                marker = f"<!-- copy {copy} -->".encode()
                response(f"https://bench.example/{copy}/{n}", marker + page)
                count += 1
        filler = b"<p>" + b"lorem ipsum dolor sit amet " * 40 + b"</p>\n"
        for n in range(big):
            body = pages[n] + filler * (big_mb * 1024 * 1024 // len(filler))
            response(f"https://bench.example/big/{n}", body)
            count += 1
    return count


def peak_rss_of_import(url: str, warc: Path) -> dict[str, Any]:
    """Run `handoff import` in a fresh child; its peak RSS from the kernel's accounting."""
    env = {**os.environ, "HANDOFF_DATABASE_URL": url}
    subprocess.run([HANDOFF, "migrate"], env=env, check=True, capture_output=True)
    code = (
        "import resource, subprocess, sys, json, time\n"
        "t = time.perf_counter()\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "elapsed = time.perf_counter() - t\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(json.dumps({'rc': r.returncode, 'peak_kb': peak, 'seconds': elapsed,"
        " 'summary': r.stdout, 'stderr': r.stderr[-2000:]}))\n"
    )
    # A fresh parent per run: RUSAGE_CHILDREN is the max over all children ever waited for.
    probe = subprocess.run(
        [sys.executable, "-c", code, HANDOFF, "import", str(warc)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(probe.stdout)
    if result["rc"] != 0:
        raise SystemExit(f"import failed: {result['stderr']}")
    summary = json.loads(result["summary"])
    return {
        "peak_rss_mb": round(result["peak_kb"] / 1024, 1),
        "seconds": round(result["seconds"], 2),
        "records": summary["submitted"],
        "created": summary["outcomes"].get("created", 0),
    }


def engines(tmp: Path) -> list[tuple[str, str, Any]]:
    """(name, url, cleanup) for SQLite and PostgreSQL."""
    name = f"handoff_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())

    def drop() -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())

    base = PG_ADMIN.rpartition("/")[0]
    return [("sqlite", f"sqlite:///{tmp / 'bench.db'}", None), ("postgres", f"{base}/{name}", drop)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=7)
    parser.add_argument("--big", type=int, default=3, help="pages padded to --big-mb MB")
    parser.add_argument("--big-mb", type=int, default=15)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    pages = [gzip.decompress(p.read_bytes()) for p in sorted(PAGES.glob("*.html.gz"))]
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "pages": len(pages),
        "copies": args.copies,
        "big_records_mb": [args.big_mb] * args.big,
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        small, big = tmp / "small.warc", tmp / "big.warc"
        write_warc(small, pages[:5], 1, 0, 0)
        results["responses"] = write_warc(big, pages, args.copies, args.big, args.big_mb)
        size = big.stat().st_size
        results["warc_mb"] = round(size / 1024 / 1024, 1)
        baseline = peak_rss_of_import(f"sqlite:///{tmp / 'small.db'}", small)
        results["baseline_peak_rss_mb"] = baseline["peak_rss_mb"]
        for engine, url, cleanup in engines(tmp):
            try:
                run = peak_rss_of_import(url, big)
            finally:
                if cleanup is not None:
                    cleanup()
            run["records_per_s"] = round(run["records"] / run["seconds"], 1)
            run["mb_per_s"] = round(size / 1024 / 1024 / run["seconds"], 1)
            run["under_300_mb"] = run["peak_rss_mb"] < 300
            results[engine] = run
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
