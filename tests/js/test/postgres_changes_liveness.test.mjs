// The promise behind "Subscribed to PostgreSQL", with the published realtime-js client against
// a real Postgres: a row committed right after that message arrives must be delivered. 1,000
// trials in all (500 per serializer), each on a fresh channel, so a race between subscribing
// and the replication stream shows up as a missing row. Trials run in several lanes at once
// (each lane one channel after another on a shared socket), and each write goes through an
// open `psql` session, so it is sent the moment the message arrives.

import assert from 'node:assert/strict'
import { after, describe, test } from 'node:test'

import { Inbox, VSNS, connect, subscribed, uniqueTopic, useServer } from '../harness.mjs'

/** Trials per serializer: 1,000 over both. */
const TRIALS = 500
/** Channels subscribing at the same time per serializer. */
const LANES = 10

let db
const clients = []
const server = useServer({
  database: true,
  clients,
  setup: async () => {
    await server.sql(`
      CREATE TABLE live (id int PRIMARY KEY, v text);
      GRANT SELECT ON live TO authenticated;
    `)
    await server.sql(`DO $$ BEGIN
        CREATE PUBLICATION supabase_realtime; EXCEPTION WHEN duplicate_object THEN NULL; END $$;`)
    await server.sql(`ALTER PUBLICATION supabase_realtime ADD TABLE live`)
    db = server.sqlSession()
  },
})
after(async () => {
  await db?.close()
})

for (const vsn of VSNS) {
  describe(`postgres changes liveness (vsn ${vsn})`, () => {
    test(`${TRIALS} fresh channels, ${LANES} at a time: a write right after "Subscribed to PostgreSQL" arrives`, async (t) => {
      const c = connect(server, { vsn, token: server.token() })
      clients.push(c)
      const base = vsn === '1.0.0' ? 100_000 : 200_000
      const started = Date.now()
      const missed = []
      let next = 0
      let done = 0

      const trial = async (i) => {
        const id = base + i
        const inbox = new Inbox(`trial ${i}`)
        const system = new Inbox(`trial ${i} system`)
        // Alternate filtered and unfiltered bindings: both paths must be live at the promise.
        const binding = { event: 'INSERT', schema: 'public', table: 'live', ...(i % 2 ? { filter: `id=eq.${id}` } : {}) }
        const channel = c.channel(uniqueTopic('live')).on('postgres_changes', binding, inbox.push).on('system', {}, system.push)
        await subscribed(channel)
        const status = await system.next((m) => m.extension === 'postgres_changes', undefined, 'a postgres_changes system message')
        assert.equal(status.status, 'ok', status.message)
        await db.run(`INSERT INTO live VALUES (${id}, 'trial')`)
        try {
          await inbox.next((p) => p.new.id === id)
        } catch {
          missed.push(i)
        }
        await c.removeChannel(channel)
        done += 1
      }
      const lane = async () => {
        while (next < TRIALS) await trial(next++)
      }
      await Promise.all(Array.from({ length: LANES }, lane))

      t.diagnostic(`${done} trials in ${Date.now() - started} ms`)
      assert.deepEqual(missed, [], `trials whose row never arrived (of ${done})`)
      assert.equal(done, TRIALS, 'every trial ran')
    })
  })
}
