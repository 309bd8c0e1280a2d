//! Postgres Changes: who sees what of each row change.

pub mod access;
