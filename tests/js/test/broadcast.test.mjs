// Broadcast with the published realtime-js client: socket sends, self/ack options, mixed
// serializers, REST (single and batch endpoints), binary payloads, and leaving a channel.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import {
  ABSENCE_WAIT_MS,
  Inbox,
  VSNS,
  absenceWindow,
  connect,
  makeToken,
  onWire,
  subscribed,
  uniqueTopic,
  useServer,
} from '../harness.mjs'

const clients = []
const server = useServer({ clients })

function client(vsn, options = {}) {
  const c = connect(server, { vsn, ...options })
  clients.push(c)
  return c
}

/** A subscribed channel whose broadcasts (all events) land in the returned inbox. */
async function listener(c, topic, config = {}, label = 'listener') {
  const inbox = new Inbox(label)
  const channel = c.channel(topic, { config }).on('broadcast', { event: '*' }, inbox.push)
  await subscribed(channel)
  return { channel, inbox }
}

const byN = (n) => (m) => m.payload?.n === n

for (const vsn of VSNS) {
  describe(`broadcast (vsn ${vsn})`, () => {
    test('reaches another client with type, event and payload intact', async () => {
      const topic = uniqueTopic()
      const { inbox } = await listener(client(vsn), topic, {}, 'receiver')
      const { channel: sender } = await listener(client(vsn), topic)
      const payload = { n: 1, text: 'héllo ✓', nested: { list: [1, 2.5, null, true] } }
      assert.equal(await sender.send({ type: 'broadcast', event: 'chat', payload }), 'ok')
      const got = await inbox.next(byN(1))
      assert.equal(got.type, 'broadcast')
      assert.equal(got.event, 'chat')
      assert.deepEqual(got.payload, payload)
    })

    test('listeners filter by event name', async () => {
      const topic = uniqueTopic()
      const only = new Inbox('only-cursor')
      const c = client(vsn)
      await subscribed(c.channel(topic).on('broadcast', { event: 'cursor' }, only.push))
      const { channel: sender } = await listener(client(vsn), topic)
      await sender.send({ type: 'broadcast', event: 'typing', payload: { n: 1 } })
      await sender.send({ type: 'broadcast', event: 'cursor', payload: { n: 2 } })
      await only.next(byN(2))
      assert.deepEqual(
        only.items.map((m) => m.event),
        ['cursor']
      )
    })

    test('self: true delivers the sender its own message', async () => {
      const topic = uniqueTopic()
      const { channel, inbox } = await listener(client(vsn), topic, { broadcast: { self: true } })
      await channel.send({ type: 'broadcast', event: 'echo', payload: { n: 7 } })
      const got = await inbox.next(byN(7))
      assert.equal(got.event, 'echo')
    })

    test('self: false (the default) does not deliver the sender its own message', async () => {
      const topic = uniqueTopic()
      const { channel: sender, inbox: own } = await listener(client(vsn), topic, {}, 'sender')
      const { inbox: other } = await listener(client(vsn), topic, {}, 'other')
      await sender.send({ type: 'broadcast', event: 'e', payload: { n: 1 } })
      await sender.send({ type: 'broadcast', event: 'e', payload: { n: 2 } })
      await other.next(byN(2))
      // Both reached the other client; give the sender's socket the same time and more.
      await absenceWindow(ABSENCE_WAIT_MS)
      assert.deepEqual(own.items, [])
    })

    test('ack: true resolves send() with ok once the server accepted it', async () => {
      const topic = uniqueTopic()
      const { inbox } = await listener(client(vsn), topic)
      const { channel } = await listener(client(vsn), topic, { broadcast: { ack: true } })
      // Without a server reply realtime-js resolves 'timed out' (timeout = EVENT_TIMEOUT_MS).
      assert.equal(await channel.send({ type: 'broadcast', event: 'a', payload: { n: 3 } }), 'ok')
      assert.equal(await channel.send({ type: 'broadcast', event: 'a', payload: { n: 4 } }), 'ok')
      await inbox.next(byN(4))
      assert.ok(
        channel.socket.received.some(
          (m) => m.msg.startsWith(`ok ${channel.topic} phx_reply`) && m.data?.status === 'ok'
        )
      )
    })

    for (const path of ['/socket', '/realtime/v1']) {
      test(`httpSend() (single-message REST endpoint) reaches subscribers (client on ${path})`, async () => {
        const topic = uniqueTopic()
        const { inbox } = await listener(client(vsn), topic)
        const rest = client(vsn, { path }).channel(topic)
        const result = await rest.httpSend('from-rest', { n: 11, text: 'via REST' })
        assert.deepEqual(result, { success: true })
        const got = await inbox.next(byN(11))
        assert.equal(got.type, 'broadcast')
        assert.equal(got.event, 'from-rest')
        assert.deepEqual(got.payload, { n: 11, text: 'via REST' })
      })

      test(`send() before subscribing uses the batch REST endpoint and is delivered (client on ${path})`, async () => {
        const topic = uniqueTopic()
        const { inbox } = await listener(client(vsn), topic)
        const rest = client(vsn, { path, logger: () => {} }).channel(topic)
        assert.equal(rest.state, 'closed')
        const status = await rest.send({ type: 'broadcast', event: 'batch', payload: { n: 12 } })
        assert.equal(status, 'ok')
        const got = await inbox.next(byN(12))
        assert.equal(got.event, 'batch')
        assert.deepEqual(got.payload, { n: 12 })
      })
    }

    test('REST sends carry a setAuth() token as Authorization: Bearer and are delivered', async () => {
      const topic = uniqueTopic()
      const { inbox } = await listener(client(vsn), topic)
      const c = client(vsn, { logger: () => {} })
      await c.setAuth(server.token({ sub: 'bearer-user' }))
      const rest = c.channel(topic)
      assert.deepEqual(await rest.httpSend('bearer', { n: 13 }), { success: true })
      assert.equal(await rest.send({ type: 'broadcast', event: 'bearer', payload: { n: 14 } }), 'ok')
      await inbox.next(byN(13))
      await inbox.next(byN(14))
    })

    test('REST sends with a refused token fail (401 Unauthorized) and deliver nothing', async () => {
      const topic = uniqueTopic()
      const { inbox } = await listener(client(vsn), topic)
      const wrong = makeToken({}, { secret: 'not-the-server-secret' })
      // The socket connects with a valid key; the bad token goes in Authorization.
      const c = client(vsn, { logger: () => {} })
      await c.setAuth(wrong)
      const rest = c.channel(topic)
      await assert.rejects(rest.httpSend('bad', { n: 15 }), { message: 'Unauthorized' })
      assert.equal(await rest.send({ type: 'broadcast', event: 'bad', payload: { n: 16 } }), 'error')
      // A bad apikey header alone (no Authorization) is refused too.
      const keyOnly = client(vsn, { token: wrong, logger: () => {} }).channel(topic)
      await assert.rejects(keyOnly.httpSend('bad', { n: 17 }), { message: 'Unauthorized' })
      // A later valid REST message arrives; the refused ones never do.
      await client(vsn).channel(topic).httpSend('good', { n: 18 })
      await inbox.next(byN(18))
      await absenceWindow(ABSENCE_WAIT_MS)
      assert.deepEqual(
        inbox.items.map((m) => m.payload.n),
        [18]
      )
    })

    test('removeChannel() stops delivery to that client', async () => {
      const topic = uniqueTopic()
      const other = uniqueTopic()
      const c = client(vsn)
      const { channel: leaving, inbox } = await listener(c, topic, {}, 'leaving')
      // A second channel keeps the socket open and carries the "later message".
      const { inbox: stay } = await listener(c, other, {}, 'staying')
      const sc = client(vsn)
      const { channel: sender } = await listener(sc, topic)
      const { channel: sender2 } = await listener(sc, other)
      await sender.send({ type: 'broadcast', event: 'e', payload: { n: 1 } })
      await inbox.next(byN(1))

      assert.equal(await c.removeChannel(leaving), 'ok')
      assert.equal(c.getChannels().includes(leaving), false)
      // realtime-js resolves removeChannel() as soon as it has sent phx_leave (the channel is
      // already "leaving", so it does not wait for the reply); the server's phx_close says the
      // leave was processed, and only messages sent after that are promised to stay away.
      await onWire(c, (m) => m.msg.includes(`${leaving.topic} phx_close`), 'phx_close of the left channel')
      await sender.send({ type: 'broadcast', event: 'e', payload: { n: 2 } })
      await sender2.send({ type: 'broadcast', event: 'e', payload: { n: 3 } })
      await stay.next(byN(3))
      await absenceWindow(ABSENCE_WAIT_MS)
      // Checked on the wire, not just the torn-down callbacks.
      const late = c.received.filter(
        (m) => m.msg.includes(`${leaving.topic} broadcast`) && m.data?.payload?.n === 2
      )
      assert.deepEqual(late, [])
    })
  })
}

