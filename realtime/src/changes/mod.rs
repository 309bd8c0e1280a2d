//! Postgres Changes, the pure parts: what a client subscribes to, which rows pass its filter,
//! and the `postgres_changes` payload it receives. No I/O here; the channel server wires these
//! into joins (parse, bind to the table, echo) and into fan-out (match, encode once per group).
//!
//! - [`subscription`]: one `config.postgres_changes` entry → [`Binding`] (+ its reply id).
//! - [`filter`]: the `col=[not.]op.value,...` language → [`Filter`] → bound to a table's
//!   column types → [`BoundFilter::matches`].
//! - [`columns`]: [`ColumnSet`], the columns a subscriber group may see.
//! - [`payload`]: the `data` object of a push, encoded once per group, and the push payload.

pub mod columns;
pub mod filter;
mod inspect;
pub mod payload;
pub mod subscription;
#[cfg(test)]
mod testing;

pub use columns::ColumnSet;
pub use filter::{BoundFilter, Filter, FilterError, FilterParseError};
pub use payload::{PayloadLimits, encode_data, push_payload};
pub use subscription::{Binding, BindingError, EventFilter, TableBinding};
