-- Lean checks (see the PostgreSQL twin). SQLite compiles its CHECK constraints with the
-- statement, so they stay as they are; this migration exists so both engines have the same list.
SELECT 1;
