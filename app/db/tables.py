"""SQLAlchemy Core tables that mirror `db/migrations/` (a test keeps them equal on both engines)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

# SQLite keeps integer primary keys as INTEGER (its rowid); PostgreSQL uses BIGINT.
Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on both engines (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use Clock.now()")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


scrape_records = Table(
    "scrape_records",
    metadata,
    Column("id", Id, primary_key=True),
    Column("reference_id", Text, nullable=False),
    Column("payload_hash", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("url", Text),
    Column("fetched_at", UtcDateTime, nullable=False),
    Column("http_status", Integer),
    Column("content_type", Text, nullable=False),
    Column("headers", Json, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("fields", Json),
    Column("created_at", UtcDateTime, nullable=False),
)

handoffs = Table(
    "ingestion_handoffs",
    metadata,
    Column("id", Id, primary_key=True),
    Column("reference_id", Text, nullable=False),
    Column("payload_hash", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("fetched_at", UtcDateTime, nullable=False),
    Column("state", Text, nullable=False),
    Column("reason_code", Text, nullable=False),
    Column("enqueue_outcome", Text, nullable=False),
    Column("run_after", UtcDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("crashes", Integer, nullable=False, server_default="0"),
    Column("throttled_since", UtcDateTime),
    Column("lease_token", BigInteger, nullable=False, server_default="0"),
    Column("lease_owner", Text),
    Column("lease_expires_at", UtcDateTime),
    Column("last_error", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
)

handoff_events = Table(
    "handoff_events",
    metadata,
    Column("id", Id, primary_key=True),
    Column("handoff_id", BigInteger, ForeignKey("ingestion_handoffs.id"), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", Text, nullable=False),
    Column("from_state", Text),
    Column("to_state", Text, nullable=False),
    Column("reason_code", Text, nullable=False),
    Column("lease_token", BigInteger),
    Column("detail", Text),
)

ingestion_jobs = Table(
    "ingestion_jobs",
    metadata,
    Column("id", Id, primary_key=True),
    Column("handoff_id", BigInteger, ForeignKey("ingestion_handoffs.id"), nullable=False),
    Column("lease_token", BigInteger, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("worker_id", Text, nullable=False),
    Column("claimed_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("outcome", Text),
    Column("retry_class", Text),
    Column("reason_code", Text),
    Column("error", Text),
)

documents = Table(
    "documents",
    metadata,
    Column("id", Text, nullable=False, unique=True),
    Column("reference_id", Text, nullable=False),
    Column("payload_hash", Text, nullable=False),
    Column("content_type", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("source", Text, nullable=False),
    Column("url", Text),
    Column("title", Text),
    Column("language", Text),
    Column("canonical_url", Text),
    Column("published", Text),
    Column("kind", Text, nullable=False),
    Column("fetched_at", UtcDateTime, nullable=False),
    Column("superseded_at", UtcDateTime),
    Column("superseded_by", Text),
    Column("seq", Id, primary_key=True),
    # Search structures live outside this mirror, per engine: PostgreSQL's generated
    # `search_vector` column (GIN-indexed) and SQLite's `documents_fts` FTS5 table.
)

#: Signed deltas of the handoff count per (state, reason_code), kept by triggers (migration
#: 20260301000035): the count of a pair is the sum of its rows.
handoff_counts = Table(
    "handoff_counts",
    metadata,
    Column("state", Text, nullable=False),
    Column("reason_code", Text, nullable=False),
    Column("n", BigInteger, nullable=False),
)

#: Workers waiting for a wake-up (migration 20260301000037; PostgreSQL's insert trigger NOTIFYs
#: only while a row is here). `pid` and `backend_start` name the worker's LISTEN session.
handoff_wakeup_subscribers = Table(
    "handoff_wakeup_subscribers",
    metadata,
    Column("worker_id", Text, primary_key=True),
    Column("pid", Integer, nullable=False),
    Column("backend_start", UtcDateTime, nullable=False),
    Column("since", UtcDateTime, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", Text, nullable=False),
    Column("token_hash", Text, nullable=False),
    Column("scopes", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime),
)
