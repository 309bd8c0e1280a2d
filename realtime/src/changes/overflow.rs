//! Transactions too large to keep (an [`Overflow`] marker instead of changes): each subscription
//! that listens to one of their tables, for a kind of change they made, gets one `system`
//! message telling it to refetch, in commit order with the other pushes. Row filters and row
//! policies cannot be checked without rows, so every such subscription is told; the message
//! names tables and a position, never row data.

use serde_json::json;

use std::sync::Arc;

use crate::change::{Overflow, Table, Transaction};
use crate::changes::resume::refetch_object;
use crate::changes::service::Subscription;

/// Why the `system` message was sent, for clients that act on it.
pub const REASON: &str = "transaction_too_large";

/// Pushes the refetch message of an overflowed transaction to those of `subscriptions` that
/// listen to its tables (the dispatcher's live audience, or one subscription it catches up).
/// `readable(role, table)` says whether the role may read the table at all: the signal never
/// names a table its receiver cannot read (a wildcard binding covers tables the role may not
/// see, and a role may lose access while subscribed).
pub fn notify<'s>(
    subscriptions: impl IntoIterator<Item = &'s Arc<Subscription>>,
    transaction: &Transaction,
    readable: impl Fn(&str, &Table) -> bool,
) {
    let Some(overflow) = &transaction.overflow else {
        return;
    };
    let position = overflow
        .last_position(transaction.epoch, transaction.commit_lsn)
        .to_string();
    for subscription in subscriptions {
        let tables = tables_for(subscription, overflow, &readable);
        if tables.is_empty() {
            continue;
        }
        let message = format!(
            "A transaction changed {} rows, more than realtime keeps in memory: its changes were not sent; refetch {}",
            overflow.changes,
            tables.join(", ")
        );
        let mut payload = refetch_object(subscription.sub_topic(), REASON, message);
        payload.insert("tables".into(), json!(tables));
        payload.insert("position".into(), json!(position));
        payload.insert("changes".into(), json!(overflow.changes));
        subscription.push_system(&serde_json::Value::Object(payload).to_string());
    }
}

/// The overflowed tables some subscription of `subscriptions` listens to, with the role of each
/// such subscription: the (role, table) pairs whose readability [`notify`] needs.
pub fn pairs<'s>(
    subscriptions: impl IntoIterator<Item = &'s Arc<Subscription>>,
    overflow: &Overflow,
) -> Vec<(String, Arc<Table>)> {
    let mut out: Vec<(String, Arc<Table>)> = Vec::new();
    for subscription in subscriptions {
        for (table, kinds) in &overflow.tables {
            let listens = subscription.bindings.iter().any(|b| {
                b.matches_table(&table.schema, &table.name) && kinds.iter().any(|k| b.event.matches(k))
            });
            let role = &subscription.claims.role;
            if listens && !out.iter().any(|(r, t)| r == role && Arc::ptr_eq(t, table)) {
                out.push((role.clone(), table.clone()));
            }
        }
    }
    out
}

