// Tokens and private channels with the published realtime-js client: policy-allowed and denied
// joins, refused tokens (expired, wrong secret, `alg: none`) at connect and at join, token refresh
// with setAuth(), and channel shutdown at expiry.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import {
  ABSENCE_WAIT_MS,
  ALLOWED_PRIVATE_PREFIX,
  Inbox,
  VSNS,
  absenceWindow,
  connect,
  makeToken,
  rawHandshake,
  subscribeStatus,
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

const now = () => Math.floor(Date.now() / 1000)
const NO_SIGNER =
  'Failed to generate JWT signer, check your JWT secret or JWKS configuration'

/** The tokens every refusal test uses, with the handshake `error` and join `reason` expected. */
function refusedTokens() {
  return [
    {
      name: 'an expired token',
      token: server.token({ exp: now() - 30 }),
      handshake: 'Token has expired',
      reason: /^InvalidJWTToken: Token has expired \d+ seconds ago$/,
    },
    {
      name: 'a token signed with the wrong secret',
      token: makeToken({}, { secret: 'not-the-server-secret' }),
      handshake: 'Failed to validate JWT signature',
      reason: /^JwtSignatureError: Failed to validate JWT signature$/,
    },
    {
      name: 'an alg: none token',
      token: makeToken({ role: 'service_role' }, { alg: 'none' }),
      handshake: NO_SIGNER,
      reason: new RegExp(`^JwtSignerError: ${NO_SIGNER.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`),
    },
  ]
}

describe('tokens refused at connect', () => {
  test('a valid token upgrades the WebSocket', async () => {
    const res = await rawHandshake(server, { apikey: server.token(), vsn: '2.0.0' })
    assert.equal(res.status, 101)
  })

  test('a missing apikey is refused with 401 "API key is missing"', async () => {
    const res = await rawHandshake(server, { vsn: '2.0.0' })
    assert.equal(res.status, 401)
    assert.deepEqual(res.json, { error: 'API key is missing' })
  })

  test('a token without role/exp is refused with 401', async () => {
    const res = await rawHandshake(server, { apikey: server.token({ exp: undefined }) })
    assert.equal(res.status, 401)
    assert.deepEqual(res.json, { error: 'Fields `role` and `exp` are required in JWT' })
  })

  for (const path of ['/socket/websocket', '/realtime/v1/websocket']) {
    test(`expired, wrong-secret and alg:none tokens are refused with 401 on ${path}`, async () => {
      for (const { name, token, handshake } of refusedTokens()) {
        const res = await rawHandshake(server, { apikey: token, vsn: '1.0.0' }, path)
        assert.equal(res.status, 401, name)
        assert.deepEqual(res.json, { error: handshake }, name)
      }
    })
  }

  for (const vsn of VSNS) {
    test(`realtime-js (vsn ${vsn}) connecting with a refused token never subscribes`, async () => {
      for (const { name, token } of refusedTokens()) {
        const c = client(vsn, { token })
        const { status } = await subscribeStatus(c.channel(uniqueTopic()))
        assert.equal(status, 'CHANNEL_ERROR', name)
        assert.equal(c.isConnected(), false, name)
        await c.disconnect()
      }
    })
  }
})

