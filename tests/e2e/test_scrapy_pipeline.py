"""A real Scrapy crawl (the example project, in a subprocess) of a local HTTP server serving
benchmark pages hands every page off, over the database and over the HTTP API; crawling again
creates no new work. The crawl process may not touch the network beyond 127.0.0.1: a
sitecustomize records (and refuses) every name lookup and every non-loopback connection."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from scrapy.exceptions import NotConfigured
from sqlalchemy import text

from app.db.uow import Database
from app.integrations.scrapy import HandoffError, HandoffPipeline, handoff_item, item_to_record
from tests.e2e.test_http_end_to_end import served  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "scrapy_project"
BENCHMARK = REPO.parent / "shared" / "data" / "article-extraction-benchmark"
PAGES = 20

GUARD = """
import ipaddress, os, socket
_log = os.environ["NETWORK_GUARD_LOG"]
def _refuse(what):
    with open(_log, "a") as f:
        f.write(what + "\\n")
    raise OSError("network guard: " + what)
def _numeric(host):
    text = host.decode() if isinstance(host, bytes) else str(host)
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
        return True
    except ValueError:
        return False
_gai, _ghbn, _ghbnx, _connect = (socket.getaddrinfo, socket.gethostbyname,
                                 socket.gethostbyname_ex, socket.socket.connect)
def getaddrinfo(host, *a, **k):
    if host is not None and not _numeric(host):
        _refuse(f"name lookup {host!r}")
    return _gai(host, *a, **k)
def gethostbyname(host):
    if not _numeric(host):
        _refuse(f"name lookup {host!r}")
    return _ghbn(host)
def gethostbyname_ex(host):
    if not _numeric(host):
        _refuse(f"name lookup {host!r}")
    return _ghbnx(host)
