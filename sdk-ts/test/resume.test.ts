// Resuming by position, end to end: the SDK reconnects by itself and resumes every Postgres
// Changes channel from the last change it handed to the app, so the app's callbacks see every
// row exactly once, in commit order, across a crash of the server (kill -9 and restart) and
// across a connection that dies silently (caught by the missed heartbeat).

import { afterAll, beforeAll, describe, expect, test } from 'vitest'

import type { Refetch } from '../src/index.js'
import {
  type Server,
  VSNS,
  client,
  createTables,
  disconnectClients,
  sleep,
  startServer,
  startSilencingProxy,
  until,
} from './support.js'

let server: Server
beforeAll(async () => {
  server = await startServer({ database: true })
  await createTables(server)
})
afterAll(async () => {
  disconnectClients()
  await server?.stop()
})

/** Ids of `items` in group `grp`, in commit order (one writer, serial ids). */
async function committed(grp: number): Promise<number[]> {
  const out = await server.sql(`SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM items WHERE grp = ${grp}`)
  return out === '' ? [] : out.split(',').map(Number)
}

/** Commits `rows` single-row transactions of group `grp`, one every `gapMs`, in the background. */
function writer(grp: number, rows: number, gapMs: number): Promise<string> {
  return server.sql(`DO $$ BEGIN
    FOR i IN 1..${rows} LOOP
      INSERT INTO items (grp) VALUES (${grp});
      COMMIT;
      PERFORM pg_sleep(${gapMs / 1000});
    END LOOP;
  END $$`)
}

/**
 * An app that follows group `grp` of `items` and records what its callback sees; with
 * `everything`, a second channel of the same client follows every insert of `items`.
 */
function follower(via: Parameters<typeof client>[0], vsn: (typeof VSNS)[number], grp: number, options = {}) {
  const c = client(via, vsn, options)
  const ids: number[] = []
  const allIds: number[] = []
  const refetches: Refetch[] = []
  const states: string[] = []
  c.onConnection((s) => states.push(s))
  const channel = c
    .channel(`items-${grp}-${vsn}`)
    .onChanges({ table: 'items', event: 'INSERT', filter: `grp=eq.${grp}` }, (change) => {
      ids.push(change.new.id)
    })
    .onRefetch((r) => refetches.push(r))
  const everything = c
    .channel(`items-all-${grp}-${vsn}`)
    .onChanges({ table: 'items', event: 'INSERT' }, (change) => {
      allIds.push(change.new.id)
    })
    .onRefetch((r) => refetches.push(r))
  return { client: c, channel, everything, ids, allIds, refetches, states }
}

function report(label: string, ids: number[], expected: number[]) {
  const duplicates = ids.length - new Set(ids).size
  const missing = expected.filter((id) => !ids.includes(id)).length
  console.log(`${label}: ${expected.length} committed, ${ids.length} received, missing ${missing}, duplicates ${duplicates}`)
}

