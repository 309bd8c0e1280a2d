//! The grouped delivery path without a database: tables with policy rules, subscriptions with
//! real outbound queues. Checks who is grouped with whom, that each socket gets exactly its
//! frames (bindings, filters, `select`, hidden columns), that a group's sockets share one
//! encoded frame, and commit order across tables.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value as Json, json};

use super::groups::{Audience, TableAccess, TableFacts};
use super::{Decisions, decide_by_rules, push_in_order};
use crate::auth::Claims;
use crate::change::{ChangeKind, Epoch, Position, RowChange, Table, Transaction};
use crate::changes::payload::PayloadLimits;
use crate::changes::service::Subscription;
use crate::changes::subscription::Binding;
use crate::changes::testing::{V, row, table};
use crate::lsn::Lsn;
use crate::policy::{ColumnSet, PolicySet};
use crate::protocol::outbound::{Outbound, Taken};
use crate::protocol::phoenix::Vsn;

const RULES: &str = r#"
[[table]]
description = "owners see their rows"
table = "public.todos"
rows = "owner = auth.uid()"

[[table]]
description = "cheap rows are public, without the price"
table = "public.todos"
rows = "price < 50"
columns = ["id", "owner", "title"]

[[table]]
table = "public.notes"
rows = "true"
"#;

fn claims(sub: &str, exp: i64) -> Arc<Claims> {
    let all = json!({"role": "authenticated", "sub": sub, "exp": exp});
    Arc::new(Claims {
        role: "authenticated".to_owned(),
        exp,
        sub: Some(sub.to_owned()),
        all: all.as_object().cloned().unwrap_or_default(),
    })
}

/// `todos(id int8 key, owner text, title text, price int4)` or `notes(id int8 key, body text)`.
fn shape(name: &str, oid: u32) -> Arc<Table> {
    let mut t = if name == "notes" {
        table(&[("id", "int8", 20), ("body", "text", 25)])
    } else {
        table(&[
            ("id", "int8", 20),
            ("owner", "text", 25),
            ("title", "text", 25),
            ("price", "int4", 23),
        ])
    };
    t.name = name.into();
    t.oid = oid;
    Arc::new(t)
}

fn facts(table: &Arc<Table>) -> Arc<TableFacts> {
    let set = PolicySet::from_toml(Path::new("rules.toml"), RULES).unwrap_or_else(|e| panic!("{e:?}"));
    let rules = set
        .table_rules("public", &table.name)
        .expect("rules for the table");
    let bound = rules
        .bind_with_primary_key(table, &["id"])
        .unwrap_or_else(|e| panic!("{e}"));
    Arc::new(TableFacts {
        table: table.clone(),
        access: TableAccess::Rules(Arc::new(bound)),
        primary_key: Some(ColumnSet::from_indexes(table.columns.len(), [0])),
    })
}

struct Socket {
    outbound: Arc<Outbound>,
    subscription: Arc<Subscription>,
}

fn socket(sub: &str, exp: i64, topic: &str, bindings: &[Json]) -> Socket {
    let outbound = Arc::new(Outbound::new(100));
    let subscription = Arc::new(Subscription {
        outbound: outbound.clone(),
        vsn: Vsn::V1,
        topic: Arc::from(topic),
        claims: claims(sub, exp),
        bindings: bindings
            .iter()
            .map(|b| Binding::parse(b).unwrap_or_else(|e| panic!("{e}")))
            .collect(),
        legacy: false,
        since: None,
        seam: None,
    });
    Socket {
        outbound,
        subscription,
    }
}

fn frames(socket: &Socket) -> Vec<Bytes> {
    match socket.outbound.take() {
        Taken::Frames(frames) => frames.into_iter().collect(),
        other => panic!("the queue is not open: {other:?}"),
    }
}

/// The JSON message inside a server-to-client text frame (unmasked, one fragment).
fn message(frame: &Bytes) -> Json {
    let header = match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    serde_json::from_slice(&frame[header..]).unwrap_or_else(|e| panic!("{e}"))
}