def connect(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        if not ipaddress.ip_address(str(address[0]).split("%", 1)[0]).is_loopback:
            _refuse(f"connection to {address!r}")
    return _connect(sock, address)
socket.getaddrinfo, socket.gethostbyname, socket.gethostbyname_ex = (
    getaddrinfo, gethostbyname, gethostbyname_ex)
socket.socket.connect = connect
"""


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """An HTTP server on 127.0.0.1: /index.html links PAGES benchmark pages, decompressed on
    the fly."""
    files = sorted((BENCHMARK / "html").glob("*.html.gz"))[:PAGES]
    assert len(files) == PAGES
    by_path = {f"/pages/{f.name.removesuffix('.html.gz')}.html": f for f in files}
    links = "".join(f'<li><a href="{p}">{p}</a></li>' for p in by_path)
    index = f"<!doctype html><title>index</title><ul>{links}</ul>".encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/index.html":
                body = index
            elif path in by_path:
                body = gzip.decompress(by_path[path].read_bytes())
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()


def crawl(start_url: str, tmp_path: Path, **settings: str) -> None:
    """`scrapy crawl pages` in the example project, with test settings; no network but
    loopback, which the guard checks."""
    guard = tmp_path / "guard"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "network.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HANDOFF_", "SCRAPY_"))}
    env |= {
        "PYTHONPATH": os.pathsep.join([str(guard), str(REPO)]),
        "NETWORK_GUARD_LOG": str(log),
        "TLDEXTRACT_CACHE": str(tmp_path / "tldextract"),
    }
    overrides = {
        "ROBOTSTXT_OBEY": "False",
        "TELNETCONSOLE_ENABLED": "False",
        "REMOTE_CONTROL_ENABLED": "False",  # no listening port of its own
        "MEMUSAGE_ENABLED": "False",
        "COOKIES_ENABLED": "False",  # the cookie middleware is tldextract's only user
        "AUTOTHROTTLE_ENABLED": "False",
        "LOG_LEVEL": "WARNING",
        "CONCURRENT_REQUESTS_PER_DOMAIN": "16",
        "DEPTH_LIMIT": "1",  # the index and its pages, not the links inside the articles
        "HANDOFF_BATCH_SIZE": "8",
        **settings,
    }
    args = [f"{k}={v}" for k, v in overrides.items()]
    result = subprocess.run(
        [sys.executable, "-m", "scrapy", "crawl", "pages", "-a", f"start_url={start_url}",
         *[a for s in args for a in ("-s", s)]],
        cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "ERROR" not in result.stderr, result.stderr
    assert not log.exists(), log.read_text()


def counts(db_url: str) -> tuple[int, int]:
    db = Database(db_url)
    try:
        with db.transaction(write=False) as uow:
            handoffs = uow.conn.execute(text("SELECT count(*) FROM ingestion_handoffs")).scalar()
            records = uow.conn.execute(text("SELECT count(*) FROM scrape_records")).scalar()
    finally:
        db.dispose()
    return int(handoffs or 0), int(records or 0)


def test_a_crawl_hands_every_page_off_to_the_database_and_again_creates_no_work(
    site: str, db_url: str, tmp_path: Path
) -> None:
    crawl(site, tmp_path, HANDOFF_DATABASE_URL=db_url)
    assert counts(db_url) == (PAGES + 1, PAGES + 1)  # the articles and the index page
    crawl(site, tmp_path, HANDOFF_DATABASE_URL=db_url)
    assert counts(db_url) == (PAGES + 1, PAGES + 1)


def test_a_crawl_hands_every_page_off_over_http_and_again_creates_no_work(
    site: str,
    served: tuple[str, dict[str, str]],  # noqa: F811
    tmp_path: Path,
) -> None:
    base, auth = served
    token = auth["Authorization"].removeprefix("Bearer ")

    def total() -> int:
        stats = httpx.get(f"{base}/v1/handoffs/stats", headers=auth).json()
        return sum(int(v) for v in stats["totals"].values())

    crawl(site, tmp_path, HANDOFF_URL=base, HANDOFF_TOKEN=token)
    assert total() == PAGES + 1
    crawl(site, tmp_path, HANDOFF_URL=base, HANDOFF_TOKEN=token)
    assert total() == PAGES + 1


def test_an_item_maps_onto_a_record() -> None:
    from scrapy.http import HtmlResponse, Request

    response = HtmlResponse(
        "http://127.0.0.1/a",
        status=200,
        headers={"Content-Type": "text/html", "Content-Encoding": "gzip", "X-A": "1"},
        body=b"<p>hi</p>",
        request=Request("http://127.0.0.1/a"),
    )
    item = handoff_item(response, lang="en")
    assert item["headers"] == {"Content-Type": "text/html", "X-A": "1"}
    record = item_to_record(item, source="s")
    assert record["body_base64"] == "PHA+aGk8L3A+"
    assert record["fields"] == {"lang": "en"}
    record = item_to_record(
        {"url": "http://x/", "html": "<p>", "title": "T", "fields": {"a": 1}, "source": "o"},
        source="s",
    )
    assert record == {
        "source": "o", "url": "http://x/", "body": "<p>", "fields": {"a": 1, "title": "T"},
    }  # fmt: skip


@pytest.fixture
def answers() -> Iterator[tuple[str, list[int], list[tuple[int, str]]]]:
    """A fake API on 127.0.0.1 answering the queued (status, body) pairs in turn, then 200."""
    queue: list[tuple[int, str]] = []
    seen: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            records = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["records"]
            seen.append(len(records))
            status, body = queue.pop(0) if queue else (200, "")
            if status == 200:
                body = json.dumps({"results": [{"outcome": "created"} for _ in records]})
            self.send_response(status)
            if status in (429, 503):
                self.send_header("Retry-After", "0")
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen, queue
    finally:
        server.shutdown()
        server.server_close()


def _pipeline(url: str) -> HandoffPipeline:
    pipeline = HandoffPipeline(url=url, token="t", source="s", batch_size=2, max_retries=2)
    pipeline.open_spider()
    return pipeline


def test_429_and_503_are_retried_after_retry_after_and_the_rest_flushes_on_close(
    answers: tuple[str, list[int], list[tuple[int, str]]],
) -> None:
    url, seen, queue = answers
    queue += [(429, ""), (503, "")]
    pipeline = _pipeline(url)
    for i in range(3):
        pipeline.process_item({"url": f"http://127.0.0.1/{i}", "body": "x"})
    assert seen == [2, 2, 2]  # the first batch, twice refused, then taken
    pipeline.close_spider()
    assert seen == [2, 2, 2, 1]
    assert pipeline.outcomes == {"created": 3}


def test_retries_are_bounded_and_other_refusals_raise_a_clear_error(
    answers: tuple[str, list[int], list[tuple[int, str]]],
) -> None:
    url, seen, queue = answers
    queue += [(503, "")] * 3 + [(400, json.dumps({"detail": "records.0.url: bad"}))]
    pipeline = _pipeline(url)
    pipeline.process_item({"url": "http://127.0.0.1/a", "body": "x"})
    with pytest.raises(HandoffError, match="HTTP 503"):
        pipeline.process_item({"url": "http://127.0.0.1/b", "body": "x"})
    assert seen == [2, 2, 2]  # one try and two retries
    pipeline.process_item({"url": "http://127.0.0.1/c", "body": "x"})
    with pytest.raises(HandoffError, match=r"HTTP 400 records\.0\.url: bad"):
        pipeline.process_item({"url": "http://127.0.0.1/d", "body": "x"})
    assert pipeline.outcomes == {"failed": 4}
    pipeline.close_spider()


def test_the_pipeline_needs_one_destination() -> None:
    with pytest.raises(NotConfigured):
        HandoffPipeline()
    with pytest.raises(NotConfigured):
        HandoffPipeline(url="http://127.0.0.1:1", database_url="sqlite://")
    with pytest.raises(NotConfigured):
        HandoffPipeline(url="http://127.0.0.1:1")
