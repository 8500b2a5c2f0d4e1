"""Settings from the environment (prefix `HANDOFF_`) or a `.env` file. Built once, passed down."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.domain import ssrf
from app.domain.retry import RetryPolicy

SinkName = Literal["documents", "webhook"]

REPO_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HANDOFF_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite:///var/handoff.db",
        description="sqlite:///path (the embedded default) or postgresql://user@host/db.",
    )
    migrations_dir: Path = REPO_ROOT / "db" / "migrations"

    # HTTP API
    auth_enabled: bool = Field(
        default=True,
        description="Require bearer tokens. Turning it off is for local experiments only; the "
        "service says so loudly at start.",
    )
    stuck_after_seconds: float = Field(
        default=900.0,
        gt=0,
        description="A handoff runnable but unclaimed, or waiting, for longer than this is "
        "stuck (as is one running on an expired lease).",
    )

    # Ingestion workers
    worker_concurrency: int = Field(default=4, ge=1, le=256)
    lease_seconds: float = Field(default=60.0, gt=0)
    heartbeat_seconds: float = Field(default=20.0, gt=0)
    poll_seconds: float = Field(default=1.0, gt=0)
    rescue_seconds: float = Field(default=15.0, gt=0)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    job_timeout_seconds: float = Field(
        default=900.0,
        gt=0,
        description="A job running longer stops being heartbeated; its "
        "lease then expires and the rescuer counts a crash.",
    )
    prefetch: int = Field(
        default=16,
        ge=0,
        le=1000,
        description="Jobs a worker leases ahead of its free "
        "handler threads; 0 for long jobs spread over many workers.",
    )
    claim_batch: int = Field(default=32, ge=1, le=1000)
    retry_base_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Backoff base after a transient or unclassified failure: the first wait "
        "is 50-100 % of it, and it doubles with each failure, up to 600 s.",
    )
    crash_retry_seconds: float = Field(
        default=15.0,
        ge=0,
        le=3600,
        description="How long a handoff whose lease expired waits in retry_wait before it "
        "runs again.",
    )
    inline_ingestion: bool = False

    # Ingestion sinks: where extracted documents go (app/ingest/sinks.py)
    sinks: Annotated[list[SinkName], NoDecode] = Field(
        default_factory=lambda: list[SinkName](["documents"]),
        description='Comma-separated, in delivery order: "documents" (the searchable document '
        'store) and/or "webhook" (POST each document to webhook_url).',
    )
    webhook_url: str | None = Field(
        default=None, description="http(s) URL the webhook sink POSTs each document to."
    )
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="If set, each webhook request carries X-Handoff-Signature: sha256=<HMAC>.",
    )

    # Input limits
    max_body_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    max_batch_records: int = Field(default=500, gt=0)
    max_request_bytes: int = Field(
        default=32 * 1024 * 1024,
        gt=0,
        description="Larger request bodies get a 413, checked from Content-Length and while "
        "reading chunked bodies.",
    )

    # Scrape sync (POST /v1/scraping/sync): fetching URLs on a client's behalf
    sync_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    sync_read_timeout_seconds: float = Field(
        default=15.0, gt=0, description="Longest wait for any one read from the server."
    )
    sync_deadline_seconds: float = Field(
        default=60.0, gt=0, description="Longest time one URL may take, redirects included."
    )
    sync_max_redirects: int = Field(default=5, ge=0, le=20)
    sync_max_response_bytes: int = Field(
        default=20 * 1024 * 1024,
        gt=0,
        description="Largest response body read (as sent, before Content-Encoding is undone; "
        "the decoded body is bounded by max_body_bytes).",
    )
    sync_concurrency: int = Field(default=8, ge=1, le=64)
    sync_allow_networks: list[str] = Field(
        default_factory=list,
        description="Networks the SSRF guard admits although they are loopback, private, "
        'link-local…, e.g. ["10.1.0.0/16"]. Empty: only globally routable addresses.',
    )

    # Observability: logs, metrics
    log_format: Literal["json", "console"] | None = Field(
        default=None,
        description="json (one JSON object per line) or console (readable, for a terminal). "
        "Unset: json unless stderr is a terminal.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_require_token: bool = Field(
        default=False,
        description="Make GET /metrics need a token with the `read` scope. Off by default, as "
        "Prometheus scrapes usually are; keep the port private instead.",
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="`handoff worker` serves its own counters (claims, durations, rescues, "
        "transitions) on this port at /metrics. Unset: not served.",
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1", description="Address the worker's metrics port binds."
    )

    # Backpressure: submissions are refused while ingestion is too far behind
    max_backlog: int | None = Field(
        default=None,
        ge=1,
        description="Past this many runnable handoffs (queued or retry_wait, due now), "
        "POST /v1/scrape-records and POST /v1/scraping/sync answer 429 with Retry-After. "
        "Unset: never refused.",
    )
    admission_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        description="How long one backlog reading is reused by admission checks.",
    )

    @field_validator("database_url")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("database_url must start with sqlite:// or postgresql://")
        return value

    @field_validator("sinks", mode="before")
    @classmethod
    def _sink_names(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is not None:
            AnyHttpUrl(value)  # raises a ValueError naming what is wrong
        return value

    @field_validator("sync_allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        try:
            ssrf.parse_networks(value)
        except ValueError as exc:
            raise ValueError(f"sync_allow_networks: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> Settings:
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(
                "heartbeat_seconds must be shorter than lease_seconds, or live leases expire"
            )
        return self

    @model_validator(mode="after")
    def _sinks_are_usable(self) -> Settings:
        if not self.sinks:
            raise ValueError("sinks: name at least one of documents, webhook")
        if len(set(self.sinks)) != len(self.sinks):
            raise ValueError("sinks: each sink may be named once")
        if "webhook" in self.sinks and self.webhook_url is None:
            raise ValueError("sinks: the webhook sink needs webhook_url")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def retry_policy(self) -> RetryPolicy:
        """The retry budgets with the waits these settings choose."""
        default = RetryPolicy()
        return replace(
            default,
            transient_backoff=replace(
                default.transient_backoff, base_seconds=self.retry_base_seconds
            ),
            crash_delay=timedelta(seconds=self.crash_retry_seconds),
        )
