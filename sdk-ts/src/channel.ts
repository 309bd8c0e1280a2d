// A channel: one topic, joined over the client's connection and rejoined by itself after every
// drop. It carries Postgres Changes (resumed from the last processed position, so the app never
// sees a gap or a repeat, or else one `onRefetch`), broadcasts and presence.
//
// `liveQuery` (live.ts) builds on the same pieces: the binding's `snapshot` option, `onChanges`
// for the rows and what follows, `onSnapshot` for where the rows end, and the position kept here.

import type { RealtimeClient } from './client.js'
import type { Frame, Message } from './codec.js'
import { alreadySeen, isPosition } from './position.js'
import { type PresenceChange, type PresenceMeta, type PresenceState, applyDiff, applyState } from './presence.js'
import { backoffDelay } from './timing.js'
import type {
  AnyDatabase,
  Change,
  ChangeEvent,
  ChangesFilter,
  Refetch,
  RowOf,
  SnapshotEvent,
  SnapshotOptions,
  TableName,
} from './types.js'

export interface ChannelOptions {
  /** A private channel: joining and sending are checked against the server's policies. */
  private?: boolean
  broadcast?: {
    /** Receive this client's own broadcasts too (default false). */
    self?: boolean
    /** `send` resolves once the server accepted the message (default false: once sent). */
    ack?: boolean
  }
  presence?: {
    /** The key this client's entries are tracked under (default: chosen by the server). */
    key?: string
  }
}

/** What `onStatus` reports. */
export type ChannelStatus =
  /** Joined; with Postgres Changes bindings, changes committed from now on arrive. */
  | 'subscribed'
  /** The join was refused, or the server closed the channel (for example an expired token). */
  | 'error'
  /** No answer to the join in time. */
  | 'timed_out'
  /** The connection dropped; the channel rejoins when it is back. */
  | 'disconnected'
  /** Left for good (`unsubscribe`). */
  | 'closed'

/** A broadcast as received. `payload` is bytes (`Uint8Array`) for binary broadcasts. */
export interface BroadcastMessage<P = unknown> {
  event: string
  payload: P
}

interface ChangeBinding {
  schema: string
  table: string
  event: ChangeEvent
  filter?: string
  snapshot?: true | SnapshotOptions
  callback: (change: any) => void
  /** The server's id for the binding, from the join reply. */
  id: number | null
}

interface PendingReply {
  resolve: (response: unknown) => void
  reject: (error: Error) => void
  timer: ReturnType<typeof setTimeout>
}

type State = 'idle' | 'joining' | 'joined' | 'leaving' | 'closed'

export class Channel<Database = AnyDatabase> {
  /** The wire topic, `realtime:<name>`. */
  readonly topic: string
  private state: State = 'idle'
  /** True from `subscribe()` to `unsubscribe()`: the channel rejoins whenever it can. */
  private wanted = false
  private joinRef: string | null = null
  private joinTimer: ReturnType<typeof setTimeout> | null = null
  private rejoinTimer: ReturnType<typeof setTimeout> | null = null
  private rejoinAttempt = 0
  private joinedBefore = false
  /** The position of the last change handed to the app: where a rejoin resumes from. */
  private lastPosition: string | null = null
  /** The rejoin in flight had no position to resume from: the app must refetch once joined. */
  private resumeWithoutPosition = false
  private readonly bindings: ChangeBinding[] = []
  private readonly broadcastListeners = new Map<string, Set<(message: BroadcastMessage<any>) => void>>()
  private readonly presenceListeners = new Set<(change: PresenceChange<any>) => void>()
  private readonly refetchListeners = new Set<(refetch: Refetch) => void>()
  private readonly statusListeners = new Set<(status: ChannelStatus, detail?: string) => void>()
  private readonly snapshotListeners = new Set<(event: SnapshotEvent) => void>()
  /** The join in flight asked for a snapshot (its rows have no position to resume from). */
  private readingSnapshot = false
  private presence: PresenceState<any> = {}
  private tracked: object | null = null
  private readonly pending = new Map<string, PendingReply>()
  private subscribeWaiters: { resolve: () => void; reject: (error: Error) => void }[] = []

  constructor(
    private readonly client: RealtimeClient<Database>,
    readonly name: string,
    private readonly options: ChannelOptions
  ) {
    this.topic = `realtime:${name}`
  }

