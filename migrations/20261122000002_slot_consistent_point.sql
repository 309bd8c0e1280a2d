-- Where the slot of each epoch began, when the service created it (its consistent point, which
-- Postgres saves with the slot, so the slot's confirmed position never goes below it). A slot
-- found confirming an earlier position is not the one the epoch was recorded for: a new epoch
-- begins.
alter table realtime.replication_epochs add column if not exists slot_consistent_point text;
