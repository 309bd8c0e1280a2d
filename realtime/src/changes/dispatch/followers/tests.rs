//! The seam between replay and live delivery, without a database: a table with policy rules,
//! subscriptions with real outbound queues, transactions handed in by hand.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value as Json, json};

use super::*;
use crate::auth::Claims;
use crate::change::{ChangeKind, Epoch, RowChange, Table};
use crate::changes::dispatch::{TableAccess, TableFacts};
use crate::changes::subscription::Binding;
use crate::changes::testing::{V, row, table};
use crate::config::{DatabaseConfig, ReplicationConfig};
use crate::lsn::Lsn;
use crate::policy::{ColumnSet, PolicySet};
use crate::protocol::outbound::{Outbound, Taken};
use crate::protocol::phoenix::Vsn;

const RULES: &str = r#"
[[table]]
table = "public.todos"
rows = "true"
"#;

struct Setup {
    changes: Arc<Changes>,
    dispatcher: Dispatcher,
    followers: Followers,
    todos: Arc<Table>,
}

fn setup(window: WindowLimits) -> Setup {
    let policy =
        Arc::new(PolicySet::from_toml(Path::new("rules.toml"), RULES).unwrap_or_else(|e| panic!("{e:?}")));
    // Never connected: the table's facts are filled in below.
    let database =
        DatabaseConfig::from_url("postgres://nobody@127.0.0.1:1/none").unwrap_or_else(|e| panic!("{e}"));
    let replication = ReplicationConfig {
        window,
        ..ReplicationConfig::default()
    };
    let changes = Arc::new(Changes::new(&database, &replication, policy.clone()));
    let mut todos = table(&[("id", "int8", 20), ("title", "text", 25)]);
    todos.name = "todos".into();
    let todos = Arc::new(todos);
    let rules = policy
        .table_rules("public", "todos")
        .expect("rules")
        .bind_with_primary_key(&todos, &["id"])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut dispatcher = Dispatcher::new(changes.clone());
    dispatcher.facts.insert(
        todos.oid,
        Arc::new(TableFacts {
            table: todos.clone(),
            access: TableAccess::Rules(Arc::new(rules)),
            primary_key: Some(ColumnSet::from_indexes(2, [0])),
        }),
    );
    Setup {
        changes,
        dispatcher,
        followers: Followers::new(window),
        todos,
    }
}

fn window() -> WindowLimits {
    WindowLimits::default()
}

impl Setup {
    /// Subscribes a socket to every change of `todos`; returns its queue.
    fn subscribe(&mut self, since: Option<Position>, capacity: usize) -> (SubscriberId, Arc<Outbound>) {
        let outbound = Arc::new(Outbound::new(capacity));
        let id = SubscriberId::next();
        self.changes.subscribe(id, self.subscription(&outbound, since));
        self.followers.sync(&self.changes);
        (id, outbound)
    }

    fn subscription(&self, outbound: &Arc<Outbound>, since: Option<Position>) -> Subscription {
        let all = json!({"role": "authenticated", "sub": "u1"});
        Subscription {
            outbound: outbound.clone(),
            vsn: Vsn::V1,
            topic: Arc::from("realtime:room"),
            claims: Arc::new(Claims {
                role: "authenticated".to_owned(),
                exp: i64::MAX,
                sub: Some("u1".to_owned()),
                all: all.as_object().cloned().unwrap_or_default(),
            }),
            bindings: vec![
                Binding::parse(&json!({"event": "*", "schema": "public", "table": "todos"}))
                    .unwrap_or_else(|e| panic!("{e}")),
            ],
            legacy: false,
            since,
            seam: None,
        }
    }

    /// A transaction of `n` inserts committed now at `lsn`.
    fn transaction(&self, epoch: u64, lsn: u64, n: u32, backlog: bool) -> Arc<Transaction> {
        let at = now_micros();
        Arc::new(Transaction {
            epoch: Epoch(epoch),
            xid: lsn as u32,
            commit_lsn: Lsn(lsn),
            end_lsn: Lsn(lsn + 1),
            commit_timestamp: at,
            backlog,
            overflow: None,
            access_changed: false,
            follows_gap: false,
            changes: (0..n)
                .map(|index| {
                    let id = (lsn * 100 + u64::from(index)).to_string();
                    Arc::new(RowChange {
                        position: Position {
                            epoch: Epoch(epoch),
                            commit_lsn: Lsn(lsn),
                            index,
                        },
                        commit_timestamp: at,
                        table: self.todos.clone(),
                        kind: ChangeKind::Insert,
                        new: Some(row(&self.todos, &[V::J(&id), V::J("\"t\"")])),
                        old: None,
                    })
                })
                .collect(),
        })
    }

    async fn publish(&mut self, transaction: Arc<Transaction>) {
        self.followers.sync(&self.changes);
        self.followers.publish(&mut self.dispatcher, transaction).await;
    }

