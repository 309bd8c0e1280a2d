//! The row-level security check, done by Postgres: which rows of a batch one set of claims may
//! see, in one query.
//!
//! As Supabase does, inside a transaction that is always rolled back: `set_config('role',
//! <role>, true)`, `request.jwt.claims` (the claims JSON), `request.jwt.claim.sub` and
//! `request.jwt.claim.role`, so that `auth.uid()`-style policies read them; then the rows are
//! looked up by primary key. All settings are transaction-local, so the rollback returns the
//! connection to the pool as it was: no role or claim ever carries over to the next group.
//!
//! The keys travel as text array parameters (one array per key column) and are cast to the
//! column types in SQL; identifiers are quoted with `postgres_protocol::escape`. The query
//! answers with the positions of the visible keys.

use std::sync::atomic::{AtomicU64, Ordering};

use postgres_protocol::escape::escape_identifier;
use sqlx::{AssertSqlSafe, PgPool};

use super::{AccessError, AccessOptions, TableInfo};
use crate::auth::Claims;
use crate::change::{Row, Table};

pub(super) async fn visible_rows(
    pool: &PgPool,
    options: &AccessOptions,
    queries: &AtomicU64,
    table: &Table,
    info: &TableInfo,
    claims: &Claims,
    rows: &[&Row],
) -> Result<Vec<bool>, AccessError> {
    // `none` would reset the role to the pool's own user; empty is not a role.
    if claims.role.is_empty() || claims.role.eq_ignore_ascii_case("none") {
        return Err(AccessError::InvalidRole(claims.role.clone()));
    }
    if info.primary_key.is_empty() {
        return Err(AccessError::NoPrimaryKey(format!(
            "{}.{}",
            info.schema, info.name
        )));
    }
    let mut key_index = Vec::with_capacity(info.primary_key.len());
    for key in &info.primary_key {
        match table.columns.iter().position(|c| *c.name == *key.name) {
            Some(i) => key_index.push(i),
            // The stream's description is older than the catalog's: the caller invalidates
            // and retries with the next Relation message.
            None => return Err(AccessError::UnknownTable(info.oid)),
        }
    }
    // Rows whose image lacks a key value stay invisible: there is nothing to look up.
    let mut keyed: Vec<(usize, Vec<String>)> = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let values: Option<Vec<String>> = key_index
            .iter()
            .zip(&info.primary_key)
            .map(|(&c, key)| row.value(c).and_then(|json| key_text(json, &key.sql_type)))
            .collect();
        if let Some(values) = values {
            keyed.push((i, values));
        }
    }
    let mut visible = vec![false; rows.len()];
    if keyed.is_empty() {
        return Ok(visible);
    }
    let sql = lookup_sql(info);
    let claims_json = serde_json::Value::Object(claims.all.clone()).to_string();
    let sub = claims.sub.clone().unwrap_or_default();
    let timeout = format!("{}ms", options.statement_timeout.as_millis().max(1));
    for chunk in keyed.chunks(options.max_batch.max(1)) {
        let mut columns: Vec<Vec<String>> = vec![Vec::with_capacity(chunk.len()); info.primary_key.len()];
        for (_, values) in chunk {
            for (column, value) in columns.iter_mut().zip(values) {
                column.push(value.clone());
            }
        }
        queries.fetch_add(1, Ordering::Relaxed);
        let mut tx = pool.begin().await?;
        let found = async {
            sqlx::query(
                "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true), \
                 set_config('request.jwt.claim.sub', $3, true), set_config('request.jwt.claim.role', $1, true), \
                 set_config('statement_timeout', $4, true)",
            )
            .bind(&claims.role)
            .bind(&claims_json)
            .bind(&sub)
            .bind(&timeout)
            .execute(&mut *tx)
            .await?;
            let mut query = sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.clone()));
            for column in columns {
                query = query.bind(column);
            }
            query.fetch_all(&mut *tx).await
        }
        .await;
        // Rolled back on every path: the settings above are transaction-local and vanish.
        let rolled_back = tx.rollback().await;
        let found = found?;
        rolled_back?;
        for ordinal in found {
            let hit = usize::try_from(ordinal)
                .ok()
                .and_then(|o| o.checked_sub(1))
                .and_then(|o| chunk.get(o));
            if let Some((row, _)) = hit {
                visible[*row] = true;
            }
        }
    }
    Ok(visible)
}

/// `SELECT k.ord FROM unnest($1::text[], …) WITH ORDINALITY AS k(k0, …, ord) WHERE EXISTS
/// (SELECT 1 FROM "schema"."table" t WHERE t."id" = k.k0::bigint AND …)`: a semi-join that
/// uses the primary key index, under the role's row-level security.
pub(super) fn lookup_sql(info: &TableInfo) -> String {
    let n = info.primary_key.len();
    let arrays: Vec<String> = (1..=n).map(|i| format!("${i}::text[]")).collect();
    let names: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    let conditions: Vec<String> = info
        .primary_key
        .iter()
        .enumerate()
        .map(|(i, key)| format!("t.{} = k.k{i}::{}", escape_identifier(&key.name), key.sql_type))
        .collect();
    format!(
        "SELECT k.ord FROM unnest({}) WITH ORDINALITY AS k({}, ord) WHERE EXISTS (SELECT 1 FROM {}.{} t WHERE {})",
        arrays.join(", "),
        names.join(", "),
        escape_identifier(&info.schema),
        escape_identifier(&info.name),
        conditions.join(" AND ")
    )
}

/// A key value's JSON text (as the row image holds it) → the text Postgres reads as the
/// column's type: strings without quotes, numbers and booleans as written, arrays as array
/// literals, `bytea` with its `\x` prefix (the image holds bare hex, as Supabase sends it).
/// `None` for JSON null or text that is not JSON.
pub(super) fn key_text(json: &str, sql_type: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let text = match value {
        serde_json::Value::Null => return None,
        serde_json::Value::String(s) if sql_type == "bytea" => format!("\\x{s}"),
        serde_json::Value::String(s) => s,
        serde_json::Value::Array(items) if sql_type.ends_with("[]") => array_literal(&items),
        other => other.to_string(),
    };
    Some(text)
}

/// `{"a","b\"c",NULL,{"1","2"}}`: every element quoted, so any text survives.
fn array_literal(items: &[serde_json::Value]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            serde_json::Value::Null => out.push_str("NULL"),
            serde_json::Value::Array(inner) => out.push_str(&array_literal(inner)),
            other => {
                let text = match other {
                    serde_json::Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                out.push('"');
                out.push_str(&text.replace('\\', "\\\\").replace('"', "\\\""));
                out.push('"');
            }
        }
    }
    out.push('}');
    out
}
