//! The pure parts of Postgres's checks: the lookup query's text, key values as Postgres input,
//! and visibility from privileges and the RLS answer.

use std::sync::Arc;

use super::rls::{key_text, lookup_sql};
use super::*;
use crate::change::{Cell, Column, Epoch, Position, ReplicaIdentity};
use crate::lsn::Lsn;

fn info(rls: bool, key: &[(&str, &str)]) -> TableInfo {
    TableInfo {
        oid: 1,
        schema: "my schema".into(),
        name: "Emp\"s".into(),
        rls_enabled: rls,
        rls_forced: false,
        primary_key: key
            .iter()
            .map(|(n, t)| KeyColumn {
                name: (*n).into(),
                sql_type: (*t).into(),
            })
            .collect(),
    }
}

#[test]
fn the_lookup_query_quotes_names_and_casts_keys_to_their_types() {
    assert_eq!(
        lookup_sql(&info(true, &[("id", "bigint"), ("Region", "public.region")])),
        "SELECT k.ord FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(k0, k1, ord) \
         WHERE EXISTS (SELECT 1 FROM \"my schema\".\"Emp\"\"s\" t WHERE t.\"id\" = k.k0::bigint AND \
         t.\"Region\" = k.k1::public.region)"
    );
}

#[test]
fn key_values_become_postgres_input_text() {
    assert_eq!(key_text("42", "bigint").as_deref(), Some("42"));
    assert_eq!(
        key_text("\"it's \\\"x\\\"\"", "text").as_deref(),
        Some("it's \"x\"")
    );
    assert_eq!(key_text("\"0102ff\"", "bytea").as_deref(), Some("\\x0102ff"));
    assert_eq!(key_text("true", "boolean").as_deref(), Some("true"));
    assert_eq!(key_text("{\"a\":1}", "jsonb").as_deref(), Some("{\"a\":1}"));
    assert_eq!(
        key_text("[\"a\",\"b,\\\"c\",null,[1]]", "text[]").as_deref(),
        Some("{\"a\",\"b,\\\"c\",NULL,{\"1\"}}")
    );
    assert_eq!(key_text("null", "bigint"), None);
    assert_eq!(key_text("not json", "bigint"), None);
}

fn table(identity: ReplicaIdentity) -> Arc<Table> {
    let col = |name: &str, key: bool| Column {
        name: name.into(),
        type_name: "text".into(),
        type_oid: 25,
        key,
    };
    Arc::new(Table {
        oid: 1,
        schema: "public".into(),
        name: "emp".into(),
        replica_identity: identity,
        json: Default::default(),
        columns: vec![col("id", true), col("name", false), col("salary", false)].into(),
    })
}

fn row(values: &[&str]) -> Row {
    let mut json = String::from("{");
    let mut cells = Vec::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!("\"c{i}\":"));
        let start = json.len() as u32;
        json.push_str(v);
        cells.push(Cell::Value {
            start,
            end: json.len() as u32,
        });
    }
    json.push('}');
    Row {
        json: json.into(),
        cells: cells.into(),
    }
}

fn change(kind: ChangeKind, new: Option<Row>, old: Option<Row>) -> RowChange {
    RowChange {
        position: Position {
            epoch: Epoch(1),
            commit_lsn: Lsn(1),
            index: 0,
        },
        commit_timestamp: 0,
        table: table(ReplicaIdentity::Full),
        kind,
        new,
        old,
    }
}

fn privileges(columns: &[&str], bypasses_rls: bool) -> RolePrivileges {
    RolePrivileges {
        role_exists: true,
        table_select: columns.len() == 3,
        columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        bypasses_rls,
    }
}

#[test]
fn visibility_follows_grants_and_the_rls_answer() {
    let t = table(ReplicaIdentity::Full);
    let set = |ix: &[usize]| ColumnSet::from_indexes(3, ix.iter().copied());
    let full_row = || row(&["\"1\"", "\"ann\"", "\"100\""]);
    let insert = change(ChangeKind::Insert, Some(full_row()), None);
    let update = change(ChangeKind::Update, Some(full_row()), Some(full_row()));
    let delete = change(ChangeKind::Delete, None, Some(full_row()));
    let plain = info(false, &[("id", "text")]);
    let secured = info(true, &[("id", "text")]);
    let no_salary = privileges(&["id", "name"], false);

    // Column grants limit the columns, with or without RLS.
    assert_eq!(
        postgres_visibility(&update, &plain, &no_salary, None),
        Visibility::Visible {
            columns: set(&[0, 1]),
            old: OldImage::Full
        }
    );
    // RLS: INSERT/UPDATE only when Postgres said so; the old image shrinks to the key.
    assert_eq!(
        postgres_visibility(&insert, &secured, &no_salary, Some(false)),
        Visibility::Hidden
    );
    assert_eq!(
        postgres_visibility(&insert, &secured, &no_salary, None),
        Visibility::Hidden
    );
    assert_eq!(
        postgres_visibility(&update, &secured, &no_salary, Some(true)),
        Visibility::Visible {
            columns: set(&[0, 1]),
            old: OldImage::KeyOnly(set(&[0]))
        }
    );
    // DELETE under RLS: the key only, unchecked (as Supabase).
    assert_eq!(
        postgres_visibility(&delete, &secured, &no_salary, None),
        Visibility::Visible {
            columns: set(&[0, 1]),
            old: OldImage::KeyOnly(set(&[0]))
        }
    );
    // A role that bypasses RLS sees the whole old image.
    let service = privileges(&["id", "name", "salary"], true);
    assert_eq!(
        postgres_visibility(&delete, &secured, &service, None),
        Visibility::Visible {
            columns: ColumnSet::all(t.columns.len()),
            old: OldImage::Full
        }
    );
    // No access: a missing role, no SELECT on the key, no primary key.
    let missing = RolePrivileges::none();
    assert_eq!(
        postgres_visibility(&insert, &plain, &missing, None),
        Visibility::Hidden
    );
    let no_key = privileges(&["name"], false);
    assert_eq!(
        postgres_visibility(&insert, &plain, &no_key, None),
        Visibility::Hidden
    );
    assert_eq!(
        postgres_visibility(&insert, &info(false, &[]), &service, None),
        Visibility::Hidden
    );
    let truncate = change(ChangeKind::Truncate, None, None);
    assert_eq!(
        postgres_visibility(&truncate, &plain, &service, None),
        Visibility::Hidden
    );
}

#[test]
fn claims_keys_cover_every_claim() {
    let claims = |v: serde_json::Value| Claims {
        role: v["role"].as_str().unwrap_or("").to_owned(),
        exp: 0,
        sub: None,
        all: v.as_object().cloned().unwrap_or_default(),
    };
    let a = claims(serde_json::json!({"role": "authenticated", "sub": "a", "org": 1}));
    let b = claims(serde_json::json!({"org": 1, "sub": "a", "role": "authenticated"}));
    let c = claims(serde_json::json!({"role": "authenticated", "sub": "a", "org": 2}));
    assert_eq!(claims_key(&a), claims_key(&b));
    assert_ne!(claims_key(&a), claims_key(&c));
}
