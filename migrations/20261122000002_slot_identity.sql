-- What the service knows of the slot behind each epoch.
-- slot_consistent_point: where the slot began, when the service created it (Postgres saves it
--   with the slot, so the slot's confirmed position never goes below it); a slot confirming an
--   earlier position is not the one the epoch was recorded for.
-- replacing: set just before the service creates a new slot in place of a missing or
--   invalidated one; if the service stops before recording the new slot's epoch, the next start
--   still begins a new epoch.
alter table realtime.replication_epochs add column if not exists slot_consistent_point text;
alter table realtime.replication_epochs add column if not exists replacing boolean not null default false;
