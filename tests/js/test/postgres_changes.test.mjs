// Postgres Changes with the published realtime-js client, against a database of its own:
// payload fields and JS types, events and filters, the "Subscribed to PostgreSQL" promise,
// commit order, unpublished tables, and who sees what under a policy.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import {
  Inbox,
  TEST_POLICY,
  VSNS,
  absenceWindow,
  connect,
  subscribed,
  uniqueTopic,
  useServer,
} from '../harness.mjs'

const POLICY = `${TEST_POLICY}
[[table]]
description = "Owners receive their own notes; the secret column is never sent"
table = "public.notes"
roles = ["authenticated"]
rows = "owner = auth.uid()"
columns = ["id", "owner", "body"]
`

const clients = []
const server = useServer({
  database: true,
  policy: POLICY,
  clients,
  setup: async () => {
    // Roles realtime-js users have (the test clusters create them; this states what the file needs).
    await server.sql(`
      CREATE TABLE todos (id int PRIMARY KEY, title text, done bool, meta jsonb, tags text[], due timestamptz, n numeric);
      CREATE TABLE notes (id int PRIMARY KEY, owner text, body text, secret text);
      ALTER TABLE notes REPLICA IDENTITY FULL;
      CREATE TABLE hidden (id int PRIMARY KEY);
      GRANT SELECT ON todos, notes, hidden TO authenticated, service_role;
    `)
    // The service creates the publication as it starts; create it first if it has not yet.
    await server.sql(`DO $$ BEGIN
        CREATE PUBLICATION supabase_realtime; EXCEPTION WHEN duplicate_object THEN NULL; END $$;`)
    await server.sql(`ALTER PUBLICATION supabase_realtime ADD TABLE todos, notes`)
  },
})

function client(vsn, claims = {}) {
  const c = connect(server, { vsn, token: server.token(claims) })
  clients.push(c)
  return c
}

/** Subscribes to `binding` and waits for "Subscribed to PostgreSQL" (the promise of liveness). */
async function changes(c, binding, label = 'changes') {
  const inbox = new Inbox(label)
  const system = new Inbox(`${label} system`)
  const channel = c
    .channel(uniqueTopic('db'))
    .on('postgres_changes', binding, inbox.push)
    .on('system', {}, system.push)
  await subscribed(channel)
  await system.next((m) => m.extension === 'postgres_changes', undefined, 'a postgres_changes system message')
  return { channel, inbox, system }
}