    /// Catch-up rounds until nobody is catching up (or `rounds` ran), taking each queue's
    /// frames after every round as a reading client does.
    async fn catch_up(&mut self, queues: &[&Arc<Outbound>], rounds: usize) -> Vec<Vec<Json>> {
        let mut read = vec![Vec::new(); queues.len()];
        for _ in 0..rounds {
            self.followers.sync(&self.changes);
            if !self.followers.catching_up() {
                break;
            }
            self.followers.catch_up(&mut self.dispatcher, None).await;
            for (q, out) in queues.iter().zip(&mut read) {
                out.extend(messages(q));
            }
        }
        read
    }
}

fn messages(outbound: &Outbound) -> Vec<Json> {
    match outbound.take() {
        Taken::Frames(frames) => frames
            .iter()
            .map(|frame| {
                let header = match frame[1] & 0x7f {
                    126 => 4,
                    127 => 10,
                    _ => 2,
                };
                serde_json::from_slice(&frame[header..]).unwrap_or_else(|e| panic!("{e}"))
            })
            .collect(),
        other => panic!("the queue is not open: {other:?}"),
    }
}

/// Each message as `"<commit lsn>/<index>"` for a change, or `system:<reason or resumed>`.
fn summary(messages: &[Json]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m["event"].as_str() {
            Some("postgres_changes") => {
                let p: Position = m["payload"]["position"]
                    .as_str()
                    .and_then(|p| p.parse().ok())
                    .expect("a position");
                format!("{}/{}", p.commit_lsn.0, p.index)
            }
            Some("system") if m["payload"]["resumed"] == json!(true) => "system:resumed".to_owned(),
            Some("system") => format!("system:{}", m["payload"]["reason"].as_str().unwrap_or("?")),
            other => format!("{other:?}"),
        })
        .collect()
}

fn pos(epoch: u64, lsn: u64, index: u32) -> Position {
    Position {
        epoch: Epoch(epoch),
        commit_lsn: Lsn(lsn),
        index,
    }
}

#[tokio::test]
async fn a_resuming_subscription_gets_what_it_missed_then_live_each_change_once() {
    let mut s = setup(window());
    let (_, live) = s.subscribe(None, 1000);
    s.publish(s.transaction(1, 100, 3, false)).await;
    s.publish(s.transaction(1, 200, 2, false)).await;
    let (_, resuming) = s.subscribe(Some(pos(1, 100, 0)), 1000);
    assert!(s.followers.catching_up());
    // While it waits for its replay, live delivery passes it by: the replay will carry it.
    s.publish(s.transaction(1, 300, 1, false)).await;
    assert!(messages(&resuming).is_empty());
    let read = s.catch_up(&[&resuming], 10).await;
    s.publish(s.transaction(1, 400, 1, false)).await;
    let mut got = read[0].clone();
    got.extend(messages(&resuming));
    assert_eq!(
        summary(&got),
        [
            "100/1",
            "100/2",
            "200/0",
            "200/1",
            "300/0",
            "system:resumed",
            "400/0"
        ]
    );
    assert_eq!(
        summary(&messages(&live)),
        ["100/0", "100/1", "100/2", "200/0", "200/1", "300/0", "400/0"]
    );
}

#[tokio::test]
async fn a_long_replay_goes_at_the_pace_of_the_socket_and_never_overflows_it() {
    let mut s = setup(window());
    for k in 1..=10 {
        s.publish(s.transaction(1, k * 100, 30, false)).await;
    }
    let (_, resuming) = s.subscribe(Some(pos(1, 100, 0)), 40);
    let mut got = Vec::new();
    let mut rounds = 0;
    while s.followers.catching_up() {
        rounds += 1;
        assert!(rounds < 100, "the replay makes progress");
        s.followers.catch_up(&mut s.dispatcher, None).await;
        assert!(resuming.len() <= 40 - RESERVED_ROOM, "a piece fits what was free");
        got.extend(messages(&resuming));
    }
    let got = summary(&got);
    assert_eq!(got.len(), 299 + 1);
    assert_eq!(got.last().map(String::as_str), Some("system:resumed"));
    assert!(rounds > 10, "in pieces: {rounds} rounds");
    let mut unique = got.clone();
    unique.dedup();
    assert_eq!(unique.len(), got.len(), "no change twice");
}

#[tokio::test]
async fn positions_it_cannot_cover_get_the_refetch_signal_and_the_live_stream() {
    let mut s = setup(window());
    s.publish(s.transaction(1, 100, 1, false)).await;
    let (_, other) = s.subscribe(Some(pos(2, 100, 0)), 100);
    let (_, before) = s.subscribe(Some(pos(1, 50, 0)), 100);
    let (_, ahead) = s.subscribe(Some(pos(1, 300, 0)), 100);
    let read = s.catch_up(&[&other, &before, &ahead], 5).await;
    assert_eq!(summary(&read[0]), ["system:other_epoch"]);
    assert_eq!(summary(&read[1]), ["system:outside_window"]);
    assert!(read[2].is_empty(), "ahead of the stream: it waits");
    s.publish(s.transaction(1, 200, 1, false)).await;
    assert_eq!(summary(&messages(&other)), ["200/0"]);
    assert_eq!(summary(&messages(&before)), ["200/0"]);
    s.publish(s.transaction(1, 300, 2, false)).await;
    let read = s.catch_up(&[&ahead], 5).await;
    assert_eq!(summary(&read[0]), ["300/1", "system:resumed"]);
}

