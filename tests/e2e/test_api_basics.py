"""The HTTP API through the real app (ASGI), on both engines: submission, errors, reads."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.api.app import create_app
from app.db.uow import Database
from app.domain.clock import SystemClock
from app.domain.tokens import Scope
from app.services import tokens
from app.settings import Settings


def make_token(db_url: str, *scopes: Scope) -> str:
    db = Database(db_url)
    try:
        _, secret = db.run(lambda uow: tokens.create(uow, "tests", scopes, now=SystemClock().now()))
    finally:
        db.dispose()
    return secret


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    """The app with an admin token sent on every request."""
    settings = Settings(database_url=db_url, max_batch_records=3, inline_ingestion=True)
    headers = {"Authorization": f"Bearer {make_token(db_url, Scope.ADMIN)}"}
    with TestClient(create_app(settings), headers=headers) as c:
        yield c


RECORD = {"source": "api", "url": "https://example.com/p", "body": "<p>hi</p>"}


def test_a_record_is_stored_handed_off_and_ingested_inline(client: TestClient) -> None:
    created = client.post("/v1/scrape-records", json=RECORD)
    assert created.status_code == 200
    (result,) = created.json()["results"]
    assert result["outcome"] == "created"
    assert result["reference_id"] == "api:https://example.com/p"
    detail = client.get(f"/v1/handoffs/{result['handoff_id']}").json()
    assert detail["handoff"]["state"] == "succeeded"
    assert [e["to_state"] for e in detail["events"]] == ["queued", "running", "succeeded"]
    assert [a["outcome"] for a in detail["attempts"]] == ["succeeded"]

    again = client.post("/v1/scrape-records", json={"records": [RECORD]}).json()["results"][0]
    assert (again["outcome"], again["first_outcome"]) == ("duplicate", "created")
    assert (again["handoff_id"], again["state"]) == (result["handoff_id"], "succeeded")


def test_a_bad_record_in_a_batch_names_its_field_and_writes_nothing(client: TestClient) -> None:
    batch = {"records": [RECORD, {"source": "api", "body": "no url, no reference"}]}
    response = client.post("/v1/scrape-records", json=batch)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "records.1"
    stats = client.get("/v1/handoffs/stats").json()
    assert sum(stats["totals"].values()) == 0


def test_a_single_record_error_names_the_field_without_batch_noise(client: TestClient) -> None:
    response = client.post("/v1/scrape-records", json={**RECORD, "url": "ftp://example.com/"})
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "url", "message": "Value error, url must be an absolute http(s) URL"}
    ]


def test_a_wrong_payload_hash_is_refused_naming_the_field(client: TestClient) -> None:
    response = client.post(
        "/v1/scrape-records", json={**RECORD, "payload_hash": "sha256:" + "0" * 64}
    )
    assert response.status_code == 422
    assert response.json()["field"] == "payload_hash"
    assert sum(client.get("/v1/handoffs/stats").json()["totals"].values()) == 0


def test_a_batch_over_the_limit_is_refused(client: TestClient) -> None:
    records = [{**RECORD, "url": f"https://example.com/{i}"} for i in range(4)]
    response = client.post("/v1/scrape-records", json={"records": records})
    assert response.status_code == 422
    assert response.json()["field"] == "records"


def test_an_unknown_handoff_is_a_404_problem(client: TestClient) -> None:
    response = client.get("/v1/handoffs/999")
    assert response.status_code == 404
    assert response.json()["detail"] == "no handoff 999"


def test_stats_list_every_state_and_reason_with_zeros(client: TestClient) -> None:
    stats = client.get("/v1/handoffs/stats").json()
    assert len(stats["counts"]) == 8
    assert all(len(by_reason) == 21 for by_reason in stats["counts"].values())
    assert stats["counts"]["failed"]["poison_suspected"] == 0


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_no_token_is_a_401_problem_that_asks_for_a_bearer(client: TestClient) -> None:
    response = client.get("/v1/handoffs/stats", headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"


def test_a_token_without_the_scope_is_a_403(client: TestClient, db_url: str) -> None:
    reader = make_token(db_url, Scope.READ)
    response = client.post(
        "/v1/scrape-records", json=RECORD, headers={"Authorization": f"Bearer {reader}"}
    )
    assert response.status_code == 403
    assert "ingest" in response.json()["detail"]
    assert sum(client.get("/v1/handoffs/stats").json()["totals"].values()) == 0


def test_a_revoked_token_stops_working_at_once(client: TestClient, db_url: str) -> None:
    reader = make_token(db_url, Scope.READ)
    headers = {"Authorization": f"Bearer {reader}"}
    assert client.get("/v1/handoffs/stats", headers=headers).status_code == 200
    db = Database(db_url)
    with db.transaction() as uow:
        (token,) = [t for t in uow.tokens.all() if t.scopes == {Scope.READ}]
        tokens.revoke(uow, token.id, now=SystemClock().now())
    db.dispose()
    assert client.get("/v1/handoffs/stats", headers=headers).status_code == 401


def test_tokens_are_stored_hashed(db_url: str) -> None:
    secret = make_token(db_url, Scope.READ)
    db = Database(db_url)
    with db.transaction(write=False) as uow:
        stored = [
            row.token_hash for row in uow.conn.execute(text("SELECT token_hash FROM api_tokens"))
        ]
    db.dispose()
    assert secret not in stored
    assert len(stored) == 1


def test_switching_auth_off_is_announced_loudly(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(database_url=db_url, auth_enabled=False)
    with TestClient(create_app(settings)) as c:
        assert c.get("/v1/handoffs/stats").status_code == 200  # open to anyone
    captured = capsys.readouterr()
    assert "auth.disabled" in captured.out + captured.err
