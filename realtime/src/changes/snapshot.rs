//! Snapshot then changes: a `postgres_changes` binding joined with `snapshot` first receives the
//! rows its subscriber may see now, then every change Postgres's snapshot did not show, each
//! once.
//!
//! The seam is decided by transaction ids, not by time. The rows are read in one
//! `REPEATABLE READ` transaction whose `pg_current_snapshot()` is recorded ([`XidSnapshot`]).
//! A committed transaction's effects are in that snapshot exactly when its xid is below `xmin`,
//! or below `xmax` and not in the in-progress list; pgoutput names each transaction's xid in its
//! BEGIN, so the dispatcher sends a snapshot subscription every transaction that is *not*
//! visible ([`XidSnapshot::visible`]) and none that is. `pg_current_wal_insert_lsn()`, read in
//! the same statement, bounds the rule: every transaction the snapshot shows wrote its commit
//! record before that LSN, so from the first transaction committed at or after it the rule can
//! be dropped ([`Seam`]).
//!
//! This module is pure: the request a binding makes, the snapshot's rule, the `system`
//! messages. `read` does the reading.

mod read;

use serde_json::{Map, Value};

use crate::change::Position;
use crate::lsn::Lsn;

pub use read::{SnapshotError, SnapshotReader, TableRead};

/// Most rows one binding's snapshot may send; a larger table needs a `limit` (or a filter).
pub const MAX_ROWS: u64 = 100_000;

/// What `snapshot` in a `postgres_changes` binding asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// Send at most this many rows (after filters and access rules).
    pub limit: Option<u64>,
    /// Sort by this column (then by the primary key); the primary key alone when `None`.
    pub order: Option<Order>,
}

/// A sort column and its direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub column: String,
    pub descending: bool,
}

impl SnapshotRequest {
    /// Reads `snapshot` of a binding entry: absent, `null` or `false` is no snapshot; `true` or
    /// an object `{"limit": n, "order": "column[.asc|.desc]"}` is one. Anything else is refused
    /// with a message saying what is wrong.
    pub fn parse(params: &Map<String, Value>) -> Result<Option<SnapshotRequest>, String> {
        let options = match params.get("snapshot") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok(None),
            Some(Value::Bool(true)) => return Ok(Some(SnapshotRequest::default())),
            Some(Value::Object(options)) => options,
            Some(_) => return Err("snapshot must be true or an object {\"limit\", \"order\"}".to_owned()),
        };
        if let Some(unknown) = options.keys().find(|k| *k != "limit" && *k != "order") {
            return Err(format!(
                "snapshot has an unknown option `{unknown}` (known: limit, order)"
            ));
        }
        let limit = match options.get("limit") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=MAX_ROWS).contains(&n) => Some(n),
                _ => return Err(format!("snapshot.limit must be an integer from 1 to {MAX_ROWS}")),
            },
        };
        let order = match options.get("order") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(Order::parse(text)?),
            Some(_) => {
                return Err(
                    "snapshot.order must be a string, `column`, `column.asc` or `column.desc`".to_owned(),
                );
            }
        };
        Ok(Some(SnapshotRequest { limit, order }))
    }
}

impl Order {
    fn parse(text: &str) -> Result<Order, String> {
        let (column, descending) = match text.rsplit_once('.') {
            Some((column, "desc")) => (column, true),
            Some((column, "asc")) => (column, false),
            _ => (text, false),
        };
        if column.is_empty() {
            return Err("snapshot.order names no column".to_owned());
        }
        Ok(Order {
            column: column.to_owned(),
            descending,
        })
    }
}

/// Postgres's `pg_snapshot`: which transactions a snapshot sees. Full 64-bit transaction ids
/// (`xid8`), as `pg_current_snapshot()` gives them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XidSnapshot {
    /// Every transaction below it had finished when the snapshot was taken.
    pub xmin: u64,
    /// No transaction at or above it had started.
    pub xmax: u64,
    /// Transactions in `[xmin, xmax)` still in progress when the snapshot was taken.
    pub xip: Vec<u64>,
}

impl XidSnapshot {
    /// Reads the text form `xmin:xmax:xip,xip,…` (the xip list may be empty).
    pub fn parse(text: &str) -> Result<XidSnapshot, String> {
        let mut parts = text.trim().split(':');
        let (Some(xmin), Some(xmax), Some(xip), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("a snapshot is `xmin:xmax:xip,…`".to_owned());
        };
        let number = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| "a snapshot's transaction id is not a number".to_owned())
        };
        let (xmin, xmax) = (number(xmin)?, number(xmax)?);
        let xip = match xip {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(number)
                .collect::<Result<Vec<u64>, String>>()?,
        };
        if xmin > xmax || xip.iter().any(|x| *x < xmin || *x >= xmax) {
            return Err("a snapshot's transaction ids are out of order".to_owned());
        }
        Ok(XidSnapshot { xmin, xmax, xip })
    }

    /// Whether the committed transaction `xid` (the 32-bit id pgoutput reports) is in the
    /// snapshot. The 32-bit id is widened next to `xmax`: transactions of one seam are never
    /// two billion ids apart.
    pub fn visible(&self, xid: u32) -> bool {
        let full = self.widen(xid);
        full < self.xmin || (full < self.xmax && !self.xip.contains(&full))
    }

    fn widen(&self, xid: u32) -> u64 {
        let offset = i64::from(xid.wrapping_sub(self.xmax as u32) as i32);
        (self.xmax as i64).saturating_add(offset).max(0) as u64
    }
}

/// Where a snapshot subscription's changes start: the snapshot, and the WAL insert position
/// read right after it (every transaction the snapshot shows committed before it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seam {
    pub snapshot: XidSnapshot,
    pub lsn: Lsn,
    /// How many rows the snapshot sent (for the end message).
    pub rows: u64,
}

impl Seam {
    /// Whether the change stream still needs the xid rule at a transaction committed at
    /// `commit_lsn`: from the first one at or past the seam's LSN on, nothing is visible.
    pub fn open_at(&self, commit_lsn: Lsn) -> bool {
        commit_lsn < self.lsn
    }
}

/// The `system` payload after the last snapshot row: the changes that follow are those the
/// snapshot did not show. `position` is where a resume that keeps the snapshot's rows may start
/// (null before the stream has delivered anything).
pub fn complete_payload(sub_topic: &str, rows: u64, position: Option<&Position>) -> String {
    serde_json::json!({
        "channel": sub_topic,
        "extension": "postgres_changes",
        "message": format!("Snapshot complete: {rows} rows; the changes it did not show follow"),
        "position": position.map(ToString::to_string),
        "rows": rows,
        "snapshot": "complete",
        "status": "ok",
    })
    .to_string()
}

/// The `system` payload of a snapshot that was refused or failed. `refetch` when rows were
/// already sent (the snapshot is incomplete): the channel carries on with live changes only.
pub fn failed_payload(sub_topic: &str, message: &str, sent: u64) -> String {
    let mut payload = serde_json::json!({
        "channel": sub_topic,
        "extension": "postgres_changes",
        "message": format!("Snapshot refused: {message}. Changes from here on are delivered live"),
        "snapshot": "refused",
        "status": "error",
    });
    if sent > 0 {
        payload["refetch"] = Value::Bool(true);
        payload["rows"] = Value::from(sent);
    }
    payload.to_string()
}

#[cfg(test)]
mod tests;
