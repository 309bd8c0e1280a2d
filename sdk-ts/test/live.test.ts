// The live query against the real server: one call gives the table's rows (the server's
// snapshot) and keeps them current, while other connections write; the array and the async
// iterator end equal to the table. Both serializers.

import { afterAll, beforeAll, describe, expect, test } from 'vitest'

import { type Server, VSNS, client, createTables, disconnectClients, startServer, until } from './support.js'

let server: Server
beforeAll(async () => {
  server = await startServer({ database: true })
  await createTables(server)
  await server.sql(`INSERT INTO todos (title) SELECT 'seed ' || g FROM generate_series(1, 25) g`)
})
afterAll(async () => {
  disconnectClients()
  await server?.stop()
})

type Todo = { id: number; title: string; done: boolean }

async function table(where = 'true'): Promise<Todo[]> {
  const json = await server.sql(
    `SELECT coalesce(json_agg(t ORDER BY id), '[]') FROM (SELECT id, title, done FROM todos WHERE ${where}) t`
  )
  return JSON.parse(json) as Todo[]
}

const sorted = (rows: Todo[]) => [...rows].sort((a, b) => a.id - b.id)

for (const vsn of VSNS) {
  describe(`vsn ${vsn}`, () => {
    test('liveQuery gives the rows, then keeps them equal to the table under concurrent writes', async () => {
      const c = client(server, vsn)
      const query = c.liveQuery({ table: 'todos' })
      // Writes before, during and after the snapshot.
      const writes = (async () => {
        for (let i = 0; i < 30; i++) {
          await server.sql(`INSERT INTO todos (title) VALUES ('live ${vsn} ${i}')`)
          if (i % 3 === 0) await server.sql(`UPDATE todos SET done = NOT done WHERE id = (SELECT min(id) FROM todos)`)
          if (i % 5 === 0) await server.sql(`DELETE FROM todos WHERE id = (SELECT max(id) FROM todos WHERE title LIKE 'seed%')`)
        }
      })()
      const first = await query.ready
      expect(first.length).toBeGreaterThan(0)
      await writes
      const expected = await table()
      await until(
        () => JSON.stringify(sorted(query.rows as Todo[])) === JSON.stringify(expected),
        10_000,
        () => `the rows to equal the table: ${query.rows.length} rows vs ${expected.length}`
      )
      await query.close()
    })

    test('a filtered, limited live query as an async iterator', async () => {
      const c = client(server, vsn)
      const query = c.liveQuery({ table: 'todos', filter: 'done=eq.true', limit: 3, order: 'id.desc' })
      const first = await query.ready
      const done = await table('done')
      expect(first.map((r) => r.id)).toEqual(done.map((r) => r.id).reverse().slice(0, 3))
      const title = `iterated ${vsn}`
      const seen = (async () => {
        for await (const rows of query) {
          if (rows.some((r) => r.title === title)) return rows
        }
        return null
      })()
      await server.sql(`INSERT INTO todos (title, done) VALUES ('${title}', true), ('not done ${vsn}', false)`)
      const rows = await seen
      expect(rows?.some((r) => r.title === title)).toBe(true)
      expect(rows?.every((r) => r.done)).toBe(true)
    })
  })
}
