"""The autocommit lane (PostgreSQL): a few driver connections kept in autocommit for the
statements that are whole by themselves and commit alone (a one-record submission).

Why not the engine's pool: borrowing a connection from SQLAlchemy's pool, switching it to
autocommit and back, and its reset on return cost about a tenth of the machine's CPU per
one-record submission with 4 clients on 2 CPUs; a `psycopg_pool` pool of autocommit
connections cost as much (docs/benchmarks.md, "The autocommit lane"). The lane is a list of
idle connections, last in first out, with no thread of its own: a borrow pops one (or opens
one), a return appends it. A connection never leaves autocommit, so there is nothing to reset,
and each keeps one cursor, reused statement after statement (its adapters stay looked up).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row


class Lent:
    """A lane connection and its cursor (rows as dicts), for one borrower at a time."""

    __slots__ = ("born", "conn", "cursor")

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.cursor: psycopg.Cursor[DictRow] = conn.cursor(row_factory=dict_row)
        self.born = time.monotonic()


class AutocommitLane:
    """Up to `size` open autocommit connections to one database.

    `borrow` gives a connection for the caller's use alone, or None when `size` are open and
    none is idle (the caller takes the engine's pool instead). `give_back` keeps a healthy one
    for the next borrow; a broken one, one left inside a transaction, or one older than
    `recycle` seconds is closed instead. Thread-safe; a process forked from the one that
    opened the connections starts with none (the parent's are never used or closed here).
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        *,
        size: int,
        recycle: float,
    ) -> None:
        self._connect = connect
        self._size = size
        self._recycle = recycle
        self._idle: list[Lent] = []
        self._open = 0  # connections open or being opened: at most `size`
        self._lock = threading.Lock()  # guards _open, never held while connecting
        self._pid = os.getpid()

    def borrow(self) -> Lent | None:
        """An idle connection, or a new one while fewer than `size` are open; else None.
        Raises psycopg.OperationalError if a new one cannot connect."""
        if os.getpid() != self._pid:
            self._forget_parents()
        while True:
            try:
                lent = self._idle.pop()  # atomic: no two threads pop the same one
            except IndexError:
                return self._open_one()
            if time.monotonic() - lent.born < self._recycle and not lent.conn.closed:
                return lent
            self._close(lent)

    def give_back(self, lent: Lent, *, healthy: bool) -> None:
        """Return a borrowed connection. `healthy` False (its statement lost the server)
        closes it and every idle one: they were opened before the loss, as it was."""
        conn = lent.conn
        if (
            healthy
            and not conn.closed
            and not conn.broken
            and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        ):
            self._idle.append(lent)
            return
        self._close(lent)
        if not healthy:
            self.close_idle()

    def close_idle(self) -> None:
        """Close every idle connection (borrowed ones are closed when given back broken)."""
        while True:
            try:
                lent = self._idle.pop()
            except IndexError:
                return
            self._close(lent)

    @property
    def open_count(self) -> int:
        return self._open

    def _open_one(self) -> Lent | None:
        with self._lock:
            if self._open >= self._size:
                return None
            self._open += 1
        try:
            conn = self._connect()
        except BaseException:
            with self._lock:
                self._open -= 1
            raise
        return Lent(conn)

    def _close(self, lent: Lent) -> None:
        with self._lock:
            self._open -= 1
        lent.conn.close()

    def _forget_parents(self) -> None:
        """In a forked child: the parent's connections are the parent's (closing one here would
        end the parent's session); start empty."""
        with self._lock:
            if os.getpid() != self._pid:
                self._idle = []
                self._open = 0
                self._pid = os.getpid()
