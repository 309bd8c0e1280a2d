-- Broadcast from the database and channel authorization, as Supabase defines them:
-- realtime.messages (partitioned by day on inserted_at, RLS enabled, the replay index, Supabase's
-- grants), realtime.topic(), realtime.send(), realtime.send_binary(), realtime.broadcast_changes().
--
-- Idempotent and able to run on a database that already has Supabase's realtime schema: every
-- object is created only when missing, functions are (re)defined with Supabase's signatures.
create schema if not exists realtime;

-- The roles Supabase's grants and users' policies name. Created when missing and allowed;
-- a service role without CREATEROLE skips them (the grants below then skip them too).
do $$
begin
  if not exists (select from pg_roles where rolname = 'anon') then create role anon nologin; end if;
  if not exists (select from pg_roles where rolname = 'authenticated') then create role authenticated nologin; end if;
  if not exists (select from pg_roles where rolname = 'service_role') then create role service_role nologin bypassrls; end if;
exception when insufficient_privilege then
  raise notice 'realtime: cannot create the roles anon, authenticated and service_role: %', sqlerrm;
end $$;

-- Supabase's table. `timestamp without time zone` with now(): partitions are by UTC day, so the
-- service and the functions below write inserted_at in UTC.
create table if not exists realtime.messages (
  topic text not null,
  extension text not null,
  payload jsonb,
  event text,
  private boolean default false,
  updated_at timestamp not null default now(),
  inserted_at timestamp not null default now(),
  id uuid not null default gen_random_uuid(),
  primary key (id, inserted_at)
) partition by range (inserted_at);

-- Columns a table from an older Supabase schema may lack.
alter table realtime.messages add column if not exists payload jsonb;
alter table realtime.messages add column if not exists event text;
alter table realtime.messages add column if not exists private boolean default false;
alter table realtime.messages add column if not exists binary_payload bytea;
do $$
begin
  if not exists (select from pg_constraint where conname = 'messages_payload_exclusive'
                 and conrelid = 'realtime.messages'::regclass) then
    alter table realtime.messages add constraint messages_payload_exclusive
      check (payload is null or binary_payload is null) not valid;
  end if;
end $$;

alter table realtime.messages enable row level security;

-- The replay index (Supabase: messages_inserted_at_topic_index).
create index if not exists messages_inserted_at_topic_index on only realtime.messages
  (inserted_at desc, topic) where extension = 'broadcast' and private is true;

do $$
declare r text;
begin
  foreach r in array array['anon', 'authenticated', 'service_role'] loop
    if exists (select from pg_roles where rolname = r) then
      execute format('grant usage on schema realtime to %I', r);
      execute format('grant insert, select, update on realtime.messages to %I', r);
    end if;
  end loop;
end $$;

-- The sub-topic being authorized or sent to, for policies: `(select realtime.topic())`.
create or replace function realtime.topic() returns text
language sql stable as $$
  select nullif(current_setting('realtime.topic', true), '')::text;
$$;

-- Creates the daily partition holding `day` (UTC) when it is missing. SECURITY DEFINER (owned by
-- the service's role): `send` runs as its caller, who may not create tables, yet a message sent
-- while no partition exists for today (the service was down for days) must still be stored.
create or replace function realtime.ensure_messages_partition(day date) returns void
language plpgsql security definer set search_path = pg_catalog as $$
declare
  name text := 'messages_' || to_char(day, 'YYYY_MM_DD');
begin
  if to_regclass(format('realtime.%I', name)) is null then
    execute format(
      'create table if not exists realtime.%I partition of realtime.messages for values from (%L) to (%L)',
      name, day, day + 1);
  end if;
exception when duplicate_table or unique_violation then
  -- Created concurrently by another session: fine.
  null;
end $$;
revoke all on function realtime.ensure_messages_partition(date) from public;
do $$
declare r text;
begin
  foreach r in array array['anon', 'authenticated', 'service_role'] loop
    if exists (select from pg_roles where rolname = r) then
      execute format('grant execute on function realtime.ensure_messages_partition(date) to %I', r);
    end if;
  end loop;
end $$;

-- Supabase's signature and behaviour: SECURITY INVOKER (INSERT policies on realtime.messages
-- apply to the caller), the payload gets the message id unless it has one, and a failure is a
-- WARNING, never an error: a trigger calling it never fails the caller's transaction.
create or replace function realtime.send(payload jsonb, event text, topic text, private boolean default true)
returns void language plpgsql as $$
declare
  generated_id uuid;
  final_payload jsonb;
begin
  begin
    generated_id := gen_random_uuid();
    if payload ? 'id' then
      final_payload := payload;
    else
      final_payload := jsonb_set(payload, '{id}', to_jsonb(generated_id));
    end if;
    execute format('SET LOCAL realtime.topic TO %L', topic);
    begin
      insert into realtime.messages (id, payload, event, topic, private, extension, inserted_at)
      values (generated_id, final_payload, event, topic, private, 'broadcast', (now() at time zone 'utc'));
    exception when check_violation then
      -- No partition for today (SQLSTATE 23514, "no partition of relation found for row"):
      -- create it and insert again.
      perform realtime.ensure_messages_partition((now() at time zone 'utc')::date);
      insert into realtime.messages (id, payload, event, topic, private, extension, inserted_at)
      values (generated_id, final_payload, event, topic, private, 'broadcast', (now() at time zone 'utc'));
    end;
  exception when others then
    raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
  end;
end $$;

create or replace function realtime.send_binary(payload bytea, event text, topic text, private boolean default true)
returns void language plpgsql as $$
declare
  generated_id uuid;
begin
  begin
    generated_id := gen_random_uuid();
    execute format('SET LOCAL realtime.topic TO %L', topic);
    begin
      insert into realtime.messages (id, binary_payload, event, topic, private, extension, inserted_at)
      values (generated_id, payload, event, topic, private, 'broadcast', (now() at time zone 'utc'));
    exception when check_violation then
      perform realtime.ensure_messages_partition((now() at time zone 'utc')::date);
      insert into realtime.messages (id, binary_payload, event, topic, private, extension, inserted_at)
      values (generated_id, payload, event, topic, private, 'broadcast', (now() at time zone 'utc'));
    end;
  exception when others then
    raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
  end;
end $$;

create or replace function realtime.broadcast_changes(
  topic_name text, event_name text, operation text, table_name text, table_schema text,
  new record, old record, level text default 'ROW'
) returns void language plpgsql as $$
declare
  row_data jsonb := '{}'::jsonb;
begin
  if level = 'STATEMENT' then
    raise exception 'function can only be triggered for each row, not for each statement';
  end if;
  if operation = 'INSERT' or operation = 'UPDATE' or operation = 'DELETE' then
    row_data := jsonb_build_object('old_record', old, 'record', new, 'operation', operation,
                                   'table', table_name, 'schema', table_schema);
    perform realtime.send(row_data, event_name, topic_name);
  else
    raise exception 'Unexpected operation type: %', operation;
  end if;
exception when others then
  raise exception 'Failed to process the row: %', sqlerrm;
end $$;
