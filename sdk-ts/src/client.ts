// The connection: one WebSocket shared by every channel of a client, kept alive by heartbeats,
// reopened with jittered backoff whenever it drops, and fed fresh access tokens.
//
// Data flows one way: frames come in, are decoded (codec.ts) and handed to the channel of their
// topic; channels send through `push`. The client never interprets channel payloads itself.

import { Channel, type ChannelOptions } from './channel.js'
import { type Message, type Vsn, decodeFrame, encodeClient } from './codec.js'
import { type BackoffOptions, DEFAULT_BACKOFF, backoffDelay, heartbeatAction, refreshDelay } from './timing.js'
import { type LiveQuery, type LiveQueryOptions, liveQuery } from './live.js'
import type { AnyDatabase, RowOf, TableName } from './types.js'

/** The parts of the standard WebSocket the client uses (browsers' and the `ws` package's). */
export interface WebSocketLike {
  binaryType: string
  readyState: number
  send(data: string | ArrayBufferLike | Uint8Array): void
  close(code?: number, reason?: string): void
  onopen: ((event: unknown) => void) | null
  onclose: ((event: { code: number; reason: string }) => void) | null
  onerror: ((event: unknown) => void) | null
  onmessage: ((event: { data: unknown }) => void) | null
}

export type WebSocketConstructor = new (url: string) => WebSocketLike

export interface ClientOptions {
  /**
   * The API key sent at the handshake (`apikey`). When absent, the current access token is
   * sent instead.
   */
  apikey?: string
  /**
   * Returns the user's current access token (a JWT). Called before every connection and join,
   * and again before the token expires: the fresh token is sent to every joined channel
   * (`access_token`), so channels outlive the tokens they were joined with.
   */
  accessToken?: () => Promise<string | null> | string | null
  /** `2.0.0` (default: binary broadcasts) or `1.0.0` (JSON only). */
  vsn?: Vsn
  /** The WebSocket implementation; defaults to the global `WebSocket` (browsers, Node 22+). */
  transport?: WebSocketConstructor
  /** Extra query parameters of the WebSocket URL. */
  params?: Record<string, string>
  /** Heartbeat period (default 25 s; the server closes sockets idle for 60 s). */
  heartbeatIntervalMs?: number
  /** How long a heartbeat sent after suspended timers may go unanswered (default 5 s). */
  probeTimeoutMs?: number
  /** How long a join or an acknowledged push may take (default 10 s). */
  timeoutMs?: number
  /** Reconnect delays (default 0.5 s growing to 10 s, jittered). */
  backoff?: BackoffOptions
}

/** Connection states, as reported to `onConnection`. */
export type ConnectionState = 'connecting' | 'open' | 'closed'

const OPEN = 1

/**
 * A realtime client, typed by the database it follows (`createClient<Database>(...)`).
 * Channels are made with `channel(name)`; the connection opens with the first subscription.
 */
export class RealtimeClient<Database = AnyDatabase> {
  readonly vsn: Vsn
  readonly timeoutMs: number
  readonly backoff: BackoffOptions
  private readonly endpoint: string
  private readonly options: ClientOptions
  private readonly heartbeatIntervalMs: number
  private readonly probeTimeoutMs: number
  private socket: WebSocketLike | null = null
  private state: ConnectionState = 'closed'
  /** False after `disconnect()`: no reconnects. */
  private wanted = false
  private refCounter = 0
  private reconnectAttempt = 0
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null
  private heartbeatTimer: ReturnType<typeof setInterval> | null = null
  private probeTimer: ReturnType<typeof setTimeout> | null = null
  private lastTickAt = 0
  private pendingHeartbeat: string | null = null
  private refreshTimer: ReturnType<typeof setTimeout> | null = null
  private token: string | null = null
  private readonly channels = new Set<Channel<Database>>()
  private readonly connectionListeners = new Set<(state: ConnectionState) => void>()
  private readonly Transport: WebSocketConstructor
  private detachWakeListeners: (() => void) | null = null

  /**
   * `endpoint` is the WebSocket base URL, such as `ws://localhost:4000/socket` or
   * `wss://host/realtime/v1`; `/websocket` and the query are appended.
   */
  constructor(endpoint: string, options: ClientOptions = {}) {
    this.endpoint = endpoint.replace(/\/+$/, '')
    this.options = options
    this.vsn = options.vsn ?? '2.0.0'
    this.timeoutMs = options.timeoutMs ?? 10_000
    this.backoff = options.backoff ?? DEFAULT_BACKOFF
    this.heartbeatIntervalMs = options.heartbeatIntervalMs ?? 25_000
    this.probeTimeoutMs = Math.min(options.probeTimeoutMs ?? 5_000, this.heartbeatIntervalMs)
    const Transport = options.transport ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket
    if (!Transport) {
      throw new Error('no WebSocket implementation: pass `transport` (for example the `ws` package) on Node before 22')
    }
    this.Transport = Transport
  }

