// Test harness: starts the `realtime` server binary on a free port, makes HS256 tokens, connects
// the published `@supabase/realtime-js` client, and waits on events with timeouts.
//
// It builds nothing: the binary comes from REALTIME_BIN, or
// $CARGO_TARGET_DIR/debug/realtime with CARGO_TARGET_DIR defaulting to ~/.cache/realtime-target.

import { spawn } from 'node:child_process'
import { createHmac, randomBytes } from 'node:crypto'
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect as tcpConnect, createServer } from 'node:net'
import { homedir, tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before } from 'node:test'

import { RealtimeClient } from '@supabase/realtime-js'
import WebSocket from 'ws'

import { freePort } from './ports.mjs'
import { POSTGRES_URL_ENV } from './postgres.mjs'

export { freePort }

/** Both serializers every test runs under. */
export const VSNS = ['1.0.0', '2.0.0']

/** How long any awaited event may take before the test fails. */
export const EVENT_TIMEOUT_MS = 5000

/**
 * How long a test waits to show that something does NOT arrive. It always starts after a later
 * message on the same socket has arrived, so the server had its chance to send the unwanted one.
 */
export const ABSENCE_WAIT_MS = 500

// The long waits, in one place. They are ceilings, not delays: each ends as soon as its event
// happens, so a generous value costs nothing when things work and only bounds a failure.

/** How long a server without a database may take to answer `/readyz`: a process start. */
export const READY_TIMEOUT_MS = 20000

/**
 * How long a server with a database may take to answer `/readyz`: with `realtime dev` that
 * includes creating and starting a cluster, then migrations and the replication slot, all of
 * which queue behind the other test files' servers on a 2-core machine.
 */
export const DATABASE_READY_TIMEOUT_MS = 60000

/**
 * How long a stop may take before it is forced: the server after SIGTERM (it closes its sockets
 * and the change stream), an orphaned Postgres after SIGQUIT, a dead server's WAL sender.
 */
export const STOP_GRACE_MS = 10000

/**
 * How long the resume test keeps its client offline: `RESUME_OFFLINE_MS`, 5 s unless set. The
 * outage only has to span commits and reconnect attempts; 30000 also outlasts realtime-js's 25 s
 * heartbeat, which makes the client notice the dead connection by itself (slower, so not the
 * default).
 */
export const RESUME_OFFLINE_MS = Number(process.env.RESUME_OFFLINE_MS ?? 5000)

/** Sub-topics the test policy opens to readers whose JWT `sub` is `user-allowed`. */
export const ALLOWED_PRIVATE_PREFIX = 'private-allowed'

/**
 * The policy file written into POLICIES_DIR: private channels whose sub-topic starts with
 * `private-allowed` may be read and written (broadcast and presence) by authenticated users whose
 * `sub` is `user-allowed`; everything else private is denied by default.
 */
export const TEST_POLICY = `# Test policy for the realtime-js end-to-end tests (format: policies/README.md).
[[channel]]
description = "Allowed test rooms: one user only"
topic = "${ALLOWED_PRIVATE_PREFIX}*"
actions = ["broadcast", "presence"]
when = "auth.role() = 'authenticated' AND auth.uid() = 'user-allowed'"
`

export function realtimeBinary() {
  if (process.env.REALTIME_BIN) return process.env.REALTIME_BIN
  const target = process.env.CARGO_TARGET_DIR || join(homedir(), '.cache', 'realtime-target')
  return join(target, 'debug', 'realtime')
}