for (const vsn of VSNS) {
  describe(`postgres changes (vsn ${vsn})`, () => {
    test('insert, update and delete arrive with Supabase fields and JS types', async () => {
      const c = client(vsn)
      const { inbox, system } = await changes(c, { event: '*', schema: 'public', table: 'todos' })
      const ok = system.items.find((m) => m.extension === 'postgres_changes')
      assert.equal(ok.status, 'ok')
      assert.equal(ok.message, 'Subscribed to PostgreSQL')
      const id = vsn === '1.0.0' ? 1 : 2
      await server.sql(`INSERT INTO todos VALUES (${id}, 'write tests', false, '{"p": [1, 2.5]}', '{a,"b c"}', '2024-01-02 03:04:05+00', 12.50)`)
      await server.sql(`UPDATE todos SET done = true WHERE id = ${id}`)
      await server.sql(`DELETE FROM todos WHERE id = ${id}`)
      const insert = await inbox.next((p) => p.eventType === 'INSERT' && p.new.id === id)
      assert.equal(insert.schema, 'public')
      assert.equal(insert.table, 'todos')
      assert.equal(insert.errors, null)
      assert.match(insert.commit_timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
      assert.deepEqual(insert.new, {
        id,
        title: 'write tests',
        done: false,
        meta: { p: [1, 2.5] },
        tags: ['a', 'b c'],
        due: '2024-01-02T03:04:05+00:00',
        n: 12.5,
      })
      assert.deepEqual(insert.old, {})
      const update = await inbox.next((p) => p.eventType === 'UPDATE' && p.new.id === id)
      assert.equal(update.new.done, true)
      assert.deepEqual(update.old, { id }, 'default identity: the old key')
      const del = await inbox.next((p) => p.eventType === 'DELETE' && p.old.id === id)
      assert.deepEqual(del.new, {})
      const order = inbox.items.filter((p) => (p.new.id ?? p.old.id) === id).map((p) => p.eventType)
      assert.deepEqual(order, ['INSERT', 'UPDATE', 'DELETE'], 'commit order')
    })

    test('a single event and a filter deliver only what they name', async () => {
      const c = client(vsn)
      const base = vsn === '1.0.0' ? 100 : 200
      const inserts = await changes(c, { event: 'INSERT', schema: 'public', table: 'todos', filter: `id=eq.${base + 2}` }, 'eq')
      const notIn = await changes(c, { event: 'INSERT', schema: 'public', table: 'todos', filter: `id=not.in.(${base + 1},${base + 2})` }, 'not in')
      const deletes = await changes(c, { event: 'DELETE', schema: 'public', table: 'todos' }, 'deletes')
      await server.sql(`INSERT INTO todos (id, title) SELECT g, 't' FROM generate_series(${base + 1}, ${base + 3}) g`)
      await server.sql(`DELETE FROM todos WHERE id = ${base + 3}`)
      await deletes.inbox.next((p) => p.old.id === base + 3)
      await inserts.inbox.next((p) => p.new.id === base + 2)
      await notIn.inbox.next((p) => p.new.id === base + 3)
      await absenceWindow()
      assert.deepEqual(inserts.inbox.items.map((p) => p.new.id), [base + 2])
      assert.deepEqual(notIn.inbox.items.map((p) => p.new.id), [base + 3])
      assert.ok(deletes.inbox.items.every((p) => p.eventType === 'DELETE'))
    })

    test('every write committed after "Subscribed to PostgreSQL" arrives', async () => {
      const c = client(vsn)
      const trials = 25
      for (let i = 0; i < trials; i++) {
        const id = (vsn === '1.0.0' ? 10_000 : 20_000) + i
        const { channel, inbox } = await changes(c, { event: 'INSERT', schema: 'public', table: 'todos', filter: `id=eq.${id}` }, `trial ${i}`)
        await server.sql(`INSERT INTO todos (id, title) VALUES (${id}, 'race')`)
        await inbox.next((p) => p.new.id === id)
        await c.removeChannel(channel)
      }
    })

    test('a table outside the publication gets the documented system error', async () => {
      const c = client(vsn)
      const system = new Inbox('system')
      const channel = c
        .channel(uniqueTopic('db'))
        .on('postgres_changes', { event: '*', schema: 'public', table: 'hidden' }, () => {})
        .on('system', {}, system.push)
      await subscribed(channel)
      const error = await system.next((m) => m.extension === 'postgres_changes')
      assert.equal(error.status, 'error')
      assert.match(error.message, /^Unable to subscribe to changes with given parameters. Please check Realtime is enabled/)
    })
  })
}

describe('liveness options and publication changes', () => {
  test('postgres_changes_options.wait delays SUBSCRIBED until the subscription is live', async () => {
    for (const vsn of VSNS) {
      const c = client(vsn)
      const inbox = new Inbox('wait')
      const system = new Inbox('wait system')
      const id = vsn === '1.0.0' ? 30_001 : 30_002
      const channel = c
        .channel(uniqueTopic('db'), { config: { postgres_changes_options: { wait: true, timeout: 5000 } } })
        .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'todos', filter: `id=eq.${id}` }, inbox.push)
        .on('system', {}, system.push)
      await subscribed(channel)
      // Live at SUBSCRIBED: the system message came first, and a write right now arrives.
      assert.ok(
        system.items.some((m) => m.message === 'Subscribed to PostgreSQL'),
        `"Subscribed to PostgreSQL" before SUBSCRIBED: ${JSON.stringify(system.items)}`
      )
      await server.sql(`INSERT INTO todos (id, title) VALUES (${id}, 'waited')`)
      await inbox.next((p) => p.new.id === id)
    }
  })

  test('a table added to the publication while running is picked up; live subscriptions stay', async () => {
    const c = client('2.0.0')
    const live = await changes(c, { event: 'INSERT', schema: 'public', table: 'todos' }, 'live')
    await server.sql('CREATE TABLE later (id int PRIMARY KEY, v text)')
    const refused = new Inbox('refused')
    const early = c
      .channel(uniqueTopic('db'))
      .on('postgres_changes', { event: '*', schema: 'public', table: 'later' }, () => {})
      .on('system', {}, refused.push)
    await subscribed(early)
    const error = await refused.next((m) => m.extension === 'postgres_changes')
    assert.equal(error.status, 'error', 'not yet published')

    await server.sql('ALTER PUBLICATION supabase_realtime ADD TABLE later')
    const added = await changes(c, { event: 'INSERT', schema: 'public', table: 'later' }, 'added')
    await server.sql(`INSERT INTO later VALUES (1, 'new table')`)
    await server.sql(`INSERT INTO todos (id, title) VALUES (40000, 'still live')`)
    assert.equal((await added.inbox.next((p) => p.table === 'later')).new.v, 'new table')
    await live.inbox.next((p) => p.new.id === 40000)

    await server.sql('ALTER PUBLICATION supabase_realtime DROP TABLE later')
    await server.sql(`INSERT INTO todos (id, title) VALUES (40001, 'after the drop')`)
    await live.inbox.next((p) => p.new.id === 40001)
  })
})

