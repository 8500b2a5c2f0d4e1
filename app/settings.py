"""Settings from the environment (prefix `HANDOFF_`) or a `.env` file. Built once, passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    inline_ingestion: bool = False

    # Input limits
    max_body_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    max_batch_records: int = Field(default=500, gt=0)

    @field_validator("database_url")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("database_url must start with sqlite:// or postgresql://")
        return value

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> Settings:
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(
                "heartbeat_seconds must be shorter than lease_seconds, or live leases expire"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