/**
 * Starts `realtime serve` and waits until `GET /readyz` answers 200.
 * Returns `{ port, secret, wsUrl(path), httpUrl, token(claims), stop() }`.
 *
 * With `{ database: true }` the server gets a database of its own, and the result also has
 * `sql(text)` and `sqlSession()`, running SQL there as the superuser through `psql`:
 * - under `npm test` (run.mjs, which sets REALTIME_JS_POSTGRES_URL), a fresh database in the
 *   run's one cluster, with a replication slot named after it; `realtime serve` applies the
 *   migrations itself, and the roles `realtime dev` creates come from the cluster's template;
 * - otherwise (a file run alone with `node --test`), `realtime dev`, which starts a throwaway
 *   Postgres of its own (wal_level=logical).
 * `{ database: 'private' }` always takes the second way: for a test that stops or breaks Postgres
 * itself, which would hurt every other server of the run.
 * `policy` replaces the policy file's text; `env` adds settings.
 */
export async function startServer({ database = false, policy = TEST_POLICY, env: extraEnv = {} } = {}) {
  const bin = realtimeBinary()
  if (!existsSync(bin)) {
    throw new Error(
      `realtime binary not found at ${bin}: build it with \`cargo build -p realtime\` or set REALTIME_BIN`
    )
  }
  const port = await freePort()
  const secret = randomBytes(32).toString('hex')
  const policiesDir = mkdtempSync(join(tmpdir(), 'realtime-js-policies-'))
  writeFileSync(join(policiesDir, 'channels.toml'), policy)
  const clusterUrl = database === 'private' ? undefined : process.env[POSTGRES_URL_ENV]
  const shared = Boolean(database) && Boolean(clusterUrl)
  const embedded = Boolean(database) && !shared
  const pgDir = embedded ? mkdtempSync(join(tmpdir(), 'realtime-js-pg-')) : null
  // The postgres user runs the server and must be able to enter the folder.
  if (pgDir) chmodSync(pgDir, 0o755)
  const pgPort = embedded ? await freePort() : null
  let databaseName = null
  let databaseUrl = null
  if (shared) {
    // Also the slot's name: slots belong to the cluster, so each server needs its own.
    databaseName = uniqueTopic('js').replaceAll('-', '_')
    await psql(clusterUrl, `CREATE DATABASE ${databaseName}`)
    databaseUrl = withDatabase(clusterUrl, databaseName)
  } else if (embedded) {
    databaseUrl = `postgres://postgres:postgres@127.0.0.1:${pgPort}/postgres`
  }

  const env = { ...process.env }
  // The tests need the broadcast/presence-only server, whatever the caller's shell has set.
  for (const key of ['DATABASE_URL', 'DB_HOST', 'REALTIME_CONFIG', 'JWT_SECRET', 'JWT_JWKS', 'SLOT_NAME']) {
    delete env[key]
  }
  Object.assign(env, {
    PORT: String(port),
    API_JWT_SECRET: secret,
    CHANNEL_ERROR_BACKOFF_MS: '0',
    CONNECT_ERROR_BACKOFF_MS: '0',
    POLICIES_DIR: policiesDir,
    ...(shared ? { DATABASE_URL: databaseUrl, SLOT_NAME: databaseName } : {}),
    ...extraEnv,
  })
  const args = embedded
    ? ['dev', '--data-dir', join(pgDir, 'data'), '--pg-port', String(pgPort), '--fresh']
    : ['serve']
  // The server's log, kept for the failure message (tokens are never logged by the server).
  let log = ''
  const keep = (chunk) => {
    log = (log + chunk.toString()).slice(-20000)
  }
  let child
  let exited = null
  let exit
  const launch = (launchArgs, launchEnv) => {
    exited = null
    child = spawn(bin, launchArgs, { env: launchEnv, stdio: ['ignore', 'pipe', 'pipe'] })
    child.stdout.on('data', keep)
    child.stderr.on('data', keep)
    exit = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        exited = { code, signal }
        resolve(exited)
      })
    })
  }
  launch(args, env)
  const httpUrl = `http://127.0.0.1:${port}`
  const readyTimeout = database ? DATABASE_READY_TIMEOUT_MS : READY_TIMEOUT_MS
  await healthy(httpUrl, readyTimeout, () => exited, () => child, () => log)
  // After `crash()` and `restart()` the embedded Postgres outlives the server it came with.
  let postgresOrphaned = false
  const needDatabase = () => {
    if (!database) throw new Error('startServer({ database: true }) has no database')
  }

  return {
    port,
    secret,
    httpUrl,
    /** The WebSocket base URL realtime-js is given (it appends `/websocket`). */
    wsBase(path = '/socket') {
      return `ws://127.0.0.1:${port}${path}`
    },
    token(claims = {}, opts = {}) {
      return makeToken(claims, { secret, ...opts })
    },
    log: () => log,
    /** Runs SQL in the server's database (only with `{ database: true }`). */
    sql(text) {
      needDatabase()
      return psql(databaseUrl, text)
    },
    /**
     * One `psql` session kept open (only with `{ database: true }`): `run(text)` sends the
     * statement at once, without starting a process, and resolves when it is done. Statements
     * run one after another in the order sent. `close()` ends the session.
     */
    sqlSession() {
      needDatabase()
      return new SqlSession(databaseUrl)
    },
    /** Kills the server at once (SIGKILL, a crash); its Postgres keeps running. */
    async crash() {
      if (pgDir) postgresOrphaned = true
      child.kill('SIGKILL')
      await exit
    },
    /**
     * Starts the server again after `crash()`: same port, secret and slot, `realtime serve`
     * against the database left running. Resolves once `/readyz` answers 200.
     */
    async restart() {
      if (!exited) throw new Error('restart() needs a stopped server: call crash() first')
      launch(['serve'], databaseUrl ? { ...env, DATABASE_URL: databaseUrl } : env)
      await healthy(httpUrl, DATABASE_READY_TIMEOUT_MS, () => exited, () => child, () => log)
    },
    async stop() {
      if (!exited) {
        child.kill('SIGTERM')
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS)
        await exit
        clearTimeout(timer)
      }
      if (postgresOrphaned) await stopPostgres(join(pgDir, 'data'))
      if (shared) await dropDatabase(clusterUrl, databaseName)
      rmSync(policiesDir, { recursive: true, force: true })
      if (pgDir) rmSync(pgDir, { recursive: true, force: true })
      return exited
    },
  }
}

