//! Logical replication: a pgoutput stream from Postgres becomes ordered [`crate::change::Transaction`]s.
//!
//! Layers, one file each: `wire` (the Postgres connection), `pgoutput` (pure bytes → messages),
//! `relations` (the relation and type cache), `values` (text values → JSON as `to_jsonb`),
//! `decode` (messages → row events).

pub mod pgoutput;
pub mod relations;
pub mod values;
