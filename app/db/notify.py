"""PostgreSQL LISTEN: wakes idle workers when a handoff becomes runnable (see the trigger in
20260301000029_ingestion_handoffs.sql). Only a hint: workers also poll, so a lost
notification costs at most one poll interval."""

from __future__ import annotations

import threading
from typing import Protocol

import psycopg
import structlog

CHANNEL = "handoff_ready"
log = structlog.get_logger("handoff.notify")


class Wakeable(Protocol):
    def set(self) -> None: ...


class Listener(threading.Thread):
    """Sets `wake` on every notification; reconnects with backoff until `stop` is set."""

    def __init__(self, database_url: str, wake: Wakeable, stop: threading.Event) -> None:
        super().__init__(name="handoff-listener", daemon=True)
        self.url = database_url.replace("postgresql+psycopg://", "postgresql://")
        self.wake = wake
        self.stop = stop
        self.listening = threading.Event()

    def run(self) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    backoff = 0.5
                    while not self.stop.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            self.wake.set()
            except psycopg.Error as exc:
                self.listening.clear()
                log.warning("listener.disconnected", error=str(exc), retry_in=backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