/**
 * A server for a whole test file: `const server = useServer({ database: true })` at the top of
 * the file starts it in a `before` hook and stops it in an `after` hook. The handle gets the
 * started server's fields and methods (`port`, `sql()`, `token()`, `crash()`, ...) once it has
 * started, so tests use it as `startServer`'s result.
 *
 * `options` are `startServer`'s, plus:
 * - `setup(server)`: runs in the same hook once the server is up (tables, policies). It cannot be a
 *   `before` hook of the file's own: node 20 starts top-level `before` hooks as they are
 *   registered, without waiting for the ones before them.
 * - `clients`: the array the file keeps its realtime-js clients in, disconnected before the server
 *   stops (top-level `after` hooks run one after another in the order registered, so a file's
 *   own `after` registered later would run too late).
 * `options` may also be a function returning them, called in the hook, for settings that must
 * wait for something else (another process's port).
 */
export function useServer(options = {}) {
  const handle = {}
  let server = null
  let clients = []
  before(async () => {
    const resolved = typeof options === 'function' ? await options() : options
    const { clients: fileClients = [], setup, ...serverOptions } = resolved
    clients = fileClients
    server = await startServer(serverOptions)
    Object.assign(handle, server)
    await setup?.(handle)
  })
  after(async () => {
    await disconnectAll(clients)
    await server?.stop()
  })
  return handle
}

/** `url` (a superuser URL of the run's cluster) with its database replaced by `name`. */
function withDatabase(url, name) {
  const parsed = new URL(url)
  parsed.pathname = `/${name}`
  return parsed.toString()
}

/**
 * Drops a server's database after the server has stopped. Its replication slot goes first, as
 * DROP DATABASE refuses while one is on it; before that, a WAL sender the stopped server left
 * behind is ended, as it would keep the slot in use.
 */
