"""A small tree of errors. The docstring is the default message; `status` is the HTTP answer."""

from __future__ import annotations

from typing import ClassVar


class HandoffError(Exception):
    """Handoff could not do what was asked."""

    status: ClassVar[int] = 500

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        self.message = message or (self.__doc__ or type(self).__name__).strip()
        self.field = field
        super().__init__(self.message)


class InvalidInput(HandoffError):
    """The request is not valid."""

    status = 422


class PayloadHashMismatch(InvalidInput):
    """The supplied payload_hash does not match the payload."""


class BodyTooLarge(InvalidInput):
    """The body is larger than the limit."""


class RequestTooLarge(HandoffError):
    """The request body is larger than this service accepts."""

    status = 413


class FetchRefused(HandoffError):
    """The SSRF guard refused to fetch this URL."""

    status = 422


class Unauthenticated(HandoffError):
    """A bearer token is required: send `Authorization: Bearer <token>`."""

    status = 401


class Forbidden(HandoffError):
    """The token lacks the scope this route needs."""

    status = 403


class NotFound(HandoffError):
    """No such thing."""

    status = 404


class Conflict(HandoffError):
    """The request conflicts with the current state."""

    status = 409


class LeaseLost(Conflict):
    """The lease token is no longer current: another worker or the rescuer took the handoff."""


class SchemaOutdated(HandoffError):
    """The database schema is not current; run `handoff migrate`."""

    status = 503


class DatabaseUnavailable(HandoffError):
    """The database cannot be reached."""

    status = 503


class Contention(HandoffError):
    """A concurrent writer changed the same reference; the transaction is retried whole."""

    status = 503


class Overloaded(HandoffError):
    """Ingestion is behind: too many handoffs wait for a worker. Retry after the delay given."""

    status = 429

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after: int,
        backlog: int,
        max_backlog: int,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.backlog = backlog
        self.max_backlog = max_backlog
