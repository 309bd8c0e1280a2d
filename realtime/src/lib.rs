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
//! | 0 | `json`, `lsn`, `calendar`, `locks`, `metrics`, `embedded`, `healthcheck`, `telemetry` | primitives (JSON writer and validator, WAL positions, dates, poison-tolerant locks, counters); a throwaway Postgres for `dev` and tests; the container health check; logs and OpenTelemetry traces (the span target every layer uses) |
//! | 1 | `change`, `protocol`, `pgvalue` | a committed row change and its position; the wire: Phoenix v1/v2 and WebSocket frame codecs and the per-socket queue, pure; Postgres values as filters and policies compare them |
//! | 2 | `broadcast`, `window` | a broadcast and its wire forms; the resume window of recent transactions |
//! | 3 | `channels`, `config` | the topic registry and channel events; typed configuration |
//! | 4 | `auth`, `bus`, `db`, `cluster` | token verification; the conduit every event travels; the pool and migrations; the NATS link of a clustered node and its one change stream (the leader publishes, followers follow and fetch holes) |
//! | 5 | `policy`, `presence`, `limits`, `check` | policy files evaluated in-process; presence state; rate and count limits; `config check` |
//! | 6 | `changes`, `authorization`, `relay` | Postgres Changes subscriptions and dispatch; private channels by policy files or RLS; broadcast and presence across the nodes of a cluster |
//! | 7 | `db_broadcast` | broadcasts from the database (`realtime.messages`) |
//! | 8 | `replication`, `node` | the WAL stream (it hands `realtime.messages` rows to `db_broadcast`); a node's shared services |
//! | 9 | `transport` | sockets and sessions |
//! | 10 | `http` | routes: WebSocket upgrade, REST broadcast, health, metrics, `/admin` |
//! | 11 | `server` | the composition: [`run_service`] wires replication and the server |
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
//!
//! # Public surface
//!
//! Only the modules marked `pub` below are public: what the binary, the integration tests, the
//! benchmarks and the fuzz targets use. Everything else is private to the crate, and
//! `unreachable_pub` keeps items inside private modules `pub(crate)`, so the compiler reports
//! dead code instead of keeping it alive as API.

#![warn(unreachable_pub)]

pub mod auth;
pub mod authorization;
mod broadcast;
pub mod bus;
mod calendar;
pub mod change;
pub mod changes;
mod channels;
pub mod check;
mod cluster;
pub mod config;
pub mod db;
pub mod db_broadcast;
pub mod embedded;
pub mod healthcheck;
pub mod http;
mod json;
mod limits;
mod locks;
pub mod lsn;
mod metrics;
mod node;
mod pgvalue;
pub mod policy;
mod presence;
pub mod protocol;
mod relay;
pub mod replication;
pub mod server;
pub mod telemetry;
mod transport;
mod window;

#[cfg(test)]
mod layers;

pub use server::{RunError, run_service};

/// The memory allocator of the `realtime` binary, and of the benchmark that hosts the server in
/// its own process, so that what the benchmark measures is what runs: jemalloc, with background
/// threads that hand freed pages back to the system. A server holding tens of thousands of idle
/// sockets keeps many small long-lived allocations (one task, queue and channel per socket)
/// between short-lived handshake buffers; jemalloc groups allocations by size, so the freed
/// buffers do not leave holes among the long-lived ones (glibc's malloc kept 1,450–1,700 bytes
/// resident per idle socket against 1,240 live; `docs/benchmarks.md`, peers).
pub use tikv_jemallocator::Jemalloc as Allocator;

/// Runs the service as `realtime serve` does (see [`run_service`]), on its own bus, with
/// `/metrics` on `listener`: the entry point of tests and benchmarks that start a whole node.
pub async fn run(
    config: std::sync::Arc<config::Config>,
    listener: tokio::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), RunError> {
    run_service(config, listener, None, bus::LocalBus::new(4096), shutdown).await
}
