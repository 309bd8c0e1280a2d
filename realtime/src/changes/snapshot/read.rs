//! Reading a snapshot: one `REPEATABLE READ READ ONLY` transaction on a connection of its own,
//! a cursor per table, pages of rows as `INSERT` row changes.
//!
//! Rows are read the way the subscriber may see them. Tables that Postgres's grants and
//! row-level security govern are read under the subscriber's role with its claims set (the
//! settings the row-level security check uses), selecting only the columns the role may read;
//! tables with policy rules are read with the service's own role, and the rules decide per row
//! afterwards, as for live changes. Values are read as `to_jsonb(column)`, the JSON the change
//! stream's rows hold. Row values never reach errors or logs.

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use postgres_protocol::escape::escape_identifier;
use sqlx::{AssertSqlSafe, Postgres, Row as _};

use super::{Order, XidSnapshot};
use crate::auth::Claims;
use crate::change::{Cell, ChangeKind, Epoch, Position, Row, RowChange, Table};
use crate::changes::service::Changes;
use crate::changes::subscription::Binding;
use crate::lsn::Lsn;
use crate::telemetry::chain;

/// How long a snapshot may take, reading and sending: the transaction holds back Postgres's
/// cleanup while it is open.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(120);

const CURSOR: &str = "realtime_snapshot";

/// Why a snapshot could not be read. Messages name tables and columns, never values.
///
/// The message is the client's refusal text, so the causes in `Refused` and `Database` are
/// text fields, not `source`s: whoever prints the chain prints them once.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("too many snapshots are being read at once; join again later")]
    Busy,
    #[error("more than {0} rows; ask for fewer with snapshot.limit or a filter")]
    TooLarge(u64),
    #[error("it took longer than {} s", MAX_DURATION.as_secs())]
    TooSlow,
    #[error("{0}")]
    Refused(String),
    #[error("the database refused the read: {0}")]
    Database(String),
}

impl From<sqlx::Error> for SnapshotError {
    fn from(error: sqlx::Error) -> SnapshotError {
        // A database error's message names objects and privileges, not row values.
        match error {
            sqlx::Error::Database(e) => SnapshotError::Database(e.message().to_owned()),
            sqlx::Error::PoolTimedOut => SnapshotError::Busy,
            other => SnapshotError::Database(other.to_string()),
        }
    }
}

/// An open snapshot transaction.
pub struct SnapshotReader {
    tx: sqlx::Transaction<'static, Postgres>,
    pub snapshot: XidSnapshot,
    /// The WAL insert position read right after the snapshot was taken.
    pub lsn: Lsn,
    started: Instant,
    /// The epoch snapshot rows' positions carry.
    epoch: Epoch,
    /// The table being read, if a cursor is open.
    reading: Option<Arc<Table>>,
    rows: u32,
}

/// One table of a snapshot.
pub struct TableRead {
    pub table: Arc<Table>,
    /// Read under the subscriber's role (no policy rules govern the table).
    pub as_role: bool,
}

impl Changes {
    /// Opens a snapshot transaction and records its snapshot.
    pub async fn begin_snapshot(&self) -> Result<SnapshotReader, SnapshotError> {
        let mut tx = self.snapshot_pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        // The snapshot is taken by this first query, before it reads the insert position.
        let (snapshot, lsn): (String, String) =
            sqlx::query_as("SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text")
                .fetch_one(&mut *tx)
                .await?;
        let snapshot = XidSnapshot::parse(&snapshot).map_err(SnapshotError::Refused)?;
        let lsn = lsn
            .parse::<Lsn>()
            .map_err(|_| SnapshotError::Refused("the database gave no WAL position".to_owned()))?;
        Ok(SnapshotReader {
            tx,
            snapshot,
            lsn,
            started: Instant::now(),
            epoch: self.head().map_or(Epoch(0), |p| p.epoch),
            reading: None,
            rows: 0,
        })
    }

    /// The published tables `binding` covers, as the catalog describes them. A snapshot needs
    /// a binding that names its table.
    pub async fn snapshot_tables(&self, binding: &Binding) -> Result<Vec<TableRead>, SnapshotError> {
        if binding.table.as_deref().is_none_or(|t| t == "*") {
            return Err(SnapshotError::Refused(
                "a snapshot needs a binding that names its table".to_owned(),
            ));
        }
        let published = self.published_tables().await?;
        let mut out = Vec::new();
        for table in published
            .iter()
            .filter(|t| binding.matches_table(&t.schema, &t.name))
        {
            let table = self.catalog_table(table).await?;
            let as_role = self.policy.table_rules(&table.schema, &table.name).is_none();
            out.push(TableRead {
                table: Arc::new(table),
                as_role,
            });
        }
        Ok(out)
    }
}

