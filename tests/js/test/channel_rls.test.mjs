// Private channels authorized by Postgres RLS (`CHANNEL_AUTHORIZATION=database`) with the
// published realtime-js client, both serializers: the room-membership policies of Supabase's
// Authorization guide decide who joins and who sends (channel and httpSend), presence writes
// (track) follow the insert policy, and `replication_ready` is answered.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import { Inbox, VSNS, connect, subscribeStatus, subscribed, useServer } from '../harness.mjs'

const MEMBER = '11111111-1111-1111-1111-111111111111'
const OTHER_MEMBER = '22222222-2222-2222-2222-222222222222'
const STRANGER = '33333333-3333-3333-3333-333333333333'
const READER = '44444444-4444-4444-4444-444444444444'

const clients = []
const server = useServer({
  database: true,
  env: { CHANNEL_AUTHORIZATION: 'database' },
  clients,
  setup: async () => {
    await server.sql(`
      create table public.rooms_users (user_id uuid not null, topic text not null);
      grant select on public.rooms_users to authenticated;
      insert into public.rooms_users values
        ('${MEMBER}', 'room-1'), ('${OTHER_MEMBER}', 'room-1'), ('${MEMBER}', 'room-2'), ('${OTHER_MEMBER}', 'room-2');
      -- Users who may follow a room without writing to it (broadcast or presence).
      create table public.rooms_readers (user_id uuid not null, topic text not null);
      grant select on public.rooms_readers to authenticated;
      insert into public.rooms_readers values ('${READER}', 'room-1'), ('${READER}', 'room-2');
      create policy "readers can read" on realtime.messages for select to authenticated
      using (exists (select 1 from rooms_readers r where r.user_id = (select auth.uid()) and r.topic = (select realtime.topic())));`)
    // Supabase's guide, verbatim.
    await server.sql(`
      create policy "authenticated can read broadcast and presence state"
      on "realtime"."messages"
      for select
      to authenticated
      using (
        exists (
          select
            user_id
          from
            rooms_users
          where
            user_id = (select auth.uid())
            and topic = (select realtime.topic())
            and realtime.messages.extension in ('broadcast', 'presence')
        )
      );`)
    await server.sql(`
      create policy "authenticated can send broadcast and track presence"
      on "realtime"."messages"
      for insert
      to authenticated
      with check (
        exists (
          select
            user_id
          from
            rooms_users
          where
            user_id = (select auth.uid())
            and topic = (select realtime.topic())
            and realtime.messages.extension in ('broadcast', 'presence')
        )
      );`)
  },
})

function client(vsn, sub) {
  const c = connect(server, { vsn, token: server.token({ sub }) })
  clients.push(c)
  return c
}

describe('private channels authorized by RLS on realtime.messages', () => {
  for (const [i, vsn] of VSNS.entries()) {
    const topic = `room-${i + 1}`

    test(`vsn ${vsn}: members join and hear each other; a stranger is refused with Supabase's reason`, async () => {
      const inbox = new Inbox(`member ${vsn}`)
      const listener = client(vsn, OTHER_MEMBER)
        .channel(topic, { config: { private: true } })
        .on('broadcast', { event: 'msg' }, inbox.push)
      await subscribed(listener)
      const sender = client(vsn, MEMBER).channel(topic, { config: { private: true, broadcast: { ack: true } } })
      await subscribed(sender)
      assert.equal(await sender.send({ type: 'broadcast', event: 'msg', payload: { hi: 1 } }), 'ok')
      assert.deepEqual((await inbox.next()).payload, { hi: 1 })

      const refused = await subscribeStatus(client(vsn, STRANGER).channel(topic, { config: { private: true } }))
      assert.equal(refused.status, 'CHANNEL_ERROR')
      assert.match(
        refused.err.message,
        new RegExp(`Unauthorized: You do not have permissions to read from this Channel topic: ${topic}`)
      )
    })

    test(`vsn ${vsn}: httpSend to a private topic is accepted for a member and refused (403) for a stranger`, async () => {
      const inbox = new Inbox(`rest ${vsn}`)
      const listener = client(vsn, OTHER_MEMBER)
        .channel(topic, { config: { private: true } })
        .on('broadcast', { event: 'rest' }, inbox.push)
      await subscribed(listener)
      const member = client(vsn, MEMBER).channel(topic, { config: { private: true } })
      assert.deepEqual(await member.httpSend('rest', { n: 1 }), { success: true })
      assert.deepEqual((await inbox.next()).payload, { n: 1 })
      const stranger = client(vsn, STRANGER).channel(topic, { config: { private: true } })
      await assert.rejects(stranger.httpSend('rest', { n: 2 }), /Unauthorized/)
    })

    test(`vsn ${vsn}: presence: a member's track is seen by a reader; the reader's own track is refused`, async () => {
      const syncs = new Inbox(`presence ${vsn}`)
      const watcher = client(vsn, READER).channel(topic, { config: { private: true, presence: { key: 'reader' } } })
      watcher.on('presence', { event: 'sync' }, () => syncs.push(watcher.presenceState()))
      await subscribed(watcher)
      assert.equal(await watcher.track({ who: 'reader' }), 'error', 'no presence write for a reader')
      const member = client(vsn, MEMBER).channel(topic, { config: { private: true, presence: { key: 'member' } } })
      member.on('presence', { event: 'sync' }, () => {})
      await subscribed(member)
      assert.equal(await member.track({ who: 'member' }), 'ok')
      const state = await syncs.next((s) => s.member !== undefined)
      assert.equal(state.member[0].who, 'member')
      assert.equal(state.reader, undefined)
      await member.untrack()
    })

    test(`vsn ${vsn}: replication_ready is answered once the replication stream is up`, async () => {
      const system = new Inbox(`system ${vsn}`)
      const ch = client(vsn, MEMBER)
        .channel(topic, { config: { private: true, broadcast: { replication_ready: true } } })
        .on('system', {}, system.push)
      await subscribed(ch)
      const ready = await system.next((m) => m.extension === 'system')
      assert.equal(ready.message, 'Replication connection established')
      assert.equal(ready.status, 'ok')
    })
  }
})
