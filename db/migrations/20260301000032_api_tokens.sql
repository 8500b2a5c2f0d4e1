-- Bearer tokens for the HTTP API. Only a SHA-256 of each token is stored; the token itself is
-- shown once, when it is created. scopes is a space-separated subset of: ingest read operate admin.
CREATE TABLE api_tokens (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token_hash    TEXT    NOT NULL,
    scopes        TEXT    NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    revoked_at    TIMESTAMPTZ,
    CONSTRAINT api_tokens_hash_key UNIQUE (token_hash)
);