  /** A channel on topic `realtime:<name>`. Add bindings, then `subscribe()`. */
  channel(name: string, options: ChannelOptions = {}): Channel<Database> {
    const channel = new Channel<Database>(this, name, options)
    this.channels.add(channel)
    return channel
  }

  /**
   * The rows of `options.table` this subscriber may see, kept current: one join asks for a
   * snapshot of them and the changes after it. See `LiveQuery`.
   */
  liveQuery<S extends string = 'public', T extends TableName<Database, S> = TableName<Database, S>>(
    options: LiveQueryOptions<S, T>
  ): LiveQuery<RowOf<Database, S, T> & Record<string, unknown>> {
    return liveQuery(this, options)
  }

  /** Called with every change of the connection's state. Returns a function that stops it. */
  onConnection(listener: (state: ConnectionState) => void): () => void {
    this.connectionListeners.add(listener)
    return () => this.connectionListeners.delete(listener)
  }

  get connectionState(): ConnectionState {
    return this.state
  }

  /** Opens the connection (channels call this when they subscribe). */
  connect(): void {
    this.wanted = true
    this.detachWakeListeners ??= this.listenForWake()
    if (this.socket || this.reconnectTimer || this.state === 'connecting') return
    void this.open()
  }

  /** Closes the connection and every channel for good. */
  disconnect(): void {
    this.wanted = false
    for (const channel of this.channels) channel.detach()
    this.channels.clear()
    this.clearTimers()
    this.detachWakeListeners?.()
    this.detachWakeListeners = null
    const socket = this.socket
    this.socket = null
    if (socket) {
      socket.onclose = null
      socket.onmessage = null
      socket.onerror = null
      socket.close(1000, 'client disconnect')
    }
    this.setState('closed')
  }

  /**
   * Fetches a fresh token (from `accessToken`, or takes `token`) and sends it to every joined
   * channel. Runs by itself before each token expires.
   */
  async setAuth(token?: string | null): Promise<void> {
    const fresh = token !== undefined ? token : await this.currentToken()
    this.token = fresh
    this.scheduleRefresh()
    if (fresh === null) return
    for (const channel of this.channels) channel.sendToken(fresh)
  }

  /** The token for a handshake or a join: asks `accessToken` when given. */
  async currentToken(): Promise<string | null> {
    if (this.options.accessToken) {
      this.token = (await this.options.accessToken()) ?? null
      this.scheduleRefresh()
    }
    return this.token
  }

  /** A new message ref. */
  makeRef(): string {
    this.refCounter += 1
    return String(this.refCounter)
  }

  /** True when frames can be sent now. */
  get isOpen(): boolean {
    return this.state === 'open' && this.socket?.readyState === OPEN
  }

  /** Sends a message now; false when the connection is not open (the channel retries on rejoin). */
  push(message: Message): boolean {
    if (!this.isOpen || !this.socket) return false
    this.socket.send(encodeClient(this.vsn, message))
    return true
  }

  /** Forgets a channel that left for good. */
  remove(channel: Channel<Database>): void {
    this.channels.delete(channel)
  }

  /** Drops the current connection (when it seems dead) and reconnects with backoff. */
  reconnect(reason: string): void {
    const socket = this.socket
    if (!socket) return
    this.dropped(reason)
    socket.onclose = null
    socket.onmessage = null
    socket.onerror = null
    try {
      socket.close(4000, reason)
    } catch {
      // already closing
    }
  }

  private async open(): Promise<void> {
    this.setState('connecting')
    let token: string | null
    try {
      token = await this.currentToken()
    } catch {
      // The app's token source failed: try again later, as for a failed connection.
      this.setState('closed')
      this.scheduleReconnect()
      return
    }
    if (!this.wanted || this.socket) return
    const query = new URLSearchParams({ ...this.options.params, vsn: this.vsn })
    const apikey = this.options.apikey ?? token
    if (apikey) query.set('apikey', apikey)
    const socket = new this.Transport(`${this.endpoint}/websocket?${query}`)
    socket.binaryType = 'arraybuffer'
    this.socket = socket
    socket.onopen = () => {
      if (this.socket !== socket) return
      this.setState('open')
      this.startHeartbeat()
      for (const channel of this.channels) channel.connectionOpened()
    }
    socket.onmessage = (event) => {
      if (this.socket === socket) this.receive(event.data)
    }
    socket.onclose = (event) => {
      if (this.socket === socket) this.dropped(`closed (${event.code})`)
    }
    socket.onerror = () => {
      // A close event follows every error; the reconnect happens there.
    }
  }

