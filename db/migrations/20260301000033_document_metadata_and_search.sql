-- Documents gain the extracted metadata, supersession (a reference has one current document: its
-- newest version) and full-text search (a tsvector over the title and the first 100,000
-- characters of text, English stemming, GIN-indexed). `seq` is an internal integer key, so the
-- SQLite twin can tie its FTS5 index to a stable rowid; `id` stays the public, deterministic id.
ALTER TABLE documents
    ADD COLUMN source        TEXT,
    ADD COLUMN url           TEXT,
    ADD COLUMN title         TEXT,
    ADD COLUMN language      TEXT,
    ADD COLUMN canonical_url TEXT,
    ADD COLUMN published     TEXT,
    ADD COLUMN kind          TEXT,
    ADD COLUMN fetched_at    TIMESTAMPTZ,
    ADD COLUMN superseded_at TIMESTAMPTZ,
    ADD COLUMN superseded_by TEXT;

-- Documents written before this migration: provenance from their scrape record.
UPDATE documents d
   SET source = r.source, url = r.url, fetched_at = r.fetched_at
  FROM scrape_records r
 WHERE r.reference_id = d.reference_id AND r.payload_hash = d.payload_hash;
UPDATE documents
   SET source = coalesce(source, split_part(reference_id, ':', 1)),
       fetched_at = coalesce(fetched_at, created_at),
       kind = CASE
                WHEN content_type ILIKE '%html%' THEN 'html'
                WHEN content_type ILIKE '%json%' THEN 'json'
                ELSE 'text'
              END;
-- Only the newest version of each reference stays current.
UPDATE documents d
   SET superseded_at = d.updated_at, superseded_by = newest.id
  FROM (SELECT DISTINCT ON (reference_id) reference_id, id
          FROM documents
         ORDER BY reference_id, fetched_at DESC, created_at DESC, id) AS newest
 WHERE newest.reference_id = d.reference_id AND newest.id <> d.id;

ALTER TABLE documents
    ALTER COLUMN source SET NOT NULL,
    ALTER COLUMN kind SET NOT NULL,
    ALTER COLUMN fetched_at SET NOT NULL,
    ADD CONSTRAINT documents_kind_check CHECK (kind IN ('html', 'json', 'text')),
    DROP CONSTRAINT documents_pkey,
    ADD CONSTRAINT documents_id_key UNIQUE (id),
    ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english'::regconfig, coalesce(title, '')), 'A')
        || setweight(to_tsvector('english'::regconfig, left(text, 100000)), 'B')
    ) STORED;

CREATE UNIQUE INDEX documents_one_current ON documents (reference_id) WHERE superseded_at IS NULL;
CREATE INDEX documents_search_idx ON documents USING gin (search_vector);
