"""Fixtures that give each test a real, migrated database: a SQLite file or a PostgreSQL
database cloned from a migrated template. PostgreSQL is required: if it is down, tests fail."""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from app.db import migrations
from app.db.uow import Database
from app.domain.clock import FakeClock
from app.settings import REPO_ROOT

MIGRATIONS = REPO_ROOT / "db" / "migrations"
PG_ADMIN_URL = os.environ.get(
    "HANDOFF_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
_TEMPLATE = f"handoff_tpl_{os.getpid()}"
# A process the tests start (the API, workers, the CLI) that dies of a signal writes every
# thread's Python stack to its stderr, which the tests show when they fail.
os.environ.setdefault("PYTHONFAULTHANDLER", "1")


def _pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


def _admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.encode())  # names are generated here, never user input


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database, built once per test process."""
    _admin(f"DROP DATABASE IF EXISTS {_TEMPLATE}")
    _admin(f"CREATE DATABASE {_TEMPLATE}")
    migrations.apply(_pg_url(_TEMPLATE), MIGRATIONS)
    yield _TEMPLATE
    _admin(f"DROP DATABASE IF EXISTS {_TEMPLATE} WITH (FORCE)")


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test."""
    name = f"handoff_t_{uuid.uuid4().hex[:12]}"
    _admin(f"CREATE DATABASE {name} TEMPLATE {pg_template} STRATEGY FILE_COPY")
    yield _pg_url(name)
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'handoff.db'}"
    migrations.apply(url, MIGRATIONS)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated database URL, once per engine."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """A PostgreSQL database with no schema at all (no migration applied)."""
    name = f"handoff_e_{uuid.uuid4().hex[:12]}"
    _admin(f"CREATE DATABASE {name}")
    yield _pg_url(name)
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def empty_sqlite_url(tmp_path: Path) -> str:
    """A SQLite path where no database exists yet."""
    return f"sqlite:///{tmp_path / 'fresh' / 'handoff.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db_url(request: pytest.FixtureRequest) -> str:
    """An unmigrated database URL, once per engine: what `handoff migrate` starts from."""
    name = "empty_sqlite_url" if request.param == "sqlite" else "empty_pg_url"
    return str(request.getfixturevalue(name))


_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def _numeric_host(host: object) -> bool:
    """An address literal (any form the C library reads without asking DNS), or a local name."""
    if host is None or (isinstance(host, str) and host.lower() in _LOCAL_NAMES):
        return True
    text = host.decode() if isinstance(host, bytes) else str(host)
    try:
        socket.inet_aton(text)  # 127.0.0.1, 2130706433, 0x7f.1 …
        return True
    except OSError:
        pass
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
        return True
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def _no_network_beyond_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine's network policy, enforced in every test process: nothing but loopback.
    Host names other than localhost are not resolved (a DNS query is traffic to the resolver),
    and sockets connect only to loopback addresses. Scrape-sync fetches URLs a request names,
    so a generated request (schemathesis) must fail here, never reach the network."""
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _numeric_host(host):
            raise socket.gaierror(socket.EAI_NONAME, f"tests resolve no name but localhost: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = str(address[0]).split("%", 1)[0]
            if not ipaddress.ip_address(host).is_loopback:
                raise OSError(f"test network policy: no connection to {address!r}")
        real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
