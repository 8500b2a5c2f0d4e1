"""The handoffs and references routes through the real app, on both engines: list, filter and
page; why a handoff is where it is; stats; retry, cancel and replay; a reference's history.

States are set up through the service layer on the same database, with a fake clock the app
shares, so ages, leases and windows are exact."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from app.api.app import create_app
from app.db.uow import Database
from app.domain.clock import FakeClock
from app.domain.models import Lease
from app.domain.retry import RetryPolicy
from app.domain.states import RetryClass
from app.domain.tokens import Scope
from app.services import ingestion, tokens
from app.services.ingestion import Failure
from app.settings import Settings
from tests.support import WORKER, at, claim, hand_off, hand_off_one, version

STUCK_AFTER = 900.0


@dataclass
class Api:
    client: TestClient
    db: Database
    clock: FakeClock

    def get(self, url: str, **params: Any) -> Any:
        response = self.client.get(url, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def ids(self, **params: Any) -> list[int]:
        return [h["id"] for h in self.get("/v1/handoffs", **params)["items"]]

    def why(self, handoff_id: int) -> str:
        why: str = self.get(f"/v1/handoffs/{handoff_id}")["why"]
        return why

    def state(self, handoff_id: int) -> str:
        state: str = self.get(f"/v1/handoffs/{handoff_id}")["handoff"]["state"]
        return state


def make_token(db: Database, name: str, *scopes: Scope) -> str:
    _, secret = db.run(lambda uow: tokens.create(uow, name, scopes, now=FakeClock().now()))
    return secret


@pytest.fixture
def api(db: Database, clock: FakeClock) -> Iterator[Api]:
    """The app on the test's database and clock, with an admin token named `ops`."""
    settings = Settings(database_url=db.url, stuck_after_seconds=STUCK_AFTER)
    headers = {"Authorization": f"Bearer {make_token(db, 'ops', Scope.ADMIN)}"}
    with TestClient(create_app(settings, clock=clock), headers=headers) as client:
        yield Api(client, db, clock)


def fail(api: Api, handoff_id: int, lease_token: int, retry_class: RetryClass, error: str) -> None:
    with api.db.transaction() as uow:
        ingestion.fail(
            uow,
            Lease(handoff_id, lease_token),
            Failure(retry_class, error),
            now=api.clock.now(),
            worker_id=WORKER,
            policy=RetryPolicy(),
            rand=lambda: 0.0,
        )


def complete(api: Api, handoff_id: int, lease_token: int) -> None:
    with api.db.transaction() as uow:
        ingestion.complete_one(
            uow, Lease(handoff_id, lease_token), now=api.clock.now(), worker_id=WORKER
        )


def failed_one(api: Api, reference_id: str, body: str = "v1", *, fetched: float = 0) -> int:
    """A handoff of `reference_id` that failed permanently."""
    hid = hand_off_one(api.db, api.clock, version(reference_id, body, fetched_at=at(fetched)))
    (job,) = claim(api.db, api.clock)
    fail(api, hid.handoff_id, job.handoff.lease_token, RetryClass.PERMANENT, "unparseable")
    return hid.handoff_id


# -- list, filters, pages ------------------------------------------------------------------------


def test_the_list_filters_by_state_reason_source_reference_and_time(api: Api) -> None:
    d = failed_one(api, "shop:d")
    a = hand_off_one(api.db, api.clock, version("shop:a", "a")).handoff_id
    claim(api.db, api.clock)  # a runs
    api.clock.advance(60)
    b = hand_off_one(api.db, api.clock, version("shop:b", "b")).handoff_id
    c = hand_off_one(api.db, api.clock, version("blog:c", "c", source="blog")).handoff_id

    assert api.ids() == [c, b, a, d]  # newest first
    assert api.ids(state="running") == [a]
    assert api.ids(state=["queued", "failed"]) == [c, b, d]
    assert api.ids(reason_code="permanent_error") == [d]
    assert api.ids(source="blog") == [c]
    assert api.ids(reference_id="shop:b") == [b]
    assert api.ids(created_after=at(60).isoformat()) == [c, b]
    assert api.ids(created_before=at(60).isoformat()) == [a, d]
    naive_range = {"created_after": "2026-03-01T11:59:00", "created_before": "2026-03-01T12:00:01"}
    assert api.ids(**naive_range) == [a, d]
    assert api.ids(source="blog", state="failed") == []


