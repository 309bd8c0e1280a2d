// Two `realtime serve` nodes on one nats-server, with the published realtime-js client on each:
// broadcast and presence cross the nodes, under both serializers.

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import net from 'node:net'
import { after, describe, test } from 'node:test'

import { Inbox, VSNS, connect, freePort, subscribed, uniqueTopic, useServer } from '../harness.mjs'

// Debian's package puts nats-server in /usr/sbin, not on every user's PATH.
const NATS_BIN = ['/usr/sbin/nats-server', '/usr/bin/nats-server'].find(existsSync) ?? 'nats-server'
// A node listens to a topic's traffic from its first local subscriber on; give it a moment.
const CROSS_TIMEOUT_MS = 10000


async function startNats() {
  const port = await freePort()
  const child = spawn(NATS_BIN, ['-a', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' })
  const deadline = Date.now() + 10000
  for (;;) {
    const up = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.destroy()
        resolve(true)
      })
      socket.on('error', () => resolve(false))
    })
    if (up) return { port, child }
    if (Date.now() > deadline) throw new Error('nats-server did not start')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

let nats
/** The nats-server both nodes use, started by whichever node's hook asks first. */
const natsStarted = () => (nats ??= startNats())

/** The settings of node `node`. */
const nodeEnv = async (node) => ({
  NATS_URL: `nats://127.0.0.1:${(await natsStarted()).port}`,
  NODE_ID: node,
  CLUSTER_NAME: `js${process.pid}`,
  CLUSTER_HEARTBEAT_MS: '250',
  CLUSTER_NODE_DOWN_AFTER_MS: '4000',
})
// Let each node hear the other's heartbeats: the tests start once both nodes' hooks are done.
const heard = () => new Promise((resolve) => setTimeout(resolve, 1000))
const clients = []
const nodes = [
  useServer(async () => ({ env: await nodeEnv('a'), clients, setup: heard })),
  useServer(async () => ({ env: await nodeEnv('b'), setup: heard })),
]
// Registered after the nodes' hooks, so it runs after they have stopped: nats-server outlives them.
after(async () => {
  ;(await nats)?.child.kill()
})

function client(node, vsn) {
  const c = connect(node, { vsn })
  clients.push(c)
  return c
}

for (const vsn of VSNS) {
  describe(`cluster (vsn ${vsn})`, () => {
    test('a broadcast sent on one node reaches a subscriber on the other', async () => {
      const topic = uniqueTopic()
      const inbox = new Inbox('receiver on node b')
      await subscribed(client(nodes[1], vsn).channel(topic).on('broadcast', { event: '*' }, inbox.push))
      const sender = client(nodes[0], vsn).channel(topic, { config: { broadcast: { ack: true } } })
      await subscribed(sender)
      // Send until the first one crosses (the other node may still be subscribing to the topic).
      const deadline = Date.now() + CROSS_TIMEOUT_MS
      let n = 0
      while (inbox.items.length === 0) {
        assert.ok(Date.now() < deadline, 'no broadcast crossed the nodes')
        n += 1
        assert.equal(await sender.send({ type: 'broadcast', event: 'probe', payload: { n } }), 'ok')
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
      const payload = { text: 'héllo ✓', nested: { list: [1, 2.5, null, true] } }
      assert.equal(await sender.send({ type: 'broadcast', event: 'chat', payload }), 'ok')
      const got = await inbox.next((m) => m.event === 'chat')
      assert.deepEqual(got.payload, payload)
    })

    test('a member tracked on one node is in the state of a later join on the other, and leaves there', async () => {
      const topic = uniqueTopic()
      const alice = client(nodes[0], vsn).channel(topic, { config: { presence: { key: 'alice' } } })
      await subscribed(alice)
      assert.equal(await alice.track({ name: 'Alice' }), 'ok')

      const events = new Inbox('presence on node b')
      const bob = client(nodes[1], vsn)
        .channel(topic, { config: { presence: { key: 'bob' } } })
        .on('presence', { event: 'sync' }, () => events.push({ event: 'sync' }))
        .on('presence', { event: 'join' }, events.push)
        .on('presence', { event: 'leave' }, events.push)
      await subscribed(bob)
      const join = await events.next((e) => e.event === 'join' && e.key === 'alice', CROSS_TIMEOUT_MS)
      assert.equal(join.newPresences[0].name, 'Alice')
      assert.deepEqual(Object.keys(bob.presenceState()), ['alice'])

      assert.equal(await alice.untrack(), 'ok')
      await events.next((e) => e.event === 'leave' && e.key === 'alice', CROSS_TIMEOUT_MS)
      assert.deepEqual(Object.keys(bob.presenceState()), [])
    })
  })
}
