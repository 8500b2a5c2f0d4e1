-- PostgreSQL only (LISTEN/NOTIFY wake-ups); SQLite workers poll. This no-op keeps one list of
-- migration ids for both engines.
DROP TABLE IF EXISTS handoff_noop;