describe('broadcast across serializers', () => {
  test('a vsn 1.0.0 client and a vsn 2.0.0 client exchange messages both ways', async () => {
    const topic = uniqueTopic()
    const v1 = await listener(client('1.0.0'), topic, {}, 'v1')
    const v2 = await listener(client('2.0.0'), topic, {}, 'v2')
    const p1 = { n: 1, from: 'v1', list: ['a', { b: 2 }] }
    const p2 = { n: 2, from: 'v2', unicode: 'żółw 🐢' }
    await v1.channel.send({ type: 'broadcast', event: 'one-to-two', payload: p1 })
    await v2.channel.send({ type: 'broadcast', event: 'two-to-one', payload: p2 })
    const at2 = await v2.inbox.next(byN(1))
    const at1 = await v1.inbox.next(byN(2))
    assert.deepEqual([at2.type, at2.event, at2.payload], ['broadcast', 'one-to-two', p1])
    assert.deepEqual([at1.type, at1.event, at1.payload], ['broadcast', 'two-to-one', p2])
  })

  test('REST broadcasts reach vsn 1.0.0 and vsn 2.0.0 subscribers alike', async () => {
    const topic = uniqueTopic()
    const v1 = await listener(client('1.0.0'), topic, {}, 'v1')
    const v2 = await listener(client('2.0.0'), topic, {}, 'v2')
    const rest = client('2.0.0').channel(topic)
    assert.deepEqual(await rest.httpSend('r', { n: 5 }), { success: true })
    assert.deepEqual((await v1.inbox.next(byN(5))).payload, { n: 5 })
    assert.deepEqual((await v2.inbox.next(byN(5))).payload, { n: 5 })
  })
})

