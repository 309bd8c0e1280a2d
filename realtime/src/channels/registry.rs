//! The channel registry: topic → subscribers, and delivery of bus events to them.
//!
//! Owns the subscriber lists. Sessions add and remove their channels; the dispatcher task reads
//! them for every event. The map is split in shards, each behind its own lock held only long
//! enough to find a topic, so joins on one topic never block delivery on another. A topic's list
//! has its own read-write lock; delivery holds the read side while it pushes into the
//! subscribers' queues, which never wait.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::TopicKey;
use super::event::ChannelEvent;
use crate::channels::gate::{Admit, ReplaySeam, ResumeGate};
use crate::locks::{read, write};
use crate::protocol::outbound::{Outbound, PushError};
use crate::protocol::phoenix::Vsn;

const SHARDS: usize = 32;

/// One joined channel of one socket; unique for the life of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberId(u64);

impl SubscriberId {
    /// The number itself, as `/admin` shows it.
    pub fn get(self) -> u64 {
        self.0
    }

    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SubscriberId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// A channel's entry in the registry.
#[derive(Clone, Debug)]
pub(crate) struct Subscriber {
    pub id: SubscriberId,
    pub outbound: Arc<Outbound>,
    pub vsn: Vsn,
    /// Receives broadcasts (private channels: only with broadcast read access).
    pub broadcast: bool,
    /// Receives presence diffs (presence enabled, and on private channels presence read access).
    pub presence: bool,
    /// Set when the channel resumes database broadcasts: live ones pass once its replay is sent.
    pub resume: Option<Arc<ResumeGate>>,
    /// Set when the channel was joined with a replay: frames wait while it is read.
    pub replay: Option<Arc<ReplaySeam>>,
}

#[derive(Debug, Default)]
struct TopicSubscribers {
    list: RwLock<Vec<Subscriber>>,
}

type Shard = RwLock<HashMap<TopicKey, Arc<TopicSubscribers>>>;

/// Told when a topic gets its first subscriber on this node and when its last one leaves: a
/// clustered node listens to a topic's traffic from other nodes only meanwhile. Called with the
/// topic's shard locked, so the calls for one topic come in the order of the changes; they must
/// return at once.
pub(crate) trait TopicWatcher: Send + Sync + std::fmt::Debug {
    fn first_subscriber(&self, topic: &TopicKey);
    fn last_subscriber_left(&self, topic: &TopicKey);
}

#[derive(Debug)]
pub(crate) struct Registry {
    shards: Box<[Shard]>,
    watcher: OnceLock<Arc<dyn TopicWatcher>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts from one delivery, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub delivered: usize,
    /// Receivers whose queue overflowed (they are being disconnected).
    pub slow: usize,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            watcher: OnceLock::new(),
        }
    }

    /// Sets the one watcher of topics coming and going (before the first subscriber).
    pub(crate) fn watch(&self, watcher: Arc<dyn TopicWatcher>) {
        let _ = self.watcher.set(watcher);
    }

    fn shard(&self, topic: &TopicKey) -> &Shard {
        let mut h = DefaultHasher::new();
        topic.hash(&mut h);
        &self.shards[(h.finish() as usize) % self.shards.len()]
    }

    /// Adds `subscriber`, or replaces the entry with the same id (e.g. after access changed).
    /// Returns the registry's own copy of `topic`: a channel that keeps it instead of its own
    /// shares one allocation of the name with every subscriber of the topic.
    pub(crate) fn subscribe(&self, topic: &TopicKey, subscriber: Subscriber) -> TopicKey {
        let mut shard = write(self.shard(topic));
        if !shard.contains_key(topic)
            && let Some(watcher) = self.watcher.get()
        {
            watcher.first_subscriber(topic);
        }
        let entry = shard.entry(topic.clone()).or_default();
        let mut list = write(&entry.list);
        match list.iter_mut().find(|s| s.id == subscriber.id) {
            Some(existing) => *existing = subscriber,
            None => list.push(subscriber),
        }
        drop(list);
        shard
            .get_key_value(topic)
            .map_or_else(|| topic.clone(), |(key, _)| key.clone())
    }

    pub(crate) fn unsubscribe(&self, topic: &TopicKey, id: SubscriberId) {
        let mut shard = write(self.shard(topic));
        let Some(entry) = shard.get(topic) else { return };
        let now_empty = {
            let mut list = write(&entry.list);
            if let Some(i) = list.iter().position(|s| s.id == id) {
                list.swap_remove(i);
            }
            list.is_empty()
        };
        if now_empty {
            shard.remove(topic);
            if let Some(watcher) = self.watcher.get() {
                watcher.last_subscriber_left(topic);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn subscriber_count(&self, topic: &TopicKey) -> usize {
        let entry = read(self.shard(topic)).get(topic).cloned();
        entry.map_or(0, |e| read(&e.list).len())
    }

    pub(crate) fn topic_count(&self) -> usize {
        self.shards.iter().map(|s| read(s).len()).sum()
    }

    /// Every topic with its subscribers, for the `/admin` inspector (a copy: no lock is held
    /// once it returns).
    pub(crate) fn snapshot(&self) -> Vec<(TopicKey, Vec<Subscriber>)> {
        let mut topics = Vec::new();
        for shard in self.shards.iter() {
            let entries: Vec<_> = read(shard).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            for (topic, entry) in entries {
                topics.push((topic, read(&entry.list).clone()));
            }
        }
        topics
    }

    /// Closes the socket that joined subscriber `id` (all its channels go with it). `false`
    /// when no such subscriber is registered.
    pub(crate) fn disconnect(&self, id: u64) -> bool {
        for (_, subscribers) in self.snapshot() {
            if let Some(s) = subscribers.iter().find(|s| s.id.0 == id) {
                s.outbound.disconnect();
                return true;
            }
        }
        false
    }

    /// Pushes `event` into the queue of every subscriber of its topic that should get it.
    pub(crate) fn deliver(&self, event: &ChannelEvent) -> Delivery {
        let Some(entry) = read(self.shard(&event.topic)).get(&event.topic).cloned() else {
            return Delivery::default();
        };
        let presence = event.is_presence();
        let mut stats = Delivery::default();
        let list = read(&entry.list);
        for sub in list.iter() {
            let wanted = if presence { sub.presence } else { sub.broadcast };
            if !wanted || event.exclude == Some(sub.id) {
                continue;
            }
            if event.backlog && sub.resume.is_none() {
                continue;
            }
            if let (Some(gate), Some(position)) = (&sub.resume, &event.position)
                && !gate.passes(position)
            {
                continue;
            }
            let Some(frame) = event.frame(sub.vsn) else {
                continue;
            };
            let frame = match &sub.replay {
                None => frame.clone(),
                Some(seam) => match seam.admit(event.database_id().as_deref(), frame.clone()) {
                    Admit::Push(frame) => frame,
                    Admit::Nothing => continue,
                    Admit::Overflow => {
                        sub.outbound.disconnect();
                        stats.slow += 1;
                        continue;
                    }
                },
            };
            match sub.outbound.push(frame) {
                Ok(()) => stats.delivered += 1,
                Err(PushError::Overflow) => stats.slow += 1,
                Err(PushError::Closed) => {}
            }
        }
        stats
    }
}

/// Delivers every channel event from the bus until `shutdown`.
pub(crate) async fn dispatch(
    registry: Arc<Registry>,
    mut events: Receiver<Arc<ChannelEvent>>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            // Shutdown first: sockets are being closed, nothing more needs delivering.
            _ = shutdown.cancelled() => return,
            event = events.recv() => match event {
                Ok(event) => {
                    registry.deliver(&event);
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "channel event dispatcher fell behind the bus; events were dropped");
                }
                Err(RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::channels::event::EventKind;
    use crate::protocol::outbound::Taken;

    fn sub(vsn: Vsn, capacity: usize) -> Subscriber {
        Subscriber {
            id: SubscriberId::next(),
            outbound: Arc::new(Outbound::new(capacity)),
            vsn,
            broadcast: true,
            presence: true,
            resume: None,
            replay: None,
        }
    }

    fn diff(topic: &TopicKey, exclude: Option<SubscriberId>) -> ChannelEvent {
        ChannelEvent::new(
            topic.clone(),
            exclude,
            EventKind::PresenceDiff("{\"joins\":{},\"leaves\":{}}".into()),
        )
    }

    fn taken(s: &Subscriber) -> Vec<Bytes> {
        match s.outbound.take() {
            Taken::Frames(f) => f.into_iter().collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn delivers_to_the_topic_only_and_honours_exclude() {
        let r = Registry::new();
        let room = TopicKey::new("room", false);
        let private_room = TopicKey::new("room", true);
        let (a, b, c) = (sub(Vsn::V1, 8), sub(Vsn::V2, 8), sub(Vsn::V2, 8));
        r.subscribe(&room, a.clone());
        r.subscribe(&room, b.clone());
        r.subscribe(&private_room, c.clone());
        let stats = r.deliver(&diff(&room, Some(a.id)));
        assert_eq!(
            stats,
            Delivery {
                delivered: 1,
                slow: 0
            }
        );
        assert!(taken(&a).is_empty());
        assert_eq!(taken(&b).len(), 1);
        assert!(
            taken(&c).is_empty(),
            "private channel of the same name is another topic"
        );
    }

    #[test]
    fn receivers_of_one_version_share_one_encoding() {
        let r = Registry::new();
        let room = TopicKey::new("room", false);
        let (a, b) = (sub(Vsn::V2, 8), sub(Vsn::V2, 8));
        r.subscribe(&room, a.clone());
        r.subscribe(&room, b.clone());
        r.deliver(&diff(&room, None));
        let (x, y) = (taken(&a).remove(0), taken(&b).remove(0));
        assert_eq!(x.as_ptr(), y.as_ptr(), "same bytes, not a copy");
    }

    #[test]
    fn flags_filter_broadcast_and_presence() {
        let r = Registry::new();
        let room = TopicKey::new("room", false);
        let mut a = sub(Vsn::V2, 8);
        a.presence = false;
        r.subscribe(&room, a.clone());
        assert_eq!(r.deliver(&diff(&room, None)).delivered, 0);
        a.presence = true;
        r.subscribe(&room, a.clone());
        assert_eq!(r.subscriber_count(&room), 1, "re-subscribing replaces the entry");
        assert_eq!(r.deliver(&diff(&room, None)).delivered, 1);
    }

    #[test]
    fn a_full_queue_does_not_stop_delivery_to_others() {
        let r = Registry::new();
        let room = TopicKey::new("room", false);
        let (slow, fast) = (sub(Vsn::V2, 1), sub(Vsn::V2, 100));
        r.subscribe(&room, slow.clone());
        r.subscribe(&room, fast.clone());
        for _ in 0..10 {
            r.deliver(&diff(&room, None));
        }
        assert!(slow.outbound.is_overflowed());
        assert_eq!(taken(&fast).len(), 10);
    }

    #[test]
    fn empty_topics_are_removed() {
        let r = Registry::new();
        let room = TopicKey::new("room", false);
        let a = sub(Vsn::V2, 8);
        r.subscribe(&room, a.clone());
        assert_eq!(r.topic_count(), 1);
        r.unsubscribe(&room, a.id);
        assert_eq!(r.topic_count(), 0);
        assert_eq!(r.deliver(&diff(&room, None)).delivered, 0);
    }
}
