-- One row per attempt (claim) of a handoff: history only. The state lives on ingestion_handoffs.
CREATE TABLE ingestion_jobs (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    handoff_id   BIGINT NOT NULL REFERENCES ingestion_handoffs (id) ON DELETE CASCADE,
    lease_token  BIGINT NOT NULL,
    attempt      INTEGER NOT NULL,
    worker_id    TEXT    NOT NULL,
    claimed_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ,
    outcome      TEXT    CHECK (outcome IN ('succeeded', 'retry', 'failed', 'lease_expired', 'released', 'cancelled')),
    retry_class  TEXT    CHECK (retry_class IN ('transient', 'throttled', 'permanent', 'crash', 'unclassified')),
    reason_code  TEXT    CHECK (reason_code IN ('enqueued', 'stale_payload', 'superseded_by_newer_payload', 'queued_behind_running', 'promoted', 'claimed', 'succeeded', 'transient_error', 'rate_limited', 'unclassified_error', 'lease_expired', 'lease_released', 'payload_missing', 'payload_hash_mismatch', 'permanent_error', 'permanent_validation_error', 'retries_exhausted', 'throttle_deadline_exceeded', 'poison_suspected', 'operator_retry', 'operator_cancelled')),
    error        TEXT,
    CONSTRAINT ingestion_jobs_lease_key UNIQUE (handoff_id, lease_token)
);

-- Documents produced by ingestion, keyed by the version they come from (deterministic id).
CREATE TABLE documents (
    id            TEXT    PRIMARY KEY,
    reference_id  TEXT    NOT NULL,
    payload_hash  TEXT    NOT NULL,
    content_type  TEXT    NOT NULL,
    text          TEXT    NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT documents_version_key UNIQUE (reference_id, payload_hash)
);
