// Postgres Changes routing with the published realtime-js client, against a real Postgres: which
// binding gets which event, schema-wide bindings, channels sharing a socket, large transactions
// and many small ones arriving whole and in commit order, and what `old` holds under each
// replica identity.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import { Inbox, VSNS, absenceWindow, connect, subscribed, uniqueTopic, useServer } from '../harness.mjs'

const clients = []
const server = useServer({
  database: true,
  clients,
  setup: async () => {
    await server.sql(`
      CREATE SCHEMA app;
      CREATE TABLE app.one (id int PRIMARY KEY, v text);
      CREATE TABLE app.two (id int PRIMARY KEY, v text);
      CREATE TABLE bulk (id int PRIMARY KEY, v text);
      CREATE TABLE ident_default (id int PRIMARY KEY, a text, b int);
      CREATE TABLE ident_full (id int PRIMARY KEY, a text, b int);
      ALTER TABLE ident_full REPLICA IDENTITY FULL;
      GRANT USAGE ON SCHEMA app TO authenticated;
      GRANT SELECT ON app.one, app.two, bulk, ident_default, ident_full TO authenticated;
    `)
    await server.sql(`DO $$ BEGIN
        CREATE PUBLICATION supabase_realtime; EXCEPTION WHEN duplicate_object THEN NULL; END $$;`)
    await server.sql(`ALTER PUBLICATION supabase_realtime ADD TABLE app.one, app.two, bulk, ident_default, ident_full`)
  },
})

function client(vsn) {
  const c = connect(server, { vsn, token: server.token() })
  clients.push(c)
  return c
}

/**
 * Joins one channel with `bindings` (each gets its own inbox, in order) and waits for
 * "Subscribed to PostgreSQL".
 */
async function channelWith(c, bindings, label = 'channel') {
  const inboxes = bindings.map((_, i) => new Inbox(`${label} #${i}`))
  const system = new Inbox(`${label} system`)
  let channel = c.channel(uniqueTopic('db'))
  bindings.forEach((binding, i) => {
    channel = channel.on('postgres_changes', binding, inboxes[i].push)
  })
  channel.on('system', {}, system.push)
  await subscribed(channel)
  const status = await system.next((m) => m.extension === 'postgres_changes', undefined, 'a postgres_changes system message')
  assert.equal(status.status, 'ok', `${label}: ${status.message}`)
  return { channel, inboxes }
}

const key = (p) => (p.eventType === 'DELETE' ? p.old.id : p.new.id)
const describeAll = (inbox) => inbox.items.map((p) => `${p.schema}.${p.table}:${p.eventType}:${key(p)}`)

