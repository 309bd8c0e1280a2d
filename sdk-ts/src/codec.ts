// The wire codec: Phoenix channel frames in both serializers the service speaks.
//
// - vsn 1.0.0: every frame is a JSON object `{topic, event, payload, ref, join_ref}` as text.
// - vsn 2.0.0: text frames are arrays `[join_ref, ref, topic, event, payload]`; user broadcasts
//   travel as binary frames, kind 3 from the client and kind 4 from the server, each with a
//   header of byte lengths followed by the strings and the payload (JSON text or raw bytes).
//   Kind 0 is a client push whose whole payload is bytes.
//
// Pure functions only: no sockets, no state. The golden frames in `tests/fixtures/protocol/`
// are checked against this module, as they are against the server's codec.

/** The serializer versions (`vsn` query parameter). */
export type Vsn = '1.0.0' | '2.0.0'

/** A JSON value. */
export type Json = string | number | boolean | null | Json[] | { [key: string]: Json | undefined }

/** A Phoenix message: a push, a reply or a server event. */
export interface Message {
  join_ref: string | null
  ref: string | null
  topic: string
  event: string
  payload: unknown
}

/**
 * A user broadcast in the binary form of vsn 2.0.0: kind 3 (client to server, with refs) or
 * kind 4 (server to client, without). `payload` is JSON, or bytes when `encoding` is `binary`.
 */
export interface UserBroadcast {
  kind: 'user_broadcast'
  join_ref: string | null
  ref: string | null
  topic: string
  /** The application's event name (`event` of a text broadcast's payload). */
  event: string
  /** Metadata text the server may attach (for example `{"id":...}`); empty when none. */
  meta: string
  encoding: 'json' | 'binary'
  payload: unknown
}

/** Which side sent a frame: the binary kinds differ by direction. */
export type Direction = 'client' | 'server'

/** What one WebSocket frame decodes to. */
export type Frame = ({ kind: 'message' } & Message) | UserBroadcast

/** A frame that breaks the protocol; the message says what is wrong with it. */
export class ProtocolError extends Error {
  override name = 'ProtocolError'
}

const KIND_PUSH = 0
const KIND_CLIENT_BROADCAST = 3
const KIND_SERVER_BROADCAST = 4
const ENCODING_BINARY = 0
const ENCODING_JSON = 1

const utf8 = new TextEncoder()
const fromUtf8 = new TextDecoder('utf-8', { fatal: true })

/** A JSON-compatible ref: the server and realtime-js send strings, integers are tolerated. */
function readRef(value: unknown, field: string): string | null {
  if (value === null || value === undefined) return null
  if (typeof value === 'string') return value
  if (typeof value === 'number' && Number.isInteger(value)) return String(value)
  throw new ProtocolError(`${field} must be a string or null`)
}

function readString(value: unknown, field: string): string {
  if (typeof value !== 'string') throw new ProtocolError(`${field} must be a string`)
  return value
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    throw new ProtocolError(`${what} is not JSON`)
  }
}

/** Decodes a text frame of serializer `vsn`. */
export function decodeText(vsn: Vsn, text: string): Message {
  const value = parseJson(text, 'the frame')
  if (vsn === '1.0.0') {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new ProtocolError('a vsn 1.0.0 frame must be a JSON object')
    }
    const v = value as Record<string, unknown>
    return {
      join_ref: readRef(v.join_ref, 'join_ref'),
      ref: readRef(v.ref, 'ref'),
      topic: readString(v.topic, 'topic'),
      event: readString(v.event, 'event'),
      payload: v.payload ?? {},
    }
  }
  if (!Array.isArray(value) || value.length < 5) {
    throw new ProtocolError('a vsn 2.0.0 frame must be an array of five elements')
  }
  const [joinRef, ref, topic, event, payload] = value as unknown[]
  return {
    join_ref: readRef(joinRef, 'join_ref'),
    ref: readRef(ref, 'ref'),
    topic: readString(topic, 'topic'),
    event: readString(event, 'event'),
    payload,
  }
}

/** Encodes a text frame of serializer `vsn` (the key order realtime-js uses for vsn 1.0.0). */
export function encodeText(vsn: Vsn, message: Message): string {
  if (vsn === '1.0.0') {
    const { topic, event, payload, ref, join_ref } = message
    return JSON.stringify({ topic, event, payload, ref, join_ref })
  }
  return JSON.stringify([message.join_ref, message.ref, message.topic, message.event, message.payload])
}

