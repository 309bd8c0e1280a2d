// `npm test`: starts one Postgres cluster for the whole run (postgres.mjs), runs `node --test`
// with the arguments given here, hands the cluster's URL to the test processes in
// REALTIME_JS_POSTGRES_URL, and stops and removes the cluster at the end, whatever happened.
// Exits with node's status.
//
//   node run.mjs --test-concurrency=2 --test-reporter=spec test/

import { spawn } from 'node:child_process'
import { constants } from 'node:os'

import { freePort } from './ports.mjs'
import { POSTGRES_URL_ENV, startCluster } from './postgres.mjs'

// Ctrl-C reaches the whole process group; a signal sent to this process alone is passed on to
// node. Handled from the start, so that a signal during the cluster's start does not end this
// process before it has removed the cluster again.
let child = null
let interrupted = null
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    interrupted ??= signal
    child?.kill(signal)
  })
}
const signalStatus = (signal) => 128 + (constants.signals[signal] ?? 0)

const cluster = startCluster({ port: await freePort() })
let status = 1
try {
  if (interrupted) {
    status = signalStatus(interrupted)
  } else {
    child = spawn(process.execPath, ['--test', ...process.argv.slice(2)], {
      env: { ...process.env, [POSTGRES_URL_ENV]: cluster.url },
      stdio: 'inherit',
    })
    status = await new Promise((resolve) => {
      child.on('error', (err) => {
        process.stderr.write(`could not run node --test: ${err.message}\n`)
        resolve(1)
      })
      child.on('exit', (code, signal) => resolve(code ?? (signal ? signalStatus(signal) : 1)))
    })
  }
} finally {
  cluster.stop()
}
process.exit(status)