describe('binary broadcast (vsn 2.0.0)', () => {
  const bytes = () => {
    const buf = new Uint8Array(300)
    for (let i = 0; i < buf.length; i++) buf[i] = (i * 7 + 3) % 256
    return buf
  }

  test('an ArrayBuffer payload from one v2 client reaches another v2 client intact', async () => {
    const topic = uniqueTopic()
    const receiver = await listener(client('2.0.0'), topic, {}, 'receiver')
    const sender = await listener(client('2.0.0'), topic)
    const sent = bytes()
    await sender.channel.send({ type: 'broadcast', event: 'blob', payload: sent.buffer })
    const got = await receiver.inbox.next((m) => m.event === 'blob')
    assert.equal(got.type, 'broadcast')
    assert.ok(got.payload instanceof ArrayBuffer, `payload is ${typeof got.payload}`)
    assert.deepEqual(new Uint8Array(got.payload), sent)
  })

  test('an empty ArrayBuffer arrives as an empty ArrayBuffer', async () => {
    const topic = uniqueTopic()
    const receiver = await listener(client('2.0.0'), topic, {}, 'receiver')
    const sender = await listener(client('2.0.0'), topic)
    await sender.channel.send({ type: 'broadcast', event: 'empty', payload: new ArrayBuffer(0) })
    const got = await receiver.inbox.next((m) => m.event === 'empty')
    assert.ok(got.payload instanceof ArrayBuffer)
    assert.equal(got.payload.byteLength, 0)
  })

  test('httpSend() with binary data reaches a v2 subscriber as an ArrayBuffer', async () => {
    const topic = uniqueTopic()
    const receiver = await listener(client('2.0.0'), topic, {}, 'receiver')
    const sent = bytes()
    const result = await client('2.0.0').channel(topic).httpSend('rest-blob', sent)
    assert.deepEqual(result, { success: true })
    const got = await receiver.inbox.next((m) => m.event === 'rest-blob')
    assert.ok(got.payload instanceof ArrayBuffer)
    assert.deepEqual(new Uint8Array(got.payload), sent)
  })

  test('binary payloads are not delivered to vsn 1.0.0 clients, later JSON ones are', async () => {
    const topic = uniqueTopic()
    const v1 = await listener(client('1.0.0'), topic, {}, 'v1')
    const sender = await listener(client('2.0.0'), topic)
    await sender.channel.send({ type: 'broadcast', event: 'blob', payload: bytes().buffer })
    await sender.channel.send({ type: 'broadcast', event: 'json', payload: { n: 9 } })
    await v1.inbox.next(byN(9))
    await absenceWindow(ABSENCE_WAIT_MS)
    assert.deepEqual(
      v1.inbox.items.map((m) => m.event),
      ['json']
    )
  })
})