def test_pages_walk_every_match_exactly_once(api: Api) -> None:
    made = [
        r.handoff_id
        for r in hand_off(api.db, api.clock, *(version(f"r:{i}", f"b{i}") for i in range(11)))
    ]
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/handoffs", **params)
        seen += [h["id"] for h in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == sorted(made, reverse=True)


def test_a_page_cursor_keeps_its_place_while_new_handoffs_arrive(api: Api) -> None:
    first = [
        r.handoff_id for r in hand_off(api.db, api.clock, version("r:1", "1"), version("r:2", "2"))
    ]
    page = api.get("/v1/handoffs", limit=1)
    hand_off_one(api.db, api.clock, version("r:3", "3"))
    rest = api.get("/v1/handoffs", limit=10, cursor=page["next_cursor"])
    assert [h["id"] for h in rest["items"]] == [min(first)]
    assert rest["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "aDow"}, "cursor"),  # "h:0": well formed, but no id is 0
        ({"cursor": "x" * 65}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"state": "sleeping"}, "state.0"),
        ({"reason_code": "bored"}, "reason_code"),
        ({"reference_id": " padded"}, "reference_id"),
        ({"reference_id": "nul\x00byte"}, "reference_id"),
        ({"source": "'; DROP TABLE ingestion_handoffs; --"}, "source"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_before": "0001-01-01T00:00:00+05:00"}, "created_before"),
        ({"stuk": "true"}, "stuk"),
    ],
)
def test_bad_list_parameters_are_a_422_naming_the_parameter(
    api: Api, params: dict[str, Any], field: str
) -> None:
    response = api.client.get("/v1/handoffs", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    named = {body.get("field")} | {e["field"] for e in body.get("errors") or []}
    assert field in named


def test_the_stuck_filter_finds_old_runnable_expired_and_long_waiting_handoffs(api: Api) -> None:
    running = hand_off_one(api.db, api.clock, version("r:run", "1")).handoff_id
    claim(api.db, api.clock)  # lease for 60 s
    waiting = hand_off_one(api.db, api.clock, version("r:run", "2", fetched_at=at(1))).handoff_id
    queued = hand_off_one(api.db, api.clock, version("r:old", "1")).handoff_id
    assert api.ids(stuck="true") == []

    api.clock.advance(STUCK_AFTER)
    fresh = hand_off_one(api.db, api.clock, version("r:new", "1")).handoff_id
    assert api.ids(stuck="true") == [queued, waiting, running]
    assert api.ids(stuck="false") == [fresh]
    assert api.get("/v1/handoffs/stats")["stuck"] == 3


# -- one handoff and why -------------------------------------------------------------------------


def test_a_running_handoff_says_who_holds_its_lease_until_when(api: Api) -> None:
    hid = hand_off_one(api.db, api.clock, version("r:1", "1")).handoff_id
    claim(api.db, api.clock)
    assert api.why(hid) == "Lease held by worker w1 until 2026-03-01T12:01:00Z (attempt 1)."
    api.clock.advance(61)
    assert api.why(hid).startswith("Lease held by worker w1 expired at 2026-03-01T12:01:00Z")


def test_a_waiting_handoff_names_the_running_one_ahead_of_it(api: Api) -> None:
    first = hand_off_one(api.db, api.clock, version("r:1", "1")).handoff_id
    claim(api.db, api.clock)
    second = hand_off_one(api.db, api.clock, version("r:1", "2", fetched_at=at(5))).handoff_id
    assert api.state(second) == "waiting"
    assert api.why(second) == (
        f"Waiting behind handoff {first}, which is running on worker w1; queued when that one ends."
    )


def test_a_retry_wait_handoff_says_when_and_after_how_many_failures(api: Api) -> None:
    hid = hand_off_one(api.db, api.clock, version("r:1", "1")).handoff_id
    (job,) = claim(api.db, api.clock)
    fail(api, hid, job.handoff.lease_token, RetryClass.TRANSIENT, "connection reset")
    why = api.why(hid)
    assert why.startswith("Retrying at 2026-03-01T12:00:15Z after 1 failure.")  # 30 s, jitter 0
    assert "Reason: transient_error" in why
    assert why.endswith("Last error: connection reset")


def test_a_failed_handoff_says_why_with_its_last_error(api: Api) -> None:
    hid = failed_one(api, "r:1")
    assert api.why(hid) == (
        "Failed permanently at 2026-03-01T12:00:00Z because the handler reported an error "
        "that retrying cannot fix (permanent_error). Last error: unparseable"
    )


def test_a_superseded_handoff_names_the_newer_one(api: Api) -> None:
    old = hand_off_one(api.db, api.clock, version("r:1", "1")).handoff_id
    new = hand_off_one(api.db, api.clock, version("r:1", "2", fetched_at=at(5))).handoff_id
    stale = hand_off_one(api.db, api.clock, version("r:1", "0", fetched_at=at(-5))).handoff_id
    assert api.why(old).startswith(f"Superseded by handoff {new} (queued) at ")
    assert "superseded_by_newer_payload" in api.why(old)
    assert api.why(stale).startswith(f"Superseded by handoff {new} (queued) at ")
    assert "Reason: stale_payload" in api.why(stale)


def test_a_succeeded_handoff_says_when(api: Api) -> None:
    hid = hand_off_one(api.db, api.clock, version("r:1", "1")).handoff_id
    (job,) = claim(api.db, api.clock)
    api.clock.advance(2)
    complete(api, hid, job.handoff.lease_token)
    detail = api.get(f"/v1/handoffs/{hid}")
    assert detail["why"] == (
        "Succeeded at 2026-03-01T12:00:02Z after 1 attempt; the document was written."
    )
    assert [e["to_state"] for e in detail["events"]] == ["queued", "running", "succeeded"]
    assert [a["outcome"] for a in detail["attempts"]] == ["succeeded"]


def test_a_queued_handoff_says_since_when(api: Api) -> None:
    hid = hand_off_one(api.db, api.clock, version("r:1", "1")).handoff_id
    assert api.why(hid).startswith("Queued since 2026-03-01T12:00:00Z, for a worker to claim it.")


@pytest.mark.parametrize("handoff_id", ["0", "-1", "9223372036854775808", "abc"])
def test_an_impossible_handoff_id_is_a_422(api: Api, handoff_id: str) -> None:
    response = api.client.get(f"/v1/handoffs/{handoff_id}")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "handoff_id"


def test_an_unknown_handoff_is_a_404(api: Api) -> None:
    assert api.client.get("/v1/handoffs/9223372036854775807").status_code == 404


# -- stats ---------------------------------------------------------------------------------------


def test_stats_give_ages_stuck_and_throughput_on_the_app_clock(api: Api) -> None:
    expired = hand_off_one(api.db, api.clock, version("r:e", "e")).handoff_id
    claim(api.db, api.clock)  # its lease ends at 60 s and nobody renews it
    done, failing = (
        r.handoff_id for r in hand_off(api.db, api.clock, version("r:b", "b"), version("r:d", "d"))
    )
    jobs = {j.handoff.id: j.handoff.lease_token for j in claim(api.db, api.clock)}
    complete(api, done, jobs[done])  # finished at 0 s
    hand_off_one(api.db, api.clock, version("r:a", "a"))  # queued at 0 s, never claimed
    api.clock.advance(900)
    fail(api, failing, jobs[failing], RetryClass.PERMANENT, "bad")  # finished at 900 s
    api.clock.advance(100)

    stats = api.get("/v1/handoffs/stats")
    assert stats["oldest_age_seconds"] == {
        "queued": 1000.0,
        "running": 1000.0,
        "retry_wait": None,
        "waiting": None,
        "succeeded": 1000.0,
        "failed": 1000.0,
        "cancelled": None,
        "superseded": None,
    }
    assert stats["stuck"] == 2  # queued 1000 s without a claim; a lease expired at 60 s
    assert stats["stuck_after_seconds"] == STUCK_AFTER
    assert stats["last_5_minutes"] == {"succeeded": 0, "failed": 1}
    assert stats["last_60_minutes"] == {"succeeded": 1, "failed": 1}
    assert stats["totals"]["running"] == 1
    assert stats["counts"]["running"]["claimed"] == 1
    assert expired in api.ids(stuck="true")

    api.clock.advance(3600)
    later = api.get("/v1/handoffs/stats")
    assert later["last_60_minutes"] == {"succeeded": 0, "failed": 0}


# -- retry, cancel -------------------------------------------------------------------------------


def test_cancel_then_retry_answer_200_with_the_token_as_actor(api: Api) -> None:
    hid = hand_off_one(api.db, api.clock, version("r:1", "1")).handoff_id
    cancelled = api.client.post(f"/v1/handoffs/{hid}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    assert api.why(hid) == "Cancelled by operator:token:ops at 2026-03-01T12:00:00Z."

    retried = api.client.post(f"/v1/handoffs/{hid}/retry")
    assert retried.status_code == 200
    assert (retried.json()["state"], retried.json()["reason_code"]) == ("queued", "operator_retry")
    events = api.get(f"/v1/handoffs/{hid}")["events"]
    assert [e["actor"] for e in events[1:]] == ["operator:token:ops"] * 2


def test_retry_and_cancel_refuse_with_409_and_the_reason(api: Api) -> None:
    failed = failed_one(api, "r:2")
    hid = hand_off_one(api.db, api.clock, version("r:1", "1")).handoff_id
    refused = api.client.post(f"/v1/handoffs/{hid}/retry")
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    assert (
        refused.json()["detail"]
        == f"only failed or cancelled handoffs can be retried; {hid} is queued"
    )

    active = hand_off_one(api.db, api.clock, version("r:2", "v2", fetched_at=at(5))).handoff_id
    busy = api.client.post(f"/v1/handoffs/{failed}/retry")
    assert busy.status_code == 409
    assert busy.json()["detail"] == f"reference 'r:2' already has active handoff {active} (queued)"

    again = api.client.post(f"/v1/handoffs/{failed}/cancel")
    assert again.status_code == 409
    assert again.json()["detail"] == f"handoff {failed} is already failed"


@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_retry_and_cancel_of_an_unknown_handoff_are_404(api: Api, action: str) -> None:
    response = api.client.post(f"/v1/handoffs/999/{action}")
    assert response.status_code == 404
    assert response.json()["detail"] == "no handoff 999"


def test_a_read_token_cannot_operate(api: Api) -> None:
    hid = hand_off_one(api.db, api.clock, version("r:1", "1")).handoff_id
    reader = {"Authorization": f"Bearer {make_token(api.db, 'reader', Scope.READ)}"}
    assert api.client.post(f"/v1/handoffs/{hid}/cancel", headers=reader).status_code == 403
    assert api.client.post("/v1/handoffs/replay", json={}, headers=reader).status_code == 403
    assert api.state(hid) == "queued"


# -- replay --------------------------------------------------------------------------------------


def replay_fixture(api: Api) -> dict[str, int]:
    """Three failed or cancelled handoffs: one replayable, one behind active work, one with a
    newer version handed off since."""
    ok = failed_one(api, "r:ok")
    busy = failed_one(api, "r:busy")
    old = hand_off_one(api.db, api.clock, version("r:old", "v1")).handoff_id
    api.client.post(f"/v1/handoffs/{old}/cancel").raise_for_status()
    newer = hand_off_one(api.db, api.clock, version("r:old", "v2", fetched_at=at(5))).handoff_id
    (job,) = claim(api.db, api.clock)
    complete(api, newer, job.handoff.lease_token)
    active = hand_off_one(api.db, api.clock, version("r:busy", "v2", fetched_at=at(5))).handoff_id
    return {"ok": ok, "busy": busy, "active": active, "old": old, "newer": newer}


def test_a_replay_dry_run_says_what_would_happen_and_changes_nothing(api: Api) -> None:
    ids = replay_fixture(api)
    before = {h: api.get(f"/v1/handoffs/{h}") for h in ids.values()}

    report = api.client.post("/v1/handoffs/replay", json={}).json()
    assert report["dry_run"] is True
    assert (report["matched"], report["requeued"], report["refused"]) == (3, 1, 2)
    assert report["truncated"] is False
    outcomes = {i["id"]: (i["outcome"], i["reason"]) for i in report["items"]}
    assert outcomes[ids["ok"]] == ("requeued", None)
    assert outcomes[ids["busy"]] == (
        "refused",
        f"reference 'r:busy' already has active handoff {ids['active']} (queued)",
    )
    assert outcomes[ids["old"]][0] == "refused"
    assert "older version" in str(outcomes[ids["old"]][1])
    assert {h: api.get(f"/v1/handoffs/{h}") for h in ids.values()} == before


def test_a_replay_requeues_what_the_dry_run_promised(api: Api) -> None:
    ids = replay_fixture(api)
    dry = api.client.post("/v1/handoffs/replay", json={"dry_run": True}).json()
    real = api.client.post("/v1/handoffs/replay", json={"dry_run": False}).json()
    assert real["dry_run"] is False
    assert real["items"] == dry["items"]
    assert api.state(ids["ok"]) == "queued"
    assert api.get(f"/v1/handoffs/{ids['ok']}")["events"][-1]["actor"] == "operator:token:ops"
    assert (api.state(ids["busy"]), api.state(ids["old"])) == ("failed", "cancelled")
    again = api.client.post("/v1/handoffs/replay", json={"dry_run": False}).json()
    assert (again["matched"], again["requeued"]) == (2, 0)


def test_a_replay_filter_narrows_and_a_second_version_in_one_run_is_refused(api: Api) -> None:
    ids = replay_fixture(api)
    only = api.client.post("/v1/handoffs/replay", json={"reference_id": "r:ok"}).json()
    assert [i["id"] for i in only["items"]] == [ids["ok"]]
    none = api.client.post("/v1/handoffs/replay", json={"state": ["succeeded"]}).json()
    assert (none["matched"], none["items"]) == (0, [])
    cancelled = api.client.post("/v1/handoffs/replay", json={"state": ["cancelled"]}).json()
    assert [i["id"] for i in cancelled["items"]] == [ids["old"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"dry_run": "maybe"}, "dry_run"),
        ({"state": ["nope"]}, "state.0"),
        ({"everything": True}, "everything"),
        ({"reference_id": ""}, "reference_id"),
    ],
)
def test_a_bad_replay_body_is_a_422_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    failed_one(api, "r:1")
    response = api.client.post("/v1/handoffs/replay", json=body)
    assert response.status_code == 422
    assert field in {e["field"] for e in response.json()["errors"]}
    assert api.get("/v1/handoffs/stats")["totals"]["failed"] == 1


