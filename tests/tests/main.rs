//! The end-to-end tests, one module per file, linked into one test binary: one link of the
//! whole library instead of one per file. nextest still runs each test in its own process;
//! select a file's tests with `-E 'test(/^cluster_changes::/)'`.

mod access_changes;
mod admin;
mod changes_faults;
mod changes_wait;
mod channel_rls;
mod cluster_changes;
mod cluster_channels;
mod container;
mod db_broadcast;
mod filters_vs_postgres;
mod health;
mod metrics;
mod peers_bench;
mod pgoutput_capture;
mod replication_faults;
mod replication_service;
mod replication_stream;
mod resume_crash;
mod row_access;
mod snapshot;
mod sslmode_default;
mod tracing;
mod values_to_jsonb;
mod wal_safety;
