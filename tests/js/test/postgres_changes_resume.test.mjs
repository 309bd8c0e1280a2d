// Resuming Postgres Changes with the published realtime-js client: every push carries its
// `position`; an app keeps its `postgres_changes_options` object and sets `since` to the last
// position it processed, realtime-js sends that object again when it rejoins after a reconnect,
// and the server replays exactly what was missed before going live. Positions it cannot resume
// from get a `system` message with `refetch: true`, and the channel stays live.
//
// "Offline" is a lost network: a TCP proxy between client and server cuts every connection and
// refuses new ones; realtime-js keeps retrying and rejoins by itself once it is back.

import assert from 'node:assert/strict'
import { after, describe, test } from 'node:test'

import {
  EVENT_TIMEOUT_MS,
  Inbox,
  RESUME_OFFLINE_MS,
  VSNS,
  absenceWindow,
  connect,
  startProxy,
  subscribed,
  uniqueTopic,
  useServer,
} from '../harness.mjs'

/** The resume window of the second server, to step outside it. */
const SHORT_WINDOW_SECONDS = 2
const POSITION = /^[0-9a-f]{16}-[0-9A-F]{16}-[0-9A-F]{8}$/

const clients = []
const proxies = []

/** The table every test here follows, on one of the two servers. */
async function createItems(target) {
  await target.sql(`
    CREATE TABLE items (id serial PRIMARY KEY, grp int NOT NULL);
    GRANT SELECT ON items TO service_role;`)
  await target.sql(`DO $$ BEGIN
      CREATE PUBLICATION supabase_realtime; EXCEPTION WHEN duplicate_object THEN NULL; END $$;`)
  await target.sql(`ALTER PUBLICATION supabase_realtime ADD TABLE items`)
}

const server = useServer({ database: true, clients, setup: createItems })
const short = useServer({
  database: true,
  env: { REPLICATION_WINDOW_SECONDS: String(SHORT_WINDOW_SECONDS) },
  setup: createItems,
})
after(async () => {
  await Promise.all(proxies.map((p) => p.close()))
})

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * A realtime-js app that follows `items` the documented way: it keeps the object it passed as
 * `postgres_changes_options` and sets `since` to the position of each change it processes.
 * realtime-js hands the callback the change without the position, so the app takes it from
 * the raw message its `logger` saw just before the callback (here the harness's
 * `client.received`, filled by the same logger).
 */
function follow(via, vsn, { filter, since } = {}) {
  const c = connect(via, { vsn, token: via.token({ role: 'service_role' }) })
  clients.push(c)
  const options = since === undefined ? {} : { since }
  const events = []
  const system = new Inbox(`system ${vsn}`)
  const binding = { event: 'INSERT', schema: 'public', table: 'items', ...(filter ? { filter } : {}) }
  const channel = c
    .channel(uniqueTopic('resume'), { config: { postgres_changes_options: options } })
    .on('postgres_changes', binding, (change) => {
      const raw = c.received.at(-1)
      assert.match(raw.msg, /postgres_changes/, 'the logger saw this push just before the callback')
      assert.equal(change.position, undefined, 'realtime-js leaves the position out of the change')
      events.push({ id: change.new.id, position: raw.data.position })
      options.since = raw.data.position
    })
    .on('system', {}, system.push)
  return { client: c, channel, options, events, system, ready: subscribed(channel) }
}

