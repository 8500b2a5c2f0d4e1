"""OpenAPI links: how one answer's values feed the next call (a submitted record's handoff, a
handoff's reference). Clients and stateful API fuzzers follow them; operation ids are FastAPI's
generated ones, and `tests/e2e/test_hostile_api.py` fails if one stops resolving."""

from __future__ import annotations

from typing import Any

GET_HANDOFF = "get_handoff_v1_handoffs__handoff_id__get"
RETRY_HANDOFF = "retry_v1_handoffs__handoff_id__retry_post"
CANCEL_HANDOFF = "cancel_v1_handoffs__handoff_id__cancel_post"
REFERENCE_HISTORY = "reference_history_v1_references__reference_id__get"


def _link(operation_id: str, parameter: str, pointer: str, description: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "parameters": {parameter: f"$response.body#{pointer}"},
        "description": description,
    }


def ok_with_links(links: dict[str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """A `responses=` entry adding links to the 200 answer."""
    return {200: {"links": links}}


#: From a submission: the first record's handoff and reference.
FROM_SUBMISSION = ok_with_links(
    {
        "GetHandoff": _link(
            GET_HANDOFF, "handoff_id", "/results/0/handoff_id", "The first record's handoff."
        ),
        "RetryHandoff": _link(
            RETRY_HANDOFF, "handoff_id", "/results/0/handoff_id", "Retry that handoff."
        ),
        "CancelHandoff": _link(
            CANCEL_HANDOFF, "handoff_id", "/results/0/handoff_id", "Cancel that handoff."
        ),
        "GetReference": _link(
            REFERENCE_HISTORY,
            "reference_id",
            "/results/0/reference_id",
            "The first record's reference history.",
        ),
    }
)

#: From one handoff (detail): its reference's history.
FROM_HANDOFF_DETAIL = ok_with_links(
    {
        "GetReference": _link(
            REFERENCE_HISTORY, "reference_id", "/handoff/reference_id", "Its reference's history."
        ),
    }
)

#: From a handoff as moved by retry or cancel: the handoff again.
FROM_HANDOFF = ok_with_links(
    {
        "GetHandoff": _link(GET_HANDOFF, "handoff_id", "/id", "The handoff, with its timeline."),
        "CancelHandoff": _link(CANCEL_HANDOFF, "handoff_id", "/id", "Cancel it."),
    }
)