  /**
   * Calls `callback` with every change of `table` (typed by the client's database type) that
   * this subscriber may see. Add bindings before `subscribe()`.
   */
  onChanges<S extends string = 'public', T extends TableName<Database, S> = TableName<Database, S>, E extends ChangeEvent = '*'>(
    filter: ChangesFilter<S, T, E>,
    callback: (change: Change<RowOf<Database, S, T>, E>) => void
  ): this {
    if (this.wanted) throw new Error('add Postgres Changes bindings before subscribe()')
    this.bindings.push({
      schema: filter.schema ?? 'public',
      table: filter.table,
      event: filter.event ?? '*',
      ...(filter.filter !== undefined ? { filter: filter.filter } : {}),
      ...(filter.snapshot !== undefined ? { snapshot: filter.snapshot } : {}),
      callback,
      id: null,
    })
    return this
  }

  /**
   * Calls `callback` when a snapshot starts (after a join that asked for one: the first, or a
   * rejoin with nothing to resume from) and when it is complete.
   */
  onSnapshot(callback: (event: SnapshotEvent) => void): this {
    this.snapshotListeners.add(callback)
    return this
  }

  /** Calls `callback` with broadcasts of `event` (`'*'`: every event). */
  onBroadcast<P = unknown>(event: string, callback: (message: BroadcastMessage<P>) => void): this {
    let set = this.broadcastListeners.get(event)
    if (!set) this.broadcastListeners.set(event, (set = new Set()))
    set.add(callback)
    return this
  }

  /** Calls `callback` with the presence state after every change, and what joined and left. */
  onPresence<T extends object = Record<string, unknown>>(callback: (change: PresenceChange<T>) => void): this {
    this.presenceListeners.add(callback)
    return this
  }

  /**
   * Calls `callback` when changes may have been missed and cannot be replayed: reload the data,
   * then keep applying changes. Without it, every missed change is replayed, each once.
   */
  onRefetch(callback: (refetch: Refetch) => void): this {
    this.refetchListeners.add(callback)
    return this
  }

  /** Calls `callback` with the channel's status changes. */
  onStatus(callback: (status: ChannelStatus, detail?: string) => void): this {
    this.statusListeners.add(callback)
    return this
  }

  /** The current presence state: presence key to the entries tracked under it. */
  presenceState<T extends object = Record<string, unknown>>(): PresenceState<T> {
    return this.presence as PresenceState<T>
  }

  /** True while joined. */
  get joined(): boolean {
    return this.state === 'joined'
  }

  /**
   * Joins, and keeps the channel joined until `unsubscribe()`. Resolves once joined: with
   * Postgres Changes bindings, every change committed from then on reaches the callbacks.
   * Rejects when the first attempt is refused or times out (the channel keeps retrying).
   */
  subscribe(): Promise<this> {
    this.wanted = true
    const joined = new Promise<this>((resolve, reject) => {
      if (this.state === 'joined') resolve(this)
      else this.subscribeWaiters.push({ resolve: () => resolve(this), reject })
    })
    this.client.connect()
    if (this.client.isOpen) void this.join()
    return joined
  }

  /** Leaves the channel for good. */
  async unsubscribe(): Promise<void> {
    this.wanted = false
    this.clearTimers()
    // A join in flight may still succeed on the server: leave that one too.
    if ((this.state === 'joined' || this.state === 'joining') && this.joinRef && this.client.isOpen) {
      this.state = 'leaving'
      try {
        await this.request('phx_leave', {})
      } catch {
        // the connection is gone: nothing left to leave
      }
    }
    this.state = 'closed'
    this.client.remove(this)
    this.failWaiters(new Error(`channel ${this.name} was unsubscribed`))
    this.emitStatus('closed')
  }

  /**
   * Broadcasts `payload` (JSON, or bytes as `Uint8Array`/`ArrayBuffer` on vsn 2.0.0) under
   * `event` to the channel's subscribers. With `broadcast.ack` it resolves once the server has
   * accepted the message and rejects with the server's reason (`payload_size_exceeded`).
   */
  async send(event: string, payload: unknown): Promise<void> {
    if (this.state !== 'joined') throw new Error(`channel ${this.name} is not joined`)
    const body = { type: 'broadcast', event, payload }
    if (this.options.broadcast?.ack) {
      await this.request('broadcast', body)
      return
    }
    if (!this.client.push({ join_ref: this.joinRef, ref: this.client.makeRef(), topic: this.topic, event: 'broadcast', payload: body })) {
      throw new Error('the connection is not open')
    }
  }

