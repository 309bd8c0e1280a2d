// The demo page that `realtime dev` serves at /demo/ (realtime/src/http/demo), in two Chromium
// windows at once against a real `realtime dev`: each window sees the other's todos (a live
// query), its cursor (broadcast) and its presence, and a second user sees none of the first
// one's todos (row-level security). Chromium is Debian's, driven by playwright-core; without it
// this test fails, it does not skip (`.ci/setup` installs it).
//
// `npm run screenshot` runs this file with DEMO_SCREENSHOT=../docs/demo.png: the README's pictures
// (alice's window, and bob's next to it as demo-bob.png) are the last state of this test.

import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { type Browser, type Page, chromium } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'

import { type Server, startServer } from './support.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const WAIT = { timeout: 15_000 }

function findChromium(): string {
  try {
    const found = execFileSync('sh', ['-c', 'command -v chromium || command -v chromium-browser'], { encoding: 'utf8' }).trim()
    if (found) return found
  } catch {
    // reported below
  }
  throw new Error('no chromium on PATH: the demo test needs it (`.ci/setup` installs it: apt-get install -y chromium)')
}

describe('the demo page of realtime dev, in two windows', () => {
  let server: Server
  let browser: Browser
  const errors: string[] = []

  beforeAll(async () => {
    const executablePath = findChromium()
    if (!existsSync(join(root, 'dist', 'index.js'))) throw new Error('dist/ is missing: run `npm run build` first')
    server = await startServer({ database: true, env: { DEMO_SDK_DIR: join(root, 'dist') } })
    browser = await chromium.launch({
      executablePath,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    })
  })
  afterAll(async () => {
    await browser?.close()
    await server?.stop()
  })

  /** A window of its own (its own storage) on the demo page, signed in as `user`, all joined. */
  async function open(user: string): Promise<Page> {
    const context = await browser.newContext({ viewport: { width: 1000, height: 560 } })
    const page = await context.newPage()
    page.on('pageerror', (e) => errors.push(`${user}: ${e}`))
    page.on('console', (m) => m.type() === 'error' && errors.push(`${user}: ${m.text()}`))
    page.on('response', (r) => r.status() >= 400 && errors.push(`${user}: ${r.status()} ${r.url()}`))
    await signIn(page, user)
    return page
  }

  async function signIn(page: Page, user: string): Promise<void> {
    await page.goto(`${server.httpUrl}/demo/?user=${user}`)
    await page.waitForSelector('body[data-live="true"]', WAIT)
  }

  const titles = (page: Page) => page.$$eval('#todos li .title', (spans) => spans.map((s) => s.textContent))

  async function waitForOnline(page: Page, expected: string[]): Promise<void> {
    await page.waitForFunction(
      (want) => JSON.stringify(Array.from(document.querySelectorAll('#online li')).map((i) => i.textContent)) === want,
      JSON.stringify(expected),
      WAIT
    )
  }

  async function addTodo(page: Page, title: string): Promise<void> {
    await page.fill('#title', title)
    await page.press('#title', 'Enter')
  }

  async function waitForTitles(page: Page, expected: string[]): Promise<void> {
    await page.waitForFunction(
      (want) => JSON.stringify(Array.from(document.querySelectorAll('#todos li .title')).map((s) => s.textContent)) === want,
      JSON.stringify(expected),
      WAIT
    )
  }

  /** Moves the mouse in `from` and waits until `to` shows the cursor labelled `label` there. */
  async function cursorTravels(from: Page, to: Page, label: string, x: number, y: number): Promise<void> {
    const board = (await from.locator('#board').boundingBox())!
    await from.mouse.move(board.x + x - 10, board.y + y - 10)
    await from.mouse.move(board.x + x, board.y + y, { steps: 4 })
    await to.waitForFunction(
      ({ label, x, y }) => {
        const board = document.querySelector('#board')!.getBoundingClientRect()
        return Array.from(document.querySelectorAll<HTMLElement>('.cursor')).some((c) => {
          const at = c.getBoundingClientRect()
          return c.textContent === label && Math.abs(at.left - board.left - x) < 2 && Math.abs(at.top - board.top - y) < 2
        })
      },
      { label, x, y },
      WAIT
    )
  }

  test('two windows see each other’s todos, cursor and presence; another user sees only their own todos', async () => {
    const [first, second] = [await open('alice'), await open('alice')]

    // Presence: both windows are online, in both.
    await waitForOnline(first, ['alice (this window)', 'alice'])
    await waitForOnline(second, ['alice (this window)', 'alice'])

    // Todos: written in one window, they appear in the other (and in the writer's, through the
    // same live query: the page never adds rows itself).
    await addTodo(first, 'buy milk')
    await waitForTitles(second, ['buy milk'])
    await addTodo(second, 'call the plumber')
    await waitForTitles(first, ['buy milk', 'call the plumber'])
    await second.check('#todos li:first-child input[type="checkbox"]')
    await first.waitForSelector('#todos li.done:first-child', WAIT)
    await first.click('#todos li:nth-child(2) .remove')
    await waitForTitles(second, ['buy milk'])

    // Cursors: each window shows the other's.
    await cursorTravels(first, second, 'alice', 120, 80)
    await cursorTravels(second, first, 'alice', 400, 150)

    // A newcomer's snapshot holds the rows committed before it: a reload is a new live query.
    await signIn(second, 'alice')
    await waitForTitles(second, ['buy milk'])

    // Another user: none of alice's todos, but alice is online and her cursor shows.
    await signIn(second, 'bob')
    expect(await titles(second)).toEqual([])
    await waitForOnline(first, ['alice (this window)', 'bob'])
    await addTodo(second, 'water the plants')
    await waitForTitles(second, ['water the plants'])
    // Changes reach a subscriber in commit order: once alice's later todo is in, bob's would be.
    await addTodo(first, 'book the tickets')
    await waitForTitles(first, ['buy milk', 'book the tickets'])
    expect(await titles(second)).toEqual(['water the plants'])
    await cursorTravels(first, second, 'alice', 520, 60)
    await cursorTravels(second, first, 'bob', 300, 330)

    expect(errors).toEqual([])
    const screenshot = process.env.DEMO_SCREENSHOT
    if (screenshot) {
      await first.screenshot({ path: screenshot })
      await second.screenshot({ path: screenshot.replace(/\.png$/, '-bob.png') })
    }
  })
})
