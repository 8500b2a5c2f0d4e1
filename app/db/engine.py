"""Engines for both dialects, configured for the concurrency each supports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.array import ListBinaryDumper
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

#: Seconds a PostgreSQL connection is kept before it is replaced (the pool's and the lane's).
POOL_RECYCLE = 1800


def sqlalchemy_url(database_url: str) -> str:
    """`postgresql://` means psycopg 3 here; SQLite paths get their folder created."""
    if database_url.startswith("postgresql://"):
        return "postgresql+psycopg://" + database_url.removeprefix("postgresql://")
    return database_url


def make_engine(database_url: str, *, pool_size: int = 5) -> Engine:
    url = make_url(sqlalchemy_url(database_url))
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url.database or "")
    engine = create_engine(
        # No pre-ping (a round trip per transaction): a dropped connection fails its
        # transaction, which callers retry (the worker loop) or answer with a 503 (the API).
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=POOL_RECYCLE,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        configure_pg_connection(dbapi_conn)

    return engine


def configure_pg_connection(conn: psycopg.Connection[Any]) -> None:
    """What every PostgreSQL driver connection gets, pooled or in the autocommit lane."""
    # Send list parameters (the column arrays of the batched statements) in binary: the text
    # form of a bytea[] is hex with escaped backslashes, built in several copies on the way
    # out — a batch holding a 15 MB body cost 100 MB of peak memory, now 33 MB.
    conn.adapters.register_dumper(list, ListBinaryDumper)


def connect_pg_autocommit(engine: Engine) -> psycopg.Connection[Any]:
    """A new driver connection in autocommit, made with the arguments the engine's pool
    connects with (its URL and dialect's adapters), configured alike."""
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    conn = psycopg.connect(*cargs, **cparams, autocommit=True)
    configure_pg_connection(conn)
    return conn


def _sqlite_engine(path: str) -> Engine:
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself, so writers can take the
        # write lock up front (BEGIN IMMEDIATE) instead of failing to upgrade a read lock.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.info.get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine
