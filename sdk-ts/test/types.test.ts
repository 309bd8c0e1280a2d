// The SDK's types follow the database type the way supabase-js does. These checks run in
// `npm run typecheck` (part of `npm test`): each `@ts-expect-error` fails the build if the
// misuse below it were accepted, and `expectTypeOf` fails it if a type were widened.

import { describe, expectTypeOf, test } from 'vitest'

import { type Change, type RealtimeClient, createClient } from '../src/index.js'
import type { Database } from './support.js'

type Todo = Database['public']['Tables']['todos']['Row']

/** Never run: only compiled. */
function typed(client: RealtimeClient<Database>) {
  client.channel('x').onChanges({ table: 'todos' }, (c) => {
    expectTypeOf(c).toEqualTypeOf<Change<Todo>>()
    if (c.eventType === 'INSERT') expectTypeOf(c.new).toEqualTypeOf<Todo>()
    if (c.eventType === 'UPDATE') expectTypeOf(c.old).toEqualTypeOf<Partial<Todo>>()
    if (c.eventType === 'DELETE') expectTypeOf(c.old.id).toEqualTypeOf<number | undefined>()
  })
  client.channel('x').onChanges({ table: 'todos', event: 'INSERT' }, (c) => {
    expectTypeOf(c.eventType).toEqualTypeOf<'INSERT'>()
    expectTypeOf(c.new.title).toEqualTypeOf<string>()
    // @ts-expect-error: todos has no such column
    void c.new.nope
  })
  client.channel('x').onChanges({ table: 'items', event: 'DELETE' }, (c) => {
    expectTypeOf(c.old.grp).toEqualTypeOf<number | undefined>()
  })
  // @ts-expect-error: no such table
  client.channel('x').onChanges({ table: 'nope' }, () => {})
  // @ts-expect-error: no such kind of change
  client.channel('x').onChanges({ table: 'todos', event: 'UPSERT' }, () => {})
}

/** Without a database type: any table, untyped rows. */
function untyped() {
  createClient('ws://localhost/socket')
    .channel('x')
    .onChanges({ schema: 'audit', table: 'anything', event: 'INSERT' }, (c) => {
      expectTypeOf(c.new).toEqualTypeOf<Record<string, any>>()
    })
}

describe('types', () => {
  test('compile-time checks are part of the typecheck step', () => {
    expectTypeOf(typed).toBeFunction()
    expectTypeOf(untyped).toBeFunction()
  })
})
