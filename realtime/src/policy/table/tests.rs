//! Table rules: loading and binding errors with file and line, and the visibility decisions
//! users rely on (owners, hidden columns, ownership transfer under each replica identity,
//! DELETE, service role, claim grouping).

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value as Json, json};

use super::values::{Known, column_type, from_json};
use super::*;
use crate::change::{Cell, ChangeKind, Column, Epoch, Position, ReplicaIdentity, Row, RowChange, Table};
use crate::lsn::Lsn;
use crate::policy::PolicySet;
use crate::policy::expr::{Value, time};

fn claims(value: Json) -> Claims {
    let all = match value {
        Json::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    Claims {
        role: all.get("role").and_then(Json::as_str).unwrap_or("").to_owned(),
        exp: all.get("exp").and_then(Json::as_i64).unwrap_or(0),
        sub: all.get("sub").and_then(Json::as_str).map(str::to_owned),
        all,
    }
}

fn user(sub: &str) -> Claims {
    claims(json!({"role": "authenticated", "sub": sub, "exp": 1}))
}

fn anon() -> Claims {
    claims(json!({"role": "anon", "exp": 1}))
}

fn service() -> Claims {
    claims(json!({"role": "service_role", "exp": 1}))
}

/// `todos(id int8 key, owner text, title text, salary int4, done bool, body text)`.
fn todos(identity: ReplicaIdentity) -> Arc<Table> {
    let col = |name: &str, ty: &str, key: bool| Column {
        name: name.into(),
        type_name: ty.into(),
        type_oid: 0,
        // Relation messages flag every column under REPLICA IDENTITY FULL.
        key: key || identity == ReplicaIdentity::Full,
    };
    Arc::new(Table {
        oid: 16384,
        schema: "public".into(),
        name: "todos".into(),
        replica_identity: identity,
        json: Default::default(),
        columns: vec![
            col("id", "int8", true),
            col("owner", "text", false),
            col("title", "text", false),
            col("salary", "int4", false),
            col("done", "bool", false),
            col("body", "text", false),
        ]
        .into(),
    })
}

const ID: usize = 0;
const OWNER: usize = 1;
const TITLE: usize = 2;
const SALARY: usize = 3;
const DONE: usize = 4;
const BODY: usize = 5;

#[derive(Clone, Copy, Debug)]
enum C {
    V(&'static str),
    Null,
    Unchanged,
    Absent,
}

fn row(table: &Table, cells: &[C]) -> Row {
    let mut json = String::from("{");
    let mut out = Vec::new();
    for (column, cell) in table.columns.iter().zip(cells) {
        out.push(match cell {
            C::V(text) => {
                if json.len() > 1 {
                    json.push(',');
                }
                json.push_str(&format!("\"{}\":", column.name));
                let start = json.len() as u32;
                json.push_str(text);
                Cell::Value {
                    start,
                    end: json.len() as u32,
                }
            }
            C::Null => {
                if json.len() > 1 {
                    json.push(',');
                }
                json.push_str(&format!("\"{}\":null", column.name));
                Cell::Null
            }
            C::Unchanged => Cell::Unchanged,
            C::Absent => Cell::Absent,
        });
    }
    json.push('}');
    Row {
        json: json.into(),
        cells: out.into(),
    }
}

/// A full row of `todos`.
fn todo(table: &Table, id: &'static str, owner: &'static str, done: &'static str) -> Row {
    row(
        table,
        &[
            C::V(id),
            C::V(owner),
            C::V("\"secret plans\""),
            C::V("100"),
            C::V(done),
            C::V("\"long text\""),
        ],
    )
}

/// The key-only old image of `todos` under the default identity.
fn key_only(table: &Table, id: &'static str) -> Row {
    row(
        table,
        &[C::V(id), C::Absent, C::Absent, C::Absent, C::Absent, C::Absent],
    )
}

fn change(table: &Arc<Table>, kind: ChangeKind, new: Option<Row>, old: Option<Row>) -> RowChange {
    RowChange {
        position: Position {
            epoch: Epoch(1),
            commit_lsn: Lsn(1),
            index: 0,
        },
        commit_timestamp: 0,
        table: table.clone(),
        kind,
        new,
        old,
    }
}

const RULES: &str = r#"
[[table]]
description = "owners see their todos"
table = "todos"
roles = ["authenticated"]
rows = "owner = auth.uid()"

[[table]]
description = "everyone signed in sees finished todos, without the salary"
table = "public.todos"
roles = ["authenticated"]
rows = "done"
columns = ["id", "title", "done"]
"#;

fn rules(text: &str) -> TableRules {
    let set = PolicySet::from_toml(Path::new("todos.toml"), text).unwrap_or_else(|errors| {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("rules do not load:\n{}", list.join("\n"))
    });
    set.table_rules("public", "todos").unwrap().clone()
}

/// Bound with the primary key `id`, as the server does with the catalog's key.
fn bound(text: &str, table: &Table) -> BoundRules {
    rules(text)
        .bind_with_primary_key(table, &["id"])
        .unwrap_or_else(|e| panic!("{e}"))
}

fn cols(table: &Table, indexes: &[usize]) -> ColumnSet {
    ColumnSet::from_indexes(table.columns.len(), indexes.iter().copied())
}

fn all(table: &Table) -> ColumnSet {
    ColumnSet::all(table.columns.len())
}

fn visible(columns: ColumnSet, old: OldImage) -> Visibility {
    Visibility::Visible { columns, old }
}

mod load;

#[test]
fn owners_see_their_rows_and_others_see_finished_ones_without_hidden_columns() {
    let t = todos(ReplicaIdentity::Default);
    let b = bound(RULES, &t);
    let insert = change(
        &t,
        ChangeKind::Insert,
        Some(todo(&t, "1", "\"ann\"", "false")),
        None,
    );
    assert_eq!(b.decide(&insert, &user("ann")), visible(all(&t), OldImage::None));
    assert_eq!(b.decide(&insert, &user("bob")), Visibility::Hidden);
    assert_eq!(b.decide(&insert, &anon()), Visibility::Hidden, "no rule for anon");

    let done = change(
        &t,
        ChangeKind::Insert,
        Some(todo(&t, "2", "\"ann\"", "true")),
        None,
    );
    assert_eq!(
        b.decide(&done, &user("bob")),
        visible(cols(&t, &[ID, TITLE, DONE]), OldImage::None),
        "the salary and owner stay hidden from others"
    );
    assert_eq!(
        b.decide(&done, &user("ann")),
        visible(all(&t), OldImage::None),
        "columns union"
    );

    // A NULL owner never equals a subject; a missing subject never equals an owner.
    let orphan = change(
        &t,
        ChangeKind::Insert,
        Some(row(
            &t,
            &[C::V("3"), C::Null, C::V("\"x\""), C::Null, C::V("false"), C::Null],
        )),
        None,
    );
    assert_eq!(
        b.decide(&orphan, &claims(json!({"role": "authenticated"}))),
        Visibility::Hidden
    );
}

#[test]
fn service_role_sees_everything() {
    let t = todos(ReplicaIdentity::Full);
    let b = bound(RULES, &t);
    let old = todo(&t, "1", "\"ann\"", "false");
    let new = todo(&t, "1", "\"bob\"", "false");
    for c in [
        change(&t, ChangeKind::Update, Some(new.clone()), Some(old.clone())),
        change(&t, ChangeKind::Delete, None, Some(old)),
    ] {
        assert_eq!(b.decide(&c, &service()), visible(all(&t), OldImage::Full));
    }
    let insert = change(&t, ChangeKind::Insert, Some(new), None);
    assert_eq!(b.decide(&insert, &service()), visible(all(&t), OldImage::None));
}

#[test]
fn ownership_transfer_under_replica_identity_full_never_shows_the_old_owners_values() {
    let t = todos(ReplicaIdentity::Full);
    let b = bound(RULES, &t);
    let before = todo(&t, "1", "\"ann\"", "false");
    let after = todo(&t, "1", "\"bob\"", "false");
    let transfer = change(&t, ChangeKind::Update, Some(after.clone()), Some(before.clone()));
    // Bob receives the row he now owns, but not the values it had while Ann owned it.
    assert_eq!(
        b.decide(&transfer, &user("bob")),
        visible(all(&t), OldImage::None)
    );
    // Ann loses sight of the row: she receives nothing, and never Bob's values.
    assert_eq!(b.decide(&transfer, &user("ann")), Visibility::Hidden);
    assert_eq!(b.decide(&transfer, &user("carl")), Visibility::Hidden);

    // Bob edits his row afterwards: the old image was his, so he sees it.
    let edit = change(&t, ChangeKind::Update, Some(after.clone()), Some(after.clone()));
    assert_eq!(b.decide(&edit, &user("bob")), visible(all(&t), OldImage::Full));

    // A finished row moves from Ann to Bob: Carl saw it before and after through the
    // "finished" rule, so he gets the old image of the columns that rule shows.
    let done_before = todo(&t, "1", "\"ann\"", "true");
    let done_after = todo(&t, "1", "\"bob\"", "true");
    let finished = change(
        &t,
        ChangeKind::Update,
        Some(done_after.clone()),
        Some(done_before.clone()),
    );
    assert_eq!(
        b.decide(&finished, &user("carl")),
        visible(cols(&t, &[ID, TITLE, DONE]), OldImage::Full)
    );
    // Bob now sees every column, but before the move only the "finished" columns: the old
    // image would show Ann-era owner/salary values, so only the key is shown.
    assert_eq!(
        b.decide(&finished, &user("bob")),
        visible(all(&t), OldImage::KeyOnly(cols(&t, &[ID])))
    );
}

#[test]
fn ownership_transfer_under_the_default_identity() {
    let t = todos(ReplicaIdentity::Default);
    let b = bound(RULES, &t);
    let after = todo(&t, "1", "\"bob\"", "false");
    // The key did not change: the old image is the key, the same as the new row's, and it
    // holds none of Ann's values.
    let transfer = change(
        &t,
        ChangeKind::Update,
        Some(after.clone()),
        Some(key_only(&t, "1")),
    );
    assert_eq!(
        b.decide(&transfer, &user("bob")),
        visible(all(&t), OldImage::KeyOnly(cols(&t, &[ID])))
    );
    assert_eq!(b.decide(&transfer, &user("ann")), Visibility::Hidden);
    // No old image at all: none is shown.
    let bare = change(&t, ChangeKind::Update, Some(after.clone()), None);
    assert_eq!(b.decide(&bare, &user("bob")), visible(all(&t), OldImage::None));

    // The key changed too: the old image holds only the old key. The rules read `owner`, so
    // they cannot tell whether Bob saw the old row: he gets the old key only.
    let rekey = change(&t, ChangeKind::Update, Some(after), Some(key_only(&t, "7")));
    assert_eq!(
        b.decide(&rekey, &user("bob")),
        visible(all(&t), OldImage::KeyOnly(cols(&t, &[ID])))
    );
    assert_eq!(b.decide(&rekey, &user("ann")), Visibility::Hidden);
}

#[test]
fn deletes_show_only_the_key_and_only_when_the_row_was_visible() {
    let full = todos(ReplicaIdentity::Full);
    let b = bound(RULES, &full);
    let delete = change(
        &full,
        ChangeKind::Delete,
        None,
        Some(todo(&full, "1", "\"ann\"", "false")),
    );
    assert_eq!(
        b.decide(&delete, &user("ann")),
        visible(all(&full), OldImage::KeyOnly(cols(&full, &[ID])))
    );
    assert_eq!(
        b.decide(&delete, &user("bob")),
        Visibility::Hidden,
        "Bob never saw the row"
    );
    assert_eq!(b.decide(&delete, &anon()), Visibility::Hidden);

    // Under the default identity the old image is the key: the rules read `owner`, so they
    // cannot tell; like Supabase, every authenticated subscriber learns the key was deleted.
    let default = todos(ReplicaIdentity::Default);
    let b = bound(RULES, &default);
    let delete = change(&default, ChangeKind::Delete, None, Some(key_only(&default, "1")));
    for who in [user("ann"), user("bob")] {
        assert_eq!(
            b.decide(&delete, &who),
            visible(all(&default), OldImage::KeyOnly(cols(&default, &[ID])))
        );
    }
    // A role no rule applies to could never see any row: nothing.
    assert_eq!(b.decide(&delete, &anon()), Visibility::Hidden);
}

#[test]
fn rules_decided_by_the_key_alone_hide_deletes_and_old_keys() {
    let t = todos(ReplicaIdentity::Default);
    let text = r#"
[[table]]
table = "todos"
rows = "id >= 100 AND auth.role() = 'authenticated'"
"#;
    let b = bound(text, &t);
    let low = change(&t, ChangeKind::Delete, None, Some(key_only(&t, "5")));
    let high = change(&t, ChangeKind::Delete, None, Some(key_only(&t, "500")));
    assert_eq!(b.decide(&low, &user("ann")), Visibility::Hidden);
    assert_eq!(
        b.decide(&high, &user("ann")),
        visible(all(&t), OldImage::KeyOnly(cols(&t, &[ID])))
    );
    // A key moved from 5 to 500: the new row is visible, the old key was not.
    let moved = change(
        &t,
        ChangeKind::Update,
        Some(todo(&t, "500", "\"a\"", "false")),
        Some(key_only(&t, "5")),
    );
    assert_eq!(b.decide(&moved, &user("ann")), visible(all(&t), OldImage::None));
}

#[test]
fn unchanged_toasted_values_come_from_a_full_old_image_or_hide_the_row() {
    let text = r#"
[[table]]
table = "todos"
rows = "body = 'long text' AND owner = auth.uid()"
"#;
    let full = todos(ReplicaIdentity::Full);
    let b = bound(text, &full);
    let new = row(
        &full,
        &[
            C::V("1"),
            C::V("\"ann\""),
            C::V("\"t\""),
            C::V("1"),
            C::V("true"),
            C::Unchanged,
        ],
    );
    let update = change(
        &full,
        ChangeKind::Update,
        Some(new.clone()),
        Some(todo(&full, "1", "\"ann\"", "false")),
    );
    assert_eq!(
        b.decide(&update, &user("ann")),
        visible(all(&full), OldImage::Full)
    );

    // Without the old values the rule cannot be decided: the change is not sent.
    let default = todos(ReplicaIdentity::Default);
    let b = bound(text, &default);
    let new = row(
        &default,
        &[
            C::V("1"),
            C::V("\"ann\""),
            C::V("\"t\""),
            C::V("1"),
            C::V("true"),
            C::Unchanged,
        ],
    );
    let update = change(&default, ChangeKind::Update, Some(new), None);
    assert_eq!(b.decide(&update, &user("ann")), Visibility::Hidden);
}

#[test]
fn a_change_of_another_table_shape_is_hidden_until_rebound() {
    let t = todos(ReplicaIdentity::Default);
    let b = bound(RULES, &t);
    let mut altered = (*t).clone();
    let mut columns = altered.columns.to_vec();
    columns.push(Column {
        name: "extra".into(),
        type_name: "text".into(),
        type_oid: 25,
        key: false,
    });
    altered.columns = columns.into();
    let altered = Arc::new(altered);
    assert!(!b.is_bound_to(&altered));
    let mut cells = vec![
        C::V("1"),
        C::V("\"ann\""),
        C::V("\"t\""),
        C::V("1"),
        C::V("true"),
        C::Null,
    ];
    cells.push(C::V("\"x\""));
    let insert = change(&altered, ChangeKind::Insert, Some(row(&altered, &cells)), None);
    assert_eq!(b.decide(&insert, &user("ann")), Visibility::Hidden);
    let rebound = bound(RULES, &altered);
    assert!(rebound.decide(&insert, &user("ann")).is_visible());
    // An equal but separately built table is still bound.
    let same = todos(ReplicaIdentity::Default);
    assert!(b.is_bound_to(&same));
}

#[test]
fn truncate_is_only_for_the_service_role() {
    let t = todos(ReplicaIdentity::Default);
    let b = bound(RULES, &t);
    let truncate = change(&t, ChangeKind::Truncate, None, None);
    assert_eq!(b.decide(&truncate, &user("ann")), Visibility::Hidden);
    assert_eq!(b.decide(&truncate, &service()), visible(all(&t), OldImage::None));
}

#[test]
fn claims_keys_group_exactly_the_callers_the_rules_cannot_tell_apart() {
    let t = todos(ReplicaIdentity::Default);
    let b = bound(RULES, &t);
    let ann = claims(json!({"role": "authenticated", "sub": "ann", "email": "a@x", "exp": 1}));
    let ann_again = claims(json!({"role": "authenticated", "sub": "ann", "email": "other@x", "exp": 2}));
    let bob = user("bob");
    assert_eq!(
        b.claims_key(&ann),
        b.claims_key(&ann_again),
        "email and exp are not read"
    );
    assert_ne!(b.claims_key(&ann), b.claims_key(&bob));
    assert_ne!(
        b.claims_key(&ann),
        b.claims_key(&claims(json!({"role": "anon", "sub": "ann"})))
    );
    assert_eq!(
        b.claims_key(&service()),
        b.claims_key(&claims(json!({"role": "service_role", "sub": "z"})))
    );
    assert_eq!(b.claims_read().names, ["sub", "role"]);

    let org = r#"
[[table]]
table = "todos"
rows = "title = auth.jwt() -> 'app_metadata' ->> 'org'"
"#;
    let b = bound(org, &t);
    assert_eq!(b.claims_read().names, ["app_metadata"]);
    let acme =
        |sub: &str| claims(json!({"role": "authenticated", "sub": sub, "app_metadata": {"org": "acme"}}));
    assert_eq!(b.claims_key(&acme("ann")), b.claims_key(&acme("bob")));
    let whole = r#"
[[table]]
table = "todos"
rows = "auth.jwt() IS NOT NULL"
"#;
    let b = bound(whole, &t);
    assert!(b.claims_read().all);
    assert_ne!(b.claims_key(&acme("ann")), b.claims_key(&acme("bob")));
    // Same decisions for equal keys: checked on a sample of callers.
    let b = bound(RULES, &t);
    let insert = change(
        &t,
        ChangeKind::Insert,
        Some(todo(&t, "1", "\"ann\"", "true")),
        None,
    );
    let prepared = b.prepare(&insert);
    assert_eq!(prepared.decide(&ann), prepared.decide(&ann_again));
}

#[test]
fn filters_may_use_only_columns_every_rule_of_the_role_shows() {
    let t = todos(ReplicaIdentity::Default);
    let b = bound(RULES, &t);
    assert_eq!(
        b.filterable_columns("authenticated"),
        cols(&t, &[ID, TITLE, DONE])
    );
    assert_eq!(b.filterable_columns("anon"), ColumnSet::none(t.columns.len()));
    assert_eq!(b.filterable_columns("service_role"), all(&t));
}

#[test]
fn decision_keys_hold_exactly_what_the_rules_read() {
    let t = todos(ReplicaIdentity::Default);
    let b = bound(RULES, &t);
    let key = |kind, owner, title, done| {
        let new = row(
            &t,
            &[
                C::V("1"),
                C::V(owner),
                C::V(title),
                C::V("100"),
                C::V(done),
                C::V("\"x\""),
            ],
        );
        b.prepare(&change(&t, kind, Some(new), None)).key()
    };
    let base = key(ChangeKind::Insert, "\"ann\"", "\"a\"", "true");
    assert_eq!(
        base,
        key(ChangeKind::Insert, "\"ann\"", "\"b\"", "true"),
        "title is not read"
    );
    assert_ne!(base, key(ChangeKind::Insert, "\"bob\"", "\"a\"", "true"));
    assert_ne!(base, key(ChangeKind::Insert, "\"ann\"", "\"a\"", "false"));
    assert_ne!(base, key(ChangeKind::Update, "\"ann\"", "\"a\"", "true"));
}

fn any_cell() -> impl Strategy<Value = C> {
    prop_oneof![
        Just(C::V("1")),
        Just(C::V("\"ann\"")),
        Just(C::V("true")),
        Just(C::V("\"2024-01-01\"")),
        Just(C::V("{\"a\":[1]}")),
        Just(C::V("not json")),
        Just(C::V("")),
        Just(C::Null),
        Just(C::Unchanged),
        Just(C::Absent),
    ]
}

/// Few values, so that two random images often share what the rules read.
fn few_cells() -> impl Strategy<Value = C> {
    prop_oneof![
        Just(C::V("\"ann\"")),
        Just(C::V("true")),
        Just(C::V("false")),
        Just(C::Null),
        Just(C::Unchanged),
        Just(C::Absent),
    ]
}

proptest! {
    /// Changes with equal decision keys get equal decisions, for every caller. The second
    /// change is the first with the columns the rules do not read redrawn, and some of those
    /// they read too, so keys are often equal and often differ in one read cell only.
    #[test]
    fn equal_decision_keys_mean_equal_decisions(
        images in prop::collection::vec(prop::collection::vec(few_cells(), 6), 2),
        redrawn in prop::collection::vec(prop::collection::vec(few_cells(), 6), 2),
        redraw_read in prop::collection::vec(any::<bool>(), 4),
        present in prop::collection::vec(any::<bool>(), 2),
        kind in 0..4u8,
    ) {
        let t = todos(ReplicaIdentity::Full);
        let b = bound(RULES, &t);
        let kind = [ChangeKind::Insert, ChangeKind::Update, ChangeKind::Delete, ChangeKind::Truncate][kind as usize];
        let read = [OWNER, DONE];
        let mixed = |i: usize| -> Vec<C> {
            (0..6)
                .map(|c| match read.iter().position(|r| *r == c) {
                    Some(r) if !redraw_read[i * 2 + r] => images[i][c],
                    _ => redrawn[i][c],
                })
                .collect()
        };
        let one = change(&t, kind, present[0].then(|| row(&t, &images[0])), present[1].then(|| row(&t, &images[1])));
        let two = change(&t, kind, present[0].then(|| row(&t, &mixed(0))), present[1].then(|| row(&t, &mixed(1))));
        let (one, two) = (b.prepare(&one), b.prepare(&two));
        if one.key() == two.key() {
            for who in [user("ann"), user("bob"), anon(), service()] {
                prop_assert_eq!(one.decide(&who), two.decide(&who));
            }
        }
    }

    /// Any row images, any kind: deciding never panics, and what it shows is always within
    /// the columns some rule allows and never reaches outside the table.
    #[test]
    fn decisions_never_panic_and_stay_within_the_table(
        new in prop::collection::vec(any_cell(), 0..8),
        old in prop::collection::vec(any_cell(), 0..8),
        kind in 0..4u8,
        has_new in any::<bool>(),
        has_old in any::<bool>(),
    ) {
        let t = todos(ReplicaIdentity::Full);
        let b = bound(RULES, &t);
        let kind = [ChangeKind::Insert, ChangeKind::Update, ChangeKind::Delete, ChangeKind::Truncate][kind as usize];
        let c = change(
            &t,
            kind,
            has_new.then(|| row(&t, &new)),
            has_old.then(|| row(&t, &old)),
        );
        for who in [user("ann"), user("bob"), anon(), service()] {
            if let Visibility::Visible { columns, old } = b.decide(&c, &who) {
                prop_assert_eq!(columns.width(), t.columns.len());
                if who.role != "service_role" {
                    prop_assert!(kind != ChangeKind::Truncate);
                }
                if let OldImage::KeyOnly(key) = old {
                    prop_assert!(key.is_subset(&columns));
                    prop_assert!(key.is_subset(&cols(&t, &[ID])));
                }
            }
        }
    }
}

/// `prices(id int8 key, price numeric, code character(4), tag citext, owner uuid)`.
fn prices() -> Arc<Table> {
    let col = |name: &str, ty: &str, oid: u32| Column {
        name: name.into(),
        type_name: ty.into(),
        type_oid: oid,
        key: name == "id",
    };
    Arc::new(Table {
        oid: 16390,
        schema: "public".into(),
        name: "todos".into(),
        replica_identity: ReplicaIdentity::Default,
        json: Default::default(),
        columns: vec![
            col("id", "int8", 20),
            col("price", "numeric", 1700),
            col("code", "bpchar", 1042),
            // An extension type: its OID is above the built-in range.
            col("tag", "citext", 16_500),
            col("owner", "uuid", 2950),
        ]
        .into(),
    })
}

#[test]
fn constants_compare_with_columns_as_postgres_coerces_them() {
    let table = prices();
    let insert = |cells: &[C]| change(&table, ChangeKind::Insert, Some(row(&table, cells)), None);
    let sees = |condition: &str, change: &RowChange| {
        let text =
            format!("[[table]]\ntable = \"todos\"\nroles = [\"authenticated\"]\nrows = {condition:?}\n");
        let decision = bound(&text, &table).decide(change, &user("ann"));
        matches!(decision, Visibility::Visible { .. })
    };
    let owner = "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"";
    let a = insert(&[
        C::V("1"),
        C::V("0.10"),
        C::V("\"ab  \""),
        C::V("\"Blue\""),
        C::V(owner),
    ]);
    // numeric: exact decimals, never through a double (0.1 + 0.2 is not 0.3 there).
    assert!(sees("price = 0.1", &a));
    assert!(!sees("price = 0.1000000000000000001", &a));
    assert!(sees("price < 0.1000000000000000001", &a));
    // character(n) ignores trailing spaces; citext ignores case; uuids compare as values.
    assert!(sees("code = 'ab'", &a) && sees("'ab ' = code", &a));
    assert!(sees("tag = 'BLUE'", &a) && sees("tag IN ('red', 'blue')", &a));
    assert!(!sees("tag NOT IN ('blue', 'red')", &a));
    assert!(sees("owner = 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'", &a));
    // A NULL column: unknown, so hidden either way.
    let b = insert(&[C::V("2"), C::Null, C::Null, C::Null, C::Null]);
    assert!(!sees("price = 0.1", &b) && !sees("NOT (price = 0.1)", &b));
    // A constant that is not a value of the column's type is Postgres's error, at bind.
    let text = "[[table]]\ntable = \"todos\"\nroles = [\"authenticated\"]\nrows = \"owner = 'nobody'\"\n";
    let error = rules(text).bind(&table).unwrap_err().to_string();
    assert!(
        error.contains("invalid input syntax for type uuid: \"nobody\""),
        "{error}"
    );
}
