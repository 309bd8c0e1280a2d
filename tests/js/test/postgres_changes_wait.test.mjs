// `config.postgres_changes_options {wait, timeout}` with the published realtime-js client, both
// serializers: a waiting join reaches SUBSCRIBED only once the changes subscription is live (a row
// inserted the moment the callback runs arrives), and a refused binding fails the join with
// Supabase's `RealtimeDisabledForConfiguration: <error>` instead of a `system` error after a
// successful join. (The timeout needs a stream that is not up: tests/tests/changes_wait.rs.)

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import { Inbox, VSNS, connect, subscribeStatus, uniqueTopic, useServer } from '../harness.mjs'

const clients = []
const server = useServer({
  database: true,
  clients,
  setup: async () => {
    await server.sql(`CREATE TABLE waited (id int PRIMARY KEY, body text)`)
    // The service creates the publication as it starts; create it first if it has not yet.
    await server.sql(`DO $$ BEGIN
        CREATE PUBLICATION supabase_realtime; EXCEPTION WHEN duplicate_object THEN NULL; END $$;`)
    await server.sql(`ALTER PUBLICATION supabase_realtime ADD TABLE waited`)
  },
})

function client(vsn) {
  const c = connect(server, { vsn, token: server.token() })
  clients.push(c)
  return c
}

for (const [i, vsn] of VSNS.entries()) {
  describe(`postgres_changes_options.wait (vsn ${vsn})`, () => {
    test('SUBSCRIBED means live: a row inserted from the subscribe callback arrives', async () => {
      const inbox = new Inbox('changes')
      const system = new Inbox('system')
      const channel = client(vsn)
        .channel(uniqueTopic('wait'), { config: { postgres_changes_options: { wait: true, timeout: 5000 } } })
        .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'waited' }, inbox.push)
        .on('system', {}, system.push)
      const id = 10 + i
      const { status, err } = await new Promise((resolve) => {
        channel.subscribe(async (status, err) => {
          // The first write right at SUBSCRIBED, as the apps of supabase-js#1599 do.
          if (status === 'SUBSCRIBED') await server.sql(`INSERT INTO waited VALUES (${id}, 'first')`)
          resolve({ status, err })
        })
      })
      assert.equal(status, 'SUBSCRIBED', err?.message)
      const change = await inbox.next((p) => p.new.id === id)
      assert.equal(change.new.body, 'first')
      const ok = await system.next((m) => m.extension === 'postgres_changes')
      assert.deepEqual([ok.status, ok.message], ['ok', 'Subscribed to PostgreSQL'])
    })

    test('a refused binding fails the waiting join with RealtimeDisabledForConfiguration', async () => {
      const system = new Inbox('system')
      const channel = client(vsn)
        .channel(uniqueTopic('wait'), { config: { postgres_changes_options: { wait: true } } })
        .on('postgres_changes', { event: '*', schema: 'public', table: 'not_published' }, () => {})
        .on('system', {}, system.push)
      const { status, err } = await subscribeStatus(channel)
      assert.equal(status, 'CHANNEL_ERROR')
      assert.match(err.message, /^RealtimeDisabledForConfiguration: .+/)
      assert.deepEqual(system.items, [], 'no system error after a join that failed')
      channel.unsubscribe()
    })

    test('without wait, a refused binding is a system error on a joined channel (as before)', async () => {
      const system = new Inbox('system')
      const channel = client(vsn)
        .channel(uniqueTopic('nowait'))
        .on('postgres_changes', { event: '*', schema: 'public', table: 'not_published' }, () => {})
        .on('system', {}, system.push)
      const { status } = await subscribeStatus(channel)
      assert.equal(status, 'SUBSCRIBED')
      const refused = await system.next((m) => m.extension === 'postgres_changes')
      assert.equal(refused.status, 'error')
    })
  })
}
