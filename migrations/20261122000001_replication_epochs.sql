-- The epoch of each replication slot: it names one unbroken history of the change stream.
-- A new slot, or a slot on a different database system, starts a new epoch, so positions from
-- the old history are never trusted again.
create schema if not exists realtime;

create table if not exists realtime.replication_epochs (
    slot_name text primary key,
    epoch bigint not null,
    system_identifier text not null,
    created_at timestamptz not null default now()
);