describe('resume', () => {
  test('the server is killed (-9) and restarted while inserts continue: every row reaches the callbacks exactly once, in order', async () => {
    const followers = VSNS.map((vsn) => follower(server, vsn, 1))
    // Two channels per client, each resumed from its own last position.
    await Promise.all(followers.flatMap((f) => [f.channel.subscribe(), f.everything.subscribe()]))
    const writing = writer(1, 250, 40)
    await until(() => followers.every((f) => f.ids.length >= 10), 10_000, 'changes before the crash')
    await server.crash()
    const atCrash = followers.map((f) => f.ids.length)
    // Rows keep committing while the server is down.
    await sleep(1_500)
    await server.restart()
    await writing
    const expected = await committed(1)
    for (const [i, f] of followers.entries()) {
      await until(() => f.ids.length >= expected.length, 20_000, () => `every row (vsn ${VSNS[i]}), got ${f.ids.length} of ${expected.length}`)
      // Anything extra would have arrived by now along with the rest.
      await sleep(300)
      report(`vsn ${VSNS[i]}`, f.ids, expected)
      expect(f.ids).toEqual(expected)
      // Only group 1 is written meanwhile: the unfiltered channel saw the same rows.
      await until(() => f.allIds.length >= expected.length, 5_000, 'every row on the second channel')
      expect(f.allIds).toEqual(expected)
      expect(f.refetches).toEqual([])
      expect(atCrash[i]).toBeLessThan(expected.length - 20)
      // It did lose its connection and come back by itself.
      expect(f.states.filter((s) => s === 'open').length).toBeGreaterThanOrEqual(2)
    }
  })

  test('a connection that dies silently is caught by the missed heartbeat; the channel resumes with nothing lost or repeated', async () => {
    const proxy = await startSilencingProxy(server)
    try {
      const f = follower(proxy, '2.0.0', 2, { heartbeatIntervalMs: 500 })
      // Two channels subscribed at once share one connection.
      await Promise.all([f.channel.subscribe(), f.everything.subscribe()])
      const writing = writer(2, 100, 30)
      await until(() => f.ids.length >= 5, 10_000, 'changes before the silence')
      const opensBefore = f.states.filter((s) => s === 'open').length
      // No close, no error: the connection just stops carrying anything.
      proxy.silence()
      await writing
      const expected = await committed(2)
      await until(() => f.ids.length >= expected.length, 20_000, () => `every row, got ${f.ids.length} of ${expected.length}`)
      await sleep(300)
      report('silenced connection', f.ids, expected)
      expect(f.ids).toEqual(expected)
      expect(f.refetches).toEqual([])
      expect(f.states.filter((s) => s === 'open').length).toBe(opensBefore + 1)
      expect(proxy.accepted).toBe(2)
    } finally {
      await proxy.close()
    }
  })

  test('timers suspended for longer than the heartbeat interval (a backgrounded tab): a probe finds the dead connection at once', async () => {
    const proxy = await startSilencingProxy(server)
    try {
      const intervalMs = 8_000
      const f = follower(proxy, '2.0.0', 4, { heartbeatIntervalMs: intervalMs, probeTimeoutMs: 300 })
      await f.channel.subscribe()
      const first = Number(await server.sql('INSERT INTO items (grp) VALUES (4) RETURNING id'))
      await until(() => f.ids.includes(first), 5_000, 'the first change')
      const closesBefore = f.states.filter((s) => s === 'closed').length
      proxy.silence()
      // Freeze this thread (timers included) well past one and a half intervals, without
      // spinning the CPU: what a browser does to a background tab.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, intervalMs * 1.5 + 1_500)
      const thawed = Date.now()
      const missed = Number(await server.sql('INSERT INTO items (grp) VALUES (4) RETURNING id'))
      // The late timer probes and gives up after the probe timeout, long before the next
      // regular heartbeat (a whole interval away) would notice.
      await until(() => f.states.filter((s) => s === 'closed').length > closesBefore, intervalMs / 2, 'the reconnect after the probe')
      expect(Date.now() - thawed).toBeLessThan(intervalMs / 2)
      await until(() => f.ids.includes(missed), 10_000, 'the change committed while frozen')
      expect(f.ids).toEqual([first, missed])
      expect(f.refetches).toEqual([])
    } finally {
      await proxy.close()
    }
  })

  test('a connection lost before the first change resumes from the position "Subscribed to PostgreSQL" named: nothing lost, no refetch', async () => {
    // The stream has carried a change, so the server has a position to name.
    const warm = follower(server, '2.0.0', 30)
    await warm.channel.subscribe()
    const seen = Number(await server.sql('INSERT INTO items (grp) VALUES (30) RETURNING id'))
    await until(() => warm.ids.includes(seen), 5_000, 'a change before the test')
    const proxy = await startSilencingProxy(server)
    try {
      const f = follower(proxy, '2.0.0', 3, { heartbeatIntervalMs: 300 })
      await f.channel.subscribe()
      proxy.silence()
      const missed = Number(await server.sql('INSERT INTO items (grp) VALUES (3) RETURNING id'))
      await until(() => f.ids.includes(missed), 10_000, 'the change committed while the connection was dead')
      const id = Number(await server.sql('INSERT INTO items (grp) VALUES (3) RETURNING id'))
      await until(() => f.ids.includes(id), 5_000, 'the live change after the resume')
      expect(f.ids).toEqual([missed, id])
      expect(f.refetches).toEqual([])
    } finally {
      await proxy.close()
    }
  })
})
