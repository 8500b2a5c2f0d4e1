"""The batched enqueue statement probes the indexes once per version, whatever the planner thinks
of the table. With 100 versions against a ledger of some ten thousand handoffs whose statistics
autovacuum had not caught up with, it chose hash joins over sequential scans of the whole
ledger, twice per batch: costed as cheaper than 200 index probes, they took 9 ms where the
probes take under one. EXPLAIN the app's own statement text on a filled PostgreSQL database."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from app.db import outbox_store
from app.db.handoff_store import enqueue_params
from app.db.record_store import record_params
from app.domain.states import EnqueueOutcome, HandoffState, ReasonCode
from tests.support import T0, version

LEDGER = 20_000


def _fill(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        """
        INSERT INTO ingestion_handoffs (
            reference_id, payload_hash, source, fetched_at, state, reason_code, enqueue_outcome,
            run_after, created_at, updated_at, finished_at
        )
        SELECT 'ref-' || i, 'sha256:' || md5(i::text), 'shop', %(t)s, 'succeeded', 'succeeded',
               'created', %(t)s, %(t)s, %(t)s, %(t)s
        FROM generate_series(1, %(n)s) AS i
        """,
        {"t": T0, "n": LEDGER},
    )
    # No ANALYZE: as on a ledger autovacuum has not got to yet, the planner guesses


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found.extend(_nodes(child))
    return found


def test_a_batch_probes_the_ledger_by_index_never_scans_it(pg_url: str) -> None:
    records = [version(f"new-{i}", f"v{i}") for i in range(100)]
    rows = [
        {
            "reference_id": r.reference_id,
            "payload_hash": r.payload_hash,
            "source": r.source,
            "fetched_at": r.fetched_at,
            "state": HandoffState.QUEUED.value,
            "reason_code": ReasonCode.ENQUEUED.value,
            "enqueue_outcome": EnqueueOutcome.CREATED.value,
        }
        for r in records
    ]
    params = {
        **record_params(records, T0),
        **enqueue_params(rows, actor="client:test", now=T0),
    }
    with psycopg.connect(pg_url, autocommit=True) as conn:
        _fill(conn)
        conn.autocommit = False
        try:
            cur = conn.execute(
                ("EXPLAIN (FORMAT JSON) " + outbox_store._STORE_AND_ENQUEUE_SQL).encode(), params
            )
            (row,) = cur.fetchall()
        finally:
            conn.rollback()
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    nodes = _nodes(plan[0]["Plan"])
    scanned = [n["Relation Name"] for n in nodes if n["Node Type"] == "Seq Scan"]
    assert scanned == []
    probed = [n["Index Name"] for n in nodes if n["Node Type"] == "Index Scan"]
    assert probed.count("ingestion_handoffs_pair_key") == 2  # staleness, and the duplicates
