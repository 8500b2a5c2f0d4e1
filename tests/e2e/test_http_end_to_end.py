"""The whole path over real HTTP on loopback, on both engines: `handoff run` serves the API and
a worker; a record goes in and is visible, ingested, everywhere an operator looks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg
import pytest

from app.api.app import create_app
from app.settings import Settings
from tests.support import free_port, wait_for

HANDOFF = str(Path(sys.executable).with_name("handoff"))


@pytest.fixture
def served(db_url: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`handoff run` on `db_url`, and an admin token for it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    env |= {"HANDOFF_DATABASE_URL": db_url, "HANDOFF_POLL_SECONDS": "0.2"}
    created = subprocess.run(
        [HANDOFF, "tokens", "create", "--name", "e2e", "--scope", "admin"],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [HANDOFF, "run", "--port", str(port)],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: httpx.get(f"{base}/readyz").status_code == 200, tolerate=(httpx.TransportError,)
        )
        yield base, {"Authorization": f"Bearer {created.stdout.strip()}"}
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, output


def test_a_record_is_ingested_and_visible_in_list_detail_stats_and_history(
    served: tuple[str, dict[str, str]],
) -> None:
    base, auth = served
    with httpx.Client(base_url=base, headers=auth) as api:
        record = {"source": "e2e", "url": "https://example.com/e2e", "body": "<p>hello e2e</p>"}
        (result,) = api.post("/v1/scrape-records", json=record).json()["results"]
        assert result["outcome"] == "created"
        handoff_id = result["handoff_id"]

        def succeeded() -> bool:
            state: str = api.get(f"/v1/handoffs/{handoff_id}").json()["handoff"]["state"]
            return state == "succeeded"

        wait_for(succeeded, tolerate=(httpx.TransportError,))
        detail = api.get(f"/v1/handoffs/{handoff_id}").json()
        assert [e["to_state"] for e in detail["events"]] == ["queued", "running", "succeeded"]
        assert detail["why"]

        listed = api.get("/v1/handoffs", params={"state": "succeeded"}).json()["items"]
        assert [h["id"] for h in listed] == [handoff_id]

        stats = api.get("/v1/handoffs/stats").json()
        assert stats["totals"]["succeeded"] == 1

        reference = quote(result["reference_id"], safe=":/")
        history = api.get(f"/v1/references/{reference}").json()
        assert [h["id"] for h in history["handoffs"]] == [handoff_id]
        assert history["current_document"]["excerpt"] == "<p>hello e2e</p>"


def test_an_unreachable_database_is_a_503_with_retry_after(pg_url: str) -> None:
    settings = Settings(database_url=pg_url, auth_enabled=False)
    from fastapi.testclient import TestClient

    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/handoffs/stats").status_code == 200
        name = pg_url.rsplit("/", 1)[1]
        admin = pg_url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)".encode())
        response = client.get("/v1/handoffs/stats")
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.headers["content-type"] == "application/problem+json"
