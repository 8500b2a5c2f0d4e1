"""`handoff run` from an empty folder: SQLite by default, API and worker in one process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import free_port, wait_for

HANDOFF = str(Path(sys.executable).with_name("handoff"))


def test_run_serves_on_sqlite_ingests_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    for step in (["migrate"], ["tokens", "create", "--name", "e2e", "--scope", "admin"]):
        done = subprocess.run(
            [HANDOFF, *step], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
        )
    headers = {"Authorization": f"Bearer {done.stdout.strip()}"}
    proc = subprocess.Popen(
        [HANDOFF, "run", "--port", str(port)],
        cwd=tmp_path,
        env={**env, "HANDOFF_POLL_SECONDS": "0.2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: httpx.get(f"{base}/readyz").status_code == 200, tolerate=(httpx.TransportError,)
        )
        record = {"source": "e2e", "url": "https://example.com/run", "body": "<p>run</p>"}
        first = httpx.post(f"{base}/v1/scrape-records", json=record, headers=headers).json()[
            "results"
        ][0]
        assert first["outcome"] == "created"
        again = httpx.post(f"{base}/v1/scrape-records", json=record, headers=headers).json()[
            "results"
        ][0]
        assert (again["outcome"], again["handoff_id"]) == ("duplicate", first["handoff_id"])

        url = f"{base}/v1/handoffs/{first['handoff_id']}"
        wait_for(
            lambda: httpx.get(url, headers=headers).json()["handoff"]["state"] == "succeeded",
            tolerate=(httpx.TransportError,),
        )
        stats = httpx.get(f"{base}/v1/handoffs/stats", headers=headers).json()
        assert stats["totals"]["succeeded"] == 1
        assert (tmp_path / "var" / "handoff.db").exists()  # the embedded default
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, output
    assert "worker.stopped" in output