async function dropDatabase(clusterUrl, name) {
  const slots = `FROM pg_replication_slots WHERE database = '${name}'`
  const deadline = Date.now() + STOP_GRACE_MS
  while ((await psql(clusterUrl, `SELECT count(pg_terminate_backend(active_pid)) ${slots} AND active`)) !== '0') {
    if (Date.now() > deadline) throw new Error(`the replication slot of ${name} stayed in use`)
    await new Promise((r) => setTimeout(r, 50))
  }
  await psql(clusterUrl, `SELECT pg_drop_replication_slot(slot_name) ${slots}`)
  await psql(clusterUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
}

/**
 * Waits until `GET /readyz` answers 200 (with a database: the change stream is streaming, so a
 * row committed from now on is delivered); fails if the process exits or time runs out.
 */
async function healthy(httpUrl, timeoutMs, exited, child, log) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (exited()) {
      throw new Error(`realtime exited early (${JSON.stringify(exited())}):\n${log()}`)
    }
    try {
      const res = await fetch(`${httpUrl}/readyz`, { signal: AbortSignal.timeout(1000) })
      await res.body?.cancel()
      if (res.status === 200) return
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child().kill('SIGKILL')
      throw new Error(`realtime was not ready (/readyz) in time:\n${log()}`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** Stops a Postgres whose server process died without stopping it (immediate shutdown). */
async function stopPostgres(dataDir) {
  let pid
  try {
    pid = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0])
  } catch {
    return // not running
  }
  try {
    process.kill(pid, 'SIGQUIT')
  } catch {
    return // already gone
  }
  const deadline = Date.now() + STOP_GRACE_MS
  while (Date.now() < deadline) {
    try {
      process.kill(pid, 0)
    } catch {
      return
    }
    await new Promise((r) => setTimeout(r, 50))
  }
}

const PSQL_ARGS = ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1']

/** See `sqlSession()`: statements go to one `psql` over stdin, each followed by a marker. */
class SqlSession {
  constructor(url) {
    this.child = spawn('psql', [...PSQL_ARGS, '-d', url], {
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    this.pending = []
    this.sent = 0
    this.err = ''
    let out = ''
    this.child.stdout.on('data', (d) => {
      out += d
      let end
      while ((end = out.indexOf('\n')) >= 0) {
        const line = out.slice(0, end)
        out = out.slice(end + 1)
        if (line.startsWith('-- done ') && this.pending.length > 0) this.pending.shift().resolve()
      }
    })
    this.child.stderr.on('data', (d) => (this.err = (this.err + d).slice(-4000)))
    this.child.on('exit', (code) => {
      for (const p of this.pending.splice(0)) p.reject(new Error(`psql exited (${code}): ${this.err}`))
      this.exited = true
    })
  }

  run(text) {
    if (this.exited) return Promise.reject(new Error(`psql has exited: ${this.err}`))
    return new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject })
      this.sent += 1
      this.child.stdin.write(`${text};\n\\echo '-- done ${this.sent}'\n`)
    })
  }

  close() {
    if (this.exited) return Promise.resolve()
    const exited = new Promise((resolve) => this.child.on('exit', resolve))
    this.child.stdin.end()
    return exited
  }
}