  /**
   * Tracks `meta` as this client's presence on the channel. It is tracked again after every
   * rejoin (presence lives in the server's memory and ends with the connection).
   */
  async track(meta: object): Promise<void> {
    this.tracked = meta
    if (this.state === 'joined') await this.request('presence', { type: 'presence', event: 'track', payload: meta })
  }

  /** Stops tracking this client's presence. */
  async untrack(): Promise<void> {
    this.tracked = null
    if (this.state === 'joined') await this.request('presence', { type: 'presence', event: 'untrack' })
  }

  // ---- called by the client ----

  /** The connection is open: join if wanted. */
  connectionOpened(): void {
    if (this.wanted && this.state !== 'joined') void this.join()
  }

  /** The connection dropped: everything in flight is lost, the rejoin comes with the next one. */
  connectionLost(): void {
    this.clearTimers()
    for (const [ref, reply] of this.pending) {
      clearTimeout(reply.timer)
      reply.reject(new Error('the connection was lost'))
      this.pending.delete(ref)
    }
    if (this.state === 'joined' || this.state === 'joining') {
      this.state = 'idle'
      this.emitStatus('disconnected')
    }
  }

  /** Sends a refreshed access token to the server. */
  sendToken(token: string): void {
    if (this.state !== 'joined') return
    this.client.push({
      join_ref: this.joinRef,
      ref: this.client.makeRef(),
      topic: this.topic,
      event: 'access_token',
      payload: { access_token: token },
    })
  }

  /** The client is shutting down. */
  detach(): void {
    this.wanted = false
    this.connectionLost()
    this.state = 'closed'
    this.failWaiters(new Error('the client disconnected'))
  }

  /** A frame for this topic. */
  receive(frame: Frame): void {
    if (frame.kind === 'user_broadcast') {
      this.deliverBroadcast(frame.event, frame.payload)
      return
    }
    switch (frame.event) {
      case 'phx_reply':
        this.reply(frame)
        return
      case 'postgres_changes':
        this.change(frame.payload)
        return
      case 'system':
        this.system(frame.payload)
        return
      case 'broadcast': {
        const p = frame.payload as { event?: unknown; payload?: unknown } | null
        if (p && typeof p.event === 'string') this.deliverBroadcast(p.event, p.payload)
        return
      }
      case 'presence_state':
        this.applyPresence(applyState(this.presence, frame.payload))
        return
      case 'presence_diff':
        this.applyPresence(applyDiff(this.presence, frame.payload))
        return
      case 'phx_close':
      case 'phx_error':
        this.closedByServer(frame, frame.event)
        return
    }
  }

  // ---- joining ----

  private async join(): Promise<void> {
    if (!this.wanted || this.state === 'joining' || this.state === 'joined') return
    this.state = 'joining'
    let token: string | null = null
    try {
      token = await this.client.currentToken()
    } catch {
      // The token source failed: join with the API key alone; the server decides.
    }
    if (!this.wanted || this.state !== 'joining' || !this.client.isOpen) {
      if (this.state === 'joining') this.state = 'idle'
      return
    }
    const ref = this.client.makeRef()
    this.joinRef = ref
    // Resume from the last change handed to the app. A rejoin with no position cannot resume:
    // changes committed while disconnected may be lost, so the app is told to refetch.
    // With nothing to resume from, bindings that asked for a snapshot get a new one: the app
    // starts over from its rows instead of refetching.
    const snapshot = this.lastPosition === null && this.bindings.some((b) => b.snapshot !== undefined)
    this.readingSnapshot = snapshot
    const changesOptions = this.lastPosition ? { since: this.lastPosition } : { wait: true }
    this.resumeWithoutPosition =
      this.joinedBefore && this.bindings.length > 0 && this.lastPosition === null && !snapshot
    const config: Record<string, unknown> = {
      broadcast: { ack: this.options.broadcast?.ack ?? false, self: this.options.broadcast?.self ?? false },
      presence: { key: this.options.presence?.key ?? '', enabled: this.presenceListeners.size > 0 || this.tracked !== null },
      postgres_changes: this.bindings.map((b) => ({
        event: b.event,
        schema: b.schema,
        table: b.table,
        ...(b.filter !== undefined ? { filter: b.filter } : {}),
        ...(snapshot && b.snapshot !== undefined ? { snapshot: b.snapshot } : {}),
      })),
      private: this.options.private ?? false,
    }
    if (this.bindings.length > 0) config.postgres_changes_options = changesOptions
    const payload = { config, ...(token ? { access_token: token } : {}) }
    this.client.push({ join_ref: ref, ref, topic: this.topic, event: 'phx_join', payload })
    this.joinTimer = setTimeout(() => this.joinFailed('timed_out', 'no reply to the join'), this.client.timeoutMs)
  }

