-- PostgreSQL only (LISTEN/NOTIFY wake-ups); SQLite workers poll. Kept so both engines share
-- one list of migration ids.
SELECT 1;
