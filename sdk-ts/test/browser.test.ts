// The built SDK (dist/) in Chromium: a page served from localhost loads it as an ES module,
// subscribes to Postgres Changes and a broadcast event, and receives both from the real server.
// Chromium is Debian's (`.ci/setup` installs it), driven by playwright-core; without it the test
// fails rather than skips.

import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { type Server as HttpServer, createServer } from 'node:http'
import { join, normalize } from 'node:path'
import { fileURLToPath } from 'node:url'

import { type Browser, chromium } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'

import { type Server, client, createTables, disconnectClients, startServer } from './support.js'

const root = fileURLToPath(new URL('..', import.meta.url))

function findChromium(): string | null {
  try {
    return execFileSync('sh', ['-c', 'command -v chromium || command -v chromium-browser'], { encoding: 'utf8' }).trim() || null
  } catch {
    return null
  }
}

const executablePath = findChromium()

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>realtime sdk</title>
<script type="module">
  import { createClient } from '/dist/index.js'
  const params = new URLSearchParams(location.search)
  window.received = []
  const client = createClient(params.get('ws'), { apikey: params.get('key') })
  const channel = client
    .channel(params.get('room'))
    .onChanges({ table: 'todos', event: 'INSERT' }, (change) => {
      window.received.push({ kind: 'change', title: change.new.title, position: change.position })
    })
    .onBroadcast('hello', (message) => {
      const payload = message.payload instanceof Uint8Array ? { bytes: [...message.payload] } : message.payload
      window.received.push({ kind: 'broadcast', payload })
    })
  channel.subscribe().then(() => { window.subscribed = true }, (e) => { window.failed = String(e) })
</script>`

/** Serves the page and the built SDK from localhost. */
function serve(): Promise<{ http: HttpServer; url: string }> {
  const http = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE)
      return
    }
    const file = normalize(join(root, path))
    if (!path.startsWith('/dist/') || !file.startsWith(join(root, 'dist')) || !existsSync(file)) {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, { 'content-type': 'text/javascript' }).end(readFileSync(file))
  })
  return new Promise((resolve) =>
    http.listen(0, '127.0.0.1', () => resolve({ http, url: `http://127.0.0.1:${(http.address() as { port: number }).port}` }))
  )
}

describe('in Chromium', () => {
  let server: Server
  let browser: Browser
  let page: { http: HttpServer; url: string }
  beforeAll(async () => {
    // CI installs Chromium (`.ci/setup`): a missing browser is a failure, not a skipped test.
    if (!executablePath) throw new Error('no chromium on PATH: `.ci/setup` installs it (apt-get install -y chromium)')
    if (!existsSync(join(root, 'dist', 'index.js'))) throw new Error('dist/ is missing: run `npm run build` first')
    ;[server, page] = await Promise.all([startServer({ database: true }), serve()])
    await createTables(server)
    browser = await chromium.launch({
      executablePath: executablePath as string,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    })
  })
  afterAll(async () => {
    disconnectClients()
    await browser?.close()
    page?.http.close()
    await server?.stop()
  })

  test('the built SDK receives a Postgres change and broadcasts (JSON and binary) in the page', async () => {
    const tab = await browser.newPage()
    const errors: string[] = []
    tab.on('pageerror', (e) => errors.push(String(e)))
    const room = `browser-${process.pid}`
    const query = new URLSearchParams({ ws: server.wsBase(), key: server.token({ role: 'service_role' }), room })
    await tab.goto(`${page.url}/?${query}`)
    await tab.waitForFunction(() => (window as any).subscribed === true || (window as any).failed, null, { timeout: 10_000 })
    expect(await tab.evaluate(() => (window as any).failed ?? null)).toBeNull()

    await server.sql(`INSERT INTO todos (title) VALUES ('seen in the browser')`)
    const sender = client(server, '2.0.0').channel(room)
    await sender.subscribe()
    await sender.send('hello', { from: 'node' })
    await sender.send('hello', new Uint8Array([7, 8, 9]))

    await tab.waitForFunction(() => (window as any).received.length >= 3, null, { timeout: 10_000 })
    const received = await tab.evaluate(() => (window as any).received)
    // The change comes through replication, the broadcasts straight away: compare per kind.
    expect(received.filter((r: any) => r.kind === 'change')).toEqual([
      { kind: 'change', title: 'seen in the browser', position: expect.stringMatching(/^[0-9a-f]{16}-/) },
    ])
    expect(received.filter((r: any) => r.kind === 'broadcast')).toEqual([
      { kind: 'broadcast', payload: { from: 'node' } },
      { kind: 'broadcast', payload: { bytes: [7, 8, 9] } },
    ])
    expect(errors).toEqual([])
  })
})
