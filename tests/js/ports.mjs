// Free TCP ports for the servers the tests start (harness.mjs) and the run's Postgres (run.mjs).

import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'

/**
 * A free port below the kernel's ephemeral range. A port inside that range can be handed to one
 * of our own outgoing connections while the server is still starting: polling /healthz then
 * connects the socket to itself (TCP self-connect) and waits forever for an answer.
 */
export async function freePort() {
  let low = 32768
  try {
    low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])
  } catch {
    // not Linux: keep the usual default
  }
  const floor = 10000
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = floor + Math.floor(Math.random() * Math.max(1, low - floor))
    if (await canListen(port)) return port
  }
  throw new Error('no free port below the ephemeral range')
}

function canListen(port) {
  return new Promise((resolve) => {
    const server = createServer()
    server.unref()
    server.once('error', () => resolve(false))
    server.listen(port, '0.0.0.0', () => server.close(() => resolve(true)))
  })
}
