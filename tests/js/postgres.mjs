// One throwaway Postgres cluster (wal_level=logical) for a whole `npm test` run: `run.mjs` starts
// it, and `startServer({ database: true })` in harness.mjs gives each server a fresh database of
// its own in it. Starting one cluster per run instead of one per test file saves an initdb and a
// server start per file.
//
// initdb and the server refuse to run as root: as root, every Postgres binary runs as the
// `postgres` user through `runuser -u postgres --`, and the cluster's folder belongs to it.

import { execFileSync, spawnSync } from 'node:child_process'
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** The environment variable that hands the cluster's superuser URL to the test processes. */
export const POSTGRES_URL_ENV = 'REALTIME_JS_POSTGRES_URL'

/** The superuser's password; the cluster listens on loopback only. */
const PASSWORD = 'postgres'

/**
 * The cluster's settings: what `realtime dev` sets (realtime/src/embedded.rs), with room for every
 * server of a run. Each `realtime serve` holds one slot and one WAL sender; two files run at once
 * and a file starts up to two servers, so 64 leaves a wide margin for slots still being dropped.
 */
const SETTINGS = {
  listen_addresses: '127.0.0.1',
  wal_level: 'logical',
  max_replication_slots: '64',
  max_wal_senders: '64',
  max_connections: '200',
  // A throwaway cluster: durability buys nothing and costs test time.
  fsync: 'off',
  synchronous_commit: 'off',
  full_page_writes: 'off',
}

/**
 * What `realtime dev` applies to its database besides the migrations: the roles Supabase
 * projects have, and their read access to tables in `public` (one file, read by both). Applied
 * to `template1`, so every database created for a server starts with it.
 */
const DEV_ROLES = readFileSync(new URL('../../realtime/src/dev_roles.sql', import.meta.url), 'utf8')

const isRoot = () => process.getuid?.() === 0

/** `$PG_BINDIR`, else `pg_config --bindir` (Debian keeps the server binaries off PATH). */
function bindir() {
  if (process.env.PG_BINDIR && existsSync(join(process.env.PG_BINDIR, 'initdb'))) return process.env.PG_BINDIR
  let dir
  try {
    dir = execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim()
  } catch (err) {
    throw new Error(`no Postgres server binaries: \`pg_config --bindir\` failed (${err.message})`)
  }
  if (!existsSync(join(dir, 'initdb'))) throw new Error(`no initdb in ${dir} (from \`pg_config --bindir\`)`)
  return dir
}

/** Runs a Postgres binary (as `postgres` when root); throws with its output when it fails. */
function runPg(bin, program, args) {
  const path = join(bin, program)
  const [command, argv] = isRoot() ? ['runuser', ['-u', 'postgres', '--', path, ...args]] : [path, args]
  const env = { ...process.env }
  delete env.PGDATA
  const out = spawnSync(command, argv, { encoding: 'utf8', env })
  if (out.status !== 0) {
    throw new Error(`${program} failed (${out.error?.message ?? `status ${out.status}`}): ${out.stdout}${out.stderr}`)
  }
  return out.stdout
}

/**
 * Initialises and starts a cluster on `port` in a new temporary folder. Returns
 * `{ url, port, root, stop() }`; `url` is the superuser's URL of the `postgres` database.
 * `stop()` stops the server and removes the folder (it never throws, so it can run in any
 * cleanup path); when starting fails, whatever was created is removed before the error is thrown.
 */
export function startCluster({ port }) {
  const bin = bindir()
  const root = mkdtempSync(join(tmpdir(), 'realtime-js-pg-'))
  const data = join(root, 'data')
  let started = false
  const stop = () => {
    if (started) {
      // `immediate`: a fast stop can wait a long time for a WAL sender whose client is gone.
      try {
        runPg(bin, 'pg_ctl', ['-D', data, '-m', 'immediate', '-w', '-t', '60', 'stop'])
      } catch (err) {
        process.stderr.write(`could not stop the test Postgres in ${data}: ${err.message}\n`)
      }
      started = false
    }
    rmSync(root, { recursive: true, force: true })
  }
  try {
    // The postgres user creates the data folder in it and reads the password file.
    chmodSync(root, 0o755)
    if (isRoot()) execFileSync('chown', ['postgres:postgres', root])
    const pwfile = join(root, 'pw')
    writeFileSync(pwfile, PASSWORD, { mode: 0o644 })
    runPg(bin, 'initdb', [
      '-D', data, '-U', 'postgres', '--pwfile', pwfile, '--auth-local=trust', '--auth-host=scram-sha-256',
      '-E', 'UTF8', '--locale=C', '--no-instructions',
    ])
    rmSync(pwfile)
    const conf = Object.entries({ ...SETTINGS, port: String(port), unix_socket_directories: data })
      .map(([name, value]) => `${name} = '${value}'\n`)
      .join('')
    appendAsOwner(data, conf)
    // Marked first: a start that times out may leave a server running, which `stop()` then ends.
    started = true
    runPg(bin, 'pg_ctl', ['-D', data, '-l', join(root, 'postgres.log'), '-w', '-t', '60', 'start'])
    const url = `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/postgres`
    psqlSync(url.replace(/\/postgres$/, '/template1'), DEV_ROLES)
    return { url, port, root, stop }
  } catch (err) {
    // The server's log goes with the folder: keep its end for the message.
    let log = ''
    try {
      log = readFileSync(join(root, 'postgres.log'), 'utf8').slice(-4000)
    } catch {
      // not started far enough to write one
    }
    stop()
    throw log ? new Error(`${err.message}\nPostgres log:\n${log}`) : err
  }
}

/** Appends `text` to the data folder's `postgresql.auto.conf` (root may not own the folder). */
function appendAsOwner(data, text) {
  const file = join(data, 'postgresql.auto.conf')
  const [command, argv] = isRoot()
    ? ['runuser', ['-u', 'postgres', '--', 'tee', '-a', file]]
    : ['tee', ['-a', file]]
  const out = spawnSync(command, argv, { input: text, encoding: 'utf8' })
  if (out.status !== 0) throw new Error(`could not write ${file}: ${out.stderr}`)
}

/** Runs SQL through `psql` and waits for it (setup only: tests use harness.mjs's `psql`). */
function psqlSync(url, sql) {
  const out = spawnSync('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', url, '-c', sql], { encoding: 'utf8' })
  if (out.status !== 0) throw new Error(`psql failed: ${out.stderr}`)
}
