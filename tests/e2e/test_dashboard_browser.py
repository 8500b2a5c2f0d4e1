"""The dashboard in a real browser: Playwright drives Debian's headless Chromium against the
real service (`handoff serve` and `handoff worker` processes) on both engines.

The failed handoff that an operator repairs is a real failure, not a fake handler: a scrape
record purged from storage before its handoff ran (a retention job or a manual cleanup racing
ingestion). The worker finds the payload gone and fails the handoff at once with
`payload_missing` — retrying cannot help until the payload is back. The operator reads that
reason on the dashboard, the scraper submits the same version again (the API answers
`duplicate`: the pair is an idempotency key, so no new work is created, but the missing copy
is stored again), and the operator's retry then succeeds. The purge itself is one SQL DELETE,
as an out-of-band cleanup would be; everything else goes through the service's own doors.

The API and the worker run as separate processes (as in production) so the worker can be
started after the submissions: the dashboard first shows the work queued, then ingested.

Set `HANDOFF_SCREENSHOTS=docs/screenshots` to have the run save the pages it visits as PNGs
(how `docs/screenshots/` is made); by default nothing is written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import delete

from app.db import tables
from app.db.uow import Database
from app.domain.tokens import Scope
from app.services import tokens
from tests.support import T0, free_port, wait_for

HANDOFF = str(Path(sys.executable).with_name("handoff"))
#: Debian's package (`apt-get install chromium`; `.ci/run` installs it). Never a download.
CHROMIUM = os.environ.get("HANDOFF_TEST_CHROMIUM", "/usr/bin/chromium")
SHOTS = os.environ.get("HANDOFF_SCREENSHOTS")
#: Deadlines, not timings: a busy CI machine may take long to start processes and Chromium.
WAIT_MS = 60_000
STARTUP_SECONDS = 120.0
expect.set_options(timeout=WAIT_MS)
OPERATOR = [Scope.READ, Scope.OPERATE]


def stop(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    try:
        output = proc.communicate(timeout=60)[0].decode()
    except subprocess.TimeoutExpired:
        proc.kill()
        output = proc.communicate()[0].decode() + "\n(killed: no exit 60 s after SIGINT)"
    return proc.returncode, output


class Service:
    """The API process on `db_url`, tokens for an operator and a scraper, and a way to start
    a worker process later."""

    def __init__(self, db_url: str, tmp_path: Path) -> None:
        self.db_url, self.cwd = db_url, tmp_path
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
        self.env |= {"HANDOFF_DATABASE_URL": db_url, "HANDOFF_POLL_SECONDS": "0.2"}
        db = Database(db_url)
        try:
            _, self.operator = db.run(lambda uow: tokens.create(uow, "ops", OPERATOR, now=T0))
            _, scraper = db.run(lambda uow: tokens.create(uow, "scraper", [Scope.INGEST], now=T0))
        finally:
            db.dispose()
        self.scraper = {"Authorization": f"Bearer {scraper}"}
        self.base = f"http://127.0.0.1:{free_port()}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self._start("serve", "--port", self.base.rsplit(":", 1)[1])
        wait_for(
            lambda: httpx.get(f"{self.base}/readyz").status_code == 200,
            STARTUP_SECONDS,
            tolerate=(httpx.TransportError,),
        )

    def _start(self, *args: str) -> None:
        self.procs.append(
            subprocess.Popen(
                [HANDOFF, *args],
                env=self.env,
                cwd=self.cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )

    def start_worker(self) -> None:
        self._start("worker", "--concurrency", "2")

    def submit(self, *records: dict[str, str]) -> list[dict[str, object]]:
        response = httpx.post(
            f"{self.base}/v1/scrape-records", json={"records": list(records)}, headers=self.scraper
        )
        assert response.status_code == 200, response.text
        results: list[dict[str, object]] = response.json()["results"]
        return results

    def purge_record(self, reference_id: str) -> None:
        """What a retention job or a manual cleanup does: the stored scrape is deleted."""
        db = Database(self.db_url)
        try:
            with db.transaction() as uow:
                r = tables.scrape_records.c
                uow.conn.execute(
                    delete(tables.scrape_records).where(r.reference_id == reference_id)
                )
        finally:
            db.dispose()

    def stop(self) -> None:
        """Stop the worker, then the API; each must exit cleanly."""
        ended = [stop(proc) for proc in reversed(self.procs)]
        for code, output in ended:
            assert code == 0, output


@pytest.fixture
def service(db_url: str, tmp_path: Path) -> Iterator[Service]:
    running = Service(db_url, tmp_path)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # No skip: a machine without the browser fails this test, as CI would.
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    yield context.new_page()
    context.close()


def shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


KETTLE = (
    "<html><body><article><h1>Kettle</h1><p>A steel kettle, 1.7 litres.</p></article></body></html>"
)
PAGE_A = {
    "source": "shop",
    "url": "https://shop.example/p/1",
    "content_type": "text/html",
    "body": KETTLE,
}
PAGE_A2 = {**PAGE_A, "body": KETTLE.replace("1.7", "1.5"), "fetched_at": "2030-01-01T00:00:00Z"}
PAGE_B = {
    "source": "shop",
    "url": "https://shop.example/p/2",
    "content_type": "text/html",
    "body": "<html><body><article><h1>Teapot</h1><p>Cast iron.</p></article></body></html>",
}
FEED = {
    "source": "news",
    "url": "https://news.example/feed/7",
    "content_type": "application/json",
    "body": '{"title": "Rates hold", "text": "The bank kept its rate."}',
}
NOTE = {
    "source": "news",
    "url": "https://news.example/notes/3",
    "content_type": "text/plain",
    "body": "Correction: the meeting moved to Thursday.",
}
LOGO = {
    "source": "shop",
    "url": "https://shop.example/logo.png",
    "content_type": "image/png",
    "body": "not text at all",
}


def test_an_operator_watches_ingestion_and_repairs_a_failed_handoff_in_a_browser(
    service: Service, page: Page
) -> None:
    cards = page.locator("[data-count]")
    # Log in: the dashboard sends a browser without a session to the login page.
    page.goto(f"{service.base}/ops")
    expect(page).to_have_url(f"{service.base}/ops/login?next=/ops")
    page.fill("#token", service.operator)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{service.base}/ops")
    expect(cards).to_have_count(8)
    expect(page.locator('[data-count="queued"]')).to_have_text("0")

    # Records arrive while no worker runs: the counts move without a reload.
    first = service.submit(PAGE_A, PAGE_B, FEED, NOTE, LOGO)
    assert [r["outcome"] for r in first] == ["created"] * 5
    newer = service.submit(PAGE_A2)
    assert newer[0]["outcome"] == "superseded_previous"
    expect(page.locator('[data-count="queued"]')).to_have_text("5")
    expect(page.locator('[data-count="superseded"]')).to_have_text("1")

    # The note's stored scrape is purged before a worker gets to it; then a worker starts.
    note_reference = str(first[3]["reference_id"])
    service.purge_record(note_reference)
    service.start_worker()
    expect(page.locator('[data-count="succeeded"]')).to_have_text("3")
    expect(page.locator('[data-count="failed"]')).to_have_text("2")
    expect(page.locator('[data-count="queued"]')).to_have_text("0")
    expect(page.locator('[data-cell="failed:payload_missing"]')).to_have_text("1")
    expect(page.locator('[data-cell="failed:permanent_validation_error"]')).to_have_text("1")
    expect(page.locator("#throughput")).to_contain_text("3 succeeded")
    shot(page, "overview")

    # The failed ones, then the one whose payload is gone, and why.
    page.click('a.card[data-state="failed"]')
    expect(page.locator("tr[data-handoff]")).to_have_count(2)
    shot(page, "handoffs")
    note_id = first[3]["handoff_id"]
    page.click(f'tr[data-handoff="{note_id}"] td a >> nth=0')
    expect(page).to_have_url(f"{service.base}/ops/handoffs/{note_id}")
    expect(page.locator('[data-field="state"]')).to_have_text("failed")
    expect(page.locator('[data-field="reason_code"]')).to_have_text("payload_missing")
    expect(page.locator('[data-field="why"]')).to_contain_text("no longer exists")
    shot(page, "handoff")

    # The scraper stores the same version again (a duplicate: no new work), then: retry.
    again = service.submit(NOTE)
    assert (again[0]["outcome"], again[0]["handoff_id"]) == ("duplicate", note_id)
    page.click("button[value=retry]")
    expect(page.locator(".notice")).to_contain_text("Queued again")
    expect(page.locator('[data-field="state"]')).to_have_text("succeeded")
    expect(page.locator("table.timeline")).to_contain_text("operator:token:ops")
    expect(page.locator("table.timeline")).to_contain_text("operator_retry")
    expect(page.locator(".excerpt")).to_contain_text("the meeting moved to Thursday")
    shot(page, "handoff-retried")

    page.click("nav >> text=Overview")
    expect(page.locator('[data-count="succeeded"]')).to_have_text("4")
    expect(page.locator('[data-count="failed"]')).to_have_text("1")
