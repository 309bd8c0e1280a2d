//! `realtime`: streams Postgres changes, broadcast and presence to WebSocket clients.
//!
//! The binary in `main.rs` is thin: it parses the command line, installs tracing and calls into
//! this library. Tests and benchmarks call the same entry points.

pub mod auth;
pub mod authorization;
pub mod broadcast;
pub mod bus;
pub mod calendar;
pub mod change;
pub mod changes;
pub mod channels;
pub mod config;
pub mod db;
pub mod db_broadcast;
pub mod embedded;
pub mod http;
pub mod limits;
pub mod lsn;
pub mod metrics;
pub mod node;
pub mod policy;
pub mod presence;
pub mod replication;
pub mod server;
pub mod transport;
pub mod window;