#[tokio::test]
async fn before_the_first_transaction_the_announced_epoch_tells_other_histories_apart() {
    let mut s = setup(window());
    let (_, other) = s.subscribe(Some(pos(2, 100, 0)), 100);
    let (_, same) = s.subscribe(Some(pos(1, 100, 0)), 100);
    s.followers.catch_up(&mut s.dispatcher, Some(Epoch(1))).await;
    assert_eq!(summary(&messages(&other)), ["system:other_epoch"]);
    assert!(messages(&same).is_empty(), "its history may still be re-read");
}

#[tokio::test]
async fn history_after_a_restart_goes_only_to_subscriptions_that_resumed() {
    let mut s = setup(window());
    let (_, plain) = s.subscribe(None, 100);
    s.publish(s.transaction(1, 100, 1, true)).await;
    let (_, resuming) = s.subscribe(Some(pos(1, 100, 0)), 100);
    s.publish(s.transaction(1, 200, 1, true)).await;
    let read = s.catch_up(&[&resuming], 5).await;
    s.publish(s.transaction(1, 300, 1, true)).await;
    s.publish(s.transaction(1, 400, 1, false)).await;
    let mut got = read[0].clone();
    got.extend(messages(&resuming));
    assert_eq!(summary(&got), ["200/0", "system:resumed", "300/0", "400/0"]);
    assert_eq!(summary(&messages(&plain)), ["400/0"], "history is not news to it");
}

#[tokio::test]
async fn a_gap_or_a_new_epoch_tells_every_subscription_to_refetch() {
    let mut s = setup(window());
    let (_, live) = s.subscribe(None, 100);
    s.publish(s.transaction(1, 100, 1, false)).await;
    let (_, resuming) = s.subscribe(Some(pos(1, 50, 0)), 100);
    s.followers.gap();
    assert!(!s.followers.catching_up());
    assert_eq!(summary(&messages(&live)), ["100/0", "system:gap"]);
    assert_eq!(summary(&messages(&resuming)), ["system:gap"]);
    s.publish(s.transaction(1, 200, 1, false)).await;
    s.publish(s.transaction(2, 10, 1, false)).await;
    assert_eq!(summary(&messages(&live)), ["200/0", "system:gap", "10/0"]);
    assert_eq!(summary(&messages(&resuming)), ["200/0", "system:gap", "10/0"]);
}

#[tokio::test]
async fn a_replaced_subscription_carries_on_where_the_old_one_was() {
    let mut s = setup(window());
    for k in 1..=3 {
        s.publish(s.transaction(1, k * 100, 20, false)).await;
    }
    let (id, resuming) = s.subscribe(Some(pos(1, 100, 0)), 30);
    s.followers.catch_up(&mut s.dispatcher, None).await;
    let mut got = messages(&resuming);
    // A token refresh: same id, new claims, no `since`.
    s.changes.subscribe(id, s.subscription(&resuming, None));
    let read = s.catch_up(&[&resuming], 50).await;
    got.extend(read[0].clone());
    let got = summary(&got);
    assert_eq!(got.len(), 59 + 1, "{got:?}");
    assert_eq!(got.first().map(String::as_str), Some("100/1"));
    assert_eq!(got.last().map(String::as_str), Some("system:resumed"));
}

#[tokio::test]
async fn a_transaction_too_large_to_keep_is_signalled_live_and_in_its_place_in_a_replay() {
    use crate::change::{ChangeKinds, Overflow};
    let mut s = setup(window());
    let (_, live) = s.subscribe(None, 100);
    s.publish(s.transaction(1, 100, 1, false)).await;
    let mut kinds = ChangeKinds::default();
    kinds.insert(ChangeKind::Insert);
    let big = Arc::new(Transaction {
        changes: Vec::new(),
        overflow: Some(Arc::new(Overflow {
            tables: vec![(s.todos.clone(), kinds)],
            changes: 1_000_000,
        })),
        ..(*s.transaction(1, 200, 0, false)).clone()
    });
    s.publish(big).await;
    s.publish(s.transaction(1, 300, 1, false)).await;
    assert_eq!(
        summary(&messages(&live)),
        ["100/0", "system:transaction_too_large", "300/0"]
    );
    let (_, resuming) = s.subscribe(Some(pos(1, 100, 0)), 100);
    let read = s.catch_up(&[&resuming], 5).await;
    assert_eq!(
        summary(&read[0]),
        ["system:transaction_too_large", "300/0", "system:resumed"]
    );
}
