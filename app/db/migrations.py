"""Plain-SQL migrations under `db/migrations/` (PostgreSQL) and `db/migrations/sqlite/`, applied
with yoyo-migrations, which records what ran and takes a lock so two processes can migrate at once.
"""

from __future__ import annotations

from pathlib import Path

from yoyo import get_backend, read_migrations

from app.domain.errors import SchemaOutdated

LOCK_TIMEOUT_SECONDS = 60


def _yoyo_url(database_url: str) -> str:
    if database_url.startswith("postgresql://"):
        return "postgresql+psycopg://" + database_url.removeprefix("postgresql://")
    if database_url.startswith("sqlite:///"):
        Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return database_url


def migrations_for(database_url: str, migrations_dir: Path) -> Path:
    """The folder of migrations for this URL's engine."""
    return migrations_dir / "sqlite" if database_url.startswith("sqlite") else migrations_dir


def pending(database_url: str, migrations_dir: Path) -> list[str]:
    """Ids of migrations not yet applied, in order."""
    backend = get_backend(_yoyo_url(database_url))
    try:
        found = read_migrations(str(migrations_for(database_url, migrations_dir)))
        return [m.id for m in backend.to_apply(found)]
    finally:
        backend.connection.close()


def apply(database_url: str, migrations_dir: Path) -> list[str]:
    """Apply pending migrations under yoyo's lock; returns the ids applied (none: a no-op)."""
    backend = get_backend(_yoyo_url(database_url))
    try:
        found = read_migrations(str(migrations_for(database_url, migrations_dir)))
        with backend.lock(timeout=LOCK_TIMEOUT_SECONDS):
            todo = backend.to_apply(found)  # read under the lock: a racing process may have won
            backend.apply_migrations(todo)
        return [m.id for m in todo]
    finally:
        backend.connection.close()


def break_lock(database_url: str) -> None:
    """Remove a migration lock left by a process that died mid-migration."""
    backend = get_backend(_yoyo_url(database_url))
    try:
        backend.break_lock()
    finally:
        backend.connection.close()


def ensure_current(database_url: str, migrations_dir: Path) -> None:
    """Refuse to run on an outdated schema, naming the command that fixes it."""
    missing = pending(database_url, migrations_dir)
    if missing:
        raise SchemaOutdated(
            f"the database schema is not current: {len(missing)} migration(s) pending "
            f"({', '.join(missing)}); run `handoff migrate` first"
        )
