"""The dashboard over HTTP, on both engines: the cookie login, the scope and CSRF checks on
actions, escaping of scraped data, the list's filters and pages, replay, and the open mode
with auth off. (`test_dashboard_browser.py` drives the same pages in Chromium.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from app.api.app import create_app
from app.db import tables
from app.db.uow import Database
from app.domain.clock import FakeClock
from app.domain.states import HandoffState, ReasonCode
from app.domain.tokens import Scope
from app.services import tokens
from app.settings import Settings

TEXT = {"source": "shop", "content_type": "text/plain", "body": "a kettle"}
PNG = {"source": "shop", "content_type": "image/png", "body": "not text"}


def make_token(db: Database, name: str, *scopes: Scope) -> str:
    _, secret = db.run(lambda uow: tokens.create(uow, name, scopes, now=FakeClock().now()))
    return secret


@dataclass
class Dash:
    """A browser-like client of the app (cookies kept) and the app's database."""

    client: TestClient
    db: Database
    admin: dict[str, str]  # bearer header for seeding through the API

    def submit(self, **record: Any) -> dict[str, Any]:
        response = self.client.post("/v1/scrape-records", json=record, headers=self.admin)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()["results"][0]
        return result

    def login(self, *scopes: Scope, name: str = "ops") -> None:
        response = self.client.post(
            "/ops/login", data={"token": make_token(self.db, name, *scopes)}
        )
        assert response.status_code == 303, response.text

    def csrf(self, path: str) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.client.get(path).text)
        assert found, f"no form with a CSRF token on {path}"
        return found.group(1)

    def state(self, handoff_id: int) -> str:
        response = self.client.get(f"/v1/handoffs/{handoff_id}", headers=self.admin)
        state: str = response.json()["handoff"]["state"]
        return state


def app_for(db: Database, **settings: Any) -> Any:
    # Inline ingestion: a submission is ingested before the API answers (text succeeds, a PNG
    # fails permanently), so every test starts from settled, real handoffs.
    return create_app(Settings(database_url=db.url, inline_ingestion=True, **settings))


@pytest.fixture
def dash(db: Database) -> Iterator[Dash]:
    admin = {"Authorization": f"Bearer {make_token(db, 'seed', Scope.ADMIN)}"}
    with TestClient(app_for(db), follow_redirects=False) as client:
        yield Dash(client, db, admin)


def test_the_dashboard_is_not_part_of_the_openapi_document(dash: Dash) -> None:
    paths = dash.client.get("/openapi.json").json()["paths"]
    assert paths
    assert not [p for p in paths if p.startswith("/ops")]


def test_without_a_session_pages_lead_to_the_login_and_fragments_answer_401(dash: Dash) -> None:
    page = dash.client.get("/ops/handoffs?state=failed")
    assert page.status_code == 303
    assert page.headers["location"] == "/ops/login?next=/ops/handoffs%3Fstate%3Dfailed"
    assert dash.client.get("/ops/live/overview").status_code == 401
    assert dash.client.post("/ops/handoffs/1/retry", data={"csrf": "x"}).status_code == 303
    login = dash.client.get("/ops/login?next=/ops/handoffs")
    assert login.status_code == 200
    assert 'name="next" value="/ops/handoffs"' in login.text


def test_login_keeps_the_token_in_an_httponly_strict_cookie_and_returns_to_the_page(
    dash: Dash,
) -> None:
    secret = make_token(dash.db, "ops", Scope.READ)
    response = dash.client.post("/ops/login", data={"token": secret, "next": "/ops/handoffs"})
    assert response.status_code == 303
    assert response.headers["location"] == "/ops/handoffs"
    cookie = next(c for c in response.headers.get_list("set-cookie") if "handoff_ops_token" in c)
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/ops" in cookie
    assert "Secure" not in cookie  # plain http here; see the https test
    assert dash.client.get("/ops/handoffs").status_code == 200


def test_over_https_the_session_cookie_is_secure(db: Database) -> None:
    with TestClient(app_for(db), base_url="https://ops.test", follow_redirects=False) as client:
        secret = make_token(db, "ops", Scope.READ)
        response = client.post("/ops/login", data={"token": secret})
    cookies = response.headers.get_list("set-cookie")
    assert cookies
    assert all("Secure" in c for c in cookies)


@pytest.mark.parametrize("next_", ["https://evil.test/", "//evil.test/ops", "/v1/handoffs"])
def test_login_never_sends_the_browser_off_the_dashboard(dash: Dash, next_: str) -> None:
    secret = make_token(dash.db, "ops", Scope.READ)
    response = dash.client.post("/ops/login", data={"token": secret, "next": next_})
    assert response.headers["location"] == "/ops"


