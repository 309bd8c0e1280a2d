//! `realtime`: streams Postgres changes, broadcast and presence to WebSocket clients.
//!
//! The binary in `main.rs` is thin: it parses the command line, installs tracing and calls into
//! this library: `realtime serve` is [`run_service`], and tests start whole nodes with [`run`].
//!
//! # Layers, bottom up
//!
//! Each module imports only from the layers below it; `layers.rs` checks that the top-level
//! module graph has no cycle.
//!
//! | layer | modules | what they are |
//! |---|---|---|
//! | leaves | `json`, `lsn`, `calendar`, `metrics` | primitives: the JSON string writer and validator, WAL positions, dates, counters |
//! | wire | `protocol` | Phoenix v1/v2 codec, WebSocket frame codec, the per-socket queue of encoded frames; pure, no I/O |
//! | domain | `change`, `window` | a committed row change and its position; the resume window of recent transactions |
//! | settings | `config`, `db`, `auth` | typed configuration, the connection pool and migrations, token verification |
//! | rules | `policy` | policy files, compiled once and evaluated in-process |
//! | sources | `replication`, `bus` | WAL → pgoutput → decoded transactions; the conduit every event travels |
//! | features | `channels`, `broadcast`, `presence`, `changes` | topic registry, broadcast, presence state, Postgres Changes dispatch |
//! | node | `limits`, `node` | the shared services of one running node |
//! | edges | `transport`, `http`, `check` | sockets and sessions, HTTP routes, `config check` |
//! | composition | `server`, `embedded` | wires all of the above and runs until shutdown |
//!
//! # Data flow, from the WAL to the socket
//!
//! `replication` streams the slot, decodes pgoutput into transactions of `change::RowChange` and
//! sends them on the `bus`. The `changes` dispatcher (its own thread) keeps the resume `window`,
//! decides per subscriber group with `policy` (or Postgres's RLS answer), encodes each push once
//! with `protocol` and puts the same bytes into every receiving socket's outbound queue.
//! Broadcast and presence take the same path from a session (or REST) through the `bus` and
//! `channels` to the queues. Each session task (`transport`) drains its queue into its socket.
//! Nothing calls back up: sessions never call into replication, and features never call sessions.

pub mod auth;
pub mod authorization;
pub mod broadcast;
pub mod bus;
pub mod calendar;
pub mod change;
pub mod changes;
pub mod channels;
pub mod check;
pub mod config;
pub mod db;
pub mod db_broadcast;
pub mod embedded;
pub mod healthcheck;
pub mod http;
pub mod json;
pub mod limits;
pub mod lsn;
pub mod metrics;
pub mod node;
pub mod policy;
pub mod presence;
pub mod protocol;
pub mod replication;
pub mod server;
pub mod transport;
pub mod window;

#[cfg(test)]
mod layers;

pub use server::{RunError, run_service};

/// Runs the service as `realtime serve` does (see [`run_service`]), on its own bus, with
/// `/metrics` on `listener`: the entry point of tests and benchmarks that start a whole node.
pub async fn run(
    config: std::sync::Arc<config::Config>,
    listener: tokio::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), RunError> {
    run_service(config, listener, None, bus::LocalBus::new(4096), shutdown).await
}
