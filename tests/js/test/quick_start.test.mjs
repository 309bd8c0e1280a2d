// The README's quick start, run as a new user would: `realtime dev` started from the root of the
// clone (as `make dev` does, so the clone's `policies/` folder is the one in use), the README's
// psql lines, and the README's realtime-js snippet, taken from README.md itself so that this test
// breaks when the README drifts. The snippet must print what the README says it prints: the
// INSERT, the UPDATE and the DELETE.
//
// Only the ports differ from the README (free ones instead of 4000 and 54322), and the data
// folder is a temporary one.

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect as tcpConnect } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { after, before, test } from 'node:test'
import { fileURLToPath } from 'node:url'

import { freePort, realtimeBinary } from '../harness.mjs'

const JS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..')
const REPO = join(JS_DIR, '..', '..')
const README_PORT = '4000'
const README_PG_PORT = '54322'
const DEADLINE_MS = 20000

/** The fenced code blocks of a Markdown text: `{ lang, text }`. */
function codeBlocks(markdown) {
  const blocks = []
  const fence = /^```(\w*)\n([\s\S]*?)^```$/gm
  for (let m = fence.exec(markdown); m; m = fence.exec(markdown)) {
    blocks.push({ lang: m[1], text: m[2] })
  }
  return blocks
}

function onlyBlock(blocks, lang, needle) {
  const found = blocks.filter((b) => b.lang === lang && b.text.includes(needle))
  assert.equal(found.length, 1, `README.md: expected one \`\`\`${lang} block containing ${JSON.stringify(needle)}`)
  return found[0].text
}

/** Shell words of one command line: bare words, "double" and 'single' quoted strings. */
function shellWords(line) {
  const words = []
  const word = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g
  for (let m = word.exec(line); m; m = word.exec(line)) {
    words.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : (m[2] ?? m[3]))
  }
  return words
}

/** The arguments of the `psql` command of a shell block (continuation lines joined). */
function psqlArgs(block) {
  const lines = block
    .replace(/\\\n/g, ' ')
    .split('\n')
    .filter((l) => l.trim().startsWith('psql '))
  assert.equal(lines.length, 1, `expected one psql command in:\n${block}`)
  const [program, ...args] = shellWords(lines[0])
  assert.equal(program, 'psql')
  return args
}

/** Runs psql with `args`; resolves with its output, rejects with its errors. */
function runPsql(args) {
  return new Promise((resolve, reject) => {
    const child = spawn('psql', ['-X', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`psql ${args.join(' ')}: ${out}`))))
  })
}

/** A child process whose output is collected; `waitFor(re)` resolves with the first match. */
function watched(command, args, options) {
  const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] })
  const state = { out: '', err: '', exited: null }
  child.stdout.on('data', (d) => (state.out += d))
  child.stderr.on('data', (d) => (state.err = (state.err + d).slice(-20000)))
  child.on('exit', (code, signal) => (state.exited = { code, signal }))
  return {
    child,
    state,
    async waitFor(pattern, what) {
      const deadline = Date.now() + DEADLINE_MS * 3
      for (;;) {
        const m = state.out.match(pattern)
        if (m) return m
        if (state.exited || Date.now() > deadline) {
          throw new Error(`${what} never appeared (${JSON.stringify(state.exited)}):\n${state.out}\n${state.err}`)
        }
        await new Promise((r) => setTimeout(r, 50))
      }
    },
    async stop() {
      if (state.exited) return
      const exit = new Promise((r) => child.once('exit', r))
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 10000)
      await exit
      clearTimeout(timer)
    },
  }
}

