"""trafilatura parses with one module-level lxml parser, which two threads must not use at once
(handler threads extracting together aborted a worker inside libxml2): extraction runs one at a
time per process."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import trafilatura

from app.ingest import extract


def test_handler_threads_never_run_trafilatura_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    running = 0
    most = 0
    count = threading.Lock()

    def bare_extraction(html: str, **_: Any) -> dict[str, Any]:  # a stand-in that lingers
        nonlocal running, most
        with count:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with count:
            running -= 1
        return {"text": html, "title": "t"}

    monkeypatch.setattr(trafilatura, "bare_extraction", bare_extraction)
    threads = [
        threading.Thread(target=extract.extract_html, args=(f"page {n}", None, "text/html"))
        for n in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert most == 1
