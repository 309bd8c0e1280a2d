//! The bus: the one path every event takes from its source to the channel registry.
//!
//! Even on one node, replication hands transactions to the bus and never to subscribers directly,
//! so consumers have one input and never know where an event came from. Broadcast and presence
//! traffic takes the same road: sessions, the REST API and presence publish [`ChannelEvent`]s,
//! and the channel registry's dispatcher is their one consumer on this node.
//!
//! The replication task's gauges and counters ([`ReplicationMetrics`]) travel with the bus too:
//! whoever serves `/metrics` reads them without knowing where the task runs.

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use crate::change::{Epoch, Transaction};
use crate::channels::ChannelEvent;
use crate::metrics::ReplicationMetrics;

/// In-process bus for one node. Receivers that fall behind by more than the capacity see
/// `RecvError::Lagged` and must treat it as a gap; they never slow the sender.
#[derive(Clone, Debug)]
pub struct LocalBus {
    changes: broadcast::Sender<Arc<Transaction>>,
    channel_events: broadcast::Sender<Arc<ChannelEvent>>,
    /// The `realtime.messages` rows of each transaction, taken out of it by the replication
    /// task (see `db_broadcast`).
    database_broadcasts: broadcast::Sender<Arc<Transaction>>,
    /// The epoch the change stream is in, once streaming: lets consumers judge a resume
    /// position before the first transaction of a run arrives.
    epoch: Arc<watch::Sender<Option<Epoch>>>,
    replication: Arc<ReplicationMetrics>,
}

impl LocalBus {
    pub fn new(capacity: usize) -> Self {
        let (changes, _) = broadcast::channel(capacity);
        let (channel_events, _) = broadcast::channel(capacity);
        let (database_broadcasts, _) = broadcast::channel(capacity);
        LocalBus {
            changes,
            channel_events,
            database_broadcasts,
            epoch: Arc::new(watch::channel(None).0),
            replication: Arc::default(),
        }
    }

    /// A bus of its own for a stage before this one, sharing this bus's figures: a clustered
    /// node's replication hands its transactions to the cluster feed on it, and the feed hands
    /// on to this bus what is new to the node.
    pub fn stage(&self, capacity: usize) -> LocalBus {
        LocalBus {
            replication: self.replication.clone(),
            ..LocalBus::new(capacity)
        }
    }

    /// Announces the epoch of the transactions that follow.
    pub fn announce_epoch(&self, epoch: Epoch) {
        self.epoch.send_replace(Some(epoch));
    }

    /// The epoch last announced (`None` before the stream started).
    pub fn epoch(&self) -> Option<Epoch> {
        *self.epoch.borrow()
    }

    /// The replication task's figures: it writes them, `/metrics` reads them.
    pub fn replication_metrics(&self) -> &Arc<ReplicationMetrics> {
        &self.replication
    }

    /// Hands a committed transaction on. Returns once it is accepted, whether or not anyone is
    /// subscribed: delivery to sockets is downstream's business.
    pub fn publish_transaction(&self, transaction: Arc<Transaction>) {
        // An error only means there are no receivers right now.
        let _ = self.changes.send(transaction);
    }

    pub fn subscribe_transactions(&self) -> broadcast::Receiver<Arc<Transaction>> {
        self.changes.subscribe()
    }

    /// Hands on the `realtime.messages` rows of a committed transaction.
    pub fn publish_database_broadcasts(&self, messages: Arc<Transaction>) {
        // An error only means no database broadcast service is listening.
        let _ = self.database_broadcasts.send(messages);
    }

    pub fn subscribe_database_broadcasts(&self) -> broadcast::Receiver<Arc<Transaction>> {
        self.database_broadcasts.subscribe()
    }

    /// Hands a broadcast or presence event on to the registry of this node (the only subscriber
    /// of this in-process bus).
    pub fn publish_channel_event(&self, event: ChannelEvent) {
        // An error only means no registry is listening (no server running on this bus).
        let _ = self.channel_events.send(Arc::new(event));
    }

    pub fn subscribe_channel_events(&self) -> broadcast::Receiver<Arc<ChannelEvent>> {
        self.channel_events.subscribe()
    }
}
