-- 0013_outbox_notify (both flavors): the outbox trigger leaves out its
-- NOTIFY for a writer that wakes the relay itself after its commit (iotpipe
-- api sets iotpipe.outbox_notify = 'after_commit' on its connections).
-- PostgreSQL serialises the commits of every transaction that notifies (a
-- database-wide lock taken before the commit and held through its WAL
-- flush), so a NOTIFY inside each shadow change capped the API at one
-- commit per WAL flush: 376-509 changes/s against 692-768/s without it in
-- the same benchmark (docs/BENCHMARKS.md). Other writers (the shadow
-- consumer) are unchanged: their transactions notify as before.
CREATE OR REPLACE FUNCTION {{.Schema}}.shadow_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('iotpipe.outbox_notify', true) IS DISTINCT FROM 'after_commit' THEN
        PERFORM pg_notify('iotpipe_outbox', TG_TABLE_SCHEMA);
    END IF;
    RETURN NULL;
END
$$;
