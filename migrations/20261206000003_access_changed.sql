-- Who may see what changes with DDL: GRANT/REVOKE, CREATE/ALTER/DROP POLICY, ALTER TABLE
-- (ENABLE/FORCE ROW LEVEL SECURITY, OWNER TO, ATTACH PARTITION, ...). The service caches grants
-- and RLS flags, so it must hear of these at once and in order with the rows: the event trigger
-- writes a transactional logical message with prefix 'realtime.access' into the DDL's own
-- transaction. It reaches the service through the replication stream (pgoutput option
-- `messages`) exactly before any change committed after the DDL.
--
-- Role attributes and memberships (ALTER ROLE, GRANT role TO role) fire no event trigger: the
-- service re-checks its cached facts on a short interval for those, and also when this trigger
-- could not be created (only a superuser may create event triggers).

-- Security definer: DDL run by any role may record the change (pg_logical_emit_message may be
-- reserved to privileged roles). Never blocks the DDL: a failure is a warning, and the
-- service's periodic re-check still sees the change.
create or replace function realtime.access_changed() returns event_trigger
language plpgsql security definer set search_path = pg_catalog as $$
begin
    perform pg_catalog.pg_logical_emit_message(true, 'realtime.access', tg_tag);
exception when others then
    raise warning 'realtime: could not record an access change (%): %', tg_tag, sqlerrm;
end
$$;

-- The service's own marker, written when its periodic re-check saw a role change, so that a
-- resume replay across that point is refetched too. Not for anyone else.
create or replace function realtime.mark_access_changed(reason text) returns void
language plpgsql security definer set search_path = pg_catalog as $$
begin
    perform pg_catalog.pg_logical_emit_message(true, 'realtime.access', reason);
end
$$;
revoke all on function realtime.mark_access_changed(text) from public;

do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = current_user and rolsuper) then
        drop event trigger if exists realtime_access_changed;
        create event trigger realtime_access_changed on ddl_command_end
            when tag in ('GRANT', 'REVOKE', 'CREATE POLICY', 'ALTER POLICY', 'DROP POLICY',
                         'ALTER TABLE', 'ALTER DEFAULT PRIVILEGES')
            execute function realtime.access_changed();
    else
        raise notice 'realtime: not a superuser, so the realtime_access_changed event trigger was not created; grant and policy changes are seen by the periodic re-check instead';
    end if;
end
$$;
