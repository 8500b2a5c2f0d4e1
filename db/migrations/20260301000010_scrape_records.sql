-- Scrape storage: every scraped version, identified by (reference_id, payload_hash).
-- body holds the decoded bytes (content-encoding removed); headers never hold cookies or credentials.
CREATE TABLE scrape_records (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reference_id  TEXT    NOT NULL CHECK (length(reference_id) BETWEEN 1 AND 512),
    payload_hash  TEXT    NOT NULL CHECK (payload_hash ~ '^sha256:[0-9a-f]{64}$'),
    source        TEXT    NOT NULL,
    url           TEXT,
    fetched_at    TIMESTAMPTZ NOT NULL,
    http_status   INTEGER,
    content_type  TEXT    NOT NULL,
    headers       JSONB NOT NULL,
    body          BYTEA NOT NULL,
    fields        JSONB,
    created_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT scrape_records_version_key UNIQUE (reference_id, payload_hash)
);

CREATE INDEX scrape_records_source_idx ON scrape_records (source, created_at);
