// The golden protocol frames of tests/fixtures/protocol/, read by the server's tests too: the
// TypeScript codec must decode every valid frame to the listed fields, refuse every invalid
// one, and encode what it sends byte for byte as listed, so the two codecs cannot drift.

import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

import { describe, expect, test } from 'vitest'

import {
  ProtocolError,
  type Vsn,
  decodeFrame,
  encodeClient,
  encodeText,
  encodeUserBroadcast,
} from '../src/codec.js'

const fixtures = (name: string) =>
  JSON.parse(readFileSync(fileURLToPath(new URL(`../../tests/fixtures/protocol/${name}`, import.meta.url)), 'utf8')).frames as any[]

const clientFrames = fixtures('client_frames.json')
const serverFrames = fixtures('server_frames.json')

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex')
const fromHex = (text: string) => new Uint8Array(Buffer.from(text, 'hex'))
const wire = (frame: any): string | Uint8Array => (frame.binary_hex !== undefined ? fromHex(frame.binary_hex) : frame.text)

describe('client frames (what the SDK sends)', () => {
  test('the fixtures hold valid and invalid frames of both serializers', () => {
    expect(clientFrames.filter((f) => !f.error).length).toBeGreaterThanOrEqual(8)
    expect(clientFrames.filter((f) => f.error).length).toBeGreaterThanOrEqual(10)
  })

  for (const frame of clientFrames.filter((f) => !f.error)) {
    test(`decodes: ${frame.name}`, () => {
      const decoded = decodeFrame(frame.vsn as Vsn, wire(frame), 'client')
      const d = frame.decoded
      expect(decoded.join_ref).toBe(d.join_ref)
      expect(decoded.ref).toBe(d.ref)
      expect(decoded.topic).toBe(d.topic)
      if (decoded.kind === 'user_broadcast') {
        expect(d.event).toBe('broadcast')
        expect(decoded.event).toBe(d.user_event)
        expect(decoded.encoding).toBe(d.encoding)
      } else {
        expect(decoded.event).toBe(d.event)
      }
      if (d.payload_hex !== undefined) expect(hex(decoded.payload as Uint8Array)).toBe(d.payload_hex)
      else expect(decoded.payload).toEqual(d.payload)
    })

    test(`encodes: ${frame.name}`, () => {
      const d = frame.decoded
      if (frame.binary_hex !== undefined) {
        const payload = d.payload_hex !== undefined ? fromHex(d.payload_hex) : d.payload
        const decoded = decodeFrame('2.0.0', fromHex(frame.binary_hex), 'client')
        const meta = decoded.kind === 'user_broadcast' ? decoded.meta : ''
        if (d.user_event !== undefined) {
          const bytes = encodeUserBroadcast(
            { join_ref: d.join_ref, ref: d.ref, topic: d.topic, event: d.user_event, meta, payload },
            'client'
          )
          expect(hex(bytes)).toBe(frame.binary_hex)
          if (meta === '') {
            // What `send` produces for a broadcast on vsn 2.0.0 is this same frame.
            const sent = encodeClient('2.0.0', {
              join_ref: d.join_ref,
              ref: d.ref,
              topic: d.topic,
              event: 'broadcast',
              payload: { type: 'broadcast', event: d.user_event, payload },
            })
            expect(hex(sent as Uint8Array)).toBe(frame.binary_hex)
          }
        }
        return
      }
      const text = encodeText(frame.vsn, d)
      // Integer refs are read as strings; the SDK always sends strings, so compare as JSON then.
      if (/"ref":\d/.test(frame.text)) expect(JSON.parse(text)).toMatchObject({ ref: d.ref })
      else if (frame.text.includes('"extra"')) expect(JSON.parse(text)).toEqual(JSON.parse(frame.text).slice(0, 5))
      else if (frame.vsn === '1.0.0' && !frame.text.includes('join_ref')) {
        const { join_ref: _ignored, ...rest } = JSON.parse(text)
        expect(rest).toEqual(JSON.parse(frame.text))
      } else expect(text).toBe(frame.text)
    })
  }

  for (const frame of clientFrames.filter((f) => f.error)) {
    test(`refuses: ${frame.name}`, () => {
      expect(() => decodeFrame(frame.vsn as Vsn, wire(frame), 'client')).toThrow(ProtocolError)
    })
  }
})

describe('server frames (what the SDK receives)', () => {
  for (const frame of serverFrames) {
    test(`decodes: ${frame.name}`, () => {
      const decoded = decodeFrame(frame.vsn as Vsn, wire(frame), 'server')
      expect(decoded.topic).toBe(frame.topic)
      if (frame.kind === 'user_broadcast') {
        expect(decoded.kind).toBe('user_broadcast')
        if (decoded.kind !== 'user_broadcast') return
        expect(decoded.event).toBe(frame.event)
        expect(decoded.meta).toBe(frame.meta)
        expect(decoded.encoding).toBe(frame.encoding)
        if (frame.encoding === 'binary') expect(hex(decoded.payload as Uint8Array)).toBe(frame.payload_hex)
        else expect(decoded.payload).toEqual(JSON.parse(frame.payload_json))
        // The server's kind 4 encoding, rebuilt from the fields, is the same bytes.
        const payload = frame.encoding === 'binary' ? fromHex(frame.payload_hex) : JSON.parse(frame.payload_json)
        const rebuilt = encodeUserBroadcast(
          { join_ref: null, ref: null, topic: frame.topic, event: frame.event, meta: frame.meta, payload },
          'server'
        )
        expect(hex(rebuilt)).toBe(frame.binary_hex)
        return
      }
      if (decoded.kind !== 'message') throw new Error('expected a text message')
      // vsn 1.0.0 server frames never carry join_ref.
      expect(decoded.join_ref).toBe(frame.vsn === '1.0.0' ? null : frame.join_ref)
      expect(decoded.ref).toBe(frame.ref)
      if (frame.kind === 'reply') {
        expect(decoded.event).toBe('phx_reply')
        expect(decoded.payload).toEqual({ status: frame.status, response: JSON.parse(frame.response_json) })
      } else {
        expect(decoded.event).toBe(frame.event)
        expect(decoded.payload).toEqual(JSON.parse(frame.payload_json))
      }
    })
  }

  test('a client kind 3 frame is not something a server sends', () => {
    const kind3 = clientFrames.find((f) => f.binary_hex?.startsWith('03') && !f.error)
    expect(() => decodeFrame('2.0.0', fromHex(kind3.binary_hex), 'server')).toThrow(/kind 3 is not sent by the server/)
  })
})

describe('sending on vsn 1.0.0', () => {
  test('a broadcast is JSON text, and a binary payload is refused with a clear error', () => {
    const message = {
      join_ref: '1',
      ref: '2',
      topic: 'realtime:room',
      event: 'broadcast',
      payload: { type: 'broadcast', event: 'cursor', payload: { x: 1 } },
    }
    expect(JSON.parse(encodeClient('1.0.0', message) as string)).toEqual(message)
    expect(() =>
      encodeClient('1.0.0', { ...message, payload: { type: 'broadcast', event: 'cursor', payload: new Uint8Array([1]) } })
    ).toThrow(/binary payloads need vsn 2.0.0/)
  })
})
