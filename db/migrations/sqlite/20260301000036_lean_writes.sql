-- Lean writes (see the PostgreSQL twin). SQLite compiles its CHECK constraints with the
-- statement, so they stay as they are; only the unused index goes.
DROP INDEX scrape_records_source_idx;
