"""The unit of work: one connection in one transaction. The caller owns the commit."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property, partial
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg.rows import dict_row
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from app import metrics
from app.db.autocommit import AutocommitLane
from app.db.document_store import DocumentStore
from app.db.engine import POOL_RECYCLE, connect_pg_autocommit, make_engine
from app.db.handoff_queries import HandoffQueries
from app.db.handoff_store import HandoffStore
from app.db.job_store import JobStore
from app.db.outbox_store import OutboxStore
from app.db.reconcile_queries import ReconcileQueries
from app.db.record_store import RecordStore
from app.db.rows import driver_error
from app.db.token_store import TokenStore
from app.db.wakeup_store import WakeupStore
from app.db.work_store import WorkStore
from app.domain.errors import Contention, DatabaseUnavailable

T = TypeVar("T")
log = structlog.get_logger("handoff.db")

# SQLSTATEs worth retrying the whole transaction for: serialization failure, deadlock.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


class UnitOfWork:
    """The stores of one transaction. Stores never commit; `Database.transaction` does."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._on_commit: list[Callable[[], None]] = []

    # Stores are made on first use: most transactions touch one or two of them.
    @cached_property
    def records(self) -> RecordStore:
        return RecordStore(self.conn)

    @cached_property
    def handoffs(self) -> HandoffStore:
        return HandoffStore(self.conn)

    @cached_property
    def jobs(self) -> JobStore:
        return JobStore(self.conn)

    @cached_property
    def documents(self) -> DocumentStore:
        return DocumentStore(self.conn)

    @cached_property
    def outbox(self) -> OutboxStore:
        return OutboxStore(self.conn, self.records, self.handoffs)

    @cached_property
    def work(self) -> WorkStore:
        return WorkStore(self.conn, self.records, self.handoffs, self.jobs)

    @cached_property
    def tokens(self) -> TokenStore:
        return TokenStore(self.conn)

    @cached_property
    def wakeups(self) -> WakeupStore:
        return WakeupStore(self.conn)

    @cached_property
    def queries(self) -> HandoffQueries:
        return HandoffQueries(self.conn)

    @cached_property
    def reconcile(self) -> ReconcileQueries:
        return ReconcileQueries(self.conn)

    def on_commit(self, hook: Callable[[], None]) -> None:
        """Run `hook` once this transaction has committed (metrics, logs); never if it rolls
        back, so a transaction retried whole reports once."""
        self._on_commit.append(hook)

    def committed(self) -> None:
        """Called by `Database.transaction` after the commit: count the transitions written,
        then run the hooks. A failing hook is logged; the commit has happened regardless."""
        handoffs: HandoffStore | None = self.__dict__.get("handoffs")  # if it was used
        moves = handoffs.moves if handoffs is not None else []
        run_after_commit([partial(metrics.count_transitions, moves), *self._on_commit])


def run_after_commit(hooks: Iterable[Callable[[], None]]) -> None:
    """Run what reports a committed write (metrics, logs). A failing hook is logged, never
    raised: the commit has happened regardless, and observability must not fail a request."""
    for hook in hooks:
        try:
            hook()
        except Exception as exc:
            log.error("uow.after_commit_failed", error=f"{type(exc).__name__}: {exc}")