describe('who sees what under a table policy', () => {
  test('owners see only their rows, never the hidden column nor a previous owner\'s values', async () => {
    const a = await changes(client('2.0.0', { sub: 'alice' }), { event: '*', schema: 'public', table: 'notes' }, 'alice')
    const b = await changes(client('1.0.0', { sub: 'bob' }), { event: '*', schema: 'public', table: 'notes' }, 'bob')
    const admin = await changes(client('2.0.0', { role: 'service_role', sub: 'ops' }), { event: '*', schema: 'public', table: 'notes' }, 'service')

    await server.sql(`INSERT INTO notes VALUES (1, 'alice', 'hers', 's1'), (2, 'bob', 'his', 's2')`)
    const mine = await a.inbox.next((p) => p.eventType === 'INSERT')
    assert.deepEqual(mine.new, { id: 1, owner: 'alice', body: 'hers' }, 'no secret column')
    await b.inbox.next((p) => p.eventType === 'INSERT' && p.new.id === 2)
    // Alice writes a private body, then hands the note to Bob.
    await server.sql(`UPDATE notes SET body = 'alice only' WHERE id = 1`)
    await server.sql(`UPDATE notes SET owner = 'bob', body = 'for bob' WHERE id = 1`)
    const handed = await b.inbox.next((p) => p.eventType === 'UPDATE' && p.new.id === 1)
    assert.deepEqual(handed.new, { id: 1, owner: 'bob', body: 'for bob' })
    assert.ok(!JSON.stringify(handed.old).includes('alice only'), `Bob never sees Alice's old values: ${JSON.stringify(handed.old)}`)
    await server.sql(`DELETE FROM notes WHERE id = 2`)
    await b.inbox.next((p) => p.eventType === 'DELETE')
    const all = await admin.inbox.next((p) => p.eventType === 'DELETE')
    assert.equal(all.old.id, 2)
    await admin.inbox.next((p) => p.eventType === 'UPDATE' && p.new.owner === 'bob')
    await absenceWindow()

    const aliceSaw = JSON.stringify(a.inbox.items)
    assert.ok(!aliceSaw.includes('for bob') && !aliceSaw.includes('his'), `Alice sees nothing of Bob's: ${aliceSaw}`)
    for (const inbox of [a.inbox, b.inbox]) {
      assert.ok(!JSON.stringify(inbox.items).includes('"secret"'), 'the hidden column never appears')
    }
    const bobDelete = b.inbox.items.find((p) => p.eventType === 'DELETE')
    assert.deepEqual(Object.keys(bobDelete.old), ['id'], 'a delete reveals only the key')
    assert.ok(admin.inbox.items.some((p) => p.new?.secret === 's1'), 'the service role sees every column')
  })

  test('a filter on a column the policy hides is refused at subscribe time', async () => {
    const c = client('2.0.0', { sub: 'alice' })
    const system = new Inbox('system')
    const channel = c
      .channel(uniqueTopic('db'))
      .on('postgres_changes', { event: '*', schema: 'public', table: 'notes', filter: 'secret=eq.s1' }, () => {})
      .on('system', {}, system.push)
    await subscribed(channel)
    const error = await system.next((m) => m.extension === 'postgres_changes')
    assert.equal(error.status, 'error')
    assert.match(error.message, /secret/)
  })
})
