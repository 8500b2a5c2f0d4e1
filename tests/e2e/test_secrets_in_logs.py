"""No secret reaches a log: a full run of real processes at DEBUG, grepped.

`handoff serve` and `handoff worker` (documents + webhook sinks, a webhook secret, a database
URL carrying a password) run while a client submits with a good token, tries wrong and revoked
ones, logs in to the dashboard, scrapes /metrics, and the webhook answers 500 before 200. Every
line either process wrote is then searched for every secret."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, wait_for

HANDOFF = str(Path(sys.executable).with_name("handoff"))
DB_PASSWORD = "pw-7c1e-never-logged"  # trust auth: PostgreSQL ignores it
WEBHOOK_SECRET = "whsec-5d2a-never-logged"


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[int]]]:
    """A receiver that fails the first delivery (500), then takes every one (200)."""
    answered: list[int] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            status = 500 if not answered else 200
            answered.append(status)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", answered
    server.shutdown()


def with_password(url: str) -> str:
    if url.startswith("postgresql"):
        scheme, _, rest = url.partition("://postgres@")
        return f"{scheme}://postgres:{DB_PASSWORD}@{rest}"
    return url


def test_a_full_run_logs_no_token_password_or_webhook_secret(
    db_url: str, tmp_path: Path, webhook: tuple[str, list[int]]
) -> None:
    hook, answered = webhook
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    env |= {
        "HANDOFF_DATABASE_URL": with_password(db_url),
        "HANDOFF_LOG_FORMAT": "json",
        "HANDOFF_LOG_LEVEL": "DEBUG",
        "HANDOFF_SINKS": "documents,webhook",
        "HANDOFF_WEBHOOK_URL": hook,
        "HANDOFF_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "HANDOFF_POLL_SECONDS": "0.2",
        "HANDOFF_RETRY_BASE_SECONDS": "0.5",  # the webhook's 500 is retried within a second
        "HANDOFF_METRICS_REQUIRE_TOKEN": "true",
    }

    def cli(*args: str) -> str:
        done = subprocess.run(
            [HANDOFF, *args], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    cli("migrate")
    token = cli("tokens", "create", "--name", "client", "--scope", "admin")
    revoked = cli("tokens", "create", "--name", "old", "--scope", "admin")
    listed = json.loads(cli("tokens", "list", "--json"))
    cli("tokens", "revoke", str(next(t["id"] for t in listed if t["name"] == "old")))
    wrong = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")

    logs = tmp_path / "logs"
    logs.mkdir()
    procs = [
        subprocess.Popen(
            [HANDOFF, *command],
            cwd=tmp_path,
            env=env,
            stdout=(logs / f"{name}.out").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for name, command in (
            ("serve", ["serve", "--port", str(port)]),
            ("worker", ["worker"]),
        )
    ]
    base = f"http://127.0.0.1:{port}"
    good = {"Authorization": f"Bearer {token}"}
    try:
        wait_for(
            lambda: httpx.get(f"{base}/readyz").status_code == 200, tolerate=(httpx.TransportError,)
        )
        record = {"source": "logs", "url": "https://example.com/a", "body": "<p>a page</p>"}
        submitted = httpx.post(f"{base}/v1/scrape-records", json=record, headers=good)
        assert submitted.status_code == 200, submitted.text
        handoff = submitted.json()["results"][0]["handoff_id"]
        for bad in (wrong, revoked, token + "x"):
            refused = httpx.get(f"{base}/v1/handoffs", headers={"Authorization": f"Bearer {bad}"})
            assert refused.status_code == 401
        assert httpx.get(f"{base}/metrics", headers=good).status_code == 200
        with httpx.Client(base_url=base) as browser:
            assert browser.post("/ops/login", data={"token": wrong}).status_code == 401
            login = browser.post("/ops/login", data={"token": token})
            assert login.status_code == 303, login.text
            assert browser.get("/ops").status_code == 200
        wait_for(
            lambda: (
                httpx.get(f"{base}/v1/handoffs/{handoff}", headers=good).json()["handoff"]["state"]
                == "succeeded"
            ),
            timeout=60,
        )
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            proc.wait(timeout=60)
    assert answered[:2] == [500, 200]  # the failed delivery was retried (and logged)

    output = "\n".join(p.read_text(errors="replace") for p in sorted(logs.iterdir()))
    for expected in ("handoff.enqueued", "worker.claimed", "worker.retrying", "/v1/handoffs"):
        assert expected in output, f"the run logged no {expected!r}: nothing to grep"
    for secret in (token, wrong, revoked, WEBHOOK_SECRET, DB_PASSWORD):
        assert secret not in output, f"a secret reached the logs: {secret[:8]}…"
