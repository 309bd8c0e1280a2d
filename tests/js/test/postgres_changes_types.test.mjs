// Postgres Changes payload values with the published realtime-js client, against a real Postgres:
// for each column type, `new` must equal Postgres's own `to_jsonb(row)` (realtime-js passes typed
// JSON through), so numbers arrive as numbers, json as objects, arrays as arrays, and times in
// Postgres's JSON spelling. Also who sees what when the table has Postgres row-level security
// and the policy file says nothing about it.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import { Inbox, VSNS, absenceWindow, connect, subscribed, uniqueTopic, useServer } from '../harness.mjs'

const clients = []
const server = useServer({
  database: true,
  clients,
  setup: async () => {
    await server.sql(`
      CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
      CREATE TABLE typed (
        id int4 PRIMARY KEY, i2 int2, i8 int8, f8 float8, n numeric, b bool, t text, j json, jb jsonb,
        u uuid, d date, ts timestamp, tstz timestamptz, tm time, iv interval, by bytea, e mood,
        ai int4[], at text[]
      );
      CREATE TABLE rls_notes (id int PRIMARY KEY, owner text, body text);
      ALTER TABLE rls_notes ENABLE ROW LEVEL SECURITY;
      CREATE POLICY own_notes ON rls_notes FOR SELECT TO authenticated
        USING (owner = current_setting('request.jwt.claims', true)::jsonb ->> 'sub');
      GRANT SELECT ON typed, rls_notes TO authenticated, service_role;
    `)
    await server.sql(`DO $$ BEGIN
        CREATE PUBLICATION supabase_realtime; EXCEPTION WHEN duplicate_object THEN NULL; END $$;`)
    await server.sql(`ALTER PUBLICATION supabase_realtime ADD TABLE typed, rls_notes`)
  },
})

function client(vsn, claims = {}) {
  const c = connect(server, { vsn, token: server.token(claims) })
  clients.push(c)
  return c
}

async function changes(c, binding, label) {
  const inbox = new Inbox(label)
  const system = new Inbox(`${label} system`)
  const channel = c.channel(uniqueTopic('db')).on('postgres_changes', binding, inbox.push).on('system', {}, system.push)
  await subscribed(channel)
  const status = await system.next((m) => m.extension === 'postgres_changes', undefined, 'a postgres_changes system message')
  assert.equal(status.status, 'ok', `${label}: ${status.message}`)
  return inbox
}

/** Rows as `VALUES` bodies after the id: ordinary values, nulls, and edge values. */
const ROWS = {
  ordinary: `32767, 9007199254740993, 1.5, 12.50, true, 'hello', '{"a": [1, 2.5, null], "b": {"c": "d"}}',
    '{"z": 1, "a": [true, false]}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29',
    '2024-01-02 03:04:05.123456', '2024-01-02 03:04:05+02', '12:34:56.789', '1 day 02:03:04',
    '\\x00ff10', 'happy', '{1,2,3}', '{a,"b c",NULL}'`,
  nulls: `NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL`,
  edges: `-32768, -9223372036854775808, -0.000001, 123456789.000000001, false,
    E'quote " backslash \\\\ newline \\n tab \\t unicode \\u00e9 \\U0001F600', '[]', '"just a string"',
    '00000000-0000-0000-0000-000000000000', '0001-01-01', '1999-12-31 23:59:59', '1970-01-01 00:00:00+00',
    '00:00:00', '-1 years -2 mons +3 days -04:05:06.7', '', 'sad', '{}', '{}'`,
  specials: `NULL, NULL, 'Infinity', 'NaN', NULL, NULL, 'null', 'null', NULL, 'infinity', '-infinity', 'infinity',
    '24:00:00', NULL, NULL, NULL, '{NULL}', '{""}'`,
}

/** realtime-js reads numeric-typed strings ("Infinity") as numbers; "NaN" stays a string. */
function asClientReads(record) {
  const out = { ...record }
  for (const col of ['f8', 'n']) {
    if (typeof out[col] === 'string' && !Number.isNaN(parseFloat(out[col]))) out[col] = parseFloat(out[col])
  }
  return out
}

