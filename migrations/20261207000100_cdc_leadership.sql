-- Leadership of the change stream among the nodes of a cluster (see docs/adr/0006).
--
-- The leader holds a session advisory lock keyed on the slot on its replication connection;
-- right after taking it, it bumps the slot's term here. Every transaction it publishes to the
-- other nodes carries the term, and nodes ignore a term lower than one they have seen, so a
-- leader that lost the lock can never be followed again. `node` and `since` tell an operator
-- who leads and since when.
CREATE TABLE IF NOT EXISTS realtime.cdc_leadership (
    slot_name text PRIMARY KEY,
    term bigint NOT NULL,
    node text NOT NULL,
    since timestamptz NOT NULL DEFAULT now()
);