for (const vsn of VSNS) {
  describe(`tokens and private channels (vsn ${vsn})`, () => {
    const allowedToken = () => server.token({ sub: 'user-allowed' })

    test('a private channel allowed by policy reaches SUBSCRIBED and carries broadcasts', async () => {
      const topic = uniqueTopic(ALLOWED_PRIVATE_PREFIX)
      const inbox = new Inbox('private receiver')
      const receiver = client(vsn, { token: allowedToken() })
        .channel(topic, { config: { private: true } })
        .on('broadcast', { event: '*' }, inbox.push)
      await subscribed(receiver)
      const sender = client(vsn, { token: allowedToken() }).channel(topic, {
        config: { private: true, broadcast: { ack: true } },
      })
      await subscribed(sender)
      assert.equal(await sender.send({ type: 'broadcast', event: 'p', payload: { n: 1 } }), 'ok')
      assert.deepEqual((await inbox.next((m) => m.payload?.n === 1)).payload, { n: 1 })
    })

    test('a private channel and a public one with the same name are different topics', async () => {
      const topic = uniqueTopic(ALLOWED_PRIVATE_PREFIX)
      const privateInbox = new Inbox('private')
      const publicInbox = new Inbox('public')
      const c = client(vsn, { token: allowedToken() })
      const priv = c
        .channel(topic, { config: { private: true } })
        .on('broadcast', { event: '*' }, privateInbox.push)
      await subscribed(priv)
      const other = client(vsn, { token: allowedToken() })
      const pub = other.channel(topic).on('broadcast', { event: '*' }, publicInbox.push)
      await subscribed(pub)
      const sender = client(vsn, { token: allowedToken() }).channel(topic)
      await subscribed(sender)
      await sender.send({ type: 'broadcast', event: 'e', payload: { n: 1 } })
      await publicInbox.next((m) => m.payload?.n === 1)
      await absenceWindow(ABSENCE_WAIT_MS)
      assert.deepEqual(privateInbox.items, [])
    })

    test('presence on a private channel allowed by policy reaches other members', async () => {
      const topic = uniqueTopic(ALLOWED_PRIVATE_PREFIX)
      const events = new Inbox('private presence')
      const watcher = client(vsn, { token: allowedToken() })
        .channel(topic, { config: { private: true, presence: { key: 'watcher' } } })
        .on('presence', { event: 'join' }, events.push)
      await subscribed(watcher)
      const member = client(vsn, { token: allowedToken() }).channel(topic, {
        config: { private: true, presence: { key: 'member' } },
      })
      await subscribed(member)
      assert.equal(await member.track({ name: 'M' }), 'ok')
      const join = await events.next((e) => e.key === 'member')
      assert.equal(join.newPresences[0].name, 'M')
    })

    test('REST broadcasts to a private channel are delivered only when the token may write', async () => {
      const topic = uniqueTopic(ALLOWED_PRIVATE_PREFIX)
      const inbox = new Inbox('private REST receiver')
      const receiver = client(vsn, { token: allowedToken() })
        .channel(topic, { config: { private: true } })
        .on('broadcast', { event: '*' }, inbox.push)
      await subscribed(receiver)
      const restAs = (token) =>
        client(vsn, { token, logger: () => {} }).channel(topic, { config: { private: true } })
      // Denied: Supabase answers 403 and httpSend rejects with 'Unauthorized'.
      await assert.rejects(
        restAs(server.token({ sub: 'someone-else' })).httpSend('denied', { n: 1 }),
        { message: 'Unauthorized' }
      )
      assert.deepEqual(await restAs(allowedToken()).httpSend('allowed', { n: 2 }), { success: true })
      await inbox.next((m) => m.payload?.n === 2)
      await absenceWindow(ABSENCE_WAIT_MS)
      assert.deepEqual(
        inbox.items.map((m) => m.event),
        ['allowed']
      )
    })

    test('setAuth() with a token that lost access closes the private channel', async () => {
      const topic = uniqueTopic(ALLOWED_PRIVATE_PREFIX)
      const c = client(vsn, { token: allowedToken() })
      const system = new Inbox('system')
      const statuses = new Inbox('statuses')
      const channel = c
        .channel(topic, { config: { private: true } })
        .on('system', {}, system.push)
      channel.subscribe(statuses.push)
      assert.equal(await statuses.next(), 'SUBSCRIBED', 'the allowed token must join first')
      await c.setAuth(server.token({ sub: 'someone-else' }))
      const msg = await system.next((m) => m.status === 'error')
      assert.equal(msg.extension, 'system')
      assert.match(msg.message, new RegExp(`permission.* to read from this Channel topic: ${topic}$`))
      await statuses.next((s) => s === 'CLOSED')
    })

    test('a private channel denied by policy fails with the Unauthorized reason', async () => {
      // The policy opens `private-allowed*` to sub user-allowed only.
      for (const [token, topic] of [
        [allowedToken(), uniqueTopic('private-denied')],
        [server.token({ sub: 'someone-else' }), uniqueTopic(ALLOWED_PRIVATE_PREFIX)],
      ]) {
        const c = client(vsn, { token })
        const { status, err } = await subscribeStatus(c.channel(topic, { config: { private: true } }))
        assert.equal(status, 'CHANNEL_ERROR')
        assert.equal(
          err?.message,
          `Unauthorized: You do not have permissions to read from this Channel topic: ${topic}`
        )
      }
    })

    test('a join carrying a refused access_token fails with the matching reason', async () => {
      for (const { name, token, reason } of refusedTokens()) {
        // The socket connects with a valid key; setAuth() puts the bad token in the join.
        const c = client(vsn)
        await c.setAuth(token)
        const { status, err } = await subscribeStatus(c.channel(uniqueTopic()))
        assert.equal(status, 'CHANNEL_ERROR', name)
        assert.match(err?.message ?? '', reason, name)
        await c.disconnect()
      }
    })

    test('setAuth() with a fresh token keeps the channel alive past the first token expiry', async () => {
      const topic = uniqueTopic()
      const exp = now() + 3
      // Two clients whose tokens expire at the same second; only one refreshes.
      const refreshed = client(vsn, { token: server.token({ exp }) })
      const stale = client(vsn, { token: server.token({ exp }) })
      const inbox = new Inbox('refreshed')
      const keptStatus = new Inbox('kept statuses')
      const kept = refreshed.channel(topic).on('broadcast', { event: '*' }, inbox.push)
      kept.subscribe(keptStatus.push)
      const staleStatus = new Inbox('stale statuses')
      const closing = stale.channel(topic)
      closing.subscribe(staleStatus.push)
      await keptStatus.next((s) => s === 'SUBSCRIBED')
      await staleStatus.next((s) => s === 'SUBSCRIBED')

      await refreshed.setAuth(server.token({ exp: now() + 3600 }))
      // The stale channel closes at the shared expiry; by then the refreshed one would have too.
      const timeout = (exp - now() + 5) * 1000
      await staleStatus.next((s) => s === 'CLOSED', timeout, 'stale channel CLOSED at expiry')
      await absenceWindow(ABSENCE_WAIT_MS)
      assert.equal(kept.state, 'joined')
      assert.deepEqual(keptStatus.items, ['SUBSCRIBED'])
      // Still delivering: a message from a third client arrives.
      const sender = client(vsn).channel(topic)
      await subscribed(sender)
      await sender.send({ type: 'broadcast', event: 'after', payload: { n: 1 } })
      await inbox.next((m) => m.payload?.n === 1)
    })

    test('expiry without refresh closes the channel with a system message', async () => {
      const exp = now() + 2
      const c = client(vsn, { token: server.token({ exp }) })
      const system = new Inbox('system')
      const channel = c.channel(uniqueTopic()).on('system', {}, system.push)
      const statuses = new Inbox('statuses')
      channel.subscribe((s) => statuses.push(s))
      await statuses.next((s) => s === 'SUBSCRIBED')
      const timeout = (exp - now() + 5) * 1000
      const msg = await system.next((m) => m.status === 'error', timeout, 'system error')
      assert.equal(msg.extension, 'system')
      assert.equal(msg.channel, channel.subTopic)
      assert.match(msg.message, /^Token has expired \d+ seconds ago$/)
      await statuses.next((s) => s === 'CLOSED', timeout, 'CLOSED')
      assert.equal(channel.state, 'closed')
      // phx_close carried the join ref, so the client removed the channel (no auto-rejoin).
      assert.equal(c.getChannels().includes(channel), false)
      // The WebSocket itself stays open.
      assert.equal(c.isConnected(), true)
    })
  })
}
