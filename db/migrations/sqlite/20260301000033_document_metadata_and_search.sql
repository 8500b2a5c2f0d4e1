-- Documents gain the extracted metadata, supersession (a reference has one current document: its
-- newest version) and full-text search: an FTS5 index (Porter stemming, like PostgreSQL's
-- 'english') over the title and the first 100,000 characters of text, kept in step by triggers.
-- The table is rebuilt so that `seq`, an INTEGER PRIMARY KEY, gives FTS5 a rowid that VACUUM
-- cannot renumber; `id` stays the public, deterministic id.
CREATE TABLE documents_new (
    id            TEXT    NOT NULL,
    reference_id  TEXT    NOT NULL,
    payload_hash  TEXT    NOT NULL,
    content_type  TEXT    NOT NULL,
    text          TEXT    NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    source        TEXT    NOT NULL,
    url           TEXT,
    title         TEXT,
    language      TEXT,
    canonical_url TEXT,
    published     TEXT,
    kind          TEXT    NOT NULL CHECK (kind IN ('html', 'json', 'text')),
    fetched_at    TEXT NOT NULL,
    superseded_at TEXT,
    superseded_by TEXT,
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    CONSTRAINT documents_id_key UNIQUE (id),
    CONSTRAINT documents_version_key UNIQUE (reference_id, payload_hash)
);

INSERT INTO documents_new (id, reference_id, payload_hash, content_type, text, created_at,
                           updated_at, source, url, kind, fetched_at)
SELECT d.id, d.reference_id, d.payload_hash, d.content_type, d.text, d.created_at, d.updated_at,
       coalesce(r.source, substr(d.reference_id, 1, instr(d.reference_id || ':', ':') - 1)),
       r.url,
       CASE
         WHEN lower(d.content_type) LIKE '%html%' THEN 'html'
         WHEN lower(d.content_type) LIKE '%json%' THEN 'json'
         ELSE 'text'
       END,
       coalesce(r.fetched_at, d.created_at)
  FROM documents d
  LEFT JOIN scrape_records r ON r.reference_id = d.reference_id AND r.payload_hash = d.payload_hash
 ORDER BY d.created_at, d.id;

-- Only the newest version of each reference stays current.
UPDATE documents_new
   SET superseded_at = updated_at,
       superseded_by = (SELECT n.id FROM documents_new n
                         WHERE n.reference_id = documents_new.reference_id
                         ORDER BY n.fetched_at DESC, n.created_at DESC, n.id LIMIT 1)
 WHERE id <> (SELECT n.id FROM documents_new n
               WHERE n.reference_id = documents_new.reference_id
               ORDER BY n.fetched_at DESC, n.created_at DESC, n.id LIMIT 1);

DROP TABLE documents;
ALTER TABLE documents_new RENAME TO documents;

CREATE UNIQUE INDEX documents_one_current ON documents (reference_id) WHERE superseded_at IS NULL;

CREATE VIRTUAL TABLE documents_fts USING fts5(
    title, text, content='documents', content_rowid='seq',
    tokenize='porter unicode61 remove_diacritics 2'
);
INSERT INTO documents_fts (rowid, title, text)
SELECT seq, coalesce(title, ''), substr(text, 1, 100000) FROM documents;

CREATE TRIGGER documents_fts_insert AFTER INSERT ON documents BEGIN
    INSERT INTO documents_fts (rowid, title, text)
    VALUES (new.seq, coalesce(new.title, ''), substr(new.text, 1, 100000));
END;
CREATE TRIGGER documents_fts_delete AFTER DELETE ON documents BEGIN
    INSERT INTO documents_fts (documents_fts, rowid, title, text)
    VALUES ('delete', old.seq, coalesce(old.title, ''), substr(old.text, 1, 100000));
END;
CREATE TRIGGER documents_fts_update AFTER UPDATE OF title, text ON documents BEGIN
    INSERT INTO documents_fts (documents_fts, rowid, title, text)
    VALUES ('delete', old.seq, coalesce(old.title, ''), substr(old.text, 1, 100000));
    INSERT INTO documents_fts (rowid, title, text)
    VALUES (new.seq, coalesce(new.title, ''), substr(new.text, 1, 100000));
END;