function accepts(host, port) {
  return new Promise((resolve) => {
    const socket = tcpConnect({ host, port })
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

const readme = readFileSync(join(REPO, 'README.md'), 'utf8')
const blocks = codeBlocks(readme)
const setupBlock = onlyBlock(blocks, 'sh', 'create table todos')
const changesBlock = onlyBlock(blocks, 'sh', 'insert into todos')
const snippet = onlyBlock(blocks, 'js', 'RealtimeClient')
const expected = onlyBlock(blocks, 'text', 'SUBSCRIBED')

let dev
let pgDir
let port
let scriptPath
before(async () => {
  port = await freePort()
  const pgPort = await freePort()
  pgDir = mkdtempSync(join(tmpdir(), 'realtime-quick-start-'))
  // The postgres user runs the server and must be able to enter the folder.
  chmodSync(pgDir, 0o755)
  const env = { ...process.env, PORT: String(port), RUST_LOG: 'info', NO_COLOR: '1' }
  // A new user's shell: none of the settings the README does not mention.
  for (const key of ['DATABASE_URL', 'DB_HOST', 'REALTIME_CONFIG', 'API_JWT_SECRET', 'JWT_SECRET', 'JWT_JWKS',
    'POLICIES_DIR', 'LISTEN_ADDRESS', 'METRICS_PORT', 'METRICS_JWT_SECRET']) {
    delete env[key]
  }
  // `make dev` is `cargo run --bin realtime -- dev` in the clone's root.
  dev = watched(realtimeBinary(), ['dev', '--data-dir', join(pgDir, 'data'), '--pg-port', String(pgPort), '--fresh'], {
    cwd: REPO,
    env,
  })
  await dev.waitFor(/^WebSocket: /m, 'the WebSocket line')
})

after(async () => {
  await dev?.stop()
  if (pgDir) rmSync(pgDir, { recursive: true, force: true })
  if (scriptPath) rmSync(scriptPath, { force: true })
})

test('the README quick start delivers INSERT, UPDATE and DELETE to the realtime-js snippet', async () => {
  // The URL `make dev` prints is the README's, but for the port.
  const [, url] = await dev.waitFor(/^ {2}connect: {2}psql (\S+)$/m, 'the psql URL')
  const [, key] = await dev.waitFor(/^ {2}service_role key: +(\S+)$/m, 'the service_role key')
  const readmeUrl = psqlArgs(setupBlock)[0]
  assert.equal(readmeUrl.replace(`:${README_PG_PORT}/`, `:${new URL(url).port}/`), url)
  const withUrl = (args) => args.map((a) => (a === readmeUrl ? url : a))

  await runPsql(withUrl(psqlArgs(setupBlock)))

  assert.ok(snippet.includes(`ws://localhost:${README_PORT}/socket`), 'the snippet connects to port 4000')
  assert.ok(snippet.includes('<the service_role key make dev printed>'))
  const script = snippet
    .replace(`ws://localhost:${README_PORT}/socket`, `ws://localhost:${port}/socket`)
    .replace('<the service_role key make dev printed>', key)
  // Beside tests/js/node_modules, where `npm install @supabase/realtime-js ws` put the packages.
  scriptPath = join(JS_DIR, `.quick-start-${process.pid}.mjs`)
  writeFileSync(scriptPath, script)
  const app = watched(process.execPath, [scriptPath], { cwd: JS_DIR })
  try {
    await app.waitFor(/^SUBSCRIBED$/m, 'SUBSCRIBED')
    await runPsql(withUrl(psqlArgs(changesBlock)))
    const lines = expected.trimEnd().split('\n')
    const deadline = Date.now() + DEADLINE_MS
    while (app.state.out.trimEnd().split('\n').length < lines.length && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50))
    }
    assert.equal(
      app.state.out.trimEnd(),
      expected.trimEnd(),
      `the snippet's output differs from the README's (server log:\n${dev.state.err})`
    )
  } finally {
    await app.stop()
  }
})

test('realtime dev listens on 127.0.0.1 only', async () => {
  assert.equal(await accepts('127.0.0.1', port), true)
  // 127.0.0.2 is this machine too, but only a listener on every address answers there.
  assert.equal(await accepts('127.0.0.2', port), false)
})

test('realtime dev serves the demo page at the address the README opens', async () => {
  const readmeDemo = `http://localhost:${README_PORT}/demo/`
  assert.ok(readme.includes(readmeDemo), `README.md opens ${readmeDemo}`)
  const [, printed] = await dev.waitFor(/^Demo: open (\S+)$/m, 'the demo line')
  assert.equal(printed, readmeDemo.replace(`:${README_PORT}/`, `:${port}/`))
  // The script is in the binary; the page needs the SDK that `make dev` builds (sdk-ts/dist), and
  // says how to build it when it is missing.
  const script = await fetch(`${printed}app.js`)
  assert.equal(script.status, 200)
  assert.match(await script.text(), /from '\.\/sdk\/index\.js'/)
  const page = await fetch(printed)
  const body = await page.text()
  if (page.status === 200) assert.match(body, /<title>realtime demo<\/title>/)
  else assert.deepEqual([page.status, /npm run build/.test(body)], [503, true])
})
