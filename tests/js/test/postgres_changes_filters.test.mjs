// Postgres Changes filters with the published realtime-js client, against a real Postgres: every
// operator and its `not.` form on int4, int8, text, boolean, timestamptz and uuid columns. The ids
// each subscription must receive come from Postgres itself (`SELECT id ... WHERE <same test>`),
// so the server's in-process evaluation is checked against the database's own semantics.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import { Inbox, VSNS, absenceWindow, connect, subscribed, uniqueTopic, useServer } from '../harness.mjs'

const ROWS = [
  // id, i4, i8 (text: beyond 2^53), t, b, ts, u
  [1, -5, '-9007199254740993', 'apple', true, '2024-01-01T00:00:00Z', '00000000-0000-0000-0000-000000000001'],
  [2, 0, '0', 'Apple', false, '2024-06-15 12:30:00+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'],
  [3, 7, '9007199254740992', 'banana', true, '2024-06-15T10:30:00Z', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A12'],
  [4, 7, '9007199254740993', 'cherry pie', false, '2025-12-31T23:59:59.999999Z', 'ffffffff-ffff-ffff-ffff-ffffffffffff'],
  [5, 42, '9223372036854775807', '', null, '1999-01-01T00:00:00Z', '00000000-0000-0000-0000-000000000000'],
  [6, null, null, null, null, null, null],
  [7, 2147483647, '9007199254740994', 'BANANA split', true, '2024-06-15T10:30:00.000001Z', '7a0eebc9-9c0b-4ef8-bb6d-6bb9bd380a13'],
  [8, -2147483648, '-1', 'a%b_c', false, '2024-06-15T10:29:59.999999Z', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'],
]

const COLUMNS = {
  i4: { type: 'int4', pivot: '7', list: ['0', '42', '99'] },
  i8: { type: 'int8', pivot: '9007199254740993', list: ['0', '9007199254740993', '-9007199254740993'] },
  t: { type: 'text', pivot: 'banana', list: ['apple', 'banana', 'zzz'], text: true },
  b: { type: 'bool', pivot: 'true', list: ['false'], bool: true },
  ts: { type: 'timestamptz', pivot: '2024-06-15T12:30:00+02:00', list: ['2024-01-01T00:00:00Z', '1999-01-01T00:00:00+00:00'] },
  u: { type: 'uuid', pivot: 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', list: ['A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A12', '00000000-0000-0000-0000-000000000001'] },
}

const quote = (text) => `'${text.replaceAll("'", "''")}'`

/** `[op, filter value, SQL test on the column]` for every operator that fits the column. */
function cases(col, { type, pivot, list, text, bool }) {
  const lit = `${quote(pivot)}::${type}`
  const out = [
    ['eq', pivot, `${col} = ${lit}`],
    ['neq', pivot, `${col} <> ${lit}`],
    ['lt', pivot, `${col} < ${lit}`],
    ['lte', pivot, `${col} <= ${lit}`],
    ['gt', pivot, `${col} > ${lit}`],
    ['gte', pivot, `${col} >= ${lit}`],
    ['in', `(${list.join(',')})`, `${col} = ANY(${quote(`{${list.join(',')}}`)}::${type}[])`],
    ['isdistinct', pivot, `${col} IS DISTINCT FROM ${lit}`],
    ['is', 'null', `${col} IS NULL`],
  ]
  if (bool) {
    out.push(['is', 'true', `${col} IS TRUE`], ['is', 'false', `${col} IS FALSE`])
  }
  if (text) {
    out.push(
      ['like', '%an%', `${col} LIKE '%an%'`],
      ['like', 'a\\%b\\_c', `${col} LIKE 'a\\%b\\_c'`],
      ['ilike', 'ap%', `${col} ILIKE 'ap%'`],
      ['ilike', '%AN%', `${col} ILIKE '%AN%'`],
      ['match', '^[a-c]', `${col} ~ '^[a-c]'`],
      ['match', 'an{2}|e$', `${col} ~ 'an{2}|e$'`],
      ['imatch', '^b', `${col} ~* '^b'`],
      ['imatch', 'PIE$', `${col} ~* 'PIE$'`]
    )
  }
  return out.flatMap(([op, value, sql]) => [
    { filter: `${col}=${op}.${value}`, sql },
    { filter: `${col}=not.${op}.${value}`, sql: `NOT (${sql})` },
  ])
}

const ALL_CASES = Object.entries(COLUMNS).flatMap(([col, spec]) => cases(col, spec))

const clients = []
const server = useServer({
  database: true,
  clients,
  setup: async () => {
    await server.sql(`
      CREATE TABLE f (id int PRIMARY KEY, i4 int4, i8 int8, t text, b bool, ts timestamptz, u uuid);
      ALTER TABLE f REPLICA IDENTITY FULL;
      GRANT SELECT ON f TO authenticated;
    `)
    await server.sql(`DO $$ BEGIN
        CREATE PUBLICATION supabase_realtime; EXCEPTION WHEN duplicate_object THEN NULL; END $$;`)
    await server.sql(`ALTER PUBLICATION supabase_realtime ADD TABLE f`)
  },
})

function rowSql(base, [id, i4, i8, t, b, ts, u]) {
  const v = (x) => (x === null ? 'NULL' : typeof x === 'string' ? quote(x) : String(x))
  return `(${base + id}, ${v(i4)}, ${v(i8)}, ${v(t)}, ${v(b)}, ${v(ts)}, ${v(u)})`
}

/** Sets `expected` on every case: the row ids Postgres selects with the case's SQL test (one query). */
async function setExpected(base, subs) {
  const parts = subs.map(
    (s, n) =>
      `SELECT ${n} AS n, coalesce((SELECT string_agg((id - ${base})::text, ',' ORDER BY id) FROM f ` +
      `WHERE id > ${base} AND id <= ${base + 100} AND (${s.sql})), '')`
  )
  const lines = (await server.sql(`${parts.join(' UNION ALL ')} ORDER BY 1`)).split('\n')
  assert.equal(lines.length, subs.length)
  for (const line of lines) {
    const [n, ids] = line.split('|')
    subs[Number(n)].expected = ids === '' ? [] : ids.split(',').map(Number)
  }
}

for (const vsn of VSNS) {
  describe(`postgres changes filters (vsn ${vsn})`, () => {
    for (const event of ['INSERT', 'DELETE']) {
      test(`every operator and its not. form on ${event}, as Postgres decides`, async () => {
        const base = (vsn === '1.0.0' ? 1000 : 2000) + (event === 'DELETE' ? 500 : 0)
        const c = connect(server, { vsn, token: server.token() })
        clients.push(c)
        const image = (p) => (event === 'DELETE' ? p.old : p.new)
        // One channel per column (the server allows 100 channels per socket and 100 joins a
        // second), each also carrying an unfiltered binding: once that one has seen the last
        // row, every frame for the channel's earlier rows has been handled.
        const byColumn = {}
        for (const kase of ALL_CASES) (byColumn[kase.filter.split('=')[0]] ??= []).push(kase)
        const groups = await Promise.all(
          Object.entries(byColumn).map(async ([col, kases]) => {
            const all = new Inbox(`${col} (all)`)
            const system = new Inbox(`${col} system`)
            let channel = c.channel(uniqueTopic('filter'))
            const subs = kases.map((kase) => {
              const got = new Inbox(kase.filter)
              channel = channel.on('postgres_changes', { event, schema: 'public', table: 'f', filter: kase.filter }, got.push)
              return { ...kase, got, all }
            })
            channel.on('postgres_changes', { event, schema: 'public', table: 'f' }, all.push).on('system', {}, system.push)
            await subscribed(channel, 15000)
            const status = await system.next((m) => m.extension === 'postgres_changes', 15000, 'a postgres_changes system message')
            return { col, subs, status, all }
          })
        )
        const subs = groups.flatMap((g) => g.subs)
        const refusedCols = groups.filter((g) => g.status.status !== 'ok').map((g) => `${g.col}: ${g.status.message}`)
        assert.deepEqual(refusedCols, [], 'every filter is accepted')

        await server.sql(`INSERT INTO f VALUES ${ROWS.map((r) => rowSql(base, r)).join(', ')}`)
        // Read before any delete: REPLICA IDENTITY FULL gives deletes the whole old row.
        await setExpected(base, subs)
        if (event === 'DELETE') await server.sql(`DELETE FROM f WHERE id > ${base} AND id <= ${base + 100}`)
        const last = base + ROWS.length
        await Promise.all(groups.map((s) => s.all.next((p) => image(p).id === last, 15000, `row ${last}`)))
        await absenceWindow()

        const wrong = []
        for (const s of subs) {
          const ids = s.got.items.map((p) => image(p).id - base).sort((a, b) => a - b)
          if (JSON.stringify(ids) !== JSON.stringify(s.expected)) {
            wrong.push(`${s.filter}: got [${ids}] expected [${s.expected}] (${s.sql})`)
          }
        }
        assert.deepEqual(wrong, [], `${subs.length} filters; mismatches:\n${wrong.join('\n')}`)
      })
    }
  })
}
