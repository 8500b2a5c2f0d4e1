"""Use cases: fn(uow, command, *, now). They never commit; the caller's transaction does."""
