//! The shared services of one running node, handed to every socket and HTTP handler.
//!
//! Owns nothing mutable itself: each service owns its state (registry, presence, limits), and
//! the node only bundles them with the configuration and the shutdown signal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Claims;
use crate::auth::Verifier;
use crate::auth::roles::RoleGuard;
use crate::authorization::{Authorization, CheckError, Rls};
use crate::bus::LocalBus;
use crate::changes::service::Changes;
use crate::channels::Registry;
use crate::config::Config;
use crate::config::server::ChannelAuthorization;
use crate::db_broadcast::DbBroadcasts;
use crate::limits::NodeLimits;
use crate::locks::lock;
use crate::policy::{ChannelAccess, PolicySet};
use crate::presence::{Presence, PresenceLimits};
use crate::protocol::outbound::OpenQueues;
use crate::relay::Relay;

#[derive(Debug)]
pub(crate) struct Node {
    pub config: Arc<Config>,
    pub verifier: Verifier,
    /// Which token roles may be used (`ALLOWED_ROLES`, never one that bypasses RLS).
    pub roles: RoleGuard,
    /// Access rules of private channels (immutable; default deny).
    pub policy: Arc<PolicySet>,
    /// Postgres Changes subscriptions; `None` when no database is configured.
    pub changes: Option<Arc<Changes>>,
    /// How private channels are authorized (policy files or RLS).
    pub authorization: Authorization,
    /// Broadcast from the database; `None` when no database is configured.
    pub db_broadcasts: Option<Arc<DbBroadcasts>>,
    pub registry: Arc<Registry>,
    pub presence: Arc<Presence>,
    /// Broadcast and presence to and from the other nodes; `None` on a single node.
    pub relay: Option<Arc<Relay>>,
    pub bus: LocalBus,
    pub limits: NodeLimits,
    /// Cancelled when the node starts shutting down.
    pub shutdown: CancellationToken,
    /// Every socket task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// The queues of the open sockets, through which shutdown reaches their sessions.
    pub sockets: OpenQueues,
    /// The API key of the latest handshake (see [`Node::share_key`]).
    last_key: Mutex<Option<Arc<str>>>,
    /// Sockets closed as slow consumers (4008), for `/metrics`.
    pub slow_consumer_closes: AtomicU64,
    /// Refused tokens and joins, by reason, for `/metrics` and the log.
    pub refusals: crate::metrics::Refusals,
}

impl Node {
    /// A node; with `cluster`, one of a cluster (its relay starts now, so it needs a runtime).
    pub(crate) fn new(
        config: Arc<Config>,
        policy: PolicySet,
        bus: LocalBus,
        cluster: Option<crate::cluster::Cluster>,
        shutdown: CancellationToken,
    ) -> Self {
        let policy = Arc::new(policy);
        let changes = config
            .database
            .as_ref()
            .map(|database| Arc::new(Changes::new(database, &config.replication, policy.clone())));
        // One lazy connection: roles are looked up rarely (their attributes are cached).
        let roles_pool = config.database.as_ref().map(|database| {
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with(crate::db::connect_options(database))
        });
        let db_broadcasts = config
            .database
            .as_ref()
            .map(|database| Arc::new(DbBroadcasts::new(database)));
        let authorization = match (config.server.channel_authorization, &config.database) {
            (ChannelAuthorization::Database, Some(database)) => Authorization::Database(Rls::new(database)),
            (ChannelAuthorization::Database, None) => {
                tracing::error!(
                    "CHANNEL_AUTHORIZATION=database needs a database (DATABASE_URL or DB_HOST); the policy files authorize private channels instead"
                );
                Authorization::Policies
            }
            (ChannelAuthorization::Policies, _) => Authorization::Policies,
        };
        let presence = Arc::new(Presence::with_limits(
            bus.clone(),
            PresenceLimits {
                max_entries: config.server.limits.max_presence_entries_per_topic,
                max_bytes: config.server.limits.max_presence_topic_bytes,
            },
        ));
        let registry = Arc::new(Registry::new());
        let relay = cluster.map(|cluster| {
            let relay = Relay::start(cluster, bus.clone(), presence.clone(), shutdown.clone());
            registry.watch(relay.clone());
            relay
        });
        Node {
            authorization,
            db_broadcasts,
            verifier: Verifier::new(config.server.auth.clone()),
            roles: RoleGuard::new(config.server.auth.allowed_roles.clone(), roles_pool),
            policy,
            changes,
            registry,
            presence,
            relay,
            limits: NodeLimits::new(config.server.limits.clone()),
            bus,
            shutdown,
            tracker: TaskTracker::new(),
            sockets: OpenQueues::default(),
            last_key: Mutex::new(None),
            slow_consumer_closes: AtomicU64::new(0),
            refusals: crate::metrics::Refusals::default(),
            config,
        }
    }

    /// Largest accepted broadcast or presence payload, in bytes.
    pub(crate) fn max_payload_bytes(&self) -> usize {
        self.config.server.limits.max_payload_size_kb.saturating_mul(1000)
    }

    /// The API key as a shared string: sockets presenting the same key as the previous
    /// handshake share one copy (typically every browser of an app sends its one public key),
    /// which keeps idle connections small.
    pub(crate) fn share_key(&self, key: String) -> Arc<str> {
        let mut last = lock(&self.last_key);
        match &*last {
            Some(shared) if **shared == *key => shared.clone(),
            _ => {
                let shared: Arc<str> = Arc::from(key);
                *last = Some(shared.clone());
                shared
            }
        }
    }

    pub(crate) fn is_ready(&self) -> bool {
        !self.shutdown.is_cancelled()
    }

    /// The node's figures for `/metrics`.
    pub(crate) fn figures(&self) -> crate::metrics::NodeFigures {
        crate::metrics::NodeFigures {
            sockets: self.tracker.len() as u64,
            channels: self.registry.topic_count() as u64,
            changes_subscriptions: self.changes.as_ref().map_or(0, |c| c.subscription_count() as u64),
            slow_consumer_closes: self.slow_consumer_closes.load(Ordering::Relaxed),
            cluster: self.relay.as_ref().map(|relay| relay.figures()),
        }
    }
}

impl Node {
    /// What `claims` may do on private channel `sub_topic`, by the node's authorization mode.
    /// `presence` is whether presence is enabled on the channel.
    pub(crate) async fn private_access(
        &self,
        sub_topic: &str,
        claims: &Claims,
        presence: bool,
    ) -> Result<ChannelAccess, CheckError> {
        let mode = match &self.authorization {
            Authorization::Policies => "policies",
            Authorization::Database(_) => "database",
        };
        let span = tracing::info_span!(
            target: crate::telemetry::TARGET,
            "authorize",
            "authorization.mode" = mode,
            outcome = tracing::field::Empty,
        );
        let access = match &self.authorization {
            Authorization::Policies => Ok(self.policy.channel_access(sub_topic, claims)),
            Authorization::Database(rls) => {
                tracing::Instrument::instrument(rls.access(sub_topic, claims, presence), span.clone()).await
            }
        };
        span.record(
            "outcome",
            match &access {
                Ok(access) if access.can_join() || access.broadcast_write || access.presence_write => {
                    "granted"
                }
                Ok(_) => "denied",
                Err(_) => "error",
            },
        );
        access
    }
}
