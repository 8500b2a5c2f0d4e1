"""Scrape-sync: fetching URLs behind the SSRF guard, then storing and handing off what arrived.

Network policy of these tests: the only server ever reached is a local one on 127.0.0.1. The
`connections` fixture records every socket connect the process makes and lets through only
those to 127.0.0.1, so a guard failure shows up as a recorded attempt, never as traffic.
"""

from __future__ import annotations

import gzip
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.db.uow import Database
from app.domain.clock import FakeClock, SystemClock
from app.domain.payload import payload_hash
from app.domain.ssrf import parse_networks
from app.domain.tokens import Scope
from app.services import scrape_sync, tokens
from app.services.guarded_http import GuardedTransport
from app.services.scrape_sync import FetchError, Page, SyncConfig, UrlResult
from app.settings import Settings

LOCAL = "127.0.0.1"
ALLOW_LOCAL = ["127.0.0.1/32"]


# -- a local site ---------------------------------------------------------------------------


@dataclass
class Site:
    base: str
    port: int
    pages: dict[str, bytes] = field(default_factory=dict)
    seen: list[tuple[str, str]] = field(default_factory=list)  # (path, Host header)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


class _Handler(BaseHTTPRequestHandler):
    site: Site

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self.site.seen.append((parts.path, self.headers.get("Host", "")))
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        route = parts.path.split("/")[1]
        handler: Callable[[str, dict[str, str]], None] = getattr(self, f"_{route}", self._page)
        handler(parts.path, query)

    def _send(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _page(self, path: str, _: dict[str, str]) -> None:
        body = self.site.pages.get(path)
        if body is None:
            self._send(404, b"no such page", Content_Type="text/plain")
        else:
            self._send(200, body, Content_Type="text/html; charset=utf-8")

    def _host(self, _: str, __: dict[str, str]) -> None:
        self._send(200, self.headers.get("Host", "").encode(), Content_Type="text/plain")

    def _gzip(self, _: str, query: dict[str, str]) -> None:
        raw = b"\0" * int(query["size"]) if "size" in query else b"<p>compressed</p>"
        self._send(200, gzip.compress(raw), Content_Type="text/html", Content_Encoding="gzip")

    def _big(self, _: str, query: dict[str, str]) -> None:
        size = int(query.get("size", "5000"))
        if "undeclared" in query:  # no Content-Length: the body ends when the connection does
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            for _chunk in range(size // 500):
                self.wfile.write(b"x" * 500)
            return
        self._send(200, b"x" * size, Content_Type="text/plain")

    def _slow(self, _: str, __: dict[str, str]) -> None:
        self.site.release.wait(10)  # released when the test ends; the client gives up first
        self._send(200, b"late", Content_Type="text/plain")

    def _redirect(self, _: str, query: dict[str, str]) -> None:
        self._send(302, b"", Location=query["to"])

    def _hop(self, path: str, _: dict[str, str]) -> None:
        left = int(path.rsplit("/", 1)[1])
        self._send(302, b"", Location=f"/hop/{left - 1}" if left > 1 else "/page")


@contextmanager
def serving(tls: ssl.SSLContext | None = None) -> Iterator[Site]:
    """An HTTP(S) server on 127.0.0.1 (the only place these tests fetch from)."""

    class Handler(_Handler):  # a class per server: the site is a class attribute
        pass

    server = ThreadingHTTPServer((LOCAL, 0), Handler)
    port = int(server.server_address[1])
    Handler.site = site = Site(base=f"{'https' if tls else 'http'}://{LOCAL}:{port}", port=port)
    site.pages["/page"] = b"<p>hello</p>"
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield site
    finally:
        site.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def site() -> Iterator[Site]:
    with serving() as running:
        yield running


@dataclass
class Tls:
    site: Site
    client: ssl.SSLContext  # trusts the site's certificate, issued for the name sni.test
    server_names: list[str | None]  # the SNI each handshake asked for


@pytest.fixture
def tls_site(tmp_path: Path) -> Iterator[Tls]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate for `sni.test` only."""
    # The openssl command (Debian's base system has it) makes the certificate; without it
    # this test fails rather than skips, so CI cannot pass it silently.
    assert shutil.which("openssl"), "the openssl command is needed to make the test certificate"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=sni.test", "-addext", "subjectAltName=DNS:sni.test",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    names: list[str | None] = []
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)

    def record_sni(_: ssl.SSLObject, name: str | None, __: ssl.SSLContext) -> None:
        names.append(name)

    server.sni_callback = record_sni
    with serving(server) as running:
        yield Tls(running, ssl.create_default_context(cafile=str(cert)), names)


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every address this process tries to connect a socket to. Only 127.0.0.1 is let through:
    anything else fails in the test, so a guard bug can never send traffic anywhere."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        attempts.append(address)
        if not (isinstance(address, tuple) and address[0] == LOCAL):
            raise OSError(f"test network policy: no connection to {address!r}")
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        attempts.append(address)
        raise OSError(f"test network policy: no connect_ex to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return attempts


def resolver(answers: dict[str, list[str]]) -> Callable[..., list[tuple[Any, ...]]]:
    """A getaddrinfo answering for made-up names (so no test needs real DNS)."""

    def getaddrinfo(host: str, port: int, *_: Any, **__: Any) -> list[tuple[Any, ...]]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in answers[host]
        ]

    return getaddrinfo


def config(**changes: Any) -> SyncConfig:
    base = SyncConfig(
        connect_timeout=2.0,
        read_timeout=2.0,
        deadline=10.0,
        max_redirects=3,
        max_response_bytes=4096,
        max_body_bytes=1 << 20,
        concurrency=4,
    )
    return SyncConfig(**{**{f: getattr(base, f) for f in base.__slots__}, **changes})


def fetch(
    *urls: str,
    allow: list[str] | None = None,
    answers: dict[str, list[str]] | None = None,
    **changes: Any,
) -> list[Page | UrlResult]:
    cfg = config(allow=parse_networks(allow or []), **changes)
    transport = GuardedTransport(cfg.allow, resolver=resolver(answers) if answers else None)
    return scrape_sync.fetch_all(list(urls), cfg, clock=FakeClock(), transport=transport)


def failure(result: Page | UrlResult) -> tuple[FetchError | None, str]:
    assert isinstance(result, UrlResult), f"expected a failure, got {result}"
    return result.error, result.message or ""


# -- the guard, at the fetch layer (no database) --------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "[::1]",
        "[fe80::1]",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 - an address under test: Linux would route it to this host
        "[::ffff:127.0.0.1]",
        "[::ffff:a00:1]",
        "[fd00:ec2::254]",
        "2130706433",  # 127.0.0.1 as one decimal number
        "0x7f.0.0.1",  # hexadecimal
        "0177.0.0.1",  # octal: httpx refuses to parse it; nothing is fetched either way
        "127.1",
    ],
)
def test_internal_addresses_are_refused_without_opening_a_connection(
    host: str, site: Site, connections: list[Any]
) -> None:
    (result,) = fetch(f"http://{host}:{site.port}/page")
    error, message = failure(result)
    assert error in (FetchError.REFUSED, FetchError.INVALID_URL)
    if error is FetchError.REFUSED:
        assert message.startswith("refused by the SSRF guard")
    assert connections == []
    assert site.seen == []


def test_a_listening_local_server_is_still_refused_without_the_allow_list(
    site: Site, connections: list[Any]
) -> None:
    (result,) = fetch(site.url("/page"))
    assert failure(result) == (
        FetchError.REFUSED,
        "refused by the SSRF guard: 127.0.0.1 is a loopback address",
    )
    assert connections == []


def test_a_name_resolving_to_loopback_is_refused(site: Site, connections: list[Any]) -> None:
    (result,) = fetch(f"http://localhost:{site.port}/page")
    error, message = failure(result)
    assert error is FetchError.REFUSED
    assert "localhost resolves to" in message
    assert "loopback" in message
    assert connections == []


def test_a_name_with_any_internal_address_is_refused(connections: list[Any]) -> None:
    answers = {"intranet.test": ["10.0.0.5"], "mixed.test": ["93.184.215.14", "10.0.0.5"]}
    results = fetch("http://intranet.test/", "https://mixed.test/", answers=answers)
    for result in results:
        error, message = failure(result)
        assert error is FetchError.REFUSED
        assert "10.0.0.5 is a private address" in message
    assert connections == []


def test_the_connection_goes_to_the_vetted_address_with_the_host_name_kept(
    site: Site, connections: list[Any]
) -> None:
    # DNS rebinding: the name answers 127.0.0.1 once, then a private address. Only one lookup
    # happens, and the socket connects to the address that lookup returned and the guard judged.
    calls: list[str] = []
    first = resolver({"rebind.test": ["127.0.0.1"]})
    then = resolver({"rebind.test": ["10.0.0.1"]})

    def rebinding(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        calls.append(host)
        return (first if len(calls) == 1 else then)(host, port, *args, **kwargs)

    cfg = config(allow=parse_networks(ALLOW_LOCAL))
    transport = GuardedTransport(cfg.allow, resolver=rebinding)
    (page,) = scrape_sync.fetch_all(
        [f"http://rebind.test:{site.port}/host"], cfg, clock=FakeClock(), transport=transport
    )
    assert isinstance(page, Page)
    assert page.body == f"rebind.test:{site.port}".encode()  # the Host header kept the name
    assert calls == ["rebind.test"]
    assert connections == [(LOCAL, site.port)]


def test_https_keeps_the_host_name_for_sni_and_the_certificate_check(
    tls_site: Tls, connections: list[Any]
) -> None:
    # The socket is pinned to the vetted 127.0.0.1, yet TLS still speaks to `sni.test`: the
    # server is asked for that name, and its certificate (valid for that name only) verifies.
    port = tls_site.site.port
    transport = GuardedTransport(
        parse_networks(ALLOW_LOCAL),
        resolver=resolver({"sni.test": [LOCAL]}),
        ssl_context=tls_site.client,
    )
    (page,) = scrape_sync.fetch_all(
        [f"https://sni.test:{port}/host"], config(), clock=FakeClock(), transport=transport
    )
    assert isinstance(page, Page)
    assert page.body == f"sni.test:{port}".encode()
    assert tls_site.server_names == ["sni.test"]
    assert connections == [(LOCAL, port)]


def test_https_to_the_address_itself_fails_the_certificate_check(tls_site: Tls) -> None:
    transport = GuardedTransport(parse_networks(ALLOW_LOCAL), ssl_context=tls_site.client)
    (result,) = scrape_sync.fetch_all(
        [tls_site.site.url("/page")], config(), clock=FakeClock(), transport=transport
    )
    error, message = failure(result)
    assert error is FetchError.CONNECTION_FAILED
    assert "CERTIFICATE_VERIFY_FAILED" in message


@pytest.mark.parametrize(
    ("target", "named"),
    [
        ("http://10.0.0.1/secret", "10.0.0.1 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[::1]:{port}/page", "::1 is a loopback address"),
        ("http://192.168.1.1:{port}/", "192.168.1.1 is a private address"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("ftp://127.0.0.1/", "scheme 'ftp'"),
        ("http://user:secret@127.0.0.1:{port}/page", "credentials"),
    ],
)
def test_a_redirect_to_a_refused_target_is_refused(
    target: str, named: str, site: Site, connections: list[Any]
) -> None:
    to = target.format(port=site.port)
    (result,) = fetch(site.url(f"/redirect?to={to}"), allow=ALLOW_LOCAL)
    error, message = failure(result)
    assert error is FetchError.REFUSED
    assert named in message
    assert {address[0] for address in connections} == {LOCAL}
    assert [path for path, _ in site.seen] == ["/redirect"]


def test_redirects_are_followed_up_to_the_limit_and_each_hop_is_fetched(site: Site) -> None:
    (page,) = fetch(site.url("/hop/3"), allow=ALLOW_LOCAL, max_redirects=3)
    assert isinstance(page, Page)
    assert (page.url, page.final_url) == (site.url("/hop/3"), site.url("/page"))
    assert page.body == b"<p>hello</p>"
    (over,) = fetch(site.url("/hop/3"), allow=ALLOW_LOCAL, max_redirects=2)
    assert failure(over) == (FetchError.TOO_MANY_REDIRECTS, "more than 2 redirects")


def test_a_silent_server_times_out_without_failing_the_others(site: Site) -> None:
    slow, page = fetch(site.url("/slow"), site.url("/page"), allow=ALLOW_LOCAL, read_timeout=0.3)
    assert failure(slow) == (FetchError.TIMEOUT, "the server sent nothing for 0.3 s")
    assert isinstance(page, Page)
    assert page.status == 200


def test_bodies_over_the_limit_are_refused_declared_or_streamed(site: Site) -> None:
    declared, streamed, small = fetch(
        site.url("/big?size=5000"),
        site.url("/big?size=5000&undeclared=1"),
        site.url("/big?size=4000&undeclared=1"),
        allow=ALLOW_LOCAL,
        max_response_bytes=4096,
    )
    assert failure(declared) == (FetchError.TOO_LARGE, "the response declares 5000 bytes (> 4096)")
    assert failure(streamed) == (FetchError.TOO_LARGE, "the response is larger than 4096 bytes")
    assert isinstance(small, Page)
    assert len(small.body) == 4000


def test_a_closed_port_is_a_connection_failure(connections: list[Any]) -> None:
    with socket.socket() as probe:  # a port nothing listens on once this socket is closed
        probe.bind((LOCAL, 0))
        port = probe.getsockname()[1]
    (result,) = fetch(f"http://{LOCAL}:{port}/", allow=ALLOW_LOCAL)
    assert failure(result)[0] is FetchError.CONNECTION_FAILED


def test_an_unresolvable_name_is_a_connection_failure(connections: list[Any]) -> None:
    (result,) = fetch("http://nowhere.test/", answers={})
    error, message = failure(result)
    assert error is FetchError.CONNECTION_FAILED
    assert "cannot resolve nowhere.test" in message
    assert connections == []


def test_a_compressed_page_is_stored_decoded_and_hashes_like_the_plain_one(site: Site) -> None:
    fetched = fetch(site.url("/gzip"), site.url("/gzip?size=2000000"), allow=ALLOW_LOCAL)
    page, bomb = scrape_sync.prepare(
        "site", fetched, None, config=config(max_body_bytes=1 << 20), now=FakeClock().now()
    )
    assert page.record is not None
    assert page.record.body == b"<p>compressed</p>"
    assert "content-encoding" not in page.record.headers
    assert page.record.payload_hash == payload_hash(b"<p>compressed</p>", "text/html", {})
    assert (bomb.error, bomb.record) == (FetchError.TOO_LARGE, None)
    assert bomb.message == f"body: decoded body is larger than {1 << 20} bytes"


# -- the route, on both engines ------------------------------------------------------------


def make_token(db_url: str, *scopes: Scope) -> str:
    db = Database(db_url)
    try:
        _, secret = db.run(lambda uow: tokens.create(uow, "tests", scopes, now=SystemClock().now()))
    finally:
        db.dispose()
    return secret


@pytest.fixture
def api(db_url: str) -> Iterator[Callable[..., TestClient]]:
    """Build the app (with an admin token on every request) from settings changes."""
    clients: list[TestClient] = []

    def build(**changes: Any) -> TestClient:
        settings = Settings(database_url=db_url, inline_ingestion=True, **changes)
        headers = {"Authorization": f"Bearer {make_token(db_url, Scope.ADMIN)}"}
        client = TestClient(create_app(settings), headers=headers)
        clients.append(client.__enter__())
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


def total_handoffs(client: TestClient) -> int:
    return sum(client.get("/v1/handoffs/stats").json()["totals"].values())


def test_synced_pages_are_stored_and_handed_off_and_unchanged_ones_are_duplicates(
    api: Callable[..., TestClient], site: Site, connections: list[Any]
) -> None:
    client = api(sync_allow_networks=ALLOW_LOCAL, sync_read_timeout_seconds=0.3)
    body = {"source": "site", "urls": [site.url("/page"), site.url("/gone"), site.url("/slow")]}
    page, gone, slow = client.post("/v1/scraping/sync", json=body).json()["results"]

    assert page["ok"] is True
    assert (page["status"], page["outcome"], page["error"]) == (200, "created", None)
    assert page["reference_id"] == f"site:http://127.0.0.1:{site.port}/page"
    detail = client.get(f"/v1/handoffs/{page['handoff_id']}").json()
    assert detail["handoff"]["state"] == "succeeded"  # ingested by the inline worker
    # A 404 is what the site answered: stored and handed off with its status.
    assert (gone["ok"], gone["status"], gone["outcome"]) == (True, 404, "created")
    assert (slow["ok"], slow["error"], slow["handoff_id"]) == (False, "timeout", None)
    assert total_handoffs(client) == 2

    again = client.post("/v1/scraping/sync", json=body).json()["results"]
    assert [r["outcome"] for r in again[:2]] == ["duplicate", "duplicate"]
    assert again[0]["handoff_id"] == page["handoff_id"]
    assert total_handoffs(client) == 2
    assert {address[0] for address in connections} == {LOCAL}


def test_changed_content_is_a_new_version_and_reference_ids_are_honoured(
    api: Callable[..., TestClient], site: Site
) -> None:
    client = api(sync_allow_networks=ALLOW_LOCAL)
    body = {"source": "site", "urls": [site.url("/page")], "reference_ids": ["product-1"]}
    (first,) = client.post("/v1/scraping/sync", json=body).json()["results"]
    site.pages["/page"] = b"<p>new price</p>"
    (second,) = client.post("/v1/scraping/sync", json=body).json()["results"]
    assert first["reference_id"] == second["reference_id"] == "product-1"
    assert second["outcome"] == "created"
    assert second["payload_hash"] != first["payload_hash"]


def test_a_refused_url_stores_nothing(
    api: Callable[..., TestClient], site: Site, connections: list[Any]
) -> None:
    client = api()  # no allow-list: the local site is loopback, so refused
    body = {"source": "site", "urls": [site.url("/page"), "http://10.0.0.1/"]}
    response = client.post("/v1/scraping/sync", json=body)
    assert response.status_code == 200
    for result in response.json()["results"]:
        assert (result["ok"], result["error"]) == (False, "refused")
        assert result["message"].startswith("refused by the SSRF guard")
    assert total_handoffs(client) == 0
    assert connections == []
    assert site.seen == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"source": "site", "urls": []}, "urls"),
        ({"source": "site", "urls": ["https://example.com/"] * 51}, "urls"),
        ({"source": "site", "urls": ["ftp://example.com/"]}, "urls.0"),
        ({"source": "site", "urls": ["not a url"]}, "urls.0"),
        ({"source": "bad source", "urls": ["https://example.com/"]}, "source"),
        (
            {"source": "s", "urls": ["https://example.com/"], "reference_ids": [" x"]},
            "reference_ids.0",
        ),
        (
            {"source": "s", "urls": ["https://example.com/"], "reference_ids": ["a", "b"]},
            "reference_ids",
        ),
    ],
)
def test_invalid_sync_requests_are_422s_naming_the_field(
    api: Callable[..., TestClient], body: dict[str, Any], field: str, connections: list[Any]
) -> None:
    response = api().post("/v1/scraping/sync", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]
    assert connections == []


def test_sync_needs_the_ingest_scope(
    api: Callable[..., TestClient], db_url: str, site: Site
) -> None:
    reader = make_token(db_url, Scope.READ)
    response = api(sync_allow_networks=ALLOW_LOCAL).post(
        "/v1/scraping/sync",
        json={"source": "site", "urls": [site.url("/page")]},
        headers={"Authorization": f"Bearer {reader}"},
    )
    assert response.status_code == 403
    assert site.seen == []
