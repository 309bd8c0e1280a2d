//! Broadcast and presence across the nodes of a cluster, on the `channels` NATS link.
//!
//! Outbound, one task reads this node's channel events from the bus and publishes the
//! broadcasts that originate here (sessions, REST, `/admin`) on the topic's subject, in bus
//! order, so per-sender order holds across nodes. It never slows a session: it reads the bus
//! like any consumer, and when it falls behind the bus drops events for it (counted as publish
//! drops). Database broadcasts are not published: every node streams them from the change
//! stream itself. Presence diffs of local entries come numbered from `presence`'s outbox.
//!
//! Inbound, a node listens to a topic's subject only while it has local subscribers on it
//! (the registry tells, [`TopicWatcher`]); on the first one it asks every node for its entries
//! of the topic (scatter-gather, bounded wait), and a join waits for that answer (bounded) so
//! its `presence_state` holds the whole cluster's members. Heartbeats tell who is alive
//! ([`peers`]); a silent node's entries leave, a node's goodbye makes them leave at once.
//!
//! Every message carries the sending node and incarnation: a node skips its own.

pub(crate) mod peers;
pub(crate) mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use async_nats::HeaderMap;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::LocalBus;
use crate::channels::registry::TopicWatcher;
use crate::channels::{ChannelEvent, EventKind, TopicKey};
use crate::cluster::Cluster;
use crate::locks::lock;
use crate::metrics::ClusterFigures;
use crate::presence::remote::DiffOutcome;
use crate::presence::{LocalDiff, Presence};
use crate::telemetry::chain;
use peers::{Heard, Peers};

/// How long a node waits for the other nodes' presence entries of a topic.
const SYNC_WAIT: Duration = Duration::from_millis(500);
/// Local presence diffs waiting to be published.
const OUTBOX: usize = 4096;

/// What the registry's watcher asks the topic listener to do.
#[derive(Debug)]
enum Command {
    Listen(TopicKey),
    Stop(TopicKey),
}

/// A clustered node's channel relay; shared by the node (joins wait on [`Relay::synced`]).
#[derive(Debug)]
pub(crate) struct Relay {
    cluster: Cluster,
    bus: LocalBus,
    presence: Arc<Presence>,
    /// Topics listened to, each with whether its first sync is done.
    topics: Mutex<HashMap<TopicKey, watch::Sender<bool>>>,
    commands: mpsc::UnboundedSender<Command>,
    peers: Mutex<Peers>,
    publish_dropped: AtomicU64,
    started: Instant,
}

impl TopicWatcher for Relay {
    fn first_subscriber(&self, topic: &TopicKey) {
        lock(&self.topics).insert(topic.clone(), watch::channel(false).0);
        let _ = self.commands.send(Command::Listen(topic.clone()));
    }

    fn last_subscriber_left(&self, topic: &TopicKey) {
        lock(&self.topics).remove(topic);
        let _ = self.commands.send(Command::Stop(topic.clone()));
    }
}

impl Relay {
    /// Starts relaying: subscribes to the bus at once (before any session can publish), and
    /// runs until `shutdown`, when it says goodbye to the other nodes.
    pub(crate) fn start(
        cluster: Cluster,
        bus: LocalBus,
        presence: Arc<Presence>,
        shutdown: CancellationToken,
    ) -> Arc<Relay> {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let config = &cluster.config;
        let peers = Peers::new(config.heartbeat, config.node_down_after, Instant::now());
        let relay = Arc::new(Relay {
            cluster,
            bus: bus.clone(),
            presence: presence.clone(),
            topics: Mutex::default(),
            commands,
            peers: Mutex::new(peers),
            publish_dropped: AtomicU64::new(0),
            started: Instant::now(),
        });
        let (outbox, outbox_rx) = mpsc::channel(OUTBOX);
        presence.replicate_to(outbox);
        let events = bus.subscribe_channel_events();
        tokio::spawn(relay.clone().publish_broadcasts(events, shutdown.clone()));
        tokio::spawn(relay.clone().publish_presence(outbox_rx, shutdown.clone()));
        tokio::spawn(relay.clone().listen_topics(command_rx, shutdown.clone()));
        tokio::spawn(relay.clone().answer_state_requests(shutdown.clone()));
        tokio::spawn(relay.clone().heartbeats(shutdown));
        relay
    }