/** Reads length-prefixed fields of a binary frame, failing clearly when bytes are missing. */
class Reader {
  private offset: number
  constructor(
    private readonly bytes: Uint8Array,
    headerLength: number
  ) {
    if (bytes.length < headerLength) {
      throw new ProtocolError(`binary frame of ${bytes.length} bytes is shorter than its ${headerLength}-byte header`)
    }
    this.offset = headerLength
  }

  header(index: number): number {
    return this.bytes[index] as number
  }

  take(length: number, field: string): Uint8Array {
    if (this.offset + length > this.bytes.length) {
      throw new ProtocolError(`binary frame ends inside its ${field}`)
    }
    const part = this.bytes.subarray(this.offset, this.offset + length)
    this.offset += length
    return part
  }

  text(length: number, field: string): string {
    try {
      return fromUtf8.decode(this.take(length, field))
    } catch (error) {
      if (error instanceof ProtocolError) throw error
      throw new ProtocolError(`the ${field} of a binary frame is not UTF-8`)
    }
  }

  rest(): Uint8Array {
    const part = this.bytes.subarray(this.offset)
    this.offset = this.bytes.length
    return part
  }
}

/** Decodes a binary frame (vsn 2.0.0 only) sent by `from`. */
export function decodeBinary(vsn: Vsn, data: ArrayBuffer | Uint8Array, from: Direction): Frame {
  if (vsn !== '2.0.0') throw new ProtocolError('binary frames exist only in vsn 2.0.0')
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data)
  if (bytes.length === 0) throw new ProtocolError('empty binary frame')
  const kind = bytes[0]
  if (kind === KIND_PUSH && from === 'client') {
    const r = new Reader(bytes, 5)
    const [joinRefLen, refLen, topicLen, eventLen] = [r.header(1), r.header(2), r.header(3), r.header(4)]
    return {
      kind: 'message',
      join_ref: r.text(joinRefLen, 'join_ref') || null,
      ref: r.text(refLen, 'ref') || null,
      topic: r.text(topicLen, 'topic'),
      event: r.text(eventLen, 'event'),
      payload: r.rest().slice(),
    }
  }
  if (kind === KIND_CLIENT_BROADCAST && from === 'client') {
    const r = new Reader(bytes, 7)
    const [joinRefLen, refLen, topicLen, eventLen, metaLen, encoding] = [1, 2, 3, 4, 5, 6].map((i) => r.header(i))
    const joinRef = r.text(joinRefLen as number, 'join_ref')
    const ref = r.text(refLen as number, 'ref')
    const topic = r.text(topicLen as number, 'topic')
    const event = r.text(eventLen as number, 'event')
    const meta = r.text(metaLen as number, 'metadata')
    return userBroadcast(joinRef || null, ref || null, topic, event, meta, encoding as number, r.rest())
  }
  if (kind === KIND_SERVER_BROADCAST && from === 'server') {
    const r = new Reader(bytes, 5)
    const [topicLen, eventLen, metaLen, encoding] = [r.header(1), r.header(2), r.header(3), r.header(4)]
    const topic = r.text(topicLen, 'topic')
    const event = r.text(eventLen, 'event')
    const meta = r.text(metaLen, 'metadata')
    return userBroadcast(null, null, topic, event, meta, encoding, r.rest())
  }
  throw new ProtocolError(`binary frame kind ${kind} is not sent by the ${from}`)
}

function userBroadcast(
  joinRef: string | null,
  ref: string | null,
  topic: string,
  event: string,
  meta: string,
  encoding: number,
  body: Uint8Array
): UserBroadcast {
  const base = { kind: 'user_broadcast' as const, join_ref: joinRef, ref, topic, event, meta }
  if (encoding === ENCODING_BINARY) return { ...base, encoding: 'binary', payload: body.slice() }
  if (encoding === ENCODING_JSON) {
    let text: string
    try {
      text = fromUtf8.decode(body)
    } catch {
      throw new ProtocolError('the JSON payload of a binary frame is not UTF-8')
    }
    return { ...base, encoding: 'json', payload: parseJson(text, 'the payload of a binary frame') }
  }
  throw new ProtocolError(`unknown payload encoding ${encoding} in a binary frame`)
}

