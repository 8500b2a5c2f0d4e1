"""What an ingestion handler raises to say how its failure should be retried."""

from __future__ import annotations

from datetime import timedelta

from app.domain.states import ReasonCode, RetryClass


class IngestionFailure(Exception):
    """Base of classified handler failures; anything else raised counts as unclassified."""

    retry_class: RetryClass = RetryClass.UNCLASSIFIED


class TransientError(IngestionFailure):
    """Worth retrying soon: a timeout, a 5xx, a dropped connection."""

    retry_class = RetryClass.TRANSIENT


class ThrottledError(IngestionFailure):
    """Downstream asked us to slow down; `retry_after` is its requested delay, if it gave one."""

    retry_class = RetryClass.THROTTLED

    def __init__(self, message: str = "throttled", retry_after: timedelta | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(IngestionFailure):
    """Retrying cannot help: bad payload, refused by validation, a 4xx."""

    retry_class = RetryClass.PERMANENT

    def __init__(
        self, message: str = "permanent error", reason: ReasonCode = ReasonCode.PERMANENT_ERROR
    ) -> None:
        super().__init__(message)
        self.reason = reason
