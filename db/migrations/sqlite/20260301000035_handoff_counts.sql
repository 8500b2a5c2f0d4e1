-- Stats at scale: counts by state x reason code without reading every handoff (see the
-- PostgreSQL twin). SQLite has one writer at a time, so one row per (state, reason_code),
-- kept by row-level triggers in the writing transaction, cannot be contended.
CREATE TABLE handoff_counts (
    state        TEXT    NOT NULL,
    reason_code  TEXT    NOT NULL,
    n            INTEGER NOT NULL
);

CREATE UNIQUE INDEX handoff_counts_key ON handoff_counts (state, reason_code);

CREATE TRIGGER handoff_counts_insert AFTER INSERT ON ingestion_handoffs
BEGIN
    INSERT INTO handoff_counts (state, reason_code, n) VALUES (NEW.state, NEW.reason_code, 1)
    ON CONFLICT (state, reason_code) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER handoff_counts_update AFTER UPDATE OF state, reason_code ON ingestion_handoffs
WHEN OLD.state <> NEW.state OR OLD.reason_code <> NEW.reason_code
BEGIN
    UPDATE handoff_counts SET n = n - 1
    WHERE state = OLD.state AND reason_code = OLD.reason_code;
    INSERT INTO handoff_counts (state, reason_code, n) VALUES (NEW.state, NEW.reason_code, 1)
    ON CONFLICT (state, reason_code) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER handoff_counts_delete AFTER DELETE ON ingestion_handoffs
BEGIN
    UPDATE handoff_counts SET n = n - 1
    WHERE state = OLD.state AND reason_code = OLD.reason_code;
END;

INSERT INTO handoff_counts (state, reason_code, n)
SELECT state, reason_code, count(*) FROM ingestion_handoffs GROUP BY state, reason_code;

CREATE INDEX ingestion_handoffs_state_created ON ingestion_handoffs (state, created_at);
CREATE INDEX ingestion_handoffs_finished ON ingestion_handoffs (finished_at, state)
    WHERE finished_at IS NOT NULL;
