// The pure decisions behind reconnects, heartbeats, token refresh, resume dedupe and presence.

import { describe, expect, test } from 'vitest'

import { alreadySeen, isPosition } from '../src/position.js'
import { applyDiff, applyState } from '../src/presence.js'
import { backoffDelay, heartbeatAction, refreshDelay, tokenExpiry } from '../src/timing.js'

describe('reconnect backoff', () => {
  const options = { baseMs: 500, maxMs: 10_000 }

  test('grows exponentially to the cap, jittered within the upper half of each step', () => {
    expect([0, 1, 2, 3].map((a) => backoffDelay(a, options, () => 0))).toEqual([250, 500, 1000, 2000])
    expect([0, 1, 2, 3].map((a) => backoffDelay(a, options, () => 0.999999))).toEqual([500, 1000, 2000, 4000])
    expect(backoffDelay(50, options, () => 0)).toBe(5000)
    expect(backoffDelay(50, options, () => 0.999999)).toBe(10_000)
  })

  test('clients cut off together spread their retries', () => {
    const delays = new Set(Array.from({ length: 50 }, () => backoffDelay(4, options)))
    expect(delays.size).toBeGreaterThan(10)
  })
})

describe('heartbeat', () => {
  test('an unanswered heartbeat one interval later means a dead connection', () => {
    expect(heartbeatAction(25_000, 0, 25_000, true)).toBe('reconnect')
    expect(heartbeatAction(25_000, 0, 25_000, false)).toBe('send')
  })

  test('a timer that fired far too late (suspended tab) probes instead of judging the old heartbeat', () => {
    expect(heartbeatAction(120_000, 0, 25_000, true)).toBe('probe')
    expect(heartbeatAction(120_000, 0, 25_000, false)).toBe('probe')
  })
})

describe('token refresh', () => {
  const token = (claims: object) =>
    `e30.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.sig`

  test('reads exp and refreshes before it, with a margin', () => {
    expect(tokenExpiry(token({ exp: 100 }))).toBe(100_000)
    expect(tokenExpiry(token({}))).toBeNull()
    expect(tokenExpiry('not a jwt')).toBeNull()
    // An hour left: refresh when a fifth of it remains.
    expect(refreshDelay(token({ exp: 3600 }), 0)).toBe(2_880_000)
    // Ten seconds left: at least 5 s before expiry.
    expect(refreshDelay(token({ exp: 10 }), 0)).toBe(5_000)
    // Already (nearly) expired: soon, but not in a loop.
    expect(refreshDelay(token({ exp: 1 }), 0)).toBe(1_000)
    expect(refreshDelay(token({}), 0)).toBeNull()
  })
})

describe('positions', () => {
  const p = (epoch: string, lsn: number, index: number) =>
    `${epoch}-${lsn.toString(16).toUpperCase().padStart(16, '0')}-${index.toString(16).toUpperCase().padStart(8, '0')}`
  const e = '4648959cc66ad1b3'

  test('a change at or before the last processed one of the same epoch is a repeat', () => {
    expect(isPosition(p(e, 1, 0))).toBe(true)
    expect(isPosition('yesterday')).toBe(false)
    expect(alreadySeen(p(e, 5, 2), p(e, 5, 2))).toBe(true)
    expect(alreadySeen(p(e, 5, 1), p(e, 5, 2))).toBe(true)
    expect(alreadySeen(p(e, 4, 9), p(e, 5, 0))).toBe(true)
    expect(alreadySeen(p(e, 5, 3), p(e, 5, 2))).toBe(false)
    expect(alreadySeen(p(e, 0x10, 0), p(e, 0xf, 0))).toBe(false)
    expect(alreadySeen(p(e, 5, 2), null)).toBe(false)
    // Another epoch never compares.
    expect(alreadySeen(p('0000000000000001', 1, 0), p(e, 5, 0))).toBe(false)
  })
})

describe('presence', () => {
  const meta = (ref: string, name: string) => ({ phx_ref: ref, name })

  test('a state replaces the map and reports the difference', () => {
    const first = applyState({}, { a: { metas: [meta('1', 'Ann')] }, b: { metas: [meta('2', 'Bob')] } })
    expect(first.state).toEqual({ a: [meta('1', 'Ann')], b: [meta('2', 'Bob')] })
    expect(first.joins).toEqual(first.state)
    expect(first.leaves).toEqual({})
    const second = applyState(first.state, { a: { metas: [meta('1', 'Ann')] }, c: { metas: [meta('3', 'Cy')] } })
    expect(second.joins).toEqual({ c: [meta('3', 'Cy')] })
    expect(second.leaves).toEqual({ b: [meta('2', 'Bob')] })
  })

  test('diffs are applied idempotently: a repeat changes nothing and reports nothing', () => {
    const start = applyState({}, { a: { metas: [meta('1', 'Ann')] } }).state
    const diff = { joins: { a: { metas: [meta('4', 'Ann on phone')] }, d: { metas: [meta('5', 'Di')] } }, leaves: {} }
    const once = applyDiff(start, diff)
    expect(once.state).toEqual({ a: [meta('1', 'Ann'), meta('4', 'Ann on phone')], d: [meta('5', 'Di')] })
    const twice = applyDiff(once.state, diff)
    expect(twice.state).toEqual(once.state)
    expect(twice.joins).toEqual({})
    const left = applyDiff(twice.state, { joins: {}, leaves: { a: { metas: [meta('1', 'Ann')] }, d: { metas: [meta('5', 'Di')] } } })
    expect(left.state).toEqual({ a: [meta('4', 'Ann on phone')] })
    expect(left.leaves).toEqual({ a: [meta('1', 'Ann')], d: [meta('5', 'Di')] })
    expect(applyDiff(left.state, { leaves: { d: { metas: [meta('5', 'Di')] } } }).leaves).toEqual({})
    // The input map is never modified.
    expect(start).toEqual({ a: [meta('1', 'Ann')] })
  })
})