/** Waits until `check()` is true, polling; fails after `ms` with `what`. */
async function until(check, ms, what) {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

/** Committed ids of `grp` (or all), in commit order (one writer, serial ids). */
async function committed(db, grp) {
  const where = grp === undefined ? '' : `WHERE grp = ${grp}`
  const out = await db.sql(`SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM items ${where}`)
  return out === '' ? [] : out.split(',').map(Number)
}

describe('resuming postgres changes', () => {
  test(`a client offline for ${RESUME_OFFLINE_MS / 1000} s resumes from its last position: what it missed once each, in commit order, then live with no gap`, async () => {
    const proxy = await startProxy(server)
    proxies.push(proxy)
    // Both serializers at once; the filter shows the replay applies it as live delivery does.
    const followers = VSNS.map((vsn) => follow(proxy, vsn, { filter: 'grp=eq.1' }))
    await Promise.all(followers.map((f) => f.ready))
    await Promise.all(followers.map((f) => f.system.next((m) => m.message === 'Subscribed to PostgreSQL')))

    // One writer commits all along: before, during and after the outage, and across the
    // moment of the rejoin. Every tenth transaction holds three rows.
    const rows = Math.ceil((RESUME_OFFLINE_MS + 6000) / 50)
    const writer = server.sql(`DO $$ BEGIN
      FOR i IN 1..${rows} LOOP
        INSERT INTO items (grp) SELECT (i + g) % 2 FROM generate_series(1, CASE WHEN i % 10 = 0 THEN 3 ELSE 1 END) g;
        COMMIT;
        PERFORM pg_sleep(0.05);
      END LOOP;
    END $$`)
    await until(() => followers.every((f) => f.events.length >= 5), 3 * EVENT_TIMEOUT_MS, 'changes before the outage')
    proxy.offline()
    const beforeOutage = followers.map((f) => f.events.length)
    await sleep(RESUME_OFFLINE_MS)
    const missedCommitted = (await committed(server, 1)).length
    proxy.online()
    for (const f of followers) {
      const resumed = await f.system.next((m) => m.resumed === true, 3 * EVENT_TIMEOUT_MS, 'the resumed message')
      assert.equal(resumed.status, 'ok')
    }
    await writer
    const expected = await committed(server, 1)
    assert.ok(expected.length > missedCommitted, 'rows were committed after the rejoin too')
    for (const [i, f] of followers.entries()) {
      const vsn = VSNS[i]
      await until(() => f.events.length >= expected.length, 3 * EVENT_TIMEOUT_MS, `every row (vsn ${vsn})`)
      await absenceWindow()
      const ids = f.events.map((e) => e.id)
      const duplicates = ids.length - new Set(ids).size
      const missing = expected.filter((id) => !ids.includes(id)).length
      const positions = f.events.map((e) => e.position)
      const outOfOrder = positions.filter((p, k) => k > 0 && !(positions[k - 1] < p)).length
      console.log(
        `vsn ${vsn}: ${expected.length} committed, ${ids.length} received (${ids.length - beforeOutage[i]} after the outage began), ` +
          `missing ${missing}, duplicates ${duplicates}, out of order ${outOfOrder}`
      )
      assert.deepEqual(ids, expected, `vsn ${vsn}: exactly the committed rows of grp 1, in commit order`)
      assert.equal(outOfOrder, 0)
      assert.ok(positions.every((p) => POSITION.test(p)), 'positions have the documented form')
      assert.equal(f.channel.state, 'joined')
      assert.ok(!f.system.items.some((m) => m.refetch), 'no refetch was needed')
      assert.ok(beforeOutage[i] < missedCommitted, 'the outage made it miss changes')
    }
  })

  test('a position older than the resume window gets the refetch signal and no replay, and the channel stays live', async () => {
    const proxy = await startProxy(short)
    proxies.push(proxy)
    const f = follow(proxy, '2.0.0')
    await f.ready
    await f.system.next((m) => m.message === 'Subscribed to PostgreSQL')
    await short.sql('INSERT INTO items (grp) VALUES (1)')
    await until(() => f.events.length === 1, EVENT_TIMEOUT_MS, 'the first change')
    proxy.offline()
    await short.sql('INSERT INTO items (grp) SELECT 1 FROM generate_series(1, 3)')
    // Long enough for those rows to leave the short window.
    await sleep(SHORT_WINDOW_SECONDS * 1000 + 1500)
    proxy.online()
    const refetch = await f.system.next((m) => m.refetch === true, 3 * EVENT_TIMEOUT_MS, 'the refetch signal')
    assert.equal(refetch.status, 'error')
    assert.equal(refetch.extension, 'postgres_changes')
    assert.equal(refetch.reason, 'outside_window')
    assert.match(refetch.message, /Refetch the data/)
    await short.sql('INSERT INTO items (grp) VALUES (1)')
    const live = Math.max(...(await committed(short)))
    await until(() => f.events.some((e) => e.id === live), EVENT_TIMEOUT_MS, 'the live change after the signal')
    assert.deepEqual(
      f.events.map((e) => e.id),
      [1, live],
      'nothing of the missed rows: no partial replay'
    )
    assert.equal(f.channel.state, 'joined')
    assert.ok(!f.system.items.some((m) => m.resumed), 'not reported as resumed')
  })

  for (const vsn of VSNS) {
    test(`positions from another epoch or not positions at all get the refetch signal (vsn ${vsn})`, async () => {
      const first = follow(server, vsn)
      await first.ready
      await first.system.next((m) => m.message === 'Subscribed to PostgreSQL')
      await server.sql('INSERT INTO items (grp) VALUES (2)')
      await until(() => first.events.length >= 1, EVENT_TIMEOUT_MS, 'a change')
      const real = first.events[0].position
      // The same place in another history of the stream: the epoch differs.
      const epoch = real.slice(0, 16)
      const otherEpoch = `${epoch === '0'.repeat(16) ? '1'.repeat(16) : '0'.repeat(16)}${real.slice(16)}`
      for (const [since, reason] of [
        [otherEpoch, 'other_epoch'],
        ['yesterday', 'invalid_position'],
      ]) {
        const f = follow(server, vsn, { since })
        await f.ready
        const refetch = await f.system.next((m) => m.refetch === true, EVENT_TIMEOUT_MS, `refetch for ${reason}`)
        assert.equal(refetch.reason, reason)
        assert.equal(refetch.status, 'error')
        await server.sql('INSERT INTO items (grp) VALUES (2)')
        const live = Math.max(...(await committed(server)))
        await until(() => f.events.some((e) => e.id === live), EVENT_TIMEOUT_MS, `the live change after ${reason}`)
        assert.deepEqual(f.events.map((e) => e.id), [live], 'live from the signal on, nothing replayed')
        assert.equal(f.channel.state, 'joined')
      }
      if (vsn === VSNS[0]) {
        // The invalid position's message says what is wrong with it.
        const f = follow(server, vsn, { since: 'x'.repeat(41) })
        await f.ready
        const refetch = await f.system.next((m) => m.refetch === true)
        assert.match(refetch.message, /42 characters.*got 41/)
      }
    })
  }
})
