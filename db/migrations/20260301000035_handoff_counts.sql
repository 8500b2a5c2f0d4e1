-- Stats at scale: counts by state x reason code without reading every handoff.
--
-- handoff_counts holds signed deltas per (state, reason_code); the count of a pair is the sum
-- of its rows. Statement-level triggers append one row per pair a statement changed, in the
-- statement's own transaction, so the sums are exact at every commit. Writers only append:
-- they never wait on each other for a counter row. Workers compact the table on their rescuer
-- timer (one row per pair again); stats read a few hundred rows, not a million handoffs.
CREATE TABLE handoff_counts (
    state        TEXT   NOT NULL,
    reason_code  TEXT   NOT NULL,
    n            BIGINT NOT NULL
);

CREATE FUNCTION handoff_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO handoff_counts (state, reason_code, n)
    SELECT state, reason_code, count(*) FROM new_rows GROUP BY state, reason_code;
    RETURN NULL;
END;
$$;

CREATE FUNCTION handoff_counts_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Heartbeats and other updates that keep state and reason add nothing (HAVING).
    INSERT INTO handoff_counts (state, reason_code, n)
    SELECT state, reason_code, sum(d)
    FROM (
        SELECT state, reason_code, 1 AS d FROM new_rows
        UNION ALL
        SELECT state, reason_code, -1 AS d FROM old_rows
    ) moves
    GROUP BY state, reason_code
    HAVING sum(d) <> 0;
    RETURN NULL;
END;
$$;

CREATE FUNCTION handoff_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO handoff_counts (state, reason_code, n)
    SELECT state, reason_code, -count(*) FROM old_rows GROUP BY state, reason_code;
    RETURN NULL;
END;
$$;

CREATE FUNCTION handoff_counts_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM handoff_counts;
    RETURN NULL;
END;
$$;

CREATE TRIGGER handoff_counts_insert
    AFTER INSERT ON ingestion_handoffs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION handoff_counts_inserted();

CREATE TRIGGER handoff_counts_update
    AFTER UPDATE ON ingestion_handoffs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION handoff_counts_updated();

CREATE TRIGGER handoff_counts_delete
    AFTER DELETE ON ingestion_handoffs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION handoff_counts_deleted();

CREATE TRIGGER handoff_counts_truncate
    AFTER TRUNCATE ON ingestion_handoffs
    FOR EACH STATEMENT EXECUTE FUNCTION handoff_counts_truncated();

-- The rows already there (the triggers exist from here on; this transaction holds the lock
-- their creation took, so no write slips between the two).
INSERT INTO handoff_counts (state, reason_code, n)
SELECT state, reason_code, count(*) FROM ingestion_handoffs GROUP BY state, reason_code;

-- The oldest handoff of each state: one index probe per state.
CREATE INDEX ingestion_handoffs_state_created ON ingestion_handoffs (state, created_at);
-- Throughput: handoffs finished in the last minutes, read from the index alone.
CREATE INDEX ingestion_handoffs_finished ON ingestion_handoffs (finished_at, state)
    WHERE finished_at IS NOT NULL;
