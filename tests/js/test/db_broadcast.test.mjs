// Broadcast from the database with the published realtime-js client, both serializers: Supabase's
// documented `broadcast_changes` trigger and `realtime.send` calls, verbatim, reach channels as
// Supabase sends them (private rows only private channels, public rows only public ones, binary
// rows only vsn 2.0.0), and a channel that rejoins with `config.broadcast.since` set to the last
// `meta.position` it processed gets exactly what it missed, then the live stream. Supabase's
// replay sends each message once even while messages are being sent, and broadcast `persist` is
// refused with a clear error rather than ignored.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import { Inbox, VSNS, absenceWindow, connect, subscribeStatus, subscribed, useServer } from '../harness.mjs'

const POSITION = /^[0-9a-f]{16}-[0-9A-F]{16}-[0-9A-F]{8}$/
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
/** Replays ask for messages from a minute before the test on: older than anything it sends. */
const REPLAY_LOOKBACK_MS = 60000

/** Private `room:*` channels for authenticated users (the policy-file authorization). */
const ROOM_POLICY = `
[[channel]]
topic = "room:*"
actions = ["broadcast"]
when = "auth.role() = 'authenticated'"
`

const clients = []
const server = useServer({
  database: true,
  policy: ROOM_POLICY,
  clients,
  setup: async () => {
    // Supabase's documented trigger, verbatim (guide "Broadcast from the database").
    await server.sql(`
      create table public.messages (id serial primary key, room_id int not null, body text);
      create or replace function public.messages_broadcast() returns trigger
      security definer language plpgsql as $$
      begin
        perform realtime.broadcast_changes(
          'room:' || coalesce(NEW.room_id, OLD.room_id)::text,
          TG_OP,
          TG_OP,
          TG_TABLE_NAME, TG_TABLE_SCHEMA, NEW, OLD);
        return null;
      end $$;
      create trigger messages_broadcast after insert or update or delete on public.messages
        for each row execute function public.messages_broadcast();`)
  },
})

function client(vsn) {
  const c = connect(server, { vsn, token: server.token() })
  clients.push(c)
  return c
}

/** A channel on `topic` with an inbox of its broadcasts (every event) and its system messages. */
async function listen(vsn, topic, config = {}) {
  const c = client(vsn)
  const inbox = new Inbox(`${topic} ${vsn}`)
  const system = new Inbox(`system ${topic} ${vsn}`)
  const channel = c
    .channel(topic, { config })
    .on('broadcast', { event: '*' }, inbox.push)
    .on('system', {}, system.push)
  await subscribed(channel)
  return { c, channel, inbox, system }
}