  private joinSucceeded(response: unknown): void {
    if (this.joinTimer) clearTimeout(this.joinTimer)
    this.joinTimer = null
    this.state = 'joined'
    this.rejoinAttempt = 0
    this.client.joined()
    const ids = ((response as { postgres_changes?: { id?: unknown }[] } | null)?.postgres_changes ?? []).map((e) => e?.id)
    this.bindings.forEach((binding, i) => {
      const id = ids[i]
      binding.id = typeof id === 'number' ? id : null
    })
    this.joinedBefore = true
    if (this.readingSnapshot) this.emitSnapshot({ phase: 'start' })
    this.emitStatus('subscribed')
    if (this.tracked) {
      void this.request('presence', { type: 'presence', event: 'track', payload: this.tracked }).catch(() => {})
    }
    if (this.resumeWithoutPosition) {
      this.resumeWithoutPosition = false
      this.emitRefetch({
        reason: 'no_position',
        message: 'The connection dropped before the first change arrived, so there is no position to resume from: refetch the data; changes from here on are delivered live.',
      })
    }
    const waiters = this.subscribeWaiters
    this.subscribeWaiters = []
    for (const w of waiters) w.resolve()
  }

  private joinFailed(status: 'error' | 'timed_out', detail: string): void {
    if (this.joinTimer) clearTimeout(this.joinTimer)
    this.joinTimer = null
    this.state = 'idle'
    this.emitStatus(status, detail)
    this.failWaiters(new Error(`joining ${this.name} failed: ${detail}`))
    this.scheduleRejoin()
  }

  /** The server closed the channel (an expired token, a rate limit, a crash): join again. */
  private closedByServer(frame: Message, event: string): void {
    const current = frame.join_ref ?? frame.ref
    if (current !== null && current !== this.joinRef) return
    if (this.state === 'leaving' || this.state === 'closed') return
    if (this.state === 'joining') {
      this.joinFailed('error', event)
      return
    }
    this.state = 'idle'
    this.emitStatus('error', event)
    this.scheduleRejoin()
  }

  private scheduleRejoin(): void {
    if (!this.wanted || this.rejoinTimer) return
    const delay = backoffDelay(this.rejoinAttempt, this.client.backoff)
    this.rejoinAttempt += 1
    this.rejoinTimer = setTimeout(() => {
      this.rejoinTimer = null
      if (this.client.isOpen) void this.join()
    }, delay)
  }

  // ---- replies ----