  /** The connection is gone: tell the channels and come back after a backoff delay. */
  private dropped(_reason: string): void {
    this.socket = null
    this.stopHeartbeat()
    this.setState('closed')
    for (const channel of this.channels) channel.connectionLost()
    if (this.wanted) this.scheduleReconnect()
  }

  private scheduleReconnect(): void {
    if (this.reconnectTimer) return
    const delay = backoffDelay(this.reconnectAttempt, this.backoff)
    this.reconnectAttempt += 1
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null
      if (this.wanted && !this.socket) void this.open()
    }, delay)
  }

  /** A channel joined: the connection works, so the next drop starts the backoff over. */
  joined(): void {
    this.reconnectAttempt = 0
  }

  private receive(data: unknown): void {
    let frame
    try {
      const raw = typeof data === 'string' ? data : data instanceof ArrayBuffer || data instanceof Uint8Array ? data : null
      if (raw === null) return
      frame = decodeFrame(this.vsn, raw, 'server')
    } catch {
      // A frame we cannot read is dropped; the connection stays up (as the server does).
      return
    }
    if (frame.kind === 'message' && frame.topic === 'phoenix') {
      if (frame.event === 'phx_reply' && frame.ref !== null && frame.ref === this.pendingHeartbeat) {
        this.pendingHeartbeat = null
        if (this.probeTimer) clearTimeout(this.probeTimer)
        this.probeTimer = null
      }
      return
    }
    for (const channel of this.channels) {
      if (channel.topic === frame.topic) channel.receive(frame)
    }
  }

  private startHeartbeat(): void {
    this.stopHeartbeat()
    this.lastTickAt = Date.now()
    this.heartbeatTimer = setInterval(() => this.heartbeatTick(), this.heartbeatIntervalMs)
  }

  private stopHeartbeat(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer)
    if (this.probeTimer) clearTimeout(this.probeTimer)
    this.heartbeatTimer = null
    this.probeTimer = null
    this.pendingHeartbeat = null
  }

  private heartbeatTick(): void {
    const now = Date.now()
    const action = heartbeatAction(now, this.lastTickAt, this.heartbeatIntervalMs, this.pendingHeartbeat !== null)
    this.lastTickAt = now
    if (action === 'reconnect') {
      this.reconnect('heartbeat timeout')
    } else if (action === 'probe') {
      this.probe()
    } else {
      this.sendHeartbeat()
    }
  }

  /** Sends a heartbeat that must be answered within the probe timeout, else reconnects. */
  probe(): void {
    if (!this.isOpen || this.probeTimer) return
    this.sendHeartbeat()
    this.probeTimer = setTimeout(() => {
      this.probeTimer = null
      if (this.pendingHeartbeat !== null) this.reconnect('heartbeat timeout after suspension')
    }, this.probeTimeoutMs)
  }

  private sendHeartbeat(): void {
    const ref = this.makeRef()
    this.pendingHeartbeat = ref
    this.push({ join_ref: null, ref, topic: 'phoenix', event: 'heartbeat', payload: {} })
  }

  /**
   * In a browser, a tab brought back to the foreground or a network that comes back may hold a
   * connection that died silently while timers were throttled: check it at once.
   */
  private listenForWake(): () => void {
    const g = globalThis as {
      document?: { visibilityState?: string; addEventListener?: Function; removeEventListener?: Function }
      addEventListener?: Function
      removeEventListener?: Function
    }
    const onVisible = () => {
      if (g.document?.visibilityState === 'visible') this.probe()
    }
    const onOnline = () => this.probe()
    g.document?.addEventListener?.('visibilitychange', onVisible)
    if (g.document) g.addEventListener?.('online', onOnline)
    return () => {
      g.document?.removeEventListener?.('visibilitychange', onVisible)
      if (g.document) g.removeEventListener?.('online', onOnline)
    }
  }

  private scheduleRefresh(): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer)
    this.refreshTimer = null
    if (!this.options.accessToken || !this.token || !this.wanted) return
    const delay = refreshDelay(this.token, Date.now())
    if (delay === null) return
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = null
      this.setAuth().catch(() => {
        // The token source failed: try again shortly, the old token is still valid a while.
        this.refreshTimer = setTimeout(() => void this.setAuth().catch(() => {}), 1_000)
      })
    }, delay)
  }

  private clearTimers(): void {
    this.stopHeartbeat()
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer)
    if (this.refreshTimer) clearTimeout(this.refreshTimer)
    this.reconnectTimer = null
    this.refreshTimer = null
  }

  private setState(state: ConnectionState): void {
    if (this.state === state) return
    this.state = state
    for (const listener of this.connectionListeners) listener(state)
  }
}

/** Makes a client typed by `Database` (see `RealtimeClient`). */
export function createClient<Database = AnyDatabase>(endpoint: string, options: ClientOptions = {}): RealtimeClient<Database> {
  return new RealtimeClient<Database>(endpoint, options)
}