/** Decodes one WebSocket frame, text or binary, sent by `from`. */
export function decodeFrame(vsn: Vsn, data: string | ArrayBuffer | Uint8Array, from: Direction): Frame {
  if (typeof data === 'string') return { kind: 'message', ...decodeText(vsn, data) }
  return decodeBinary(vsn, data, from)
}

function field(text: string, what: string): Uint8Array {
  const bytes = utf8.encode(text)
  if (bytes.length > 255) throw new ProtocolError(`the ${what} is ${bytes.length} bytes; a binary frame allows 255`)
  return bytes
}

function concat(header: number[], parts: Uint8Array[]): Uint8Array {
  const length = header.length + parts.reduce((n, p) => n + p.length, 0)
  const out = new Uint8Array(length)
  out.set(header, 0)
  let offset = header.length
  for (const part of parts) {
    out.set(part, offset)
    offset += part.length
  }
  return out
}

/** Bytes of a binary payload given as any of the usual binary types. */
export function asBytes(payload: unknown): Uint8Array | null {
  if (payload instanceof Uint8Array) return payload
  if (payload instanceof ArrayBuffer) return new Uint8Array(payload)
  if (ArrayBuffer.isView(payload)) return new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength)
  return null
}

/**
 * Encodes a user broadcast as a binary frame: kind 3 when the client sends it, kind 4 when the
 * server does. A payload of bytes goes out as `binary`, anything else as JSON.
 */
export function encodeUserBroadcast(
  broadcast: Omit<UserBroadcast, 'kind' | 'encoding'> & { encoding?: UserBroadcast['encoding'] },
  from: Direction
): Uint8Array {
  const bytes = asBytes(broadcast.payload)
  const encoding = bytes ? ENCODING_BINARY : ENCODING_JSON
  const body = bytes ?? utf8.encode(JSON.stringify(broadcast.payload ?? null))
  const topic = field(broadcast.topic, 'topic')
  const event = field(broadcast.event, 'event')
  const meta = field(broadcast.meta, 'metadata')
  if (from === 'server') {
    return concat([KIND_SERVER_BROADCAST, topic.length, event.length, meta.length, encoding], [topic, event, meta, body])
  }
  const joinRef = field(broadcast.join_ref ?? '', 'join_ref')
  const ref = field(broadcast.ref ?? '', 'ref')
  return concat(
    [KIND_CLIENT_BROADCAST, joinRef.length, ref.length, topic.length, event.length, meta.length, encoding],
    [joinRef, ref, topic, event, meta, body]
  )
}

/** Encodes a client push of raw bytes (binary kind 0). */
export function encodeBinaryPush(message: Message & { payload: Uint8Array }): Uint8Array {
  const joinRef = field(message.join_ref ?? '', 'join_ref')
  const ref = field(message.ref ?? '', 'ref')
  const topic = field(message.topic, 'topic')
  const event = field(message.event, 'event')
  return concat(
    [KIND_PUSH, joinRef.length, ref.length, topic.length, event.length],
    [joinRef, ref, topic, event, message.payload]
  )
}

/**
 * Encodes what the client sends. On vsn 2.0.0 a broadcast (`event: "broadcast"` with
 * `{type: "broadcast", event, payload}`) becomes a binary kind 3 frame, so binary payloads
 * travel as bytes; everything else is text. vsn 1.0.0 has no binary frames: a binary payload
 * there is refused.
 */
export function encodeClient(vsn: Vsn, message: Message): string | Uint8Array {
  const p = message.payload as { type?: unknown; event?: unknown; payload?: unknown } | null
  const isBroadcast =
    message.event === 'broadcast' && p !== null && typeof p === 'object' && p.type === 'broadcast' && typeof p.event === 'string'
  if (vsn === '2.0.0' && isBroadcast) {
    return encodeUserBroadcast(
      { join_ref: message.join_ref, ref: message.ref, topic: message.topic, event: p.event as string, meta: '', payload: p.payload },
      'client'
    )
  }
  if (isBroadcast && asBytes(p.payload)) {
    throw new ProtocolError('binary payloads need vsn 2.0.0; vsn 1.0.0 sends JSON only')
  }
  return encodeText(vsn, message)
}
