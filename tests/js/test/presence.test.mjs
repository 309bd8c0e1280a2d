// Presence with the published realtime-js client: track/untrack, join/leave/sync events,
// disconnects, server-assigned keys and `presenceState()`, under both serializers.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import {
  Inbox,
  VSNS,
  connect,
  subscribed,
  uniqueTopic,
  useServer,
} from '../harness.mjs'

const clients = []
const server = useServer({ clients })

/** A subscribed presence channel; every presence event (sync, join, leave) lands in `events`. */
async function member(vsn, topic, key, label = key ?? 'anonymous') {
  const client = connect(server, { vsn })
  clients.push(client)
  const events = new Inbox(`presence ${label}`)
  const presence = key === undefined ? {} : { key }
  const channel = client
    .channel(topic, { config: { presence } })
    .on('presence', { event: 'sync' }, () => events.push({ event: 'sync' }))
    .on('presence', { event: 'join' }, events.push)
    .on('presence', { event: 'leave' }, events.push)
  await subscribed(channel)
  return { client, channel, events }
}

const joinOf = (key) => (e) => e.event === 'join' && e.key === key
const leaveOf = (key) => (e) => e.event === 'leave' && e.key === key

for (const vsn of VSNS) {
  describe(`presence (vsn ${vsn})`, () => {
    test('track() is seen by another client as join and sync with the tracked payload', async () => {
      const topic = uniqueTopic()
      const bob = await member(vsn, topic, 'bob')
      const alice = await member(vsn, topic, 'alice')
      assert.equal(await alice.channel.track({ name: 'Alice', online_at: 123 }), 'ok')

      const join = await bob.events.next(joinOf('alice'), undefined, 'join of alice')
      assert.equal(join.newPresences.length, 1)
      assert.equal(join.newPresences[0].name, 'Alice')
      assert.equal(join.newPresences[0].online_at, 123)
      assert.equal(typeof join.newPresences[0].presence_ref, 'string')
      assert.ok(join.newPresences[0].presence_ref.length > 0)
      // A sync follows the diff that carried the join.
      const at = bob.events.items.indexOf(join)
      await bob.events.next((e) => e.event === 'sync' && bob.events.items.indexOf(e) > at)

      const state = bob.channel.presenceState()
      assert.deepEqual(Object.keys(state), ['alice'])
      assert.equal(state.alice.length, 1)
      const { presence_ref, ...meta } = state.alice[0]
      assert.deepEqual(meta, { name: 'Alice', online_at: 123 })
      assert.equal(presence_ref, join.newPresences[0].presence_ref)
    })

    test('the tracker sees its own join, and a later member gets the state on join', async () => {
      const topic = uniqueTopic()
      const alice = await member(vsn, topic, 'alice')
      await alice.channel.track({ name: 'Alice' })
      await alice.events.next(joinOf('alice'), undefined, 'own join')

      const carol = await member(vsn, topic, 'carol')
      // presence_state on join: the first sync already contains alice.
      await carol.events.next(joinOf('alice'), undefined, 'alice from presence_state')
      await carol.events.next((e) => e.event === 'sync')
      assert.deepEqual(
        carol.channel.presenceState().alice.map(({ presence_ref, ...m }) => m),
        [{ name: 'Alice' }]
      )
    })

    test('presenceState() holds every member with its payload', async () => {
      const topic = uniqueTopic()
      const alice = await member(vsn, topic, 'alice')
      const bob = await member(vsn, topic, 'bob')
      await alice.channel.track({ name: 'Alice', color: 'red' })
      await bob.channel.track({ name: 'Bob', color: 'blue' })
      for (const m of [alice, bob]) {
        await m.events.next(joinOf('alice'))
        await m.events.next(joinOf('bob'))
        const state = m.channel.presenceState()
        assert.deepEqual(Object.keys(state).sort(), ['alice', 'bob'])
        const strip = (list) => list.map(({ presence_ref, ...rest }) => rest)
        assert.deepEqual(strip(state.alice), [{ name: 'Alice', color: 'red' }])
        assert.deepEqual(strip(state.bob), [{ name: 'Bob', color: 'blue' }])
      }
    })

    test('re-tracking replaces the payload', async () => {
      const topic = uniqueTopic()
      const bob = await member(vsn, topic, 'bob')
      const alice = await member(vsn, topic, 'alice')
      await alice.channel.track({ status: 'typing' })
      await bob.events.next((e) => joinOf('alice')(e) && e.newPresences[0].status === 'typing')
      await alice.channel.track({ status: 'idle' })
      await bob.events.next((e) => joinOf('alice')(e) && e.newPresences[0].status === 'idle')
      await bob.events.next(
        () => bob.channel.presenceState().alice?.length === 1,
        undefined,
        'state settled to one meta'
      )
      const state = bob.channel.presenceState()
      assert.deepEqual(
        state.alice.map(({ presence_ref, ...m }) => m),
        [{ status: 'idle' }]
      )
    })

    test('untrack() is seen as leave and removes the member from presenceState()', async () => {
      const topic = uniqueTopic()
      const bob = await member(vsn, topic, 'bob')
      const alice = await member(vsn, topic, 'alice')
      await alice.channel.track({ name: 'Alice' })
      await bob.events.next(joinOf('alice'))
      assert.equal(await alice.channel.untrack(), 'ok')
      const leave = await bob.events.next(leaveOf('alice'), undefined, 'leave of alice')
      assert.deepEqual(
        leave.leftPresences.map(({ presence_ref, ...m }) => m),
        [{ name: 'Alice' }]
      )
      assert.equal(bob.channel.presenceState().alice, undefined)
      assert.equal(alice.channel.state, 'joined', 'untrack must not close the channel')
    })

    test('a disconnecting member is seen as leave', async () => {
      const topic = uniqueTopic()
      const bob = await member(vsn, topic, 'bob')
      const alice = await member(vsn, topic, 'alice')
      await alice.channel.track({ name: 'Alice' })
      await bob.events.next(joinOf('alice'))
      await alice.client.disconnect()
      const leave = await bob.events.next(leaveOf('alice'), undefined, 'leave after disconnect')
      assert.equal(leave.leftPresences[0].name, 'Alice')
      assert.equal(bob.channel.presenceState().alice, undefined)
    })

    test('leaving the channel (removeChannel) is seen as leave', async () => {
      const topic = uniqueTopic()
      const bob = await member(vsn, topic, 'bob')
      const alice = await member(vsn, topic, 'alice')
      await alice.channel.track({ name: 'Alice' })
      await bob.events.next(joinOf('alice'))
      assert.equal(await alice.client.removeChannel(alice.channel), 'ok')
      await bob.events.next(leaveOf('alice'), undefined, 'leave after removeChannel')
    })

    test('without a key, the server assigns a distinct non-empty key per member', async () => {
      const topic = uniqueTopic()
      const observer = await member(vsn, topic, 'observer')
      const first = await member(vsn, topic, undefined, 'first')
      const second = await member(vsn, topic, undefined, 'second')
      await first.channel.track({ who: 'first' })
      await second.channel.track({ who: 'second' })
      const byWho = (who) => (e) => e.event === 'join' && e.newPresences[0]?.who === who
      const j1 = await observer.events.next(byWho('first'))
      const j2 = await observer.events.next(byWho('second'))
      for (const key of [j1.key, j2.key]) {
        assert.equal(typeof key, 'string')
        assert.ok(key.length > 0, 'empty presence key')
      }
      assert.notEqual(j1.key, j2.key)
      const state = observer.channel.presenceState()
      assert.equal(state[j1.key][0].who, 'first')
      assert.equal(state[j2.key][0].who, 'second')
    })

    test('two sockets tracking the same key show up as two presences under it', async () => {
      const topic = uniqueTopic()
      const observer = await member(vsn, topic, 'observer')
      const tab1 = await member(vsn, topic, 'user-9', 'tab1')
      const tab2 = await member(vsn, topic, 'user-9', 'tab2')
      await tab1.channel.track({ tab: 1 })
      await tab2.channel.track({ tab: 2 })
      await observer.events.next(
        () => observer.channel.presenceState()['user-9']?.length === 2,
        undefined,
        'two metas under user-9'
      )
      const tabs = observer.channel
        .presenceState()
        ['user-9'].map((m) => m.tab)
        .sort()
      assert.deepEqual(tabs, [1, 2])
      await tab1.client.disconnect()
      const leave = await observer.events.next(leaveOf('user-9'))
      assert.deepEqual(
        leave.leftPresences.map((m) => m.tab),
        [1]
      )
      assert.deepEqual(
        observer.channel.presenceState()['user-9'].map((m) => m.tab),
        [2]
      )
    })
  })
}
