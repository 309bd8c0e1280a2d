-- Supabase's channel authorization probe for a batch of checks, in one round trip. Created on each
-- of the check pool's connections (in pg_temp: nothing is added to the database's schemas).
--
-- Check i asks what role roles[i] with claims claims[i] may do on the private sub-topic topics[i].
-- Each check runs in its own subtransaction that always ends by raising `RT001`: its probe rows,
-- its role and its settings are rolled back before the next check starts, so one check's claims
-- never see another's rows or settings. The answers survive the rollback in the output columns
-- (PL/pgSQL variables are not transactional). A check that fails returns its SQLSTATE and message.
create or replace function pg_temp.realtime_authorize(
  topics text[], roles text[], claims text[], subs text[], presence boolean[])
returns table (broadcast_read boolean, presence_read boolean, broadcast_write boolean,
               presence_write boolean, error_code text, error_message text)
language plpgsql volatile as $$
declare
  broadcast_id uuid;
  presence_id uuid;
begin
  for i in 1 .. coalesce(array_length(topics, 1), 0) loop
    broadcast_read := false;
    presence_read := false;
    broadcast_write := false;
    presence_write := false;
    error_code := null;
    error_message := null;
    begin
      -- As the service's role (the table's owner: row-level security does not apply).
      insert into realtime.messages (topic, extension, private, inserted_at)
        values (topics[i], 'broadcast', true, now() at time zone 'utc') returning id into broadcast_id;
      presence_id := null;
      -- Presence read is looked at only when presence is enabled at join, as in Supabase.
      if presence[i] then
        insert into realtime.messages (topic, extension, private, inserted_at)
          values (topics[i], 'presence', true, now() at time zone 'utc') returning id into presence_id;
      end if;
      -- From here on as the token's role, with its claims and the topic set for policies.
      perform set_config('role', roles[i], true), set_config('realtime.topic', topics[i], true),
              set_config('request.jwt.claims', claims[i], true),
              set_config('request.jwt.claim.sub', subs[i], true),
              set_config('request.jwt.claim.role', roles[i], true),
              set_config('request.headers', '{}', true);
      broadcast_read := exists (select 1 from realtime.messages where id = broadcast_id);
      presence_read := presence_id is not null
                       and exists (select 1 from realtime.messages where id = presence_id);
      -- Write: inserts under the token's role. Presence write is checked whether or not presence
      -- is enabled: a later `track` needs it. Both together first; one by one only when refused.
      begin
        insert into realtime.messages (topic, extension, private, inserted_at)
          values (topics[i], 'broadcast', true, now() at time zone 'utc'),
                 (topics[i], 'presence', true, now() at time zone 'utc');
        broadcast_write := true;
        presence_write := true;
      exception when insufficient_privilege then
        begin
          insert into realtime.messages (topic, extension, private, inserted_at)
            values (topics[i], 'broadcast', true, now() at time zone 'utc');
          broadcast_write := true;
        exception when insufficient_privilege then
          null;
        end;
        begin
          insert into realtime.messages (topic, extension, private, inserted_at)
            values (topics[i], 'presence', true, now() at time zone 'utc');
          presence_write := true;
        exception when insufficient_privilege then
          null;
        end;
      end;
      raise exception using errcode = 'RT001';
    exception
      when sqlstate 'RT001' then
        null;
      when others then
        broadcast_read := false;
        presence_read := false;
        broadcast_write := false;
        presence_write := false;
        error_code := sqlstate;
        error_message := sqlerrm;
    end;
    return next;
  end loop;
end;
$$;
