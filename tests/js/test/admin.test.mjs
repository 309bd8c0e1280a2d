// The /admin inspector in Chromium: sign in with ADMIN_SECRET, see a joined channel with its
// presence, watch the live log show an inserted row's table and position (and not its values),
// and "listen as" a role, which does show the row as that role receives it.
// Chromium is Debian's (`.ci/setup` installs it), driven by playwright-core.
// With ADMIN_SCREENSHOT=<file> the test also saves a screenshot of the page there
// (docs/admin.png is made this way).

import { execFileSync } from 'node:child_process'
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { chromium } from 'playwright-core'

import { connect, subscribed, useServer } from '../harness.mjs'

const ADMIN_SECRET = 'admin-browser-test-secret-0123'

function findChromium() {
  try {
    return execFileSync('sh', ['-c', 'command -v chromium || command -v chromium-browser'], { encoding: 'utf8' }).trim() || null
  } catch {
    return null
  }
}

const executablePath = findChromium()
// `make test` installs Chromium (`.ci/setup`), so a missing one fails the test rather than
// skipping it unseen; SKIP_BROWSER_TESTS=1 skips it on a machine that cannot have one.
const skipBrowser = !executablePath && process.env.SKIP_BROWSER_TESTS === '1' && 'no chromium on PATH (SKIP_BROWSER_TESTS=1)'

// The browser closes before the server stops: `after` hooks run in the order they were registered.
let browser
before(async () => {
  if (!executablePath) return
  browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  })
})
after(async () => {
  await browser?.close()
})

const clients = []
const server = useServer({
  database: true,
  env: { ADMIN_SECRET },
  clients,
  setup: async () => {
    await server.sql(`
      CREATE TABLE orders (id int PRIMARY KEY, customer text);
      GRANT SELECT ON orders TO service_role;
    `)
    await server.sql(`DO $$ BEGIN
        CREATE PUBLICATION supabase_realtime; EXCEPTION WHEN duplicate_object THEN NULL; END $$;`)
    await server.sql(`ALTER PUBLICATION supabase_realtime ADD TABLE orders`)
  },
})

test('the admin page shows channels, the live log and what a role receives', { skip: skipBrowser }, async () => {
  assert.ok(executablePath, 'chromium is not on PATH: `.ci/setup` installs it (or set SKIP_BROWSER_TESTS=1)')
  // A client in a channel with a presence, so the channel table has something to show.
  const client = connect(server, { vsn: '1.0.0', token: server.token({ role: 'anon' }) })
  clients.push(client)
  const lobby = client.channel('lobby', { config: { presence: { key: 'alice' } } })
  const notices = []
  lobby.on('broadcast', { event: 'notice' }, (m) => notices.push(m.payload))
  await subscribed(lobby)
  await lobby.track({ status: 'online' })

  const tab = await browser.newPage({ viewport: { width: 1280, height: 900 } })
  const errors = []
  tab.on('pageerror', (e) => errors.push(String(e)))
  await tab.goto(`${server.httpUrl}/admin`)

  // A wrong secret is refused; the right one opens the inspector.
  await tab.fill('#secret', 'not-the-admin-secret')
  await tab.click('#login-form button')
  await tab.waitForFunction(() => document.getElementById('login-error').textContent.includes('refused'), null, { timeout: 10_000 })
  assert.equal(await tab.isVisible('#app'), false)
  await tab.fill('#secret', ADMIN_SECRET)
  await tab.click('#login-form button')
  await tab.waitForSelector('#app', { state: 'visible', timeout: 10_000 })

  // The channel with its subscriber and presence key.
  await tab.waitForSelector('#channels tr[data-topic="lobby"]', { timeout: 10_000 })
  await tab.waitForFunction(() => document.querySelector('#channels tr[data-topic="lobby"]').textContent.includes('alice'), null, { timeout: 10_000 })
  assert.match(await tab.textContent('#replication'), /streaming\s*true/)

  // "Listen as" service_role on the orders table, then insert a row.
  await tab.fill('#l-role', 'service_role')
  await tab.fill('#l-table', 'orders')
  await tab.click('#l-start')
  await tab.waitForFunction(() => document.getElementById('listen-log').textContent.includes('Subscribed to PostgreSQL'), null, { timeout: 20_000 })
  await server.sql(`INSERT INTO orders VALUES (42, 'customer-value-xyz')`)

  // The live log updates with the table, kind and position, never the values.
  await tab.waitForFunction(() => document.getElementById('log').textContent.includes('INSERT public.orders @ '), null, { timeout: 20_000 })
  const log = await tab.textContent('#log')
  assert.match(log, /INSERT public\.orders @ [0-9a-f]{16}-/)
  assert.doesNotMatch(log, /customer-value-xyz/)
  // The role's own socket receives the row itself.
  await tab.waitForFunction(() => document.getElementById('listen-log').textContent.includes('customer-value-xyz'), null, { timeout: 20_000 })

  // A broadcast sent from the page reaches the channel's client and shows in the log.
  await tab.fill('#b-topic', 'lobby')
  await tab.fill('#b-event', 'notice')
  await tab.fill('#b-payload', '{"text": "maintenance at noon"}')
  await tab.click('#broadcast-form button')
  await tab.waitForFunction(() => document.getElementById('log').textContent.includes('broadcast lobby event=notice'), null, { timeout: 10_000 })
  const deadline = Date.now() + 10_000
  while (notices.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
  assert.deepEqual(notices, [{ text: 'maintenance at noon' }])
  assert.doesNotMatch(await tab.textContent('#log'), /maintenance at noon/)

  if (process.env.ADMIN_SCREENSHOT) {
    // Let the overview catch up with the last events before the picture.
    await tab.waitForTimeout(2500)
    await tab.screenshot({ path: process.env.ADMIN_SCREENSHOT, fullPage: true })
  }
  assert.deepEqual(errors, [])
})
