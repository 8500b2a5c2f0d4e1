-- Wake-ups only while a worker waits for one (see the PostgreSQL twin). SQLite has no
-- LISTEN/NOTIFY: its workers poll, and the table stays empty; it exists so that both engines
-- have the same schema.
CREATE TABLE handoff_wakeup_subscribers (
    worker_id      TEXT    PRIMARY KEY,
    pid            INTEGER NOT NULL,
    backend_start  TEXT    NOT NULL,
    since          TEXT    NOT NULL
);
