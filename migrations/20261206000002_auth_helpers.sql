-- The helper functions Supabase's policies use, `auth.uid()`, `auth.role()` and `auth.jwt()`,
-- with Supabase's definitions, for databases that lack them (a database with Supabase's `auth`
-- schema keeps its own). They read the claims the service sets with `set_config` before a check.
do $$
begin
  if not exists (select from pg_namespace where nspname = 'auth') then
    create schema auth;
  end if;
  if to_regprocedure('auth.uid()') is null then
    create function auth.uid() returns uuid language sql stable as $f$
      select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
      )::uuid
    $f$;
  end if;
  if to_regprocedure('auth.role()') is null then
    create function auth.role() returns text language sql stable as $f$
      select coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
      )::text
    $f$;
  end if;
  if to_regprocedure('auth.jwt()') is null then
    create function auth.jwt() returns jsonb language sql stable as $f$
      select coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
      )::jsonb
    $f$;
  end if;
exception when insufficient_privilege then
  raise notice 'realtime: cannot create auth.uid(), auth.role(), auth.jwt(): %', sqlerrm;
end $$;

do $$
declare r text;
begin
  foreach r in array array['anon', 'authenticated', 'service_role'] loop
    if exists (select from pg_roles where rolname = r) then
      execute format('grant usage on schema auth to %I', r);
      execute format('grant execute on function auth.uid(), auth.role(), auth.jwt() to %I', r);
    end if;
  end loop;
exception when insufficient_privilege or undefined_function then
  raise notice 'realtime: cannot grant the auth helpers: %', sqlerrm;
end $$;
