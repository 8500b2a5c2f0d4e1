-- Lean writes. PostgreSQL reads a table CHECK constraint's stored expression back from its text
-- form for every statement that writes the table: with the enumerated columns of the handoff
-- ledger, its events and its attempts (a 21-value reason list, an 8-value state list, ...),
-- that parse was a fifth of an enqueue's server CPU. A domain's CHECK is parsed once per session
-- and cached, so the same value lists move into domains and the columns take them as types.
-- Nothing else changes: a domain over TEXT compares, sorts and returns as TEXT, and a value
-- outside the list is refused as before (SQLSTATE 23514, check_violation).
CREATE DOMAIN handoff_state AS TEXT CHECK (VALUE IN ('queued', 'running', 'retry_wait', 'waiting', 'succeeded', 'failed', 'cancelled', 'superseded'));
CREATE DOMAIN handoff_reason_code AS TEXT CHECK (VALUE IN ('enqueued', 'stale_payload', 'superseded_by_newer_payload', 'queued_behind_running', 'promoted', 'claimed', 'succeeded', 'transient_error', 'rate_limited', 'unclassified_error', 'lease_expired', 'lease_released', 'payload_missing', 'payload_hash_mismatch', 'permanent_error', 'permanent_validation_error', 'retries_exhausted', 'throttle_deadline_exceeded', 'poison_suspected', 'operator_retry', 'operator_cancelled'));
CREATE DOMAIN handoff_enqueue_outcome AS TEXT CHECK (VALUE IN ('created', 'superseded_previous', 'queued_behind_running', 'rejected_stale'));
CREATE DOMAIN handoff_actor AS TEXT CHECK (VALUE LIKE 'client:%' OR VALUE LIKE 'worker:%' OR VALUE LIKE 'system:%' OR VALUE LIKE 'operator:%');

-- A trigger's WHEN clause pins the column's type: set aside while the type changes.
DROP TRIGGER ingestion_handoffs_notify_update ON ingestion_handoffs;

ALTER TABLE ingestion_handoffs
    DROP CONSTRAINT ingestion_handoffs_state_check,
    DROP CONSTRAINT ingestion_handoffs_reason_code_check,
    DROP CONSTRAINT ingestion_handoffs_enqueue_outcome_check,
    ALTER COLUMN state TYPE handoff_state,
    ALTER COLUMN reason_code TYPE handoff_reason_code,
    ALTER COLUMN enqueue_outcome TYPE handoff_enqueue_outcome;

CREATE TRIGGER ingestion_handoffs_notify_update
    AFTER UPDATE OF state ON ingestion_handoffs
    FOR EACH ROW WHEN (NEW.state = 'queued')
    EXECUTE FUNCTION ingestion_handoffs_notify();

ALTER TABLE handoff_events
    DROP CONSTRAINT handoff_events_actor_check,
    DROP CONSTRAINT handoff_events_from_state_check,
    DROP CONSTRAINT handoff_events_to_state_check,
    DROP CONSTRAINT handoff_events_reason_code_check,
    ALTER COLUMN actor TYPE handoff_actor,
    ALTER COLUMN from_state TYPE handoff_state,
    ALTER COLUMN to_state TYPE handoff_state,
    ALTER COLUMN reason_code TYPE handoff_reason_code;

ALTER TABLE ingestion_jobs
    DROP CONSTRAINT ingestion_jobs_reason_code_check,
    ALTER COLUMN reason_code TYPE handoff_reason_code;

-- No query reads scrape records by source: the index was one more write per record, for nothing.
DROP INDEX scrape_records_source_idx;
