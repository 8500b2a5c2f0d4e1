-- Scrape storage: every scraped version, identified by (reference_id, payload_hash).
-- body holds the decoded bytes (content-encoding removed); headers never hold cookies or credentials.
CREATE TABLE scrape_records (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    reference_id  TEXT    NOT NULL CHECK (length(reference_id) BETWEEN 1 AND 512),
    payload_hash  TEXT    NOT NULL CHECK (payload_hash GLOB 'sha256:*' AND length(payload_hash) = 71),
    source        TEXT    NOT NULL,
    url           TEXT,
    fetched_at    TEXT NOT NULL,
    http_status   INTEGER,
    content_type  TEXT    NOT NULL,
    headers       TEXT NOT NULL,
    body          BLOB NOT NULL,
    fields        TEXT,
    created_at    TEXT NOT NULL,
    CONSTRAINT scrape_records_version_key UNIQUE (reference_id, payload_hash)
);

CREATE INDEX scrape_records_source_idx ON scrape_records (source, created_at);