    fn node(&self) -> &str {
        self.cluster.node_id()
    }

    fn headers(&self, kind: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(wire::NODE, self.node());
        headers.insert(wire::INCARNATION, self.cluster.incarnation.to_string().as_str());
        headers.insert(wire::KIND, kind);
        headers
    }

    /// Whether a message was sent by this very process.
    fn is_own(&self, headers: Option<&HeaderMap>) -> bool {
        let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
        header(wire::NODE).as_deref() == Some(self.node())
            && header(wire::INCARNATION) == Some(self.cluster.incarnation.to_string())
    }

    /// Waits (bounded) until the other nodes' presence entries of `topic` are here, so the
    /// state a joiner gets is the cluster's. Returns at once for a topic already synced.
    pub(crate) async fn synced(&self, topic: &TopicKey) {
        let Some(mut synced) = lock(&self.topics).get(topic).map(watch::Sender::subscribe) else {
            return;
        };
        let _ = tokio::time::timeout(SYNC_WAIT * 2, synced.wait_for(|done| *done)).await;
    }

    pub(crate) fn figures(&self) -> ClusterFigures {
        ClusterFigures {
            nodes: lock(&self.peers).alive() as u64 + 1,
            publish_dropped: self.publish_dropped.load(Ordering::Relaxed) + self.presence.outbox_dropped(),
            remote_entries: self.presence.remote_entries() as u64,
        }
    }

    async fn publish_broadcasts(
        self: Arc<Self>,
        mut events: tokio::sync::broadcast::Receiver<Arc<ChannelEvent>>,
        shutdown: CancellationToken,
    ) {
        use tokio::sync::broadcast::error::RecvError;
        let cluster_name = self.cluster.config.name.clone();
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.recv() => event,
            };
            let event = match event {
                Ok(event) => event,
                Err(RecvError::Lagged(missed)) => {
                    self.publish_dropped.fetch_add(missed, Ordering::Relaxed);
                    tracing::warn!(
                        node = self.node(),
                        missed,
                        "cluster publisher fell behind; broadcasts were not sent to other nodes"
                    );
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            // Database broadcasts (with a position) reach every node through its own stream.
            let EventKind::Broadcast(broadcast) = &event.kind else {
                continue;
            };
            if event.from_peer || event.position.is_some() {
                continue;
            }
            let subject = wire::topic_subject(&cluster_name, &event.topic);
            let body = wire::encode_broadcast(broadcast);
            if let Err(error) = self
                .cluster
                .channels
                .publish_with_headers(subject, self.headers(wire::BROADCAST), body)
                .await
            {
                self.publish_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(node = self.node(), error = %chain(&error), "cannot publish a broadcast to the cluster");
            }
        }
    }

    async fn publish_presence(
        self: Arc<Self>,
        mut outbox: mpsc::Receiver<LocalDiff>,
        shutdown: CancellationToken,
    ) {
        let cluster_name = self.cluster.config.name.clone();
        loop {
            let diff = tokio::select! {
                _ = shutdown.cancelled() => return,
                diff = outbox.recv() => match diff { Some(diff) => diff, None => return },
            };
            let Ok(raw) = serde_json::value::RawValue::from_string(diff.diff) else {
                continue;
            };
            let body = wire::PresenceDiff {
                seq: diff.seq,
                prev: diff.prev,
                diff: &raw,
            };
            let Ok(body) = serde_json::to_vec(&body) else {
                continue;
            };
            let subject = wire::topic_subject(&cluster_name, &diff.topic);
            if let Err(error) = self
                .cluster
                .channels
                .publish_with_headers(subject, self.headers(wire::PRESENCE), body.into())
                .await
            {
                self.publish_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(node = self.node(), error = %chain(&error), "cannot publish a presence diff to the cluster");
            }
        }
    }