describe('broadcast from the database', () => {
  for (const [i, vsn] of VSNS.entries()) {
    const room = 100 + i
    const topic = `room:${room}`

    test(`vsn ${vsn}: the documented broadcast_changes trigger reaches private subscribers of its room`, async () => {
      const priv = await listen(vsn, topic, { private: true })
      const pub = await listen(vsn, topic)
      await server.sql(`insert into public.messages (room_id, body) values (${room}, 'hello')`)
      const inserted = await priv.inbox.next((m) => m.event === 'INSERT')
      assert.equal(inserted.type, 'broadcast')
      assert.match(inserted.meta.id, UUID)
      assert.match(inserted.meta.position, POSITION)
      assert.equal(inserted.payload.id, inserted.meta.id, 'realtime.send puts the row id in the payload')
      assert.equal(inserted.payload.operation, 'INSERT')
      assert.equal(inserted.payload.schema, 'public')
      assert.equal(inserted.payload.table, 'messages')
      assert.equal(inserted.payload.record.body, 'hello')
      assert.equal(inserted.payload.old_record, null)

      await server.sql(`update public.messages set body = 'edited' where room_id = ${room}`)
      await server.sql(`delete from public.messages where room_id = ${room}`)
      const updated = await priv.inbox.next((m) => m.event === 'UPDATE')
      assert.equal(updated.payload.record.body, 'edited')
      assert.equal(updated.payload.old_record.body, 'hello')
      const deleted = await priv.inbox.next((m) => m.event === 'DELETE')
      assert.equal(deleted.payload.record, null)
      assert.equal(deleted.payload.old_record.body, 'edited')

      // A public message on the same topic: only the public channel; the private rows never
      // reached it.
      await server.sql(`select realtime.send(jsonb_build_object('hello','world'), 'my_event', '${topic}', false)`)
      const pubMsg = await pub.inbox.next((m) => m.event === 'my_event')
      assert.equal(pubMsg.payload.hello, 'world')
      await absenceWindow()
      assert.deepEqual(pub.inbox.items.map((m) => m.event), ['my_event'])
      assert.deepEqual(priv.inbox.items.map((m) => m.event), ['INSERT', 'UPDATE', 'DELETE'])
    })

    test(`vsn ${vsn}: realtime.send_binary reaches ${vsn === '2.0.0' ? 'the channel as an ArrayBuffer' : 'no vsn 1.0.0 channel'}`, async () => {
      const t = `room:bin-${i}`
      const ch = await listen(vsn, t)
      await server.sql(`select realtime.send_binary('\\x0102ff'::bytea, 'bin_event', '${t}', false)`)
      await server.sql(`select realtime.send('{"after":true}'::jsonb, 'json_event', '${t}', false)`)
      await ch.inbox.next((m) => m.event === 'json_event')
      const bin = ch.inbox.items.find((m) => m.event === 'bin_event')
      if (vsn === '2.0.0') {
        assert.ok(bin.payload instanceof ArrayBuffer, `payload is ${typeof bin.payload}`)
        assert.deepEqual([...new Uint8Array(bin.payload)], [1, 2, 255])
        assert.match(bin.meta.id, UUID)
      } else {
        assert.equal(bin, undefined)
      }
    })

    test(`vsn ${vsn}: replay (Supabase's) sends the newest stored broadcasts since a time, oldest first, marked replayed`, async () => {
      const t = `room:replay-${i}`
      const since = Date.now() - REPLAY_LOOKBACK_MS
      const earlier = await listen(vsn, t, { private: true })
      for (let n = 1; n <= 3; n++) {
        await server.sql(`select realtime.send('{"n":${n}}'::jsonb, 'position', '${t}', true)`)
      }
      // Delivered live already: the replaying channel below gets them from the table only.
      await earlier.inbox.next((m) => m.payload.n === 3)
      const config = { private: true, broadcast: { replay: { since, limit: 2 } } }
      const ch = await listen(vsn, t, config)
      const second = await ch.inbox.next((m) => m.payload.n === 3)
      assert.equal(second.meta.replayed, true)
      assert.match(second.meta.id, UUID)
      assert.deepEqual(ch.inbox.items.map((m) => m.payload.n), [2, 3])

      const bad = client(vsn).channel(t, { config: { private: true, broadcast: { replay: { since: 'yesterday' } } } })
      const refused = await subscribeStatus(bad)
      assert.equal(refused.status, 'CHANNEL_ERROR')
      assert.match(refused.err.message, /UnableToReplayMessages: Replay params are not valid/)
    })

    test(`vsn ${vsn}: replay under concurrent sends: every message once, replayed ones first, no gap at the seam`, async () => {
      const t = `room:seam-${i}`
      const since = Date.now() - REPLAY_LOOKBACK_MS
      const session = server.sqlSession()
      const total = 300
      // Sends one by one (each its own transaction) while channels join with a replay: a message
      // committed around a join's replay query is either replayed or delivered live, never both,
      // never neither.
      let sent = 0
      const sending = (async () => {
        for (let n = 1; n <= total; n++) {
          await session.run(`select realtime.send('{"n":${n}}'::jsonb, 'seq', '${t}', true)`)
          sent = n
          await new Promise((r) => setTimeout(r, 2))
        }
      })()
      const joined = []
      while (sent < total - 40) {
        if (sent >= 10) joined.push(await listen(vsn, t, { private: true, broadcast: { replay: { since, limit: 25 } } }))
        await new Promise((r) => setTimeout(r, 40))
      }
      await sending
      await session.close()
      assert.ok(joined.length >= 5, `${joined.length} joins during the sends`)
      for (const [j, ch] of joined.entries()) {
        await ch.inbox.next((m) => m.payload.n === total)
        await absenceWindow()
        const got = ch.inbox.items.filter((m) => m.event === 'seq')
        const ns = got.map((m) => m.payload.n)
        assert.equal(new Set(ns).size, ns.length, `channel ${j}, a message twice: ${ns}`)
        const replayed = got.filter((m) => m.meta.replayed === true)
        assert.ok(replayed.length >= 1 && replayed.length <= 25, `channel ${j}: ${replayed.length} replayed`)
        assert.ok(got.slice(0, replayed.length).every((m) => m.meta.replayed === true), `channel ${j}: replayed ones first: ${ns}`)
        // No gap: from the oldest replayed message every later one arrived, in commit order
        // after the replay. (One older than the replayed ones, committed before the join but still
        // on its way, may arrive live too: it is not a copy.)
        const oldest = ns[0]
        const newer = ns.filter((n) => n >= oldest)
        assert.deepEqual(newer, Array.from({ length: total - oldest + 1 }, (_, k) => oldest + k), `channel ${j}: ${ns}`)
      }
    })

    test(`vsn ${vsn}: broadcast persist is refused with a clear error, never broadcast, and the channel goes on`, async () => {
      const t = `room:persist-${i}`
      const other = await listen(vsn, t, { private: true })
      const sender = await listen(vsn, t, { private: true, broadcast: { ack: true } })
      const kept = { type: 'broadcast', event: 'kept', payload: { n: 1 } }
      const sent = await sender.channel.send({ ...kept, persist: true })
      if (vsn === '2.0.0') {
        // The flag travels in the kind-3 metadata; the server's error reply is what send() returns.
        assert.match(sent, /^UnableToPersistMessage: this server does not store client broadcasts/)
      } else {
        assert.equal(sent, 'error', 'realtime-js refuses persist with protocol 1.0.0 itself')
      }
      assert.equal(await sender.channel.send({ ...kept, persist: { ttl: 60 } }), vsn === '2.0.0' ? sent : 'error')
      await assert.rejects(sender.channel.httpSend('kept', { n: 2 }, { persist: true }), /UnableToPersistMessage/)
      assert.equal(await sender.channel.send({ type: 'broadcast', event: 'plain', payload: { n: 3 } }), 'ok')
      await other.inbox.next((m) => m.event === 'plain')
      await absenceWindow()
      assert.deepEqual(other.inbox.items.map((m) => m.event), ['plain'], 'nothing asked to persist was broadcast')
    })

    test(`vsn ${vsn}: a channel that rejoins with config.broadcast.since gets what it missed, once each, then live`, async () => {
      const t = `room:resume-${i}`
      const broadcast = { self: false }
      const first = await listen(vsn, t, { private: true, broadcast })
      // A second subscriber stays on the topic: once it has a message, the service has streamed
      // that message into its window, so the rejoin below can only find it there.
      const witness = await listen(vsn, t, { private: true })
      await server.sql(`select realtime.send('{"n":0}'::jsonb, 'n', '${t}')`)
      const zero = await first.inbox.next((m) => m.payload.n === 0)
      broadcast.since = zero.meta.position
      await first.c.removeAllChannels()
      await first.c.disconnect()

      for (let n = 1; n <= 5; n++) {
        await server.sql(`select realtime.send('{"n":${n}}'::jsonb, 'n', '${t}')`)
      }
      await witness.inbox.next((m) => m.payload.n === 5)
      const back = await listen(vsn, t, { private: true, broadcast })
      const resumed = await back.system.next((m) => m.resumed === true)
      assert.equal(resumed.replayed, 5, JSON.stringify(resumed))
      assert.equal(resumed.extension, 'broadcast')
      await server.sql(`select realtime.send('{"n":6}'::jsonb, 'n', '${t}')`)
      await back.inbox.next((m) => m.payload.n === 6)
      await absenceWindow()
      assert.deepEqual(back.inbox.items.map((m) => m.payload.n), [1, 2, 3, 4, 5, 6])
    })
  }
})