# -- reference history ---------------------------------------------------------------------------


def test_a_reference_history_lists_versions_handoffs_and_the_current_document(
    db_url: str, db: Database
) -> None:
    settings = Settings(database_url=db_url, inline_ingestion=True)
    headers = {"Authorization": f"Bearer {make_token(db, 'ops', Scope.ADMIN)}"}
    url = "https://example.com/a/b?c=d"
    first = {"source": "shop", "url": url, "body": "first", "fetched_at": "2026-03-01T10:00:00Z"}
    second = {**first, "body": "second text", "fetched_at": "2026-03-01T11:00:00Z"}
    with TestClient(create_app(settings), headers=headers) as client:
        reference_id = client.post("/v1/scrape-records", json=first).json()["results"][0][
            "reference_id"
        ]
        assert reference_id == f"shop:{url}"
        client.post("/v1/scrape-records", json=second).raise_for_status()

        history = client.get(f"/v1/references/{quote(reference_id, safe=':/')}")
        assert history.status_code == 200, history.text
        body = history.json()
        assert body["reference_id"] == reference_id
        assert [v["fetched_at"] for v in body["versions"]] == [
            "2026-03-01T11:00:00Z",
            "2026-03-01T10:00:00Z",
        ]
        assert [v["size"] for v in body["versions"]] == [len("second text"), len("first")]
        assert [h["state"] for h in body["handoffs"]] == ["succeeded", "succeeded"]
        assert body["handoffs"][0]["payload_hash"] == body["versions"][0]["payload_hash"]
        document = body["current_document"]
        assert document["payload_hash"] == body["versions"][0]["payload_hash"]
        assert (document["excerpt"], document["text_length"]) == ("second text", 11)

        assert client.get("/v1/references/shop:https://example.com/none").status_code == 404
        padded = client.get("/v1/references/%20padded")
        assert padded.status_code == 422
        assert padded.json()["field"] == "reference_id"


def test_a_reference_without_a_document_yet_has_none(api: Api) -> None:
    hand_off_one(api.db, api.clock, version("r:1", "1"))
    body = api.get("/v1/references/r:1")
    assert body["current_document"] is None
    assert [h["state"] for h in body["handoffs"]] == ["queued"]
    assert body["versions"][0]["content_type"].startswith("text/plain")