def test_login_refuses_unknown_and_scopeless_tokens_and_a_revoked_one_ends_the_session(
    dash: Dash,
) -> None:
    unknown = dash.client.post("/ops/login", data={"token": "hot_nope"})
    assert unknown.status_code == 401
    assert "unknown or revoked" in unknown.text
    ingest_only = make_token(dash.db, "scraper", Scope.INGEST)
    refused = dash.client.post("/ops/login", data={"token": ingest_only})
    assert refused.status_code == 403
    assert "lacks the &#39;read&#39; scope" in refused.text

    token, secret = dash.db.run(
        lambda uow: tokens.create(uow, "ops", [Scope.READ], now=FakeClock().now())
    )
    assert dash.client.post("/ops/login", data={"token": secret}).status_code == 303
    assert dash.client.get("/ops").status_code == 200
    dash.db.run(lambda uow: tokens.revoke(uow, token.id, now=FakeClock().now()))
    assert dash.client.get("/ops").status_code == 303


def test_a_login_posted_from_another_site_is_refused(dash: Dash) -> None:
    secret = make_token(dash.db, "ops", Scope.READ)
    response = dash.client.post(
        "/ops/login", data={"token": secret}, headers={"Origin": "https://evil.test"}
    )
    assert response.status_code == 403
    assert "handoff_ops_token" not in response.headers.get("set-cookie", "")


def test_the_overview_shows_every_state_and_reason_with_zeros(dash: Dash) -> None:
    dash.login(Scope.READ)
    page = dash.client.get("/ops")
    assert page.status_code == 200
    cells = re.findall(r'data-cell="([a-z_]+):([a-z_]+)"[^>]*>(\d+)<', page.text)
    assert len(cells) == len(HandoffState) * len(ReasonCode)
    assert {n for _, _, n in cells} == {"0"}
    counts = dict(re.findall(r'data-count="([a-z_]+)">(\d+)<', page.text))
    assert counts == {s.value: "0" for s in HandoffState}


def test_the_overview_counts_what_happened(dash: Dash) -> None:
    dash.submit(reference_id="shop:1", **TEXT)
    dash.submit(reference_id="shop:2", **PNG)
    dash.login(Scope.READ)
    fragment = dash.client.get("/ops/live/overview").text
    counts = dict(re.findall(r'data-count="([a-z_]+)">(\d+)<', fragment))
    assert (counts["succeeded"], counts["failed"], counts["queued"]) == ("1", "1", "0")
    assert re.search(r'data-cell="failed:permanent_validation_error"[^>]*><a [^>]*>1<', fragment)
    chart = dash.client.get("/ops/live/throughput").text
    assert "<svg" in chart
    assert "1 succeeded</strong>, <strong>1 failed" in chart


