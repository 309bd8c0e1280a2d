// The SDK against the real server (with a throwaway Postgres), under both serializers: typed
// Postgres Changes with positions, broadcast (self, ack, binary payloads), presence as a synced
// map, and access tokens refreshed before they expire.

import { afterAll, beforeAll, describe, expect, test } from 'vitest'

import type { Change, PresenceChange } from '../src/index.js'
import {
  type Server,
  VSNS,
  client,
  createTables,
  disconnectClients,
  makeToken,
  sleep,
  startServer,
  until,
} from './support.js'

const PAYLOAD_LIMIT_KB = 10
let server: Server
let secret: string
beforeAll(async () => {
  // A small payload limit, to see a refused broadcast come back through the ack.
  server = await startServer({ database: true, env: { MAX_PAYLOAD_SIZE_KB: String(PAYLOAD_LIMIT_KB) } })
  secret = (server as unknown as { secret: string }).secret
  await createTables(server)
})
afterAll(async () => {
  disconnectClients()
  await server?.stop()
})

let topics = 0
const topic = (prefix: string) => `${prefix}-${process.pid}-${++topics}`

for (const vsn of VSNS) {
  describe(`vsn ${vsn}`, () => {
    test('Postgres Changes reach typed callbacks, each kind, with positions in commit order', async () => {
      const c = client(server, vsn)
      const all: Change<{ id: number; title: string; done: boolean }>[] = []
      const inserts: string[] = []
      const channel = c
        .channel(topic('todos'))
        .onChanges({ table: 'todos' }, (change) => {
          all.push(change)
        })
        .onChanges({ table: 'todos', event: 'INSERT' }, (change) => {
          // Typed: `change.new` is the table's Row.
          inserts.push(change.new.title)
        })
      await channel.subscribe()
      // `subscribe` resolves once changes are live: no wait needed before writing.
      const id = Number(await server.sql(`INSERT INTO todos (title) VALUES ('write the sdk ${vsn}') RETURNING id`))
      await server.sql(`UPDATE todos SET done = true WHERE id = ${id}`)
      await server.sql(`DELETE FROM todos WHERE id = ${id}`)
      await until(() => all.length >= 3, 5_000, () => `three changes, got ${JSON.stringify(all)}`)
      expect(all.map((c) => c.eventType)).toEqual(['INSERT', 'UPDATE', 'DELETE'])
      const [insert, update, remove] = all
      expect(insert?.new).toEqual({ id, title: `write the sdk ${vsn}`, done: false })
      expect(update?.new).toMatchObject({ id, done: true })
      expect(update?.old).toMatchObject({ id })
      expect(remove?.old).toMatchObject({ id })
      expect(insert?.table).toBe('todos')
      expect(insert?.schema).toBe('public')
      const positions = all.map((c) => c.position)
      expect(positions.every((p) => /^[0-9a-f]{16}-[0-9A-F]{16}-[0-9A-F]{8}$/.test(p))).toBe(true)
      expect([...positions].sort()).toEqual(positions)
      expect(inserts).toEqual([`write the sdk ${vsn}`])
    })

    test('broadcast: received by others, by the sender only with self, acknowledged with ack', async () => {
      const name = topic('room')
      const sender = client(server, vsn)
      const receiver = client(server, vsn)
      const got: unknown[] = []
      const echoed: unknown[] = []
      const mine = sender.channel(name, { broadcast: { self: true, ack: true } }).onBroadcast('cursor', (m) => echoed.push(m.payload))
      const theirs = receiver.channel(name).onBroadcast('*', (m) => got.push({ event: m.event, payload: m.payload }))
      await Promise.all([mine.subscribe(), theirs.subscribe()])
      await mine.send('cursor', { x: 1, y: 2 })
      await until(() => got.length === 1 && echoed.length === 1, 5_000, 'the broadcast at both ends')
      expect(got).toEqual([{ event: 'cursor', payload: { x: 1, y: 2 } }])
      expect(echoed).toEqual([{ x: 1, y: 2 }])
      // The receiver's own broadcast does not come back to it (self is off).
      await theirs.send('cursor', { x: 3 })
      await until(() => echoed.length === 2, 5_000, 'the receiver broadcast')
      await mine.send('cursor', { x: 4 })
      await until(() => got.length === 2, 5_000, 'the second broadcast')
      expect(got.map((g: any) => g.payload)).toEqual([{ x: 1, y: 2 }, { x: 4 }])
      // An oversized message is refused through the ack, with the server's reason.
      await expect(mine.send('cursor', { blob: 'x'.repeat(PAYLOAD_LIMIT_KB * 1000) })).rejects.toThrow('payload_size_exceeded')
    })

    if (vsn === '2.0.0') {
      test('binary broadcast payloads travel as bytes', async () => {
        const name = topic('bytes')
        const sender = client(server, vsn)
        const receiver = client(server, vsn)
        const got: unknown[] = []
        const a = sender.channel(name)
        const b = receiver.channel(name).onBroadcast('frame', (m) => got.push(m.payload))
        await Promise.all([a.subscribe(), b.subscribe()])
        await a.send('frame', new Uint8Array([0, 1, 2, 255]))
        await until(() => got.length === 1, 5_000, 'the binary broadcast')
        expect(got[0]).toBeInstanceOf(Uint8Array)
        expect([...(got[0] as Uint8Array)]).toEqual([0, 1, 2, 255])
      })
    } else {
      test('binary payloads are refused on vsn 1.0.0 with a clear error', async () => {
        const a = client(server, vsn).channel(topic('bytes'))
        await a.subscribe()
        await expect(a.send('frame', new Uint8Array([1]))).rejects.toThrow(/binary payloads need vsn 2.0.0/)
      })
    }

    test('presence: the state is a synced map, with joins and leaves as others track and leave', async () => {
      const name = topic('lobby')
      const watcher = client(server, vsn)
      const changes: PresenceChange<{ name: string }>[] = []
      const watching = watcher.channel(name, { presence: { key: 'watcher' } }).onPresence<{ name: string }>((c) => changes.push(c))
      await watching.subscribe()
      const visitor = client(server, vsn)
      const visiting = visitor.channel(name, { presence: { key: 'ann' } })
      await visiting.subscribe()
      await visiting.track({ name: 'Ann' })
      await until(() => 'ann' in watching.presenceState(), 5_000, 'Ann in the state')
      expect(watching.presenceState<{ name: string }>().ann?.map((m) => m.name)).toEqual(['Ann'])
      expect(changes.some((c) => c.joins.ann?.[0]?.name === 'Ann')).toBe(true)
      await visiting.track({ name: 'Ann (away)' })
      await until(
        () => watching.presenceState<{ name: string }>().ann?.map((m) => m.name).join() === 'Ann (away)',
        5_000,
        () => `the updated entry, state ${JSON.stringify(watching.presenceState())}`
      )
      await visiting.untrack()
      await until(() => !('ann' in watching.presenceState()), 5_000, 'Ann gone after untrack')
      expect(changes.at(-1)?.leaves.ann?.[0]?.name).toBe('Ann (away)')
      // Tracked again, then the visitor's connection closes: the entry leaves with it.
      await visiting.track({ name: 'Ann again' })
      await until(() => 'ann' in watching.presenceState(), 5_000, 'Ann back')
      visitor.disconnect()
      await until(() => !('ann' in watching.presenceState()), 5_000, 'Ann gone with her connection')
    })
  })
}

test('access tokens are refreshed before they expire: the channel is never closed for an expired token', async () => {
  let issued = 0
  const statuses: string[] = []
  const c = client(server, '2.0.0', {
    apikey: undefined,
    // Tokens that live 6 seconds: the client asks for a new one about a second before expiry.
    accessToken: () => {
      issued += 1
      return makeToken({ role: 'service_role', exp: Math.floor(Date.now() / 1000) + 6 }, { secret })
    },
  })
  const seen: number[] = []
  const channel = c
    .channel(topic('refresh'))
    .onChanges({ table: 'items', event: 'INSERT' }, (change) => {
      seen.push(change.new.id)
    })
    .onStatus((status, detail) => statuses.push(detail ? `${status}: ${detail}` : status))
  await channel.subscribe()
  const issuedAtJoin = issued
  // Outlive the first token by well over its lifetime.
  await sleep(14_000)
  const id = Number(await server.sql('INSERT INTO items (grp) VALUES (7) RETURNING id'))
  await until(() => seen.includes(id), 5_000, 'the change after the first token expired')
  expect(issued - issuedAtJoin).toBeGreaterThanOrEqual(2)
  expect(statuses).toEqual(['subscribed'])
  expect(channel.joined).toBe(true)
})