class Database:
    """An engine plus the transaction boundaries every caller uses."""

    def __init__(self, database_url: str, *, pool_size: int = 5) -> None:
        self.url = database_url
        self.engine: Engine = make_engine(database_url, pool_size=pool_size)
        self.dialect = self.engine.dialect.name
        # Whole statements (PostgreSQL): up to pool_size connections of their own, opened on
        # first use; past that they borrow from the engine's pool like everything else.
        self.lane = AutocommitLane(
            partial(connect_pg_autocommit, self.engine), size=pool_size, recycle=POOL_RECYCLE
        )

    @contextmanager
    def transaction(self, *, write: bool = True, autocommit: bool = False) -> Iterator[UnitOfWork]:
        """One transaction, committed when the block ends, rolled back if it raises.

        On SQLite a writing transaction starts with BEGIN IMMEDIATE (it takes the write lock up
        front, so it never fails half-way to upgrade); a reading one is deferred.

        With `autocommit` (PostgreSQL only), each statement is a transaction of its own: no
        BEGIN and COMMIT round trips, for work that is whole in one statement.
        """
        if autocommit and self.dialect != "postgresql":
            raise ValueError("autocommit units of work are for PostgreSQL")
        try:
            conn = self.engine.connect()
        except OperationalError as exc:
            raise DatabaseUnavailable(f"the database cannot be reached: {exc.orig}") from exc
        # Autocommit is psycopg's flag on the pooled connection, set here and cleared before the
        # pool takes it back: SQLAlchemy's isolation-level option does the same at twice the
        # cost of a whole transaction's bookkeeping. BEGIN and COMMIT are then never sent.
        driver = conn.connection.driver_connection if autocommit else None
        try:
            if driver is not None:
                driver.autocommit = True
                uow = UnitOfWork(conn)
                yield uow
                # No BEGIN was sent, nor is a COMMIT: only SQLAlchemy's bookkeeping of a
                # transaction it began on the first statement through it (if any) is closed.
                if conn.in_transaction():
                    conn.commit()
            else:
                conn.info["sqlite_begin"] = "IMMEDIATE" if write else "DEFERRED"
                with conn.begin():
                    uow = UnitOfWork(conn)
                    yield uow
            uow.committed()
        finally:
            if driver is not None:
                try:
                    driver.autocommit = False
                except psycopg.Error:  # closed, or left mid-statement: never back to the pool
                    conn.invalidate()
            conn.close()

    def run(
        self,
        work: Callable[[UnitOfWork], T],
        *,
        write: bool = True,
        retries: int = 5,
        autocommit: bool = False,
    ) -> T:
        """Run `work` in a transaction (see `transaction`), retrying it whole after a deadlock
        or serialization failure (PostgreSQL may pick our transaction as a deadlock victim under
        races)."""

        def once() -> T:
            with self.transaction(write=write, autocommit=autocommit) as uow:
                return work(uow)

        return self._retrying(once, retries)

    def execute_whole(
        self, statement: str, params: Mapping[str, Any], *, retries: int = 5
    ) -> list[dict[str, Any]]:
        """PostgreSQL only: run one statement that is whole by itself in a transaction of its
        own (autocommit) and return its rows as dicts; retried as `run` retries.

        No unit of work and no SQLAlchemy connection: the statement runs on a connection of
        the autocommit lane (`app.db.autocommit`), or, when the lane's connections are all
        busy, on a driver connection borrowed from the engine's pool and switched to
        autocommit for it. For the hottest write (a one-record submission), the pool's
        bookkeeping was a tenth of the machine's CPU. `statement` is a fixed text as `pg_text`
        makes it; the caller reports the write (see `run_after_commit`) once this returns.
        """
        if self.dialect != "postgresql":
            raise ValueError("whole statements in autocommit are for PostgreSQL")
        return self._retrying(partial(self._execute_whole_once, statement, params), retries)

    def _execute_whole_once(
        self, statement: str, params: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        try:
            lent = self.lane.borrow()
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(f"the database cannot be reached: {exc}") from exc
        if lent is None:
            return self._execute_whole_pooled(statement, params)
        healthy = True
        try:
            lent.cursor.execute(statement, params)
            return lent.cursor.fetchall()
        except psycopg.Error as exc:
            err = driver_error(self.engine.dialect, lent.conn, statement, params, exc)
            healthy = not err.connection_invalidated
            raise err from exc
        finally:
            self.lane.give_back(lent, healthy=healthy)

    def _execute_whole_pooled(
        self, statement: str, params: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        try:
            pooled = self.engine.raw_connection()
        except OperationalError as exc:
            raise DatabaseUnavailable(f"the database cannot be reached: {exc.orig}") from exc
        try:
            driver = pooled.driver_connection
            assert isinstance(driver, psycopg.Connection)
            try:
                driver.autocommit = True
                with driver.cursor(row_factory=dict_row) as cur:
                    cur.execute(statement, params)
                    return cur.fetchall()
            except psycopg.Error as exc:
                err = driver_error(self.engine.dialect, pooled, statement, params, exc)
                if err.connection_invalidated:
                    pooled.invalidate(err)
                raise err from exc
            finally:
                if pooled.is_valid:  # an invalidated one is closed already
                    try:
                        driver.autocommit = False
                    except psycopg.Error:  # left mid-statement: never back to the pool
                        pooled.invalidate()
        finally:
            pooled.close()

    def _retrying(self, once: Callable[[], T], retries: int) -> T:
        for attempt in range(retries + 1):
            try:
                return once()
            except DBAPIError as exc:
                if exc.connection_invalidated and attempt < retries:
                    continue  # the server dropped a pooled connection; the pool has a new one
                if attempt == retries or _sqlstate(exc) not in _RETRYABLE_SQLSTATES:
                    if isinstance(exc, OperationalError):
                        raise DatabaseUnavailable(f"the database failed: {exc.orig}") from exc
                    raise
            except Contention:
                if attempt == retries:
                    raise
            time.sleep(0.001 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def ping(self) -> None:
        with self.transaction(write=False) as uow:
            uow.conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.lane.close_idle()
        self.engine.dispose()


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)
