"""PostgreSQL LISTEN: wakes idle workers when a handoff becomes runnable (see the triggers in
20260301000031_notify_per_statement.sql and 20260301000037_wakeup_subscribers.sql). Only a
hint: workers also poll, so a lost notification costs at most one poll interval."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import psycopg
import structlog

CHANNEL = "handoff_ready"
log = structlog.get_logger("handoff.notify")


class Wakeable(Protocol):
    def set(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ListenSession:
    """The server session that LISTENs: what a worker's wake-up subscription names, so that
    the row of a session that is gone can be told apart and pruned."""

    pid: int
    backend_start: datetime


_SESSION = "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"


class Listener(threading.Thread):
    """Sets `wake` on every notification; reconnects with backoff until `stop` is set. Once
    listening it also sets `wake` (what was notified while it was away is found by a claim),
    and `session` names its server session (None while it is away)."""

    def __init__(self, database_url: str, wake: Wakeable, stop: threading.Event) -> None:
        super().__init__(name="handoff-listener", daemon=True)
        self.url = database_url.replace("postgresql+psycopg://", "postgresql://")
        self.wake = wake
        self.stop = stop
        self.listening = threading.Event()
        self.session: ListenSession | None = None

    def run(self) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    row = conn.execute(_SESSION).fetchone()
                    self.session = None if row is None else ListenSession(row[0], row[1])
                    self.listening.set()
                    self.wake.set()
                    backoff = 0.5
                    while not self.stop.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            self.wake.set()
            except psycopg.Error as exc:
                self.listening.clear()
                self.session = None
                log.warning("listener.disconnected", error=str(exc), retry_in=backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
