"""The autocommit lane: the connections whole statements run on (PostgreSQL). They stay in
autocommit and are kept between statements; there are never more than the lane's size; a busy
lane sends the statement to the engine's pool; a broken, recycled or mid-transaction
connection is not kept; a forked child never touches its parent's connections."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.exc import DataError

from app.db.autocommit import AutocommitLane
from app.db.engine import connect_pg_autocommit, make_engine
from app.db.uow import Database
from app.domain.clock import FakeClock
from app.domain.errors import DatabaseUnavailable
from app.services.scrape_storage import submit
from tests.support import CLIENT, Boom, count_rows, store_then_fail, version, wait_for

PID = "SELECT pg_backend_pid() AS pid"


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[Database]:
    """A Database of pool size 1: a lane of one connection, a pool of one (plus overflow)."""
    database = Database(pg_url, pool_size=1)
    yield database
    database.dispose()


def backend_pid(db: Database) -> int:
    ((row,),) = [r.values() for r in db.execute_whole(PID, {})]
    return int(row)


def alive(pg_url: str, pid: int) -> bool:
    with psycopg.connect(pg_url, autocommit=True) as admin:
        found = admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return found is not None


def test_whole_statements_share_one_kept_connection_that_commits_each(
    pg_db: Database, pg_url: str
) -> None:
    first = backend_pid(pg_db)
    with psycopg.connect(pg_url, autocommit=True) as other:
        other.execute("CREATE TABLE lane_probe (n int)")
        inserted = pg_db.execute_whole(
            "INSERT INTO lane_probe VALUES (%(n)s) RETURNING n", {"n": 7}
        )
        assert inserted == [{"n": 7}]
        # Seen at once from another session: the statement committed by itself.
        assert other.execute("SELECT n FROM lane_probe").fetchall() == [(7,)]
    assert backend_pid(pg_db) == first
    assert pg_db.lane.open_count == 1


def test_a_failed_statement_raises_as_sqlalchemy_does_and_keeps_the_connection(
    pg_db: Database,
) -> None:
    first = backend_pid(pg_db)
    with pytest.raises(DataError, match="division by zero"):
        pg_db.execute_whole("SELECT 1 / %(zero)s AS n", {"zero": 0})
    assert pg_db.execute_whole("SELECT 1 / %(one)s AS n", {"one": 1}) == [{"n": 1}]
    assert backend_pid(pg_db) == first


def test_a_busy_lane_sends_the_statement_to_the_pool_which_gets_its_connection_back_transactional(
    pg_db: Database, clock: FakeClock
) -> None:
    held = pg_db.lane.borrow()  # the lane's only connection, busy elsewhere
    assert held is not None
    try:
        assert pg_db.lane.borrow() is None
        assert backend_pid(pg_db) != held.conn.info.backend_pid
        (result,) = submit(pg_db, [version("sku-1", "v1")], now=clock.now(), actor=CLIENT)
        assert result.handoff_id > 0
        with pytest.raises(DataError):
            pg_db.execute_whole("SELECT 1 / %(zero)s AS n", {"zero": 0})
        # The pooled connection it ran on is a transactional one again: this rolls back whole.
        with pytest.raises(Boom):
            store_then_fail(pg_db, clock, "sku-2")
        with pg_db.transaction(write=False) as uow:
            assert count_rows(uow, "ingestion_handoffs") == 1
    finally:
        pg_db.lane.give_back(held, healthy=True)
    assert pg_db.lane.open_count == 1


def test_concurrent_statements_never_open_more_than_the_lanes_size(pg_url: str) -> None:
    db = Database(pg_url, pool_size=2)
    seen: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in range(5):
                rows = db.execute_whole("SELECT pg_sleep(0.01), pg_backend_pid() AS pid", {})
                seen.append(int(rows[0]["pid"]))
                assert db.lane.open_count <= 2
        except BaseException as exc:  # reported below, from the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(seen) == 30
        assert db.lane.open_count <= 2
    finally:
        db.dispose()


def lane(pg_url: str, *, size: int = 2, recycle: float = 3600.0) -> AutocommitLane:
    engine = make_engine(pg_url)  # for its connect arguments only: its pool stays empty
    return AutocommitLane(lambda: connect_pg_autocommit(engine), size=size, recycle=recycle)


def test_a_connection_given_back_inside_a_transaction_is_closed(pg_url: str) -> None:
    lanes = lane(pg_url)
    lent = lanes.borrow()
    assert lent is not None
    lent.cursor.execute("BEGIN")  # whoever borrowed it left a transaction open
    lanes.give_back(lent, healthy=True)
    assert lent.conn.closed
    assert lanes.open_count == 0


def test_a_connection_older_than_the_recycle_age_is_replaced(pg_url: str) -> None:
    lanes = lane(pg_url, recycle=0.0)
    first = lanes.borrow()
    assert first is not None
    first_pid = first.conn.info.backend_pid
    lanes.give_back(first, healthy=True)
    second = lanes.borrow()
    assert second is not None
    assert first.conn.closed
    assert second.conn.info.backend_pid != first_pid
    lanes.give_back(second, healthy=False)
    assert lanes.open_count == 0


def test_losing_the_server_closes_the_idle_connections_and_the_retry_connects_anew(
    pg_url: str, clock: FakeClock
) -> None:
    """More idle connections than a statement has retries, all dropped by the server: the
    first failure closes them all, so the retry connects anew instead of meeting the next."""
    db = Database(pg_url, pool_size=7)
    try:
        held = [db.lane.borrow() for _ in range(7)]
        pids = {lent.conn.info.backend_pid for lent in held if lent is not None}
        assert len(pids) == 7
        for lent in held:
            assert lent is not None
            db.lane.give_back(lent, healthy=True)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            for pid in pids:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        (result,) = submit(db, [version("sku-1", "v1")], now=clock.now(), actor=CLIENT)
        assert result.handoff_id > 0
        assert backend_pid(db) not in pids
        assert db.lane.open_count == 1
    finally:
        db.dispose()


def test_a_forked_child_opens_its_own_connection_and_leaves_the_parents_alone(
    pg_db: Database,
) -> None:
    parent = backend_pid(pg_db)
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's result is its exit status
        status = 1
        try:
            status = 0 if backend_pid(pg_db) != parent else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert backend_pid(pg_db) == parent  # still open, still the parent's


def test_dispose_closes_the_lanes_connections(pg_url: str) -> None:
    db = Database(pg_url, pool_size=1)
    pid = backend_pid(db)
    db.dispose()
    wait_for(lambda: not alive(pg_url, pid), timeout=10.0)
    assert db.lane.open_count == 0


def test_an_unreachable_server_is_reported_as_unavailable() -> None:
    db = Database("postgresql://postgres@127.0.0.1:1/handoff", pool_size=1)
    try:
        with pytest.raises(DatabaseUnavailable, match="cannot be reached"):
            db.execute_whole(PID, {})
        assert db.lane.open_count == 0
    finally:
        db.dispose()
