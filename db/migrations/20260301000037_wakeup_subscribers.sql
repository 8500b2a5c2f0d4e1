-- Wake-ups only while a worker waits for one. A NOTIFY holds PostgreSQL's notification-queue
-- lock from its transaction's pre-commit through the WAL flush of its commit, so concurrent
-- enqueues that each NOTIFY commit one at a time. A worker lists itself here when its claim
-- comes back short (it is about to wait for a hint) and takes itself off when its claims come
-- back full (it has a backlog and claims without waiting); the insert trigger sends its NOTIFY
-- only while somebody is listed.
--
-- No wake-up is lost when a worker lists itself while an enqueue is in flight: an enqueue that
-- finds nobody takes a shared transaction-level advisory lock, looks again, and skips the
-- NOTIFY only if still nobody is listed. A worker, once its row has committed, takes the same
-- lock exclusively (and lets it go) before it claims once more: that waits for every enqueue
-- that looked before the row was visible, so the claim after it sees their rows. An enqueue
-- that looks after the row committed sends its NOTIFY. (Isolation levels above READ COMMITTED
-- look at an older snapshot: those enqueues always NOTIFY.)
--
-- UNLOGGED: the list is about live sessions and costs no WAL; a crash empties it, and every
-- worker lists itself again when its listener reconnects. `pid` and `backend_start` name the
-- worker's LISTEN session: a row whose session is gone is pruned by the rescuer.
CREATE UNLOGGED TABLE handoff_wakeup_subscribers (
    worker_id      TEXT        PRIMARY KEY,
    pid            INTEGER     NOT NULL,
    backend_start  TIMESTAMPTZ NOT NULL,
    since          TIMESTAMPTZ NOT NULL
);

-- The advisory lock key (1751215716, 1) is app.db.wakeup_store.BARRIER_KEY.
CREATE OR REPLACE FUNCTION ingestion_handoffs_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM inserted WHERE state = 'queued') THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM handoff_wakeup_subscribers)
       AND current_setting('transaction_isolation') = 'read committed' THEN
        PERFORM pg_advisory_xact_lock_shared(1751215716, 1);
        IF NOT EXISTS (SELECT 1 FROM handoff_wakeup_subscribers) THEN
            RETURN NULL;  -- nobody waits: a worker that lists itself now claims after us
        END IF;
    END IF;
    PERFORM pg_notify('handoff_ready', '');
    RETURN NULL;
END;
$$;
