"""structlog set-up: JSON lines in production, readable lines on a terminal.

Every line is one event with its fields. Lines about a handoff carry `handoff_id`,
`reference_id` and `payload_hash`; lines about an attempt also carry `lease_token` (the fence of
that attempt). Secrets never reach a line: fields named like a credential are masked before
rendering, whoever logs them.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, Literal, TextIO, cast

import structlog

if TYPE_CHECKING:
    from app.settings import Settings

LogFormat = Literal["json", "console"]

#: Field names whose values are credentials. `lease_token` is a fencing counter, not a secret.
SECRET_FIELDS = frozenset(
    {"authorization", "token", "secret", "password", "api_token", "bearer", "credentials"}
)
MASK = "[redacted]"
#: The lowest level `configure` lets through; before it runs, structlog's default: all of them.
_min_level = logging.NOTSET


def redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A processor masking credential-named fields (`token`, `authorization`, `*_secret`…)."""
    for key in list(event):
        lowered = key.lower()
        if lowered in SECRET_FIELDS or lowered.endswith(("_secret", "_password")):
            event[key] = MASK
    return event


class _CurrentStderr:
    """`sys.stderr` as it is when a line is written, not when logging was set up: whoever
    swaps the stream later (a test capturing output, a tool redirecting it) gets the lines.

    Logging never fails its caller: a line that cannot be written (stderr closed by whoever
    owns it, a broken pipe) is dropped, not raised into a worker or a request."""

    def write(self, text: str) -> int:
        try:
            return sys.stderr.write(text)
        except (ValueError, OSError):
            return 0

    def flush(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            sys.stderr.flush()


def configure(
    *, json: bool | None = None, level: str = "INFO", format: LogFormat | None = None
) -> None:
    """Set up structlog for this process. `format` (or the older `json` flag) picks the
    renderer; with neither, JSON unless stderr is a terminal."""
    if format is not None:
        as_json = format == "json"
    else:
        as_json = (not sys.stderr.isatty()) if json is None else json
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    global _min_level
    _min_level = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_min_level),
        logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging(renderer, level)


def enabled(level: int) -> bool:
    """Whether a line at `level` is written. The hottest callers ask first: a structlog logger
    got with `get_logger` binds anew at every call, even for a line that is filtered out."""
    return level >= _min_level


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]  # generic only in stubs
    """A handler writing to `sys.stderr` as it is at each record (see `_CurrentStderr`)."""

    def emit(self, record: logging.LogRecord) -> None:
        # Not setStream(): it flushes the previous stream, which may be closed by now, and
        # would raise into the caller. StreamHandler.emit reports its own failures.
        self.stream = sys.stderr
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        # The default prints a traceback to sys.stderr, the very stream that just failed.
        with contextlib.suppress(Exception):
            super().handleError(record)


def _route_stdlib_logging(renderer: structlog.types.Processor, level: str) -> None:
    """Libraries that log through the standard library (uvicorn's access and error lines,
    yoyo, httpx) come out in the same format, masked the same way."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            redact_secrets,
            renderer,
        ],
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    # Libraries speak up at WARNING (yoyo narrates every migration step at INFO); the server's
    # own lines (startup, access log) follow the configured level.
    root.setLevel(level.upper() if level.upper() in ("WARNING", "ERROR") else "WARNING")
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error"):
        server = logging.getLogger(name)
        server.handlers = []  # no second copy in uvicorn's own format
        server.propagate = True
        server.setLevel(level.upper())


def configure_from(settings: Settings) -> None:
    """Set up logging from `HANDOFF_LOG_FORMAT` and `HANDOFF_LOG_LEVEL`."""
    configure(format=settings.log_format, level=settings.log_level)
