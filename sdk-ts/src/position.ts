// Positions of Postgres changes: `<epoch>-<commit LSN>-<index>` with 16, 16 and 8 hex digits.
// Within one epoch the strings sort in commit order; positions of different epochs do not
// compare (the stream was recreated).

const POSITION = /^([0-9a-f]{16})-([0-9A-F]{16})-([0-9A-F]{8})$/

/** True when `text` has the documented form of a position. */
export function isPosition(text: unknown): text is string {
  return typeof text === 'string' && POSITION.test(text)
}

/**
 * True when a change at `position` was already processed by a channel whose last processed
 * change is at `last`: same epoch and not later. A change of another epoch is never a repeat.
 */
export function alreadySeen(position: string, last: string | null): boolean {
  if (last === null || !isPosition(position) || !isPosition(last)) return false
  if (position.slice(0, 16) !== last.slice(0, 16)) return false
  return position <= last
}
