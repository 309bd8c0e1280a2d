// The realtime SDK: a typed client for Postgres Changes (resumed by position after any
// reconnect), Broadcast and Presence over the service's Phoenix protocol.

export { RealtimeClient, createClient } from './client.js'
export type { ClientOptions, ConnectionState, WebSocketConstructor, WebSocketLike } from './client.js'
export { Channel } from './channel.js'
export { LiveQuery, liveQuery } from './live.js'
export type { LiveQueryOptions } from './live.js'
export type { BroadcastMessage, ChannelOptions, ChannelStatus } from './channel.js'
export type {
  Change,
  ChangeEvent,
  ChangesFilter,
  DeleteChange,
  GenericSchema,
  GenericTable,
  InsertChange,
  Refetch,
  RowOf,
  SnapshotEvent,
  SnapshotOptions,
  TableName,
  UpdateChange,
} from './types.js'
export type { PresenceChange, PresenceMeta, PresenceState } from './presence.js'
export { applyDiff, applyState } from './presence.js'
export * as codec from './codec.js'
export { ProtocolError } from './codec.js'
export { alreadySeen, isPosition } from './position.js'
export { backoffDelay, heartbeatAction, refreshDelay, tokenExpiry } from './timing.js'