fn insert(table: &Arc<Table>, values: &[V<'_>]) -> Arc<RowChange> {
    Arc::new(RowChange {
        position: Position {
            epoch: Epoch(1),
            commit_lsn: Lsn(0x10),
            index: 0,
        },
        commit_timestamp: 1_763_511_760_877_123,
        table: table.clone(),
        kind: ChangeKind::Insert,
        new: Some(row(table, values)),
        old: None,
    })
}

fn transaction(changes: Vec<Arc<RowChange>>) -> Transaction {
    Transaction {
        epoch: Epoch(1),
        xid: 7,
        commit_lsn: Lsn(0x10),
        end_lsn: Lsn(0x20),
        commit_timestamp: 1_763_511_760_877_123,
        backlog: false,
        changes,
        overflow: None,
        access_changed: false,
        follows_gap: false,
    }
}

/// What the dispatcher does for tables with rules, without the database.
fn deliver(transaction: &Transaction, audience: &mut Audience, facts: &[Arc<TableFacts>]) -> usize {
    let tables: Vec<Arc<Table>> = facts.iter().map(|f| f.table.clone()).collect();
    let mut decisions = Vec::new();
    for f in facts {
        audience.prepare(f, &tables);
        let plan = audience.plan_mut(&f.table).expect("a plan once prepared");
        let TableAccess::Rules(rules) = &f.access else {
            panic!("rules expected");
        };
        let changes: Vec<&RowChange> = transaction
            .changes
            .iter()
            .filter(|c| Arc::ptr_eq(&c.table, &f.table))
            .map(|c| &**c)
            .collect();
        decisions.push(Decisions {
            table: f.table.clone(),
            changes: changes.len(),
            visibility: decide_by_rules(rules, plan, &changes),
        });
    }
    push_in_order(transaction, audience, &decisions, PayloadLimits::default())
}

fn todos_binding() -> Json {
    json!({"event": "*", "schema": "public", "table": "todos"})
}

#[test]
fn subscribers_are_grouped_by_the_claims_the_rules_read_then_by_topic_and_bindings() {
    let todos = shape("todos", 16_500);
    let sockets = [
        // Same claims group (the rules read `sub` only, not `exp`), same topic and binding.
        socket("a", 1, "realtime:t1", &[todos_binding()]),
        socket("a", 2, "realtime:t1", &[todos_binding()]),
        // Same claims group, another filter.
        socket(
            "a",
            1,
            "realtime:t1",
            &[json!({"event": "*", "schema": "public", "table": "todos", "filter": "title=eq.x"})],
        ),
        // Same claims group, another topic.
        socket("a", 1, "realtime:t2", &[todos_binding()]),
        // Another claims group.
        socket("b", 1, "realtime:t1", &[todos_binding()]),
        // No binding on this table.
        socket(
            "a",
            1,
            "realtime:t1",
            &[json!({"schema": "public", "table": "notes"})],
        ),
    ];
    let mut audience = Audience::new(sockets.iter().map(|s| s.subscription.clone()).collect());
    audience.prepare(&facts(&todos), std::slice::from_ref(&todos));
    let plan = audience.plan(&todos).expect("a plan");
    let shape: Vec<Vec<usize>> = plan
        .claim_groups
        .iter()
        .map(|c| c.groups.iter().map(|g| g.outbounds.len()).collect())
        .collect();
    assert_eq!(shape, vec![vec![2, 1, 1], vec![1]]);
    assert_eq!(plan.members(), 5);
}

#[test]
fn each_socket_gets_exactly_the_rows_and_columns_it_may_see_and_a_group_shares_one_frame() {
    let todos = shape("todos", 16_500);
    let plain = || socket("a", 1, "realtime:t1", &[todos_binding()]);
    let (a1, a2) = (plain(), socket("a", 2, "realtime:t1", &[todos_binding()]));
    let filtered = socket(
        "a",
        1,
        "realtime:t1",
        &[json!({"event": "INSERT", "schema": "public", "table": "todos", "filter": "title=eq.y"})],
    );
    let selecting = socket(
        "a",
        1,
        "realtime:t2",
        &[json!({"event": "INSERT", "schema": "public", "table": "todos", "select": ["title"]})],
    );
    let deletes_only = socket(
        "a",
        1,
        "realtime:t1",
        &[json!({"event": "DELETE", "schema": "public", "table": "todos"})],
    );
    let b = socket("b", 1, "realtime:t1", &[todos_binding()]);
    let all = [&a1, &a2, &filtered, &selecting, &deletes_only, &b];
    let mut audience = Audience::new(all.iter().map(|s| s.subscription.clone()).collect());

    let t = transaction(vec![
        // a's own expensive row: a sees everything, b nothing.
        insert(&todos, &[V::J("1"), V::J("\"a\""), V::J("\"y\""), V::J("100")]),
        // b's cheap row: b sees everything, a all but the price.
        insert(&todos, &[V::J("2"), V::J("\"b\""), V::J("\"z\""), V::J("10")]),
    ]);
    let pushed = deliver(&t, &mut audience, &[facts(&todos)]);

    let (f1, f2) = (frames(&a1), frames(&a2));
    assert_eq!(f1.len(), 2);
    assert_eq!(f2.len(), 2);
    // The two sockets of one group share the encoded bytes.
    assert_eq!(f1[0].as_ptr(), f2[0].as_ptr());
    let first = message(&f1[0]);
    assert_eq!(first["event"], "postgres_changes");
    assert_eq!(first["topic"], "realtime:t1");
    assert_eq!(first["payload"]["ids"], json!([a1.subscription.bindings[0].id]));
    assert_eq!(
        first["payload"]["data"]["record"],
        json!({"id": 1, "owner": "a", "title": "y", "price": 100})
    );
    let second = message(&f1[1]);
    assert_eq!(
        second["payload"]["data"]["record"],
        json!({"id": 2, "owner": "b", "title": "z"}),
        "the price of another owner's row stays hidden"
    );

    let f = frames(&filtered);
    assert_eq!(f.len(), 1, "only the row whose title is y");
    assert_eq!(message(&f[0])["payload"]["data"]["record"]["id"], 1);

    let s = frames(&selecting);
    assert_eq!(s.len(), 2);
    assert_eq!(message(&s[0])["topic"], "realtime:t2");
    assert_eq!(
        message(&s[0])["payload"]["data"]["record"],
        json!({"id": 1, "title": "y"}),
        "select carries the key"
    );

    assert!(frames(&deletes_only).is_empty());

    let fb = frames(&b);
    assert_eq!(fb.len(), 1);
    assert_eq!(
        message(&fb[0])["payload"]["data"]["record"],
        json!({"id": 2, "owner": "b", "title": "z", "price": 10})
    );
    assert_eq!(pushed, 2 + 2 + 1 + 2 + 1);
}

#[test]
fn changes_of_several_tables_arrive_in_commit_order() {
    let (todos, notes) = (shape("todos", 16_500), shape("notes", 16_501));
    let everything = socket(
        "a",
        1,
        "realtime:all",
        &[json!({"event": "*", "schema": "public"})],
    );
    let mut audience = Audience::single(everything.subscription.clone());
    let t = transaction(vec![
        insert(&todos, &[V::J("1"), V::J("\"a\""), V::J("\"x\""), V::J("1")]),
        insert(&notes, &[V::J("2"), V::J("\"n\"")]),
        insert(&todos, &[V::J("3"), V::J("\"a\""), V::J("\"x\""), V::J("1")]),
    ]);
    deliver(&t, &mut audience, &[facts(&todos), facts(&notes)]);
    let order: Vec<(Json, Json)> = frames(&everything)
        .iter()
        .map(message)
        .map(|m| {
            let data = &m["payload"]["data"];
            (data["table"].clone(), data["record"]["id"].clone())
        })
        .collect();
    assert_eq!(
        order,
        vec![
            (json!("todos"), json!(1)),
            (json!("notes"), json!(2)),
            (json!("todos"), json!(3))
        ]
    );
}

#[test]
fn a_new_table_shape_replaces_the_old_plan() {
    let old = shape("todos", 16_500);
    let s = socket("a", 1, "realtime:t1", &[todos_binding()]);
    let mut audience = Audience::single(s.subscription.clone());
    audience.prepare(&facts(&old), std::slice::from_ref(&old));
    let new = shape("todos", 16_500);
    audience.prepare(&facts(&new), std::slice::from_ref(&new));
    assert!(audience.plan(&new).is_some());
    assert!(audience.plan(&old).is_none(), "the old shape's plan is dropped");
}

#[test]
fn remembered_decisions_give_the_same_frames() {
    let todos = shape("todos", 16_500);
    let (a, b) = (
        socket("a", 1, "realtime:t1", &[todos_binding()]),
        socket("b", 1, "realtime:t1", &[todos_binding()]),
    );
    let mut audience = Audience::new(vec![a.subscription.clone(), b.subscription.clone()]);
    let facts = facts(&todos);
    let t = transaction(vec![
        insert(&todos, &[V::J("1"), V::J("\"a\""), V::J("\"y\""), V::J("100")]),
        insert(&todos, &[V::J("2"), V::J("\"b\""), V::J("\"z\""), V::J("10")]),
    ]);
    deliver(&t, &mut audience, std::slice::from_ref(&facts));
    let first: Vec<Json> = frames(&a).iter().chain(&frames(&b)).map(message).collect();
    // The same values again: decided from the memo this time.
    deliver(&t, &mut audience, std::slice::from_ref(&facts));
    let again: Vec<Json> = frames(&a).iter().chain(&frames(&b)).map(message).collect();
    assert_eq!(first.len(), 3);
    assert_eq!(first, again);
}

#[test]
fn a_claim_group_whose_rows_never_repeat_stops_remembering() {
    use super::memo::Memo;
    use crate::policy::Visibility;

    let todos = shape("todos", 16_500);
    let facts = facts(&todos);
    let TableAccess::Rules(rules) = &facts.access else {
        panic!("rules expected");
    };
    let row_of = |owner: &str| insert(&todos, &[V::J("1"), V::J(owner), V::J("\"y\""), V::J("100")]);
    let (mut repeating, mut distinct) = (Memo::default(), Memo::default());
    for i in 0..2048 {
        let same = row_of("\"a\"");
        let key = rules.prepare(&same).key();
        repeating.decide(&key, || Visibility::Hidden);
        let other = row_of(&format!("\"owner {i}\""));
        let key = rules.prepare(&other).key();
        distinct.decide(&key, || Visibility::Hidden);
    }
    assert!(repeating.is_enabled());
    assert!(!distinct.is_enabled());
}
