// Pure timing decisions of the connection: when to reconnect, when a heartbeat was missed,
// and when an access token is due for refresh. Kept free of timers so they are tested directly.

/** Reconnect delays grow exponentially up to a cap. */
export interface BackoffOptions {
  /** The delay scale of the first retry, in milliseconds. */
  baseMs: number
  /** The largest delay, in milliseconds. */
  maxMs: number
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 500, maxMs: 10_000 }

/**
 * The delay before retry number `attempt` (0 for the first): "equal jitter", half of the
 * exponential step plus a random part of the other half, so that many clients cut off at once
 * (a server restart) spread their reconnects instead of arriving together, while none retries
 * at once. `random` returns a number in [0, 1).
 */
export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number = Math.random): number {
  const step = Math.min(options.maxMs, options.baseMs * 2 ** Math.min(attempt, 30))
  return Math.round(step / 2 + random() * (step / 2))
}

/** What the heartbeat timer does when it fires. */
export type HeartbeatAction =
  /** All is well: send the next heartbeat. */
  | 'send'
  /** The previous heartbeat got no reply within a whole interval: the connection is dead. */
  | 'reconnect'
  /**
   * The timer fired far later than scheduled: timers were suspended (a backgrounded tab, a
   * sleeping laptop) and the connection may have died without a close event. A heartbeat goes
   * out at once and must be answered within the probe timeout. The reply to the previous one
   * is not judged: it may sit unread behind this very timer.
   */
  | 'probe'

/**
 * Decides what the heartbeat timer does at `now`, given when it last ran, its interval, and
 * whether the last heartbeat is still unanswered.
 */
export function heartbeatAction(now: number, lastTickAt: number, intervalMs: number, pending: boolean): HeartbeatAction {
  if (now - lastTickAt > intervalMs * 1.5) return 'probe'
  return pending ? 'reconnect' : 'send'
}

/** The `exp` claim of a JWT in milliseconds since the epoch, or null when it has none. */
export function tokenExpiry(token: string): number | null {
  const part = token.split('.')[1]
  if (!part) return null
  try {
    const base64 = part.replace(/-/g, '+').replace(/_/g, '/')
    const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4)
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(padded), (c) => c.charCodeAt(0))))
    return typeof claims?.exp === 'number' ? claims.exp * 1000 : null
  } catch {
    return null
  }
}

/**
 * How long to wait before asking for a fresh token: when a fifth of its remaining life is left
 * (at least 5 s before it expires, for the refresh to reach the server in time), never sooner
 * than one second from now. Null when the token does not expire.
 */
export function refreshDelay(token: string, now: number): number | null {
  const expiry = tokenExpiry(token)
  if (expiry === null) return null
  const remaining = expiry - now
  const margin = Math.max(5_000, remaining / 5)
  return Math.max(1_000, remaining - margin)
}
