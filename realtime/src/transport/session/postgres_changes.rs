//! Postgres Changes on a channel: the bindings of `config.postgres_changes` echoed in the join
//! reply, checked against the publication and the subscriber's access, then subscribed. The
//! `system` message "Subscribed to PostgreSQL" goes out only once the subscription is live:
//! every change committed after it reaches the client. A join with
//! `postgres_changes_options.since` resumes instead (see `changes::resume`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Session;
use super::snapshot::{self, SnapshotTask};
use crate::auth::Claims;
use crate::changes::resume::{Refetch, Since, refetch_payload};
use crate::changes::service::Subscription;
use crate::changes::snapshot::failed_payload;
use crate::changes::subscription::{Binding, BindingError};
use crate::channels::registry::SubscriberId;

/// Why bindings cannot be subscribed when the node has no database connection.
const NO_DATABASE: &str = "Realtime was unable to connect to the project database";

/// How often a waiting join looks whether the replication stream is live.
const STREAMING_POLL: Duration = Duration::from_millis(50);

/// The bindings of a join as the client sent them, each parsed or refused.
pub(super) type Requested = Vec<(Value, Result<Binding, BindingError>)>;

pub(super) fn parse(entries: &[Value]) -> Requested {
    entries.iter().map(|e| (e.clone(), Binding::parse(e))).collect()
}

/// The `postgres_changes` list of the join reply: every entry as sent, in order, plus its id
/// (realtime-js matches them by index and rejects the join on any mismatch).
pub(super) fn reply(requested: &Requested) -> Vec<Value> {
    requested
        .iter()
        .map(|(sent, parsed)| match parsed {
            Ok(binding) => binding.reply_entry(),
            Err(_) => {
                let mut entry = sent.clone();
                if let Some(map) = entry.as_object_mut() {
                    map.insert("id".into(), Value::from(0u32));
                }
                entry
            }
        })
        .collect()
}

fn system(extension: &str, status: &str, message: &str, sub_topic: &str) -> String {
    serde_json::json!({ "channel": sub_topic, "extension": extension, "message": message, "status": status })
        .to_string()
}

/// What a channel needs to (re)subscribe its bindings.
pub(super) struct Target<'a> {
    pub topic: &'a str,
    pub sub_topic: &'a str,
    pub join_ref: Option<&'a str>,
    pub id: SubscriberId,
    /// `postgres_changes_options.since`, when the client resumes.
    pub since: Option<&'a Since>,
    /// Read the snapshots the bindings ask for (a join; not a token refresh).
    pub snapshot: bool,
}

/// The outcome of subscribing a channel's bindings.
pub(super) struct Subscribed {
    /// The bindings that passed the checks.
    pub live: Vec<Binding>,
    /// The snapshot being read, when the bindings asked for one.
    pub snapshot: Option<SnapshotTask>,
}

impl Session {
    /// Checks and subscribes the bindings; pushes one `system` error per refused binding and
    /// "Subscribed to PostgreSQL" when at least one is live. Returns the live bindings.
    pub(super) async fn subscribe_changes(
        &mut self,
        target: Target<'_>,
        claims: &Claims,
        requested: &Requested,
    ) -> Subscribed {
        let (live, refused) = Box::pin(self.check_changes(claims, requested)).await;
        for message in &refused {
            let payload = system("postgres_changes", "error", message, target.sub_topic);
            self.push(target.join_ref, target.topic, "system", &payload);
        }
        self.start_changes(target, claims, live)
    }

    /// Checks the bindings against the publication and the subscriber's access: the live ones,
    /// and why each other one was refused.
    pub(super) async fn check_changes(
        &self,
        claims: &Claims,
        requested: &Requested,
    ) -> (Vec<Binding>, Vec<String>) {
        let mut candidates = Vec::new();
        let mut refused = Vec::new();
        for (_, parsed) in requested {
            match parsed {
                Ok(binding) => candidates.push(binding.clone()),
                Err(error) => refused.push(error.to_string()),
            }
        }
        if candidates.is_empty() {
            return (Vec::new(), refused);
        }
        let Some(changes) = self.node.changes.clone() else {
            refused.push(NO_DATABASE.to_owned());
            return (Vec::new(), refused);
        };
        let checks = Box::pin(changes.check(&candidates, claims)).await;
        let mut live = Vec::new();
        for (binding, check) in candidates.into_iter().zip(checks) {
            match check {
                Ok(()) => live.push(binding),
                Err(message) => refused.push(message),
            }
        }
        (live, refused)
    }

