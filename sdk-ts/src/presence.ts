// Presence state as a synced map: the server's `presence_state` (the whole state) and
// `presence_diff` (joins and leaves) applied to a map from presence key to the metas tracked
// under it, each meta identified by its `phx_ref`. Applying is idempotent: the server may send
// a diff that the state already holds (see docs/guarantees.md), and it changes nothing twice.

/** One tracked entry: what the client passed to `track`, plus the server's `phx_ref`. */
export type PresenceMeta<T extends object = Record<string, unknown>> = T & { phx_ref: string }

/** Presence key to its entries. */
export type PresenceState<T extends object = Record<string, unknown>> = Record<string, PresenceMeta<T>[]>

/** What changed in one step, each side keyed by presence key. */
export interface PresenceChange<T extends object = Record<string, unknown>> {
  state: PresenceState<T>
  joins: PresenceState<T>
  leaves: PresenceState<T>
}

/** The wire form: `{ key: { metas: [...] } }`. */
type WireState = Record<string, { metas?: unknown }>

function fromWire<T extends object>(wire: unknown): PresenceState<T> {
  const out: PresenceState<T> = {}
  if (wire === null || typeof wire !== 'object') return out
  for (const [key, entry] of Object.entries(wire as WireState)) {
    const metas = Array.isArray(entry?.metas) ? entry.metas : []
    const valid = metas.filter(
      (m): m is PresenceMeta<T> => m !== null && typeof m === 'object' && typeof (m as { phx_ref?: unknown }).phx_ref === 'string'
    )
    if (valid.length > 0) out[key] = valid
  }
  return out
}

function add<T extends object>(into: PresenceState<T>, key: string, meta: PresenceMeta<T>): void {
  ;(into[key] ??= []).push(meta)
}

function has<T extends object>(state: PresenceState<T>, key: string, ref: string): boolean {
  return (state[key] ?? []).some((m) => m.phx_ref === ref)
}

/** Replaces the state with a `presence_state` payload; joins and leaves are the difference. */
export function applyState<T extends object>(current: PresenceState<T>, wire: unknown): PresenceChange<T> {
  const next = fromWire<T>(wire)
  const joins: PresenceState<T> = {}
  const leaves: PresenceState<T> = {}
  for (const [key, metas] of Object.entries(next)) {
    for (const meta of metas) if (!has(current, key, meta.phx_ref)) add(joins, key, meta)
  }
  for (const [key, metas] of Object.entries(current)) {
    for (const meta of metas) if (!has(next, key, meta.phx_ref)) add(leaves, key, meta)
  }
  return { state: next, joins, leaves }
}

/** Applies a `presence_diff` payload; joins and leaves list only what actually changed. */
export function applyDiff<T extends object>(current: PresenceState<T>, diff: unknown): PresenceChange<T> {
  const d = (diff ?? {}) as { joins?: unknown; leaves?: unknown }
  const next: PresenceState<T> = {}
  for (const [key, metas] of Object.entries(current)) next[key] = [...metas]
  const joins: PresenceState<T> = {}
  const leaves: PresenceState<T> = {}
  for (const [key, metas] of Object.entries(fromWire<T>(d.joins))) {
    for (const meta of metas) {
      if (has(next, key, meta.phx_ref)) continue
      add(next, key, meta)
      add(joins, key, meta)
    }
  }
  for (const [key, metas] of Object.entries(fromWire<T>(d.leaves))) {
    for (const meta of metas) {
      if (!has(next, key, meta.phx_ref)) continue
      next[key] = (next[key] ?? []).filter((m) => m.phx_ref !== meta.phx_ref)
      if (next[key]?.length === 0) delete next[key]
      add(leaves, key, meta)
    }
  }
  return { state: next, joins, leaves }
}
