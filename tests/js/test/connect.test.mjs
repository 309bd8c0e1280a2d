// Connecting, joining and heartbeats with the published realtime-js client, under both
// serializers and on both WebSocket paths (`/socket` as self-hosted, `/realtime/v1` as supabase-js
// builds it).

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

for (const vsn of VSNS) {
  describe(`connect (vsn ${vsn})`, () => {
    for (const path of ['/socket', '/realtime/v1']) {
      test(`joins a channel through ${path}/websocket and reports SUBSCRIBED`, async () => {
        const client = connect(server, { vsn, path })
        clients.push(client)
        assert.match(client.endpointURL(), new RegExp(`${path}/websocket\\?.*vsn=${vsn}`))
        const channel = client.channel(uniqueTopic())
        await subscribed(channel)
        assert.equal(channel.state, 'joined')
        assert.equal(client.isConnected(), true)
        // The join reply the client got: status ok with an empty postgres_changes list.
        const reply = client.received.find(
          (m) => m.msg.startsWith(`ok ${channel.topic} phx_reply`) && m.data?.status === 'ok'
        )
        assert.ok(reply, `no ok phx_reply for ${channel.topic}`)
        assert.deepEqual(reply.data.response, { postgres_changes: [] })
      })
    }

    test('answers heartbeats with an ok reply', async () => {
      const beats = new Inbox('heartbeats')
      const client = connect(server, {
        vsn,
        heartbeatIntervalMs: 200,
        heartbeatCallback: (status, latency) => beats.push({ status, latency }),
      })
      clients.push(client)
      await subscribed(client.channel(uniqueTopic()))
      // Two answered heartbeats in a row: the server keeps answering, not just once.
      await beats.next((b) => b.status === 'ok')
      const firstOk = beats.items.findIndex((b) => b.status === 'ok')
      await beats.next((b) => b.status === 'ok' && beats.items.indexOf(b) > firstOk)
      assert.ok(
        !beats.items.some((b) => b.status === 'timeout' || b.status === 'error'),
        `unexpected heartbeat statuses: ${JSON.stringify(beats.items)}`
      )
      // The reply is `{"status":"ok","response":{}}` on topic phoenix.
      const reply = client.received.find((m) => m.msg.startsWith('ok phoenix phx_reply'))
      assert.ok(reply, 'no phx_reply on topic phoenix')
      assert.deepEqual(reply.data, { status: 'ok', response: {} })
    })

    test('joins several channels on one socket', async () => {
      const client = connect(server, { vsn })
      clients.push(client)
      const channels = [uniqueTopic(), uniqueTopic(), uniqueTopic()].map((t) => client.channel(t))
      await Promise.all(channels.map((c) => subscribed(c)))
      assert.deepEqual(
        channels.map((c) => c.state),
        ['joined', 'joined', 'joined']
      )
    })
  })
}
