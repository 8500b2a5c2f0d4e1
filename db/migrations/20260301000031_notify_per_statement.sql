-- Wake-ups for inserted handoffs: one statement-level trigger instead of one PL/pgSQL call per
-- row (a 100-row enqueue made 100 calls). Updates keep the row-level trigger: it only fires
-- when a row enters `queued` (promotion, release, operator retry), which is rare and row by row.
DROP TRIGGER ingestion_handoffs_notify ON ingestion_handoffs;

CREATE TRIGGER ingestion_handoffs_notify_update
    AFTER UPDATE OF state ON ingestion_handoffs
    FOR EACH ROW WHEN (NEW.state = 'queued')
    EXECUTE FUNCTION ingestion_handoffs_notify();

CREATE FUNCTION ingestion_handoffs_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted WHERE state = 'queued') THEN
        PERFORM pg_notify('handoff_ready', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER ingestion_handoffs_notify_insert
    AFTER INSERT ON ingestion_handoffs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT
    EXECUTE FUNCTION ingestion_handoffs_notify_inserted();