def test_scraped_data_is_escaped_everywhere_it_is_shown(dash: Dash) -> None:
    hostile = 'shop:<script>alert("r")</script>'
    result = dash.submit(
        reference_id=hostile, url="https://x.test/<img src=x onerror=alert(1)>", **PNG
    )
    dash.login(Scope.READ)
    pages = [
        dash.client.get(f"/ops/handoffs/{result['handoff_id']}").text,
        dash.client.get("/ops/handoffs").text,
        dash.client.get("/ops/live/handoffs?state=failed").text,
    ]
    for html in pages:
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(&#34;r&#34;)&lt;/script&gt;" in html
    assert "<img src=x" not in pages[0]
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[0]


def test_a_read_token_sees_no_action_and_cannot_act(dash: Dash) -> None:
    failed = dash.submit(reference_id="shop:png", **PNG)["handoff_id"]
    dash.login(Scope.READ)
    page = dash.client.get(f"/ops/handoffs/{failed}")
    assert page.status_code == 200
    assert "permanent_validation_error" in page.text
    assert "/retry" not in page.text
    csrf = dash.csrf("/ops")  # the logout form
    refused = dash.client.post(f"/ops/handoffs/{failed}/retry", data={"csrf": csrf})
    assert refused.status_code == 403
    assert "operate" in refused.text
    assert dash.state(failed) == "failed"


def test_an_action_needs_the_csrf_token_of_the_session_and_our_origin(dash: Dash) -> None:
    failed = dash.submit(reference_id="shop:png", **PNG)["handoff_id"]
    dash.login(Scope.READ, Scope.OPERATE)
    url = f"/ops/handoffs/{failed}/retry"
    csrf = dash.csrf(f"/ops/handoffs/{failed}")
    assert dash.client.post(url).status_code == 403
    assert dash.client.post(url, data={"csrf": "forged"}).status_code == 403
    foreign = {"Origin": "https://evil.test"}
    assert dash.client.post(url, data={"csrf": csrf}, headers=foreign).status_code == 403
    assert dash.state(failed) == "failed"

    done = dash.client.post(url, data={"csrf": csrf}, headers={"Origin": "http://testserver"})
    assert done.status_code == 303
    assert done.headers["location"] == f"/ops/handoffs/{failed}?done=retry"
    # Inline ingestion ran it again at once: a PNG fails again, now after an operator retry.
    detail = dash.client.get(f"/v1/handoffs/{failed}", headers=dash.admin).json()
    assert [e["reason_code"] for e in detail["events"]][3] == "operator_retry"
    assert detail["events"][3]["actor"] == "operator:token:ops"
    assert "Queued again" in dash.client.get(done.headers["location"]).text


def test_a_refused_action_shows_the_reason_on_the_handoff_page(dash: Dash) -> None:
    done = dash.submit(reference_id="shop:1", **TEXT)["handoff_id"]
    dash.login(Scope.OPERATE, Scope.READ)
    csrf = dash.csrf(f"/ops/handoffs/{done}")
    refused = dash.client.post(f"/ops/handoffs/{done}/retry", data={"csrf": csrf})
    assert refused.status_code == 409
    assert 'class="error"' in refused.text
    assert dash.state(done) == "succeeded"
    missing = dash.client.post("/ops/handoffs/999999/cancel", data={"csrf": csrf})
    assert missing.status_code == 404


def test_cancel_from_the_dashboard(db: Database) -> None:
    # No inline ingestion here: the handoff stays queued until cancelled.
    with TestClient(create_app(Settings(database_url=db.url)), follow_redirects=False) as client:
        dash = Dash(client, db, {"Authorization": f"Bearer {make_token(db, 's', Scope.ADMIN)}"})
        queued = dash.submit(reference_id="shop:1", **TEXT)["handoff_id"]
        dash.login(Scope.ADMIN)
        page = client.get(f"/ops/handoffs/{queued}").text
        assert "/cancel" in page
        assert "/retry" not in page
        csrf = dash.csrf(f"/ops/handoffs/{queued}")
        assert client.post(f"/ops/handoffs/{queued}/cancel", data={"csrf": csrf}).status_code == 303
        assert dash.state(queued) == "cancelled"


def test_the_list_filters_and_pages_as_the_api_does(dash: Dash) -> None:
    ids = [dash.submit(reference_id=f"shop:{i}", **TEXT)["handoff_id"] for i in range(3)]
    ids += [dash.submit(reference_id="news:1", **{**PNG, "source": "news"})["handoff_id"]]
    dash.login(Scope.READ)

    def rows(html: str) -> list[int]:
        return [int(i) for i in re.findall(r'data-handoff="(\d+)"', html)]

    first = dash.client.get("/ops/handoffs?limit=2")
    assert rows(first.text) == [ids[3], ids[2]]
    older = re.search(r'rel="next" href="/ops/handoffs\?([^"]+)"', first.text)
    assert older
    second = dash.client.get("/ops/handoffs?" + older.group(1).replace("&amp;", "&"))
    assert rows(second.text) == [ids[1], ids[0]]
    assert 'rel="next"' not in second.text

    assert rows(dash.client.get("/ops/handoffs?source=news").text) == [ids[3]]
    assert rows(dash.client.get("/ops/handoffs?state=failed&state=").text) == [ids[3]]
    by_reference = dash.client.get("/ops/live/handoffs", params={"reference_id": "shop:1"})
    assert rows(by_reference.text) == [ids[1]]
    assert rows(dash.client.get("/ops/handoffs?stuck=true").text) == []


@pytest.mark.parametrize(
    ("query", "field"),
    [("state=bogus", "state"), ("limit=0", "limit"), ("cursor=nope", "cursor")],
)
def test_a_bad_filter_is_a_422_page_naming_the_field(dash: Dash, query: str, field: str) -> None:
    dash.login(Scope.READ)
    page = dash.client.get(f"/ops/handoffs?{query}")
    assert page.status_code == 422
    assert re.search(rf'class="error" role="alert">[^<]*{field}', page.text), page.text


def test_an_unknown_handoff_is_a_404_page(dash: Dash) -> None:
    dash.login(Scope.READ)
    for raw in ("999999", "0", "abc", str(2**64), "²"):
        assert dash.client.get(f"/ops/handoffs/{raw}").status_code == 404


def test_replay_previews_then_requeues(dash: Dash) -> None:
    failed = [dash.submit(reference_id=f"shop:{i}", **PNG)["handoff_id"] for i in range(2)]
    dash.submit(reference_id="shop:ok", **TEXT)
    dash.login(Scope.READ, Scope.OPERATE)
    csrf = dash.csrf("/ops/handoffs?state=failed")
    form = {"csrf": csrf, "state": "failed", "dry_run": "true"}
    preview = dash.client.post("/ops/replay", data=form)
    assert preview.status_code == 200
    assert "would requeue <strong>2</strong>" in preview.text
    assert [dash.state(h) for h in failed] == ["failed", "failed"]

    done = dash.client.post("/ops/replay", data={**form, "dry_run": "false"})
    assert "Requeued <strong>2</strong>" in done.text
    events = dash.client.get(f"/v1/handoffs/{failed[0]}", headers=dash.admin).json()["events"]
    assert "operator_retry" in [e["reason_code"] for e in events]
    bad = dash.client.post("/ops/replay", data={**form, "state": "bogus"})
    assert bad.status_code == 422


def test_logout_ends_the_session(dash: Dash) -> None:
    dash.login(Scope.READ)
    csrf = dash.csrf("/ops")
    assert dash.client.post("/ops/logout", data={"csrf": "forged"}).status_code == 403
    out = dash.client.post("/ops/logout", data={"csrf": csrf})
    assert out.status_code == 303
    assert dash.client.get("/ops").status_code == 303


def test_with_auth_off_the_dashboard_is_open_and_still_checks_csrf(db: Database) -> None:
    with TestClient(app_for(db, auth_enabled=False), follow_redirects=False) as client:
        dash = Dash(client, db, {})
        failed = dash.submit(reference_id="shop:png", **PNG)["handoff_id"]
        assert client.get("/ops/login").headers["location"] == "/ops"
        page = client.get(f"/ops/handoffs/{failed}")
        assert page.status_code == 200
        assert "anonymous (auth off)" in page.text
        url = f"/ops/handoffs/{failed}/retry"
        assert client.post(url, data={"csrf": "forged"}).status_code == 403
        csrf = dash.csrf(f"/ops/handoffs/{failed}")
        assert client.post(url, data={"csrf": csrf}).status_code == 303


def test_pages_forbid_inline_script_and_framing_and_static_files_are_local(dash: Dash) -> None:
    dash.login(Scope.READ)
    page = dash.client.get("/ops")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert "<script>" not in page.text  # scripts come from /ops/static only
    for src in re.findall(r'(?:src|href)="(/ops/static/[^"?]+)', page.text):
        assert dash.client.get(src).status_code == 200
    assert "http://" not in page.text.split("<main>")[0]  # nothing from another host


def test_the_overview_lists_what_is_stuck(db: Database) -> None:
    clock = FakeClock()
    settings = Settings(database_url=db.url, stuck_after_seconds=60)
    with TestClient(create_app(settings, clock=clock), follow_redirects=False) as client:
        dash = Dash(client, db, {"Authorization": f"Bearer {make_token(db, 's', Scope.ADMIN)}"})
        queued = dash.submit(reference_id="shop:slow", **TEXT)["handoff_id"]
        dash.login(Scope.READ)
        assert 'data-figure="stuck">0 stuck' in client.get("/ops").text
        clock.advance(61)  # no worker runs: the handoff waits past the threshold
        page = client.get("/ops").text
    assert 'data-figure="stuck">1 stuck' in page
    assert f'<a href="/ops/handoffs/{queued}">{queued}</a>' in page
    assert "shop:slow" in page


def test_the_handoff_page_summarises_the_payload_and_notes_a_missing_one(dash: Dash) -> None:
    done = dash.submit(reference_id="shop:1", url="https://shop.test/p/1", **TEXT)
    dash.login(Scope.READ)
    page = dash.client.get(f"/ops/handoffs/{done['handoff_id']}").text
    for shown in ("text/plain", "(8 bytes)", "https://shop.test/p/1", done["payload_hash"]):
        assert shown in page
    assert "a kettle" in page  # the document's excerpt

    with dash.db.transaction() as uow:
        uow.conn.execute(delete(tables.scrape_records))
    page = dash.client.get(f"/ops/handoffs/{done['handoff_id']}").text
    assert "The stored scrape record of this version is gone" in page