  /** Sends `event` and resolves with the server's reply, or rejects on an error reply. */
  private request(event: string, payload: unknown): Promise<unknown> {
    const ref = this.client.makeRef()
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(ref)
        reject(new Error(`no reply to ${event} on ${this.name} within ${this.client.timeoutMs} ms`))
      }, this.client.timeoutMs)
      this.pending.set(ref, { resolve, reject, timer })
      if (!this.client.push({ join_ref: this.joinRef, ref, topic: this.topic, event, payload })) {
        clearTimeout(timer)
        this.pending.delete(ref)
        reject(new Error('the connection is not open'))
      }
    })
  }

  private reply(frame: Message): void {
    const { status, response } = (frame.payload ?? {}) as { status?: unknown; response?: unknown }
    if (frame.ref !== null && frame.ref === this.joinRef && this.state === 'joining') {
      if (status === 'ok') this.joinSucceeded(response)
      else this.joinFailed('error', reasonOf(response))
      return
    }
    const pending = frame.ref === null ? undefined : this.pending.get(frame.ref)
    if (!pending || frame.ref === null) return
    this.pending.delete(frame.ref)
    clearTimeout(pending.timer)
    if (status === 'ok') pending.resolve(response)
    else pending.reject(new Error(reasonOf(response)))
  }

  // ---- what arrives ----

  private change(payload: unknown): void {
    const p = payload as { ids?: unknown; position?: unknown; snapshot?: unknown; data?: Record<string, any> } | null
    const data = p?.data
    if (!data) return
    const snapshotRow = p.snapshot === true
    const position = typeof p.position === 'string' ? p.position : typeof data.position === 'string' ? data.position : ''
    // A replay that overlaps what was already handed over (it should not, but a client that
    // resumes must never apply a change twice).
    if (!snapshotRow && alreadySeen(position, this.lastPosition)) return
    const change = {
      schema: data.schema,
      table: data.table,
      commit_timestamp: data.commit_timestamp,
      eventType: data.type,
      new: data.record ?? {},
      old: data.old_record ?? {},
      position,
      columns: data.columns ?? [],
      ...(data.unchanged_toast ? { unchanged_toast: data.unchanged_toast } : {}),
      ...(snapshotRow ? { snapshot: true } : {}),
    }
    const ids = new Set(Array.isArray(p.ids) ? p.ids : [])
    for (const binding of this.bindings) {
      if (binding.id !== null && ids.has(binding.id)) safely(() => binding.callback(change))
    }
    // A snapshot row is not a position of the stream: the end of the snapshot names one.
    if (!snapshotRow && isPosition(position)) this.lastPosition = position
  }

  private system(payload: unknown): void {
    const p = (payload ?? {}) as Record<string, unknown>
    if (p.refetch === true) {
      // Resume from the refetch point when the server names one; else from the next change.
      this.lastPosition = isPosition(p.position) ? p.position : null
      this.emitRefetch({
        reason: typeof p.reason === 'string' ? p.reason : 'unknown',
        message: typeof p.message === 'string' ? p.message : '',
        ...(Array.isArray(p.tables) ? { tables: p.tables.filter((t): t is string => typeof t === 'string') } : {}),
      })
      return
    }
    if (p.snapshot === 'complete') {
      this.readingSnapshot = false
      if (isPosition(p.position)) this.lastPosition = p.position
      this.emitSnapshot({ phase: 'complete', rows: typeof p.rows === 'number' ? p.rows : 0 })
      return
    }
    if (p.snapshot === 'refused') {
      // The rows cannot be complete: the app reloads, as after any refetch.
      this.readingSnapshot = false
      this.emitRefetch({ reason: 'snapshot_refused', message: typeof p.message === 'string' ? p.message : '' })
      return
    }
    // "Subscribed to PostgreSQL" names the server's position: a drop before the first change
    // can then resume from it. Not while a snapshot is read (its end names the position).
    if (p.status === 'ok' && this.lastPosition === null && !this.readingSnapshot && isPosition(p.position)) {
      this.lastPosition = p.position
      return
    }
    if (p.status === 'error' && typeof p.message === 'string') this.emitStatus('error', p.message)
  }

  private emitSnapshot(event: SnapshotEvent): void {
    for (const listener of this.snapshotListeners) safely(() => listener(event))
  }

  private deliverBroadcast(event: string, payload: unknown): void {
    const message = { event, payload }
    for (const key of [event, '*']) {
      for (const listener of this.broadcastListeners.get(key) ?? []) safely(() => listener(message))
    }
  }

  private applyPresence(change: PresenceChange<any>): void {
    this.presence = change.state
    for (const listener of this.presenceListeners) safely(() => listener(change))
  }

  private emitRefetch(refetch: Refetch): void {
    for (const listener of this.refetchListeners) safely(() => listener(refetch))
  }

  private emitStatus(status: ChannelStatus, detail?: string): void {
    for (const listener of this.statusListeners) safely(() => listener(status, detail))
  }

  private failWaiters(error: Error): void {
    const waiters = this.subscribeWaiters
    this.subscribeWaiters = []
    for (const w of waiters) w.reject(error)
  }

  private clearTimers(): void {
    if (this.joinTimer) clearTimeout(this.joinTimer)
    if (this.rejoinTimer) clearTimeout(this.rejoinTimer)
    this.joinTimer = null
    this.rejoinTimer = null
  }
}

function reasonOf(response: unknown): string {
  if (typeof response === 'string') return response
  const reason = (response as { reason?: unknown } | null)?.reason
  return typeof reason === 'string' ? reason : JSON.stringify(response ?? null)
}

/** Runs an app callback; an exception there must not break delivery to the others. */
function safely(run: () => void): void {
  try {
    run()
  } catch (error) {
    const report = (globalThis as { reportError?: (e: unknown) => void }).reportError
    if (report) report(error)
    else console.error('realtime: a callback threw', error)
  }
}

export type { PresenceMeta }