    /// Subscribes checked bindings and pushes "Subscribed to PostgreSQL" (none: nothing).
    pub(super) fn start_changes(
        &self,
        target: Target<'_>,
        claims: &Claims,
        live: Vec<Binding>,
    ) -> Subscribed {
        let Target {
            topic,
            sub_topic,
            join_ref,
            id,
            since,
            snapshot,
        } = target;
        let none = |live| Subscribed { live, snapshot: None };
        let Some(changes) = self.node.changes.clone() else {
            return none(Vec::new());
        };
        if live.is_empty() {
            return none(live);
        }
        let subscription = |since| Subscription {
            outbound: self.outbound.clone(),
            vsn: self.vsn,
            topic: Arc::from(topic),
            claims: Arc::new(claims.clone()),
            bindings: live.clone(),
            legacy: false,
            since,
            seam: None,
        };
        let mut subscribed: Value = serde_json::from_str(&system(
            "postgres_changes",
            "ok",
            "Subscribed to PostgreSQL",
            sub_topic,
        ))
        .unwrap_or_default();
        subscribed["position"] = changes.head().map(|p| p.to_string()).into();
        let subscribed = subscribed.to_string();
        // A snapshot is read only on a fresh subscription: a resume already has its rows.
        let snapshots = match snapshot && since.is_none() {
            true => snapshot::requests(&live),
            false => Ok(Vec::new()),
        };
        let (snapshots, refused) = match snapshots {
            Ok(snapshots) => (snapshots, None),
            Err(refused) => (Vec::new(), Some(failed_payload(sub_topic, &refused, 0))),
        };
        if !snapshots.is_empty() {
            self.push(join_ref, topic, "system", &subscribed);
            let task = snapshot::start(changes.clone(), subscription(None), snapshots, id);
            return Subscribed {
                live,
                snapshot: Some(task),
            };
        }
        match since {
            // Resuming: the replay comes from the dispatcher once it sees the subscription, so
            // the confirmation is queued first and the replay follows it.
            Some(Since::Position(position)) => {
                self.push(join_ref, topic, "system", &subscribed);
                changes.subscribe(id, subscription(Some(*position)));
            }
            // Live only from here: the client hears so before the confirmation.
            Some(Since::Invalid(problem)) => {
                let refetch = refetch_payload(sub_topic, Refetch::InvalidPosition, Some(problem));
                crate::metrics::events()
                    .resumes
                    .add(Refetch::InvalidPosition.code());
                changes.subscribe(id, subscription(None));
                self.push(join_ref, topic, "system", &refetch);
                self.push(join_ref, topic, "system", &subscribed);
            }
            // Live: confirmed once the subscription is in place, so every change committed
            // after the confirmation reaches the client.
            None => {
                changes.subscribe(id, subscription(None));
                self.push(join_ref, topic, "system", &subscribed);
            }
        }
        if let Some(refused) = refused {
            self.push(join_ref, topic, "system", &refused);
        }
        none(live)
    }

    /// `postgres_changes_options.wait`: checks the bindings, then waits until the replication
    /// stream is live, within `timeout`. Any refused binding fails the join, as Supabase does.
    pub(super) async fn await_changes(
        &self,
        claims: &Claims,
        requested: &Requested,
        timeout: Duration,
    ) -> Result<Vec<Binding>, String> {
        let ready = async {
            let (live, refused) = Box::pin(self.check_changes(claims, requested)).await;
            if let Some(error) = refused.first() {
                return Err(format!("RealtimeDisabledForConfiguration: {error}"));
            }
            // Changes flow once the stream is streaming; until then a subscription would exist
            // on paper only and the client's first writes could be missed.
            let metrics = self.node.bus.replication_metrics();
            while !metrics.is_streaming() {
                tokio::time::sleep(STREAMING_POLL).await;
            }
            Ok(live)
        };
        match tokio::time::timeout(timeout, ready).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "PostgresChangesSubscribeTimeout: Timed out after {}ms waiting for the postgres_changes subscription",
                timeout.as_millis()
            )),
        }
    }

    pub(super) fn unsubscribe_changes(&self, id: SubscriberId) {
        if let Some(changes) = &self.node.changes {
            changes.unsubscribe(id);
        }
    }
}
