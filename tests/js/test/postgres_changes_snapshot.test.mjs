// Snapshot then changes with the published realtime-js client, unmodified: a binding with
// `snapshot` (realtime-js passes the field through) gets the table's rows as ordinary INSERT
// changes in its `event: '*'` callback, then a `system` message that says the snapshot is
// complete, then the changes after it. Both serializers.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import { EVENT_TIMEOUT_MS, Inbox, VSNS, connect, subscribed, uniqueTopic, useServer } from '../harness.mjs'

const clients = []
const server = useServer({
  database: true,
  clients,
  setup: async () => {
    await server.sql(`
      CREATE TABLE todos (id int PRIMARY KEY, title text NOT NULL, done boolean NOT NULL DEFAULT false);
      GRANT SELECT ON todos TO service_role;
      INSERT INTO todos SELECT g, 'todo ' || g FROM generate_series(1, 20) g;`)
    await server.sql(`DO $$ BEGIN
        CREATE PUBLICATION supabase_realtime; EXCEPTION WHEN duplicate_object THEN NULL; END $$;`)
    await server.sql(`ALTER PUBLICATION supabase_realtime ADD TABLE todos`)
  },
})

for (const vsn of VSNS) {
  describe(`snapshot then changes, vsn ${vsn}`, () => {
    test("an event: '*' app sees the rows as INSERTs, the end of the snapshot, then the changes", async () => {
      const c = connect(server, { vsn, token: server.token({ role: 'service_role' }) })
      clients.push(c)
      const changes = new Inbox(`changes ${vsn}`)
      const system = new Inbox(`system ${vsn}`)
      const order = []
      const channel = c
        .channel(uniqueTopic('snapshot'))
        .on(
          'postgres_changes',
          { event: '*', schema: 'public', table: 'todos', snapshot: { limit: 10, order: 'id.desc' } },
          (change) => {
            order.push('change')
            changes.push(change)
          }
        )
        .on('system', {}, (m) => {
          if (m.snapshot) order.push(`system:${m.snapshot}`)
          system.push(m)
        })
      await subscribed(channel)
      const end = await system.next((m) => m.snapshot === 'complete', EVENT_TIMEOUT_MS, 'the end of the snapshot')
      assert.equal(end.status, 'ok')
      assert.equal(end.rows, 10)
      assert.equal(end.extension, 'postgres_changes')
      // Every snapshot row reached the callback before the end message, newest id first.
      assert.deepEqual(order, [...Array(10).fill('change'), 'system:complete'])
      const rows = changes.items.slice(0, 10)
      assert.deepEqual(
        rows.map((r) => r.new.id),
        [20, 19, 18, 17, 16, 15, 14, 13, 12, 11]
      )
      for (const row of rows) {
        assert.equal(row.eventType, 'INSERT')
        assert.equal(row.table, 'todos')
        assert.equal(row.new.title, `todo ${row.new.id}`)
      }
      // Then the changes after the snapshot.
      await server.sql(`UPDATE todos SET done = true WHERE id = 20`)
      const update = await changes.next((ch) => ch.eventType === 'UPDATE', EVENT_TIMEOUT_MS, 'the update')
      assert.equal(update.new.id, 20)
      assert.equal(update.new.done, true)
      assert.equal(changes.items.length, 11, 'nothing else: the snapshot rows are not repeated')
    })
  })
}
