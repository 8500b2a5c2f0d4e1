-- Bearer tokens for the HTTP API. Only a SHA-256 of each token is stored; the token itself is
-- shown once, when it is created. scopes is a space-separated subset of: ingest read operate admin.
CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token_hash    TEXT    NOT NULL,
    scopes        TEXT    NOT NULL,
    created_at    TEXT NOT NULL,
    revoked_at    TEXT,
    CONSTRAINT api_tokens_hash_key UNIQUE (token_hash)
);
