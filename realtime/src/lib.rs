//! `realtime`: streams Postgres changes, broadcast and presence to WebSocket clients.
//!
//! The binary in `main.rs` is thin: it parses the command line, installs tracing and calls into
//! this library. Tests and benchmarks call the same entry points.

pub mod auth;
pub mod bus;
pub mod change;
pub mod changes;
pub mod config;
pub mod db;
pub mod embedded;
pub mod lsn;
pub mod policy;
pub mod replication;
pub mod server;
