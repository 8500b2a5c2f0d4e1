-- Lean checks (after 036's value lists). The table CHECK constraints left on the rows every
-- enqueue and claim writes move into domains, parsed once per session instead of once per
-- statement, and the payload hash's format is checked without a regular expression: the
-- pattern's `{64}` made it the costliest check of a one-record submission (about 20 µs of its
-- statement's 220 µs of execution). The rules are the same, and a value that breaks one is
-- refused as before (SQLSTATE 23514, check_violation). The lease check spans two columns, so
-- it stays on its table.
CREATE DOMAIN handoff_count AS INTEGER CHECK (VALUE >= 0);
-- 'sha256:' and 64 lower-case hex digits, as the pattern '^sha256:[0-9a-f]{64}$' said.
CREATE DOMAIN scrape_payload_hash AS TEXT CHECK (
    length(VALUE) = 71
    AND starts_with(VALUE, 'sha256:')
    AND ltrim(substr(VALUE, 8), '0123456789abcdef') = ''
);
CREATE DOMAIN scrape_reference_id AS TEXT CHECK (length(VALUE) BETWEEN 1 AND 512);

ALTER TABLE ingestion_handoffs
    DROP CONSTRAINT ingestion_handoffs_attempts_check,
    DROP CONSTRAINT ingestion_handoffs_failures_check,
    DROP CONSTRAINT ingestion_handoffs_crashes_check,
    ALTER COLUMN attempts TYPE handoff_count,
    ALTER COLUMN failures TYPE handoff_count,
    ALTER COLUMN crashes TYPE handoff_count;

ALTER TABLE scrape_records
    DROP CONSTRAINT scrape_records_payload_hash_check,
    DROP CONSTRAINT scrape_records_reference_id_check,
    ALTER COLUMN payload_hash TYPE scrape_payload_hash,
    ALTER COLUMN reference_id TYPE scrape_reference_id;