impl SnapshotReader {
    /// Opens the cursor over `read`'s table, sorted by `order` and then the primary key.
    pub async fn open(
        &mut self,
        changes: &Changes,
        read: &TableRead,
        claims: &Claims,
        order: Option<&Order>,
    ) -> Result<(), SnapshotError> {
        self.close().await?;
        let table = &read.table;
        let readable: Vec<bool> = if read.as_role {
            let privileges = changes
                .access
                .privileges(&claims.role, table.oid)
                .await
                .map_err(|e| SnapshotError::Refused(chain(&e).to_string()))?;
            (0..table.columns.len())
                .map(|i| privileges.can_select(&table.columns[i].name))
                .collect()
        } else {
            vec![true; table.columns.len()]
        };
        let columns: Vec<String> = table
            .columns
            .iter()
            .zip(&readable)
            .map(|(c, &ok)| match ok {
                true => format!("to_jsonb(t.{})::text", escape_identifier(&c.name)),
                false => "NULL::text".to_owned(),
            })
            .collect();
        let mut sort = Vec::new();
        if let Some(order) = order {
            let Some(i) = table.columns.iter().position(|c| *c.name == *order.column) else {
                return Err(SnapshotError::Refused(format!(
                    "snapshot.order names no column of {}: {}",
                    table.name, order.column
                )));
            };
            if !readable[i] {
                return Err(SnapshotError::Refused(format!(
                    "snapshot.order names a column this role may not read: {}",
                    order.column
                )));
            }
            let direction = if order.descending { "DESC" } else { "ASC" };
            sort.push(format!("t.{} {direction}", escape_identifier(&order.column)));
        }
        for key in table.columns.iter().filter(|c| c.key) {
            sort.push(format!("t.{}", escape_identifier(&key.name)));
        }
        let order_by = match sort.is_empty() {
            true => String::new(),
            false => format!(" ORDER BY {}", sort.join(", ")),
        };
        if read.as_role {
            set_role(&mut self.tx, claims).await?;
        }
        let declare = format!(
            "DECLARE {CURSOR} NO SCROLL CURSOR FOR SELECT {} FROM {}.{} t{order_by}",
            columns.join(", "),
            escape_identifier(&table.schema),
            escape_identifier(&table.name),
        );
        sqlx::query(AssertSqlSafe(declare)).execute(&mut *self.tx).await?;
        self.reading = Some(table.clone());
        Ok(())
    }

    /// The next at most `max` rows of the open cursor as `INSERT` changes; empty at its end.
    pub async fn page(&mut self, max: usize) -> Result<Vec<Arc<RowChange>>, SnapshotError> {
        if self.started.elapsed() > MAX_DURATION {
            return Err(SnapshotError::TooSlow);
        }
        let Some(table) = self.reading.clone() else {
            return Ok(Vec::new());
        };
        let fetch = format!("FETCH FORWARD {} FROM {CURSOR}", max.max(1));
        let rows = sqlx::query(AssertSqlSafe(fetch)).fetch_all(&mut *self.tx).await?;
        let now = crate::window::now_micros();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(table.columns.len());
            for i in 0..table.columns.len() {
                values.push(row.try_get::<Option<String>, usize>(i)?);
            }
            out.push(Arc::new(RowChange {
                position: Position::snapshot_row(self.epoch, self.rows),
                commit_timestamp: now,
                table: table.clone(),
                kind: ChangeKind::Insert,
                new: Some(row_image(&table, &values)),
                old: None,
            }));
            self.rows = self.rows.wrapping_add(1);
        }
        Ok(out)
    }

    /// Closes the open cursor and returns to the service's own role.
    pub async fn close(&mut self) -> Result<(), SnapshotError> {
        if self.reading.take().is_some() {
            sqlx::query(AssertSqlSafe(format!("CLOSE {CURSOR}")))
                .execute(&mut *self.tx)
                .await?;
            // `none` returns to the connection's own role; the claims are left to the rollback.
            sqlx::query("SELECT set_config('role', 'none', true)")
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// Ends the transaction (read only: nothing to keep).
    pub async fn finish(self) {
        let _ = self.tx.rollback().await;
    }
}

/// The settings of the row-level security check (see `access::rls`), transaction-local.
async fn set_role(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    claims: &Claims,
) -> Result<(), SnapshotError> {
    if claims.role.is_empty() || claims.role.eq_ignore_ascii_case("none") {
        return Err(SnapshotError::Refused(
            "the token's role is not a role".to_owned(),
        ));
    }
    let claims_json = serde_json::Value::Object(claims.all.clone()).to_string();
    sqlx::query(
        "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true), \
         set_config('request.jwt.claim.sub', $3, true), set_config('request.jwt.claim.role', $1, true)",
    )
    .bind(&claims.role)
    .bind(&claims_json)
    .bind(claims.sub.clone().unwrap_or_default())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A row image from the JSON text of each column (`None`: SQL null or not readable).
pub(super) fn row_image(table: &Table, values: &[Option<String>]) -> Row {
    let mut json = String::from("{");
    let mut cells = Vec::with_capacity(values.len());
    for (column, value) in table.columns.iter().zip(values) {
        if json.len() > 1 {
            json.push(',');
        }
        json.push_str(&serde_json::Value::from(&*column.name).to_string());
        json.push(':');
        match value {
            None => {
                json.push_str("null");
                cells.push(Cell::Null);
            }
            Some(text) => {
                let start = json.len() as u32;
                json.push_str(text);
                cells.push(Cell::Value {
                    start,
                    end: json.len() as u32,
                });
            }
        }
    }
    json.push('}');
    Row {
        json: json.into_boxed_str(),
        cells: cells.into_boxed_slice(),
    }
}
