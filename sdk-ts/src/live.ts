// A live query: the rows of a table that this subscriber may see, kept up to date. One join asks
// the server for a snapshot of the rows and the changes after it (docs/protocol.md, "Snapshot
// then changes"), so nothing committed between the load and the subscription is lost or applied
// twice. After a drop the channel resumes from its position; when it cannot, it takes a new
// snapshot and the rows start over.

import type { Channel } from './channel.js'
import type { RealtimeClient } from './client.js'
import type { AnyDatabase, Change, RowOf, TableName } from './types.js'

export interface LiveQueryOptions<S extends string, T extends string> {
  /** Defaults to `public`. */
  schema?: S
  table: T
  /** A row filter such as `owner=eq.42`. */
  filter?: string
  /** At most this many rows in the snapshot (later inserts are added all the same). */
  limit?: number
  /** The snapshot's order: `column`, `column.asc` or `column.desc` (default: the primary key). */
  order?: string
  /** The column that identifies a row (default `id`): changes replace and remove by it. */
  key?: string
}

let queries = 0

/**
 * The rows of one table, current. Read `rows`, listen with `onChange`, await `ready` (the
 * snapshot is in), or iterate: `for await (const rows of query)` yields the rows after every
 * change (a slow consumer gets the latest rows, not every intermediate state).
 */
export class LiveQuery<Row extends Record<string, unknown>> implements AsyncIterable<Row[]> {
  /** Resolves with the rows once the first snapshot is complete. */
  readonly ready: Promise<Row[]>
  private readonly byKey = new Map<unknown, Row>()
  private current: Row[] = []
  private loading = true
  private closed = false
  private channel: Channel<any>
  private readonly listeners = new Set<(rows: Row[]) => void>()
  private readonly waiters: ((result: IteratorResult<Row[]>) => void)[] = []
  /** Rows not yet handed to the iterator. */
  private unseen = false
  private resolveReady!: (rows: Row[]) => void

  constructor(
    private readonly client: RealtimeClient<any>,
    private readonly options: LiveQueryOptions<string, string>
  ) {
    this.ready = new Promise((resolve) => (this.resolveReady = resolve))
    this.channel = this.open()
  }

  /** The rows now (snapshot order, then in order of arrival). */
  get rows(): Row[] {
    return this.current
  }

  /** Calls `callback` with the rows after every change. Returns a function that stops it. */
  onChange(callback: (rows: Row[]) => void): () => void {
    this.listeners.add(callback)
    return () => this.listeners.delete(callback)
  }

  /** Stops following the table. */
  async close(): Promise<void> {
    this.closed = true
    for (const w of this.waiters.splice(0)) w({ done: true, value: undefined })
    await this.channel.unsubscribe()
  }

  [Symbol.asyncIterator](): AsyncIterator<Row[]> {
    this.unseen = !this.loading
    return {
      next: () => {
        if (this.closed) return Promise.resolve({ done: true, value: undefined })
        if (this.unseen) {
          this.unseen = false
          return Promise.resolve({ done: false, value: this.current })
        }
        return new Promise((resolve) => this.waiters.push(resolve))
      },
      return: async () => {
        await this.close()
        return { done: true, value: undefined }
      },
    }
  }

  private open(): Channel<any> {
    const { schema = 'public', table, filter, limit, order } = this.options
    const snapshot = limit === undefined && order === undefined ? true : { limit, order }
    const channel = this.client
      .channel(`live:${schema}.${table}:${++queries}:${Math.random().toString(36).slice(2, 8)}`)
      .onChanges({ schema, table, event: '*', ...(filter !== undefined ? { filter } : {}), snapshot }, (change) =>
        this.apply(change as Change<Row>)
      )
      .onSnapshot((event) => {
        if (event.phase === 'start') {
          this.loading = true
          this.byKey.clear()
        } else {
          this.loading = false
          this.publish()
          this.resolveReady(this.current)
        }
      })
      // Changes were lost and cannot be replayed: start over from a new snapshot.
      .onRefetch(() => void this.restart())
    void channel.subscribe().catch(() => {
      // the channel keeps retrying; `ready` waits for it
    })
    return channel
  }

  private async restart(): Promise<void> {
    if (this.closed) return
    const old = this.channel
    this.channel = this.open()
    await old.unsubscribe()
  }

  private apply(change: Change<Row>): void {
    const key = this.options.key ?? 'id'
    if (change.eventType === 'DELETE') this.byKey.delete(change.old[key])
    else this.byKey.set(change.new[key], change.new)
    if (!this.loading) this.publish()
  }

  private publish(): void {
    this.current = [...this.byKey.values()]
    for (const listener of this.listeners) listener(this.current)
    const waiter = this.waiters.shift()
    if (waiter) waiter({ done: false, value: this.current })
    else this.unseen = true
  }
}

/** Opens a live query of `options.table` on `client` (see `RealtimeClient.liveQuery`). */
export function liveQuery<Database, S extends string, T extends TableName<Database, S>>(
  client: RealtimeClient<Database>,
  options: LiveQueryOptions<S, T>
): LiveQuery<RowOf<Database, S, T> & Record<string, unknown>> {
  return new LiveQuery(client as RealtimeClient<AnyDatabase>, options)
}
