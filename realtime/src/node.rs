//! The shared services of one running node, handed to every socket and HTTP handler.
//!
//! Owns nothing mutable itself: each service owns its state (registry, presence, limits), and
//! the node only bundles them with the configuration and the shutdown signal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Verifier;
use crate::bus::LocalBus;
use crate::changes::service::Changes;
use crate::channels::Registry;
use crate::config::Config;
use crate::limits::NodeLimits;
use crate::policy::PolicySet;
use crate::presence::Presence;

#[derive(Debug)]
pub struct Node {
    pub config: Arc<Config>,
    pub verifier: Verifier,
    /// Access rules of private channels (immutable; default deny).
    pub policy: Arc<PolicySet>,
    /// Postgres Changes subscriptions; `None` when no database is configured.
    pub changes: Option<Arc<Changes>>,
    pub registry: Arc<Registry>,
    pub presence: Presence,
    pub bus: LocalBus,
    pub limits: NodeLimits,
    /// Cancelled when the node starts shutting down.
    pub shutdown: CancellationToken,
    /// Every socket task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// The API key of the latest handshake (see [`Node::share_key`]).
    last_key: Mutex<Option<Arc<str>>>,
    /// Sockets closed as slow consumers (4008), for `/metrics`.
    pub slow_consumer_closes: AtomicU64,
    /// Refused tokens and joins, by reason, for `/metrics` and the log.
    pub refusals: crate::metrics::Refusals,
}

impl Node {
    pub fn new(config: Arc<Config>, policy: PolicySet, bus: LocalBus, shutdown: CancellationToken) -> Self {
        let policy = Arc::new(policy);
        let changes = config
            .database
            .as_ref()
            .map(|database| Arc::new(Changes::new(database, &config.replication, policy.clone())));
        Node {
            verifier: Verifier::new(config.server.auth.clone()),
            policy,
            changes,
            registry: Arc::new(Registry::new()),
            presence: Presence::new(bus.clone()),
            limits: NodeLimits::new(config.server.limits.clone()),
            bus,
            shutdown,
            tracker: TaskTracker::new(),
            last_key: Mutex::new(None),
            slow_consumer_closes: AtomicU64::new(0),
            refusals: crate::metrics::Refusals::default(),
            config,
        }
    }

    /// Largest accepted broadcast or presence payload, in bytes.
    pub fn max_payload_bytes(&self) -> usize {
        self.config.server.limits.max_payload_size_kb.saturating_mul(1000)
    }

    /// The API key as a shared string: sockets presenting the same key as the previous
    /// handshake share one copy (typically every browser of an app sends its one public key),
    /// which keeps idle connections small.
    pub fn share_key(&self, key: String) -> Arc<str> {
        let mut last = self.last_key.lock().unwrap_or_else(|p| p.into_inner());
        match &*last {
            Some(shared) if **shared == *key => shared.clone(),
            _ => {
                let shared: Arc<str> = Arc::from(key);
                *last = Some(shared.clone());
                shared
            }
        }
    }

    pub fn is_ready(&self) -> bool {
        !self.shutdown.is_cancelled()
    }

    /// The node's figures for `/metrics`.
    pub fn figures(&self) -> crate::metrics::NodeFigures {
        crate::metrics::NodeFigures {
            sockets: self.tracker.len() as u64,
            channels: self.registry.topic_count() as u64,
            changes_subscriptions: self.changes.as_ref().map_or(0, |c| c.subscription_count() as u64),
            slow_consumer_closes: self.slow_consumer_closes.load(Ordering::Relaxed),
        }
    }
}