for (const vsn of VSNS) {
  describe(`postgres changes payload types (vsn ${vsn})`, () => {
    const base = vsn === '1.0.0' ? 100 : 200
    for (const [name, values] of Object.entries(ROWS)) {
      test(`${name} values arrive as Postgres's to_jsonb spells them`, async () => {
        const c = client(vsn)
        const id = base + Object.keys(ROWS).indexOf(name)
        const inbox = await changes(c, { event: '*', schema: 'public', table: 'typed', filter: `id=eq.${id}` }, name)
        await server.sql(`INSERT INTO typed VALUES (${id}, ${values})`)
        const insert = await inbox.next((p) => p.eventType === 'INSERT')
        const expected = JSON.parse(await server.sql(`SELECT to_jsonb(r) FROM typed r WHERE id = ${id}`))
        // On the wire the record is exactly Postgres's JSON.
        const wire = c.received.map((m) => m.data).find((d) => d?.data?.type === 'INSERT' && d.data.record?.id === id)
        assert.ok(wire, `the raw frame was logged: ${JSON.stringify(c.received.slice(-3))}`)
        assert.deepEqual(wire.data.record, expected)
        assert.deepEqual(insert.new, asClientReads(expected))
        // Numbers stay numbers, json stays structured, when not null.
        if (name === 'ordinary') {
          for (const col of ['i2', 'i8', 'f8', 'n']) assert.equal(typeof insert.new[col], 'number', col)
          assert.equal(typeof insert.new.b, 'boolean')
          assert.ok(Array.isArray(insert.new.ai) && Array.isArray(insert.new.at))
          assert.equal(typeof insert.new.jb, 'object')
        }
        // An update's new image goes through the same path.
        await server.sql(`UPDATE typed SET t = coalesce(t, '') || '!' WHERE id = ${id}`)
        const update = await inbox.next((p) => p.eventType === 'UPDATE')
        assert.deepEqual(update.new, asClientReads(JSON.parse(await server.sql(`SELECT to_jsonb(r) FROM typed r WHERE id = ${id}`))))
      })
    }

    test('with Postgres row-level security, each user gets only rows the policy shows them', async () => {
      const binding = { event: '*', schema: 'public', table: 'rls_notes' }
      const a = await changes(client(vsn, { sub: `a-${vsn}` }), binding, 'user A')
      const b = await changes(client(vsn, { sub: `b-${vsn}` }), binding, 'user B')
      const admin = await changes(client(vsn, { role: 'service_role', sub: 'ops' }), binding, 'service_role')
      const ids = [base + 1, base + 2, base + 3, base + 4]
      await server.sql(`INSERT INTO rls_notes VALUES
        (${ids[0]}, 'a-${vsn}', 'for a'), (${ids[1]}, 'b-${vsn}', 'for b'),
        (${ids[2]}, 'someone else', 'for nobody'), (${ids[3]}, 'a-${vsn}', 'for a again')`)
      await server.sql(`UPDATE rls_notes SET body = 'b edited' WHERE id = ${ids[1]}`)
      await admin.next((p) => p.eventType === 'UPDATE' && p.new.id === ids[1])
      await b.next((p) => p.eventType === 'UPDATE' && p.new.id === ids[1])
      await a.next((p) => p.new.id === ids[3])
      await absenceWindow()
      const seen = (inbox) => inbox.items.map((p) => `${p.eventType}:${p.new.id}:${p.new.body}`)
      assert.deepEqual(seen(a), [`INSERT:${ids[0]}:for a`, `INSERT:${ids[3]}:for a again`])
      assert.deepEqual(seen(b), [`INSERT:${ids[1]}:for b`, `UPDATE:${ids[1]}:b edited`])
      assert.deepEqual(seen(admin), [
        `INSERT:${ids[0]}:for a`,
        `INSERT:${ids[1]}:for b`,
        `INSERT:${ids[2]}:for nobody`,
        `INSERT:${ids[3]}:for a again`,
        `UPDATE:${ids[1]}:b edited`,
      ])
    })
  })
}