/** Runs `psql` with the connection URL `url`; resolves with its output. */
function psql(url, text) {
  return new Promise((resolve, reject) => {
    const child = spawn(
      'psql',
      [...PSQL_ARGS, '-d', url, '-c', text],
      { stdio: ['ignore', 'pipe', 'pipe'] }
    )
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    child.on('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`psql: ${err}`))))
  })
}

const b64url = (value) =>
  Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')

/**
 * An HS256 JWT (or `alg: none` with `{ alg: 'none' }`). Claims default to an authenticated user
 * valid for an hour; `exp` may be overridden, or removed with `exp: undefined`.
 */
export function makeToken(claims = {}, { secret, alg = 'HS256' } = {}) {
  const now = Math.floor(Date.now() / 1000)
  const body = { role: 'authenticated', sub: 'user-1', iat: now, exp: now + 3600, ...claims }
  for (const key of Object.keys(body)) if (body[key] === undefined) delete body[key]
  const header = { alg, typ: 'JWT' }
  const signingInput = `${b64url(header)}.${b64url(body)}`
  if (alg === 'none') return `${signingInput}.`
  if (alg !== 'HS256') throw new Error(`makeToken: unsupported alg ${alg}`)
  const signature = createHmac('sha256', secret).update(signingInput).digest('base64url')
  return `${signingInput}.${signature}`
}

/**
 * A connected RealtimeClient. Every message the client decodes is recorded in `client.received`
 * (through the public `logger` option), so tests can check what reached the wire even after a
 * channel's callbacks are gone.
 */
export function connect(server, { vsn, token, path = '/socket', ...options } = {}) {
  const received = []
  const client = new RealtimeClient(server.wsBase(path), {
    transport: WebSocket,
    vsn,
    params: { apikey: token ?? server.token() },
    timeout: EVENT_TIMEOUT_MS,
    // Reconnect quickly in tests; the default backs off up to 10 s.
    reconnectAfterMs: () => 200,
    logger: (kind, msg, data) => {
      if (kind === 'receive') received.push({ msg, data })
    },
    ...options,
  })
  client.received = received
  client.connect()
  return client
}

/**
 * Subscribes and resolves with the first terminal status: `{ status: 'SUBSCRIBED' }` or
 * `{ status, err }` for CHANNEL_ERROR, TIMED_OUT or CLOSED. Rejects if none comes in time.
 */
export function subscribeStatus(channel, timeoutMs = EVENT_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      const client = channel.socket
      const seen = (client.received ?? []).slice(-5).map((m) => m.msg)
      reject(
        new Error(
          `no subscribe status for ${channel.topic} within ${timeoutMs} ms ` +
            `(socket ${client.connectionState()}, channel ${channel.state}, last received: ${JSON.stringify(seen)})`
        )
      )
    }, timeoutMs)
    let settled = false
    channel.subscribe((status, err) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve({ status, err })
    })
  })
}

/** Subscribes and fails unless the channel reaches SUBSCRIBED. */
export async function subscribed(channel, timeoutMs = EVENT_TIMEOUT_MS) {
  const { status, err } = await subscribeStatus(channel, timeoutMs)
  if (status !== 'SUBSCRIBED') {
    throw new Error(`${channel.topic}: expected SUBSCRIBED, got ${status}: ${err?.message ?? ''}`)
  }
  return channel
}

/**
 * Collects values (events from callbacks) and lets a test await the first one matching a
 * predicate, with a timeout.
 */
export class Inbox {
  constructor(label = 'inbox') {
    this.label = label
    this.items = []
    this.waiters = []
  }

  /** A callback to hand to `channel.on(...)`. */
  get push() {
    return (item) => {
      this.items.push(item)
      this.waiters = this.waiters.filter((w) => {
        if (w.predicate(item)) {
          clearTimeout(w.timer)
          w.resolve(item)
          return false
        }
        return true
      })
    }
  }

  /** The first item (already received or future) matching `predicate`. */
  next(predicate = () => true, timeoutMs = EVENT_TIMEOUT_MS, what = 'a matching item') {
    const found = this.items.find(predicate)
    if (found !== undefined) return Promise.resolve(found)
    return new Promise((resolve, reject) => {
      const waiter = { predicate, resolve }
      waiter.timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter)
        reject(
          new Error(
            `${this.label}: no ${what} within ${timeoutMs} ms; got ${JSON.stringify(
              this.items.map(describe)
            )}`
          )
        )
      }, timeoutMs)
      this.waiters.push(waiter)
    })
  }
}

function describe(item) {
  if (item instanceof ArrayBuffer) return `ArrayBuffer(${item.byteLength})`
  if (item && typeof item === 'object' && item.payload instanceof ArrayBuffer) {
    return { ...item, payload: `ArrayBuffer(${item.payload.byteLength})` }
  }
  return item
}

