// Test support: the shared end-to-end harness (tests/js/harness.mjs: the real server on a free
// port, with a throwaway Postgres) plus SDK clients over the `ws` package, a database type for
// the typed callbacks, and a proxy that can silence connections without closing them.

import { type Socket, connect as tcpConnect, createServer } from 'node:net'

import WebSocket from 'ws'

// @ts-ignore: the harness is plain JavaScript shared with tests/js (its node_modules come from `npm ci` there).
import * as harness from '../../tests/js/harness.mjs'
import { type ClientOptions, type RealtimeClient, createClient } from '../src/index.js'
import type { Vsn } from '../src/codec.js'

export interface Server {
  port: number
  httpUrl: string
  wsBase(path?: string): string
  token(claims?: Record<string, unknown>): string
  sql(text: string): Promise<string>
  crash(): Promise<void>
  restart(): Promise<void>
  stop(): Promise<unknown>
  log(): string
}

export const startServer = harness.startServer as (options?: { database?: boolean; env?: Record<string, string> }) => Promise<Server>
export const makeToken = harness.makeToken as (claims: Record<string, unknown>, options: { secret: string }) => string
export const VSNS: Vsn[] = ['1.0.0', '2.0.0']

/** The database the tests follow, in the shape `supabase gen types typescript` writes. */
export type Database = {
  public: {
    Tables: {
      todos: {
        Row: { id: number; title: string; done: boolean }
        Insert: { id?: number; title: string; done?: boolean }
        Update: { id?: number; title?: string; done?: boolean }
      }
      items: {
        Row: { id: number; grp: number }
        Insert: { id?: number; grp: number }
        Update: { id?: number; grp?: number }
      }
    }
    Views: { [_ in never]: never }
  }
}

/** Creates the tables of `Database` and publishes them. */
export async function createTables(server: Server): Promise<void> {
  await server.sql(`
    CREATE TABLE todos (id serial PRIMARY KEY, title text NOT NULL, done boolean NOT NULL DEFAULT false);
    CREATE TABLE items (id serial PRIMARY KEY, grp int NOT NULL);
    GRANT SELECT ON todos, items TO anon, authenticated, service_role;`)
  await server.sql(`DO $$ BEGIN
      CREATE PUBLICATION supabase_realtime; EXCEPTION WHEN duplicate_object THEN NULL; END $$;`)
  await server.sql(`ALTER PUBLICATION supabase_realtime ADD TABLE todos, items`)
}

const clients: RealtimeClient<Database>[] = []

/** An SDK client of `server` (or of a proxy's base URL) that reconnects quickly. */
export function client(
  server: { wsBase(path?: string): string; token(claims?: Record<string, unknown>): string },
  vsn: Vsn,
  options: ClientOptions = {}
): RealtimeClient<Database> {
  const c = createClient<Database>(server.wsBase(), {
    vsn,
    transport: WebSocket as unknown as ClientOptions['transport'],
    apikey: server.token({ role: 'service_role' }),
    timeoutMs: 5_000,
    backoff: { baseMs: 100, maxMs: 1_000 },
    ...options,
  })
  clients.push(c)
  return c
}

export function disconnectClients(): void {
  for (const c of clients.splice(0)) c.disconnect()
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Waits until `check()` holds, polling; fails with `what` after `ms`. */
export async function until(check: () => boolean, ms: number, what: string | (() => string)): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${typeof what === 'string' ? what : what()}`)
    await sleep(20)
  }
}

/**
 * A TCP proxy whose `silence()` makes every open connection drop what passes in both directions
 * while staying open: the way a connection dies behind a NAT or a sleeping laptop, with no close
 * ever arriving. New connections pass normally.
 */
export async function startSilencingProxy(server: Server) {
  const sockets = new Set<{ silenced: boolean; ends: Socket[] }>()
  let accepted = 0
  const proxy = createServer((downstream: Socket) => {
    accepted += 1
    const upstream = tcpConnect(server.port, '127.0.0.1')
    const link = { silenced: false, ends: [downstream, upstream] }
    sockets.add(link)
    const forward = (from: Socket, to: Socket) => {
      from.on('data', (chunk) => {
        if (!link.silenced) to.write(chunk)
      })
      from.on('error', () => to.destroy())
      from.on('close', () => {
        sockets.delete(link)
        to.destroy()
      })
    }
    forward(downstream, upstream)
    forward(upstream, downstream)
  })
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
  const port = (proxy.address() as { port: number }).port
  return {
    wsBase: (path = '/socket') => `ws://127.0.0.1:${port}${path}`,
    token: (claims?: Record<string, unknown>) => server.token(claims),
    /** How many connections the proxy has accepted. */
    get accepted() {
      return accepted
    },
    silence() {
      for (const link of sockets) link.silenced = true
    },
    close() {
      for (const link of sockets) for (const end of link.ends) end.destroy()
      return new Promise<void>((resolve) => proxy.close(() => resolve()))
    },
  }
}
