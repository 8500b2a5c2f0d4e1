"""Logging never fails its caller: a closed or swapped stderr drops lines, it raises nothing."""

from __future__ import annotations

import io
import logging
import sys

import pytest
import structlog

from app import log


def test_a_closed_stderr_neither_breaks_structlog_nor_the_standard_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    log.configure(format="json")
    structlog.get_logger().info("before", handoff_id=1)
    logging.getLogger("some.library").warning("library line")
    assert '"event": "before"' in first.getvalue()
    assert "library line" in first.getvalue()
    first.close()  # whoever owned it is gone; the handler still holds it

    structlog.get_logger().info("while closed")  # dropped, not raised
    logging.getLogger("some.library").warning("dropped too")

    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("some.library").warning("after the swap")
    structlog.get_logger().info("after", handoff_id=2)
    assert "after the swap" in second.getvalue()
    assert '"event": "after"' in second.getvalue()


def test_enabled_follows_the_configured_level(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    try:
        log.configure(format="json", level="WARNING")
        assert not log.enabled(logging.INFO)
        assert log.enabled(logging.WARNING)
        log.configure(format="json", level="DEBUG")
        assert log.enabled(logging.DEBUG)
    finally:
        log.configure(format="json")  # the default level, INFO, for whatever runs next
    assert log.enabled(logging.INFO)
    assert not log.enabled(logging.DEBUG)