/**
 * Resolves with the first message in `client.received` (see `connect`) matching `predicate`,
 * already there or yet to come; rejects after `timeoutMs`. For server messages that the client
 * consumes without a callback, such as the `phx_close` that ends a left channel.
 */
export async function onWire(client, predicate, what = 'a matching message', timeoutMs = EVENT_TIMEOUT_MS) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const found = client.received.find(predicate)
    if (found !== undefined) return found
    if (Date.now() > deadline) {
      const seen = client.received.slice(-5).map((m) => m.msg)
      throw new Error(`no ${what} on the wire within ${timeoutMs} ms (last received: ${JSON.stringify(seen)})`)
    }
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/** Resolves after `ms`: only for showing that something does NOT arrive (see ABSENCE_WAIT_MS). */
export function absenceWindow(ms = ABSENCE_WAIT_MS) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** A unique sub-topic, so tests never see each other's messages. */
let topicCounter = 0
export function uniqueTopic(prefix = 'room') {
  topicCounter += 1
  return `${prefix}-${process.pid}-${topicCounter}-${randomBytes(3).toString('hex')}`
}

/** Disconnects every client, ignoring ones already closed. */
export async function disconnectAll(clients) {
  await Promise.all(
    clients.splice(0).map(async (client) => {
      try {
        await client.removeAllChannels()
      } catch {
        // already gone
      }
      try {
        await client.disconnect()
      } catch {
        // already gone
      }
    })
  )
}

/**
 * Attempts a raw WebSocket handshake and resolves with `{ status, body }` when the server refuses
 * it with an HTTP response, or `{ status: 101 }` when it upgrades.
 */
export function rawHandshake(server, query, path = '/socket/websocket') {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}${path}?${new URLSearchParams(query)}`)
    const timer = setTimeout(() => {
      ws.terminate()
      reject(new Error('handshake did not finish in time'))
    }, EVENT_TIMEOUT_MS)
    ws.on('unexpected-response', (_req, res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => (body += chunk))
      res.on('end', () => {
        clearTimeout(timer)
        ws.terminate()
        let json = null
        try {
          json = JSON.parse(body)
        } catch {
          // left as text
        }
        resolve({ status: res.statusCode, body, json })
      })
    })
    ws.on('open', () => {
      clearTimeout(timer)
      ws.close()
      resolve({ status: 101 })
    })
    ws.on('error', () => {
      // 'unexpected-response' handles refusals; other errors surface through the timeout.
    })
  })
}

/**
 * A TCP proxy in front of `server`, to take clients offline the way a lost network does:
 * `offline()` cuts every connection and refuses new ones until `online()`. The result stands in
 * for the server in `connect()` (its `wsBase` points at the proxy).
 */
export async function startProxy(server) {
  const port = await freePort()
  const sockets = new Set()
  let online = true
  const proxy = createServer((downstream) => {
    if (!online) {
      downstream.destroy()
      return
    }
    const upstream = tcpConnect(server.port, '127.0.0.1')
    for (const [a, b] of [
      [downstream, upstream],
      [upstream, downstream],
    ]) {
      sockets.add(a)
      a.pipe(b)
      a.on('error', () => b.destroy())
      a.on('close', () => {
        sockets.delete(a)
        b.destroy()
      })
    }
  })
  await new Promise((resolve, reject) => {
    proxy.once('error', reject)
    proxy.listen(port, '127.0.0.1', resolve)
  })
  return {
    ...server,
    wsBase(path = '/socket') {
      return `ws://127.0.0.1:${port}${path}`
    },
    offline() {
      online = false
      for (const socket of sockets) socket.destroy()
    },
    online() {
      online = true
    },
    close() {
      online = false
      for (const socket of sockets) socket.destroy()
      return new Promise((resolve) => proxy.close(resolve))
    },
  }
}