for (const vsn of VSNS) {
  describe(`postgres changes routing (vsn ${vsn})`, () => {
    const base = vsn === '1.0.0' ? 100_000 : 200_000

    test("'*' gets every event, a single event only its own", async () => {
      const c = client(vsn)
      const id = base + 1
      const table = { schema: 'app', table: 'one', filter: `id=eq.${id}` }
      const { inboxes } = await channelWith(c, ['*', 'INSERT', 'UPDATE', 'DELETE'].map((event) => ({ event, ...table })), 'events')
      await server.sql(`INSERT INTO app.one VALUES (${id}, 'a')`)
      await server.sql(`UPDATE app.one SET v = 'b' WHERE id = ${id}`)
      await server.sql(`DELETE FROM app.one WHERE id = ${id}`)
      const [star, insert, update, del] = inboxes
      await star.next((p) => p.eventType === 'DELETE')
      await del.next((p) => p.eventType === 'DELETE')
      await absenceWindow()
      assert.deepEqual(describeAll(star), [`app.one:INSERT:${id}`, `app.one:UPDATE:${id}`, `app.one:DELETE:${id}`])
      assert.deepEqual(describeAll(insert), [`app.one:INSERT:${id}`])
      assert.deepEqual(describeAll(update), [`app.one:UPDATE:${id}`])
      assert.deepEqual(describeAll(del), [`app.one:DELETE:${id}`])
    })

    test('a schema-wide binding gets every published table in that schema and no other', async () => {
      const c = client(vsn)
      const id = base + 2
      const { inboxes } = await channelWith(c, [{ event: 'INSERT', schema: 'app' }], 'schema')
      const [inbox] = inboxes
      await server.sql(`INSERT INTO bulk VALUES (${id}, 'public')`)
      await server.sql(`INSERT INTO app.one VALUES (${id}, 'one')`)
      await server.sql(`INSERT INTO app.two VALUES (${id}, 'two')`)
      await inbox.next((p) => p.table === 'two')
      await absenceWindow()
      assert.deepEqual(describeAll(inbox).filter((d) => d.endsWith(`:${id}`)), [`app.one:INSERT:${id}`, `app.two:INSERT:${id}`])
      assert.ok(inbox.items.every((p) => p.schema === 'app'), `only schema app: ${describeAll(inbox)}`)
    })

    test('two channels on one socket get only their own rows', async () => {
      const c = client(vsn)
      const id = base + 3
      const a = await channelWith(c, [{ event: '*', schema: 'app', table: 'one', filter: `id=gte.${id}` }], 'A')
      const b = await channelWith(c, [{ event: '*', schema: 'app', table: 'two', filter: `id=gte.${id}` }], 'B')
      // Same table as A, another filter: sharing a table does not share rows.
      const a2 = await channelWith(c, [{ event: '*', schema: 'app', table: 'one', filter: `id=eq.${id + 1}` }], 'A2')
      await server.sql(`INSERT INTO app.one VALUES (${id}, 'x'), (${id + 1}, 'y'); INSERT INTO app.two VALUES (${id}, 'z')`)
      await a.inboxes[0].next((p) => p.new.id === id + 1)
      await b.inboxes[0].next((p) => p.new.id === id)
      await a2.inboxes[0].next((p) => p.new.id === id + 1)
      await absenceWindow()
      assert.deepEqual(describeAll(a.inboxes[0]), [`app.one:INSERT:${id}`, `app.one:INSERT:${id + 1}`])
      assert.deepEqual(describeAll(b.inboxes[0]), [`app.two:INSERT:${id}`])
      assert.deepEqual(describeAll(a2.inboxes[0]), [`app.one:INSERT:${id + 1}`])
    })

    test('200 inserts in one transaction arrive complete and in order', async () => {
      const c = client(vsn)
      const first = base + 1000
      const n = 200
      const { inboxes } = await channelWith(c, [{ event: 'INSERT', schema: 'public', table: 'bulk', filter: `id=gte.${first}` }], 'bulk')
      const [inbox] = inboxes
      // Inserted in descending id order, so arrival order is the transaction's order, not id order.
      await server.sql(`INSERT INTO bulk SELECT g, 'v' || g FROM generate_series(${first + n - 1}, ${first}, -1) g`)
      await inbox.next((p) => p.new.id === first, 20000, 'the last row')
      await absenceWindow()
      const ids = inbox.items.map((p) => p.new.id)
      assert.deepEqual(ids, Array.from({ length: n }, (_, i) => first + n - 1 - i))
      assert.equal(new Set(inbox.items.map((p) => p.commit_timestamp)).size, 1, 'one commit, one timestamp')
      assert.ok(inbox.items.every((p) => p.new.v === `v${p.new.id}`))
    })

    test('200 single-row transactions arrive complete and in commit order', async () => {
      const c = client(vsn)
      const first = base + 2000
      const n = 200
      const { inboxes } = await channelWith(c, [{ event: 'INSERT', schema: 'public', table: 'bulk', filter: `id=gte.${first}` }], 'commits')
      const [inbox] = inboxes
      // A scrambled id order (a permutation: 7 and 200 are coprime), each row its own commit.
      await server.sql(`DO $$ BEGIN
          FOR i IN 0..${n - 1} LOOP
            INSERT INTO bulk VALUES (${first} + (i * 7) % ${n}, 'c' || i);
            COMMIT;
          END LOOP;
        END $$;`)
      const last = first + ((n - 1) * 7) % n
      await inbox.next((p) => p.new.id === last, 20000, 'the last commit')
      await absenceWindow()
      const expected = Array.from({ length: n }, (_, i) => first + ((i * 7) % n))
      assert.deepEqual(inbox.items.map((p) => p.new.id), expected)
      const times = inbox.items.map((p) => p.commit_timestamp)
      assert.deepEqual([...times].sort(), times, 'commit timestamps never go back')
    })

    for (const [table, full] of [['ident_default', false], ['ident_full', true]]) {
      test(`UPDATE and DELETE old images under REPLICA IDENTITY ${full ? 'FULL' : 'DEFAULT'}`, async () => {
        const c = client(vsn)
        const id = base + (full ? 5 : 4)
        const { inboxes } = await channelWith(c, [{ event: '*', schema: 'public', table, filter: `id=eq.${id}` }], table)
        const [inbox] = inboxes
        await server.sql(`INSERT INTO ${table} VALUES (${id}, 'before', 1)`)
        await server.sql(`UPDATE ${table} SET a = 'after', b = 2 WHERE id = ${id}`)
        await server.sql(`DELETE FROM ${table} WHERE id = ${id}`)
        const update = await inbox.next((p) => p.eventType === 'UPDATE')
        const del = await inbox.next((p) => p.eventType === 'DELETE')
        assert.deepEqual(update.new, { id, a: 'after', b: 2 })
        assert.deepEqual(update.old, full ? { id, a: 'before', b: 1 } : { id })
        assert.deepEqual(del.new, {})
        assert.deepEqual(del.old, full ? { id, a: 'after', b: 2 } : { id })
      })
    }
  })
}
