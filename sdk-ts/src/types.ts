// Types of the database the client follows, in the shape supabase-js uses (and that
// `supabase gen types typescript` generates): `Database['public']['Tables']['todos']['Row']`.
// A client made without a database type accepts any table and gives untyped rows.

/** One table (or view) of a generated database type. */
export interface GenericTable {
  Row: Record<string, unknown>
}

/** One schema of a generated database type. */
export interface GenericSchema {
  Tables: Record<string, GenericTable>
  Views?: Record<string, GenericTable>
}

/** Schema names of `Database` (generated types may carry other keys, which are left out). */
export type SchemaName<Database> = {
  [K in keyof Database & string]: Database[K] extends GenericSchema ? K : never
}[keyof Database & string]

type SchemaOf<Database, S> = S extends keyof Database ? (Database[S] extends GenericSchema ? Database[S] : never) : never

/** Table and view names of schema `S`. */
export type TableName<Database, S> = IsAny<Database> extends true
  ? string
  : (keyof SchemaOf<Database, S>['Tables'] & string) | (keyof NonNullable<SchemaOf<Database, S>['Views']> & string)

/** The row type of table or view `T` of schema `S`. */
export type RowOf<Database, S, T> = IsAny<Database> extends true
  ? Record<string, any>
  : T extends keyof SchemaOf<Database, S>['Tables']
    ? SchemaOf<Database, S>['Tables'][T]['Row']
    : T extends keyof NonNullable<SchemaOf<Database, S>['Views']>
      ? NonNullable<SchemaOf<Database, S>['Views']>[T]['Row']
      : never

/** True for `any` only (everything else fails `0 extends 1 & T`). */
type IsAny<T> = 0 extends 1 & T ? true : false

/** Marks "no database type given": any schema, any table, untyped rows. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyDatabase = any

/** The kinds of change a binding can ask for. */
export type ChangeEvent = '*' | 'INSERT' | 'UPDATE' | 'DELETE'

/** What every change carries. */
interface ChangeBase {
  schema: string
  table: string
  /** Commit time, ISO 8601. */
  commit_timestamp: string
  /** The change's position in the stream (`<epoch>-<commit LSN>-<index>`); sorts in commit order. */
  position: string
  /** Column names and Postgres types of the row. */
  columns: { name: string; type: string }[]
  /** Columns left out of `new` because Postgres did not send their unchanged TOASTed value. */
  unchanged_toast?: string[]
  /** A row of the binding's snapshot (an `INSERT` of a row as it was), not a change. */
  snapshot?: true
}

export interface InsertChange<Row> extends ChangeBase {
  eventType: 'INSERT'
  new: Row
  old: Record<string, never>
}

export interface UpdateChange<Row> extends ChangeBase {
  eventType: 'UPDATE'
  new: Row
  /** The old row as far as the table's replica identity sends it (the primary key by default). */
  old: Partial<Row>
}

export interface DeleteChange<Row> extends ChangeBase {
  eventType: 'DELETE'
  new: Record<string, never>
  old: Partial<Row>
}

/** A change of a row of type `Row`, narrowed to the kinds a binding with `event: E` receives. */
export type Change<Row, E extends ChangeEvent = '*'> = E extends 'INSERT'
  ? InsertChange<Row>
  : E extends 'UPDATE'
    ? UpdateChange<Row>
    : E extends 'DELETE'
      ? DeleteChange<Row>
      : InsertChange<Row> | UpdateChange<Row> | DeleteChange<Row>

/** What a `postgres_changes` binding listens to. */
export interface ChangesFilter<S extends string, T extends string, E extends ChangeEvent> {
  /** Defaults to `public`. */
  schema?: S
  table: T
  /** Defaults to `*` (every kind). */
  event?: E
  /** A row filter such as `id=eq.5` or `status=in.(open,done)`. */
  filter?: string
  /**
   * First deliver the rows this subscriber may see now (as `INSERT`s marked `snapshot: true`),
   * then exactly the changes after them. `limit` caps the rows, `order` sorts them
   * (`column`, `column.asc`, `column.desc`). See `onSnapshot`.
   */
  snapshot?: true | SnapshotOptions
}

/** How many snapshot rows, in which order. */
export interface SnapshotOptions {
  limit?: number
  order?: string
}

/** A snapshot's progress, as `onSnapshot` reports it. */
export type SnapshotEvent =
  /** The join asked for a snapshot: rows follow (forget rows held from before). */
  | { phase: 'start' }
  /** Every snapshot row was delivered; changes after the snapshot follow. */
  | { phase: 'complete'; rows: number }

/**
 * The server could not deliver every change a channel may have missed. Reload the data (for
 * `tables`, or everything the channel follows when it is absent), then keep applying the
 * changes that follow: they arrive live.
 */
export interface Refetch {
  /**
   * `outside_window`, `other_epoch`, `invalid_position`, `gap`, `transaction_too_large`
   * (the server's reasons, docs/protocol.md), or `no_position`: the connection dropped before
   * the channel's first change, so there is no position to resume from.
   */
  reason: string
  message: string
  /** `schema.table` names, when the server names the tables concerned. */
  tables?: string[]
}
