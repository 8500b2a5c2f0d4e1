-- The handoff ledger: one row per (reference_id, payload_hash), kept while its scrape record exists.
-- The row is the single source of truth for the handoff's state; see
-- docs/90_ops/ingestion_handoff_orchestration.md for the lifecycle and the reason codes.
CREATE TABLE ingestion_handoffs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    reference_id      TEXT    NOT NULL,
    payload_hash      TEXT    NOT NULL,
    source            TEXT    NOT NULL,
    fetched_at        TEXT NOT NULL,
    state             TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'retry_wait', 'waiting', 'succeeded', 'failed', 'cancelled', 'superseded')),
    reason_code       TEXT    NOT NULL CHECK (reason_code IN ('enqueued', 'stale_payload', 'superseded_by_newer_payload', 'queued_behind_running', 'promoted', 'claimed', 'succeeded', 'transient_error', 'rate_limited', 'unclassified_error', 'lease_expired', 'lease_released', 'payload_missing', 'payload_hash_mismatch', 'permanent_error', 'permanent_validation_error', 'retries_exhausted', 'throttle_deadline_exceeded', 'poison_suspected', 'operator_retry', 'operator_cancelled')),
    enqueue_outcome   TEXT    NOT NULL CHECK (enqueue_outcome IN ('created', 'superseded_previous', 'queued_behind_running', 'rejected_stale')),
    run_after         TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    failures          INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
    crashes           INTEGER NOT NULL DEFAULT 0 CHECK (crashes >= 0),
    throttled_since   TEXT,
    lease_token       INTEGER NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_expires_at  TEXT,
    last_error        TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    finished_at       TEXT,
    CONSTRAINT ingestion_handoffs_pair_key UNIQUE (reference_id, payload_hash),
    -- A lease exists exactly while the handoff runs.
    CONSTRAINT ingestion_handoffs_lease_ck CHECK ((state = 'running') = (lease_expires_at IS NOT NULL))
);

-- No duplicate active work, as a database fact: one active row and one waiting row per reference.
CREATE UNIQUE INDEX ingestion_handoffs_one_active ON ingestion_handoffs (reference_id)
    WHERE state IN ('queued', 'running', 'retry_wait');
CREATE UNIQUE INDEX ingestion_handoffs_one_waiting ON ingestion_handoffs (reference_id)
    WHERE state = 'waiting';
-- The claim reads this index only: runnable rows in run_after order.
CREATE INDEX ingestion_handoffs_runnable ON ingestion_handoffs (run_after, id)
    WHERE state IN ('queued', 'retry_wait');
-- The rescuer reads this one: running rows by lease expiry.
CREATE INDEX ingestion_handoffs_leases ON ingestion_handoffs (lease_expires_at)
    WHERE state = 'running';

-- Every transition of a handoff, with who made it and why.
CREATE TABLE handoff_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    handoff_id   INTEGER NOT NULL REFERENCES ingestion_handoffs (id) ON DELETE CASCADE,
    at           TEXT NOT NULL,
    actor        TEXT    NOT NULL CHECK (actor LIKE 'client:%' OR actor LIKE 'worker:%' OR actor LIKE 'system:%' OR actor LIKE 'operator:%'),
    from_state   TEXT    CHECK (from_state IN ('queued', 'running', 'retry_wait', 'waiting', 'succeeded', 'failed', 'cancelled', 'superseded')),
    to_state     TEXT    NOT NULL CHECK (to_state IN ('queued', 'running', 'retry_wait', 'waiting', 'succeeded', 'failed', 'cancelled', 'superseded')),
    reason_code  TEXT    NOT NULL CHECK (reason_code IN ('enqueued', 'stale_payload', 'superseded_by_newer_payload', 'queued_behind_running', 'promoted', 'claimed', 'succeeded', 'transient_error', 'rate_limited', 'unclassified_error', 'lease_expired', 'lease_released', 'payload_missing', 'payload_hash_mismatch', 'permanent_error', 'permanent_validation_error', 'retries_exhausted', 'throttle_deadline_exceeded', 'poison_suspected', 'operator_retry', 'operator_cancelled')),
    lease_token  INTEGER,
    detail       TEXT
);

CREATE INDEX handoff_events_handoff_idx ON handoff_events (handoff_id, id);