/// `schema.table` of each overflowed table the subscription listens to and may read.
fn tables_for(
    subscription: &Subscription,
    overflow: &Overflow,
    readable: &impl Fn(&str, &Table) -> bool,
) -> Vec<String> {
    overflow
        .tables
        .iter()
        .filter(|(table, kinds)| {
            subscription.bindings.iter().any(|b| {
                b.matches_table(&table.schema, &table.name) && kinds.iter().any(|k| b.event.matches(k))
            }) && readable(&subscription.claims.role, table)
        })
        .map(|(table, _)| format!("{}.{}", table.schema, table.name))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::auth::Claims;
    use crate::change::{ChangeKind, ChangeKinds, Epoch, Table};
    use crate::changes::service::Changes;
    use crate::changes::subscription::Binding;
    use crate::channels::registry::SubscriberId;
    use crate::config::{DatabaseConfig, ReplicationConfig};
    use crate::lsn::Lsn;
    use crate::policy::PolicySet;
    use crate::protocol::outbound::{Outbound, Taken};
    use crate::protocol::phoenix::Vsn;

    fn subscribe(changes: &Changes, topic: &str, bindings: Value) -> Arc<Outbound> {
        let outbound = Arc::new(Outbound::new(16));
        let bindings = bindings
            .as_array()
            .unwrap()
            .iter()
            .map(|b| Binding::parse(b).unwrap())
            .collect();
        changes.subscribe(
            SubscriberId::next(),
            Subscription {
                outbound: outbound.clone(),
                vsn: Vsn::V1,
                topic: Arc::from(format!("realtime:{topic}")),
                claims: Arc::new(Claims {
                    role: "anon".into(),
                    exp: 0,
                    sub: None,
                    all: Default::default(),
                }),
                bindings,
                legacy: false,
                since: None,
                seam: None,
            },
        );
        outbound
    }

    /// The payloads of the frames queued on `outbound`.
    fn received(outbound: &Outbound) -> Vec<Value> {
        let Taken::Frames(frames) = outbound.take() else {
            panic!("the queue is open")
        };
        frames
            .iter()
            .map(|f| {
                // An unmasked server text frame with a 1-byte or 2-byte length.
                let start = if f[1] == 126 { 4 } else { 2 };
                let message: Value = serde_json::from_slice(&f[start..]).unwrap();
                assert_eq!(message["event"], "system");
                message["payload"].clone()
            })
            .collect()
    }

    #[tokio::test]
    async fn subscribers_of_an_overflowed_table_and_kind_are_told_to_refetch() {
        let database = DatabaseConfig::from_url("postgres://u:p@127.0.0.1:1/db").unwrap();
        let changes = Changes::new(
            &database,
            &ReplicationConfig::default(),
            Arc::new(PolicySet::empty()),
        );
        let items = subscribe(
            &changes,
            "items",
            json!([{"event": "INSERT", "schema": "public", "table": "items"}]),
        );
        let deletes = subscribe(
            &changes,
            "deletes",
            json!([{"event": "DELETE", "schema": "public", "table": "items"}]),
        );
        let other = subscribe(
            &changes,
            "other",
            json!([{"event": "*", "schema": "public", "table": "other"}]),
        );
        let all = subscribe(&changes, "all", json!([{"event": "*", "schema": "*"}]));
        let mut table = crate::changes::testing::table(&[("id", "int4", 23)]);
        table.name = "items".into();
        let mut kinds = ChangeKinds::default();
        kinds.insert(ChangeKind::Insert);
        let transaction = Transaction {
            epoch: Epoch(1),
            xid: 1,
            commit_lsn: Lsn(0x10),
            end_lsn: Lsn(0x20),
            commit_timestamp: 0,
            backlog: false,
            changes: Vec::new(),
            overflow: Some(Arc::new(Overflow {
                tables: vec![(Arc::new(table) as Arc<Table>, kinds)],
                changes: 1_000_000,
            })),
            access_changed: false,
            follows_gap: false,
        };
        let (_, subscriptions) = changes.snapshot();
        let pairs = pairs(
            subscriptions.iter().map(|(_, s)| s),
            transaction.overflow.as_ref().unwrap(),
        );
        assert_eq!(pairs.len(), 1, "one role, one table: {pairs:?}");
        // A role that may not read the table is not told its name.
        notify(subscriptions.iter().map(|(_, s)| s), &transaction, |_, _| false);
        for outbound in [&items, &deletes, &other, &all] {
            assert!(received(outbound).is_empty());
        }
        notify(
            subscriptions.iter().map(|(_, s)| s),
            &transaction,
            |role, table| role == "anon" && &*table.name == "items",
        );
        for (outbound, channel) in [(&items, "items"), (&all, "all")] {
            let got = received(outbound);
            assert_eq!(got.len(), 1, "{channel}");
            let p = &got[0];
            assert_eq!(p["channel"], channel);
            assert_eq!(
                (
                    p["extension"].as_str(),
                    p["status"].as_str(),
                    p["reason"].as_str()
                ),
                (Some("postgres_changes"), Some("error"), Some(REASON))
            );
            assert_eq!(p["tables"], json!(["public.items"]));
            assert_eq!(p["changes"], 1_000_000);
            assert_eq!(p["position"], "0000000000000001-0000000000000010-000F423F");
        }
        assert!(received(&deletes).is_empty(), "no DELETE was in the transaction");
        assert!(received(&other).is_empty(), "another table");
    }
}