    /// Listens to the subjects of the topics with local subscribers, one task per topic.
    async fn listen_topics(
        self: Arc<Self>,
        mut commands: mpsc::UnboundedReceiver<Command>,
        shutdown: CancellationToken,
    ) {
        let mut listening: HashMap<TopicKey, JoinHandle<()>> = HashMap::new();
        loop {
            let command = tokio::select! {
                _ = shutdown.cancelled() => break,
                command = commands.recv() => match command { Some(c) => c, None => break },
            };
            match command {
                Command::Listen(topic) => {
                    let task = tokio::spawn(self.clone().listen(topic.clone()));
                    if let Some(old) = listening.insert(topic, task) {
                        old.abort();
                    }
                }
                Command::Stop(topic) => {
                    if let Some(task) = listening.remove(&topic) {
                        task.abort();
                    }
                    self.presence.forget_remote_topic(&topic);
                }
            }
        }
        for task in listening.into_values() {
            task.abort();
        }
    }

    async fn listen(self: Arc<Self>, topic: TopicKey) {
        let subject = wire::topic_subject(&self.cluster.config.name, &topic);
        let client = &self.cluster.channels;
        let mut messages = match client.subscribe(subject).await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(node = self.node(), error = %chain(&error), "cannot listen to a topic's cluster traffic");
                return;
            }
        };
        // The subscription must be in place before the state is asked for, or a diff sent
        // between the answer and the subscription would be missed.
        let _ = client.flush().await;
        let syncing = Arc::new(AtomicBool::new(false));
        self.clone().resync(topic.clone(), syncing.clone());
        while let Some(message) = messages.next().await {
            if self.is_own(message.headers.as_ref()) {
                continue;
            }
            let header = |name: &str| {
                message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_owned())
            };
            match header(wire::KIND).as_deref() {
                Some(wire::BROADCAST) => match wire::decode_broadcast(&message.payload) {
                    Ok(broadcast) => self.bus.publish_channel_event(
                        ChannelEvent::new(topic.clone(), None, EventKind::Broadcast(broadcast))
                            .received_from_peer(),
                    ),
                    Err(error) => {
                        tracing::warn!(node = self.node(), error = %chain(&error), "malformed broadcast from another node")
                    }
                },
                Some(wire::PRESENCE) => {
                    let (Some(from), Some(inc)) = (header(wire::NODE), header(wire::INCARNATION)) else {
                        continue;
                    };
                    let Ok(inc) = inc.parse::<u64>() else { continue };
                    let Ok(diff) = serde_json::from_slice::<wire::PresenceDiff<'_>>(&message.payload) else {
                        tracing::warn!(
                            node = self.node(),
                            from,
                            "malformed presence diff from another node"
                        );
                        continue;
                    };
                    match self.presence.apply_remote_diff(
                        &topic,
                        &from,
                        inc,
                        diff.seq,
                        diff.prev,
                        diff.diff.get(),
                    ) {
                        Ok(DiffOutcome::Gap) => self.clone().resync(topic.clone(), syncing.clone()),
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(node = self.node(), error = %chain(&error), "presence diff refused")
                        }
                    }
                }
                Some(wire::PRESENCE_HEAD) => {
                    let (Some(from), Some(inc)) = (header(wire::NODE), header(wire::INCARNATION)) else {
                        continue;
                    };
                    let (Ok(inc), Ok(head)) = (
                        inc.parse::<u64>(),
                        serde_json::from_slice::<wire::PresenceHead>(&message.payload),
                    ) else {
                        continue;
                    };
                    if self.presence.remote_is_behind(&topic, &from, inc, head.seq) {
                        tracing::info!(
                            node = self.node(),
                            peer = from,
                            "a presence diff was lost; syncing the topic"
                        );
                        self.clone().resync(topic.clone(), syncing.clone());
                    }
                }
                _ => {}
            }
        }
    }

    /// Asks every node for its entries of `topic` in the background (once at a time per topic).
    fn resync(self: Arc<Self>, topic: TopicKey, syncing: Arc<AtomicBool>) {
        if syncing.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(async move {
            self.sync(&topic).await;
            syncing.store(false, Ordering::Release);
            if let Some(synced) = lock(&self.topics).get(&topic) {
                synced.send_replace(true);
            }
        });
    }

    /// Scatter-gather: asks on the topic's state subject, applies the answers until every node
    /// alive has answered or [`SYNC_WAIT`] has passed.
    async fn sync(&self, topic: &TopicKey) {
        let client = &self.cluster.channels;
        let inbox = client.new_inbox();
        let Ok(mut answers) = client.subscribe(inbox.clone()).await else {
            return;
        };
        let subject = wire::state_subject(&self.cluster.config.name, topic);
        if client
            .publish_with_reply(subject, inbox, Default::default())
            .await
            .is_err()
        {
            return;
        }
        // A node that just started may not have heard the others yet: it waits the whole time.
        let mut expected = lock(&self.peers).alive();
        if expected == 0 && self.started.elapsed() < self.cluster.config.node_down_after {
            expected = usize::MAX;
        }
        let mut answered = 0;
        let deadline = Instant::now() + SYNC_WAIT;
        while answered < expected {
            let Ok(Some(answer)) = tokio::time::timeout_at(deadline, answers.next()).await else {
                break;
            };
            let Ok(state) = serde_json::from_slice::<wire::PresenceState<'_>>(&answer.payload) else {
                continue;
            };
            if state.node == self.node() && state.inc == self.cluster.incarnation {
                continue;
            }
            answered += 1;
            if let Err(error) =
                self.presence
                    .apply_remote_state(topic, &state.node, state.inc, state.seq, state.state.get())
            {
                tracing::warn!(node = self.node(), error = %chain(&error), "presence state refused");
            }
        }
    }

    /// Answers other nodes' state requests with this node's own entries.
    async fn answer_state_requests(self: Arc<Self>, shutdown: CancellationToken) {
        let client = &self.cluster.channels;
        let Ok(mut requests) = client
            .subscribe(wire::state_requests(&self.cluster.config.name))
            .await
        else {
            tracing::error!(node = self.node(), "cannot listen to presence state requests");
            return;
        };
        loop {
            let request = tokio::select! {
                _ = shutdown.cancelled() => return,
                request = requests.next() => match request { Some(r) => r, None => return },
            };
            let (Some(reply), Some(topic)) = (request.reply, wire::topic_of_state_subject(&request.subject))
            else {
                continue;
            };
            let (seq, state) = self.presence.local_snapshot(&topic);
            let Ok(state) = serde_json::value::RawValue::from_string(state) else {
                continue;
            };
            let answer = wire::PresenceState {
                node: self.node().to_owned(),
                inc: self.cluster.incarnation,
                seq,
                state: &state,
            };
            if let Ok(body) = serde_json::to_vec(&answer) {
                let _ = client.publish(reply, body.into()).await;
            }
        }
    }

    /// Sends heartbeats, hears the others', declares silent nodes down, says goodbye at the end.
    async fn heartbeats(self: Arc<Self>, shutdown: CancellationToken) {
        let client = &self.cluster.channels;
        let name = &self.cluster.config.name;
        let (hb_subject, bye_subject) = (
            crate::cluster::subject(name, "node.hb"),
            crate::cluster::subject(name, "node.bye"),
        );
        let (Ok(mut beats), Ok(mut byes)) = (
            client.subscribe(hb_subject.clone()).await,
            client.subscribe(bye_subject.clone()).await,
        ) else {
            tracing::error!(node = self.node(), "cannot listen to the cluster's heartbeats");
            return;
        };
        let me = wire::NodeAnnouncement {
            node: self.node().to_owned(),
            inc: self.cluster.incarnation,
        };
        let me = bytes::Bytes::from(serde_json::to_vec(&me).unwrap_or_default());
        let mut tick = tokio::time::interval(self.cluster.config.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    let _ = client.publish(hb_subject.clone(), me.clone()).await;
                    self.announce_presence_heads().await;
                    let down = lock(&self.peers).tick(Instant::now());
                    for node in down {
                        tracing::warn!(node = self.node(), peer = node, "a node fell silent; its presence entries leave");
                        self.presence.drop_remote_node(&node, None);
                    }
                }
                Some(beat) = beats.next() => {
                    let Ok(beat) = serde_json::from_slice::<wire::NodeAnnouncement>(&beat.payload) else { continue };
                    self.heard(beat);
                }
                Some(bye) = byes.next() => {
                    let Ok(bye) = serde_json::from_slice::<wire::NodeAnnouncement>(&bye.payload) else { continue };
                    if bye.node != self.node() && lock(&self.peers).remove(&bye.node) {
                        tracing::info!(node = self.node(), peer = bye.node, "a node left the cluster");
                    }
                    if bye.node != self.node() {
                        self.presence.drop_remote_node(&bye.node, None);
                    }
                }
            }
        }
        let _ = client.publish(bye_subject, me).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
    }

    /// Anti-entropy for presence: the heads of the topics this node changed lately, on each
    /// topic's subject. A receiver that holds less missed a diff (NATS is at-most-once) and
    /// syncs the topic. Heads go out for twice the silence that makes a node count as
    /// returned: a receiver that misses all of them was cut off long enough to sync anyway.
    async fn announce_presence_heads(&self) {
        let within = lock(&self.peers).silence() * 2;
        let heads = self.presence.recent_heads(Instant::now(), within);
        for (topic, seq) in heads {
            let Ok(body) = serde_json::to_vec(&wire::PresenceHead { seq }) else {
                continue;
            };
            let subject = wire::topic_subject(&self.cluster.config.name, &topic);
            if let Err(error) = self
                .cluster
                .channels
                .publish_with_headers(subject, self.headers(wire::PRESENCE_HEAD), body.into())
                .await
            {
                tracing::debug!(node = self.node(), error = %chain(&error), "cannot announce a presence head");
            }
        }
    }

    fn heard(self: &Arc<Self>, beat: wire::NodeAnnouncement) {
        let now = Instant::now();
        if beat.node == self.node() {
            if beat.inc == self.cluster.incarnation && lock(&self.peers).own_echo(now) {
                tracing::info!(
                    node = self.node(),
                    "back in touch with the cluster; syncing presence"
                );
                self.resync_all();
            }
            return;
        }
        match lock(&self.peers).heard(&beat.node, beat.inc, now) {
            Heard::Known => return,
            Heard::New => tracing::info!(node = self.node(), peer = beat.node, "a node joined the cluster"),
            Heard::Returned => {}
            Heard::Restarted => {
                tracing::info!(
                    node = self.node(),
                    peer = beat.node,
                    "a node restarted; its previous presence entries leave"
                );
                self.presence.drop_remote_node(&beat.node, Some(beat.inc));
            }
        }
        self.resync_all();
    }

    /// Syncs every topic listened to again (a node came, came back, or we did).
    fn resync_all(self: &Arc<Self>) {
        let topics: Vec<TopicKey> = lock(&self.topics).keys().cloned().collect();
        for topic in topics {
            let relay = self.clone();
            tokio::spawn(async move { relay.sync(&topic).await });
        }
    }
}
