//! Postgres Changes: what a client subscribes to, which rows pass its filter, who sees what of
//! each row change, and the `postgres_changes` payload it receives.
//!
//! - [`subscription`]: one `config.postgres_changes` entry → [`Binding`] (+ its reply id).
//! - [`filter`]: the `col=[not.]op.value,...` language → [`Filter`] → bound to a table's
//!   column types → [`BoundFilter::matches`].
//! - [`access`]: Postgres's own privileges and row-level security, for tables without rules.
//! - [`payload`]: the `data` object of a push, encoded once per subscriber group, and the push
//!   payload spliced around it.
//! - [`resume`]: the `since` a resuming client sends and the `system` messages about it.
//! - [`snapshot`]: a binding's rows as of a Postgres snapshot, and the seam to the changes after it.
//! - [`overflow`]: the refetch `system` message for a transaction too large to keep.
//!
//! All but `access` are pure (no I/O).

pub mod access;
pub mod dispatch;
pub mod filter;
mod inspect;
pub mod overflow;
pub mod payload;
pub mod resume;
pub mod service;
pub mod snapshot;
pub mod subscription;
#[cfg(test)]
mod testing;

pub use crate::policy::ColumnSet;
pub use filter::{BoundFilter, Filter, FilterError, FilterParseError};
pub use payload::{PayloadLimits, View, encode_data, push_payload};
pub use subscription::{Binding, BindingError, EventFilter, TableBinding};
