//! One change stream for every node of a cluster: the leader publishes, followers follow.
//!
//! Tasks, each with one job:
//! - `lead`: the node's own replication (it runs only while the node holds the lock, see
//!   `replication::leadership`) hands transactions to a stage bus; they pass the [`Feed`] (so a
//!   new leader's re-read of the window reaches its subscribers only where it is news) and what
//!   is new goes into a bounded queue, dropped when full: reading the WAL never waits for NATS.
//! - `publish`: drains that queue into `rt.<c>.cdc.tx` frames, several transactions per frame.
//! - `follow`: reads `rt.<c>.cdc.tx` and the leader's `rt.<c>.cdc.head`; what continues the
//!   node's head is handed on, a hole is fetched from the leader (`rt.<c>.cdc.fetch`).
//! - `answer`: the leader answers fetches from its feed's window.
//! - `announce`: the leader's head, every heartbeat.
//! - `watch_bus`: a node that cannot reach NATS for longer than `leader_bus_grace` may not lead
//!   (a leader that cannot publish steps down, see `replication::stream`).

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::bus::LocalBus;
use crate::change::{ChangeKinds, Epoch, Overflow, Transaction};
use crate::cluster::Cluster;
use crate::cluster::feed::{Fed, Feed};
use crate::cluster::follow::{Fetch, Source};
use crate::cluster::wire::{self, Batch, Frame, Refusal};
use crate::locks::lock;
use crate::lsn::Lsn;
use crate::metrics::{ClusterMetrics, ReplicationMetrics, events};
use crate::telemetry::chain;
use crate::window::{WindowLimits, now_micros};

/// Transactions waiting to be published; more are dropped (followers fetch them).
const PUBLISH_QUEUE: usize = 4096;
/// A frame holds transactions up to about this size (NATS's default `max_payload` is 1 MiB).
const FRAME_BYTES: usize = 512 * 1024;
/// A transaction larger than this travels as its overflow signal: no frame could carry it.
const MAX_TRANSACTION_BYTES: usize = 768 * 1024;
/// How long a fetch may take before it is given up (and tried again at the next head).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The header naming the node that sent a frame: a node skips its own.
const NODE_HEADER: &str = "Rt-Node";
/// The header holding when the leader published a frame (Unix microseconds): followers measure
/// the bus's lag from it (`realtime_cluster_bus_lag_seconds`).
const SENT_HEADER: &str = "Rt-Sent";

/// The leader's head, announced every heartbeat (JSON, readable with `nats sub`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Head {
    pub term: u64,
    pub epoch: u64,
    pub node: String,
    /// Commit LSN of the last transaction handed on (`None`: none yet).
    pub head: Option<u64>,
}

/// A follower's request for what the leader holds after a position.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct FetchRequest {
    /// `[epoch, commit LSN]`; `None`: the whole window.
    pub after: Option<(u64, u64)>,
    pub max_bytes: usize,
}

/// Starts the tasks. `stage` is the bus the node's replication hands on to (`None`: this node
/// never leads). Returns whether the node may lead now (for the replication task).
pub(crate) fn start(
    cluster: Cluster,
    bus: LocalBus,
    stage: Option<LocalBus>,
    limits: WindowLimits,
    shutdown: CancellationToken,
) -> watch::Receiver<bool> {
    let metrics = bus.replication_metrics().clone();
    ClusterMetrics::set(&metrics.cluster.enabled, true);
    let feed = Arc::new(Mutex::new(Feed::new(bus, limits)));
    let (may_lead, may_lead_rx) = watch::channel(false);
    tokio::spawn(watch_bus(
        cluster.clone(),
        may_lead,
        metrics.clone(),
        feed.clone(),
        shutdown.clone(),
    ));
    if let Some(stage) = stage {
        let (queue, queued) = mpsc::channel(PUBLISH_QUEUE);
        tokio::spawn(announce(
            cluster.clone(),
            stage.clone(),
            feed.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(lead(
            stage,
            feed.clone(),
            queue,
            metrics.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(publish(cluster.clone(), queued, metrics.clone()));
        tokio::spawn(answer(
            cluster.clone(),
            feed.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    tokio::spawn(follow(cluster, feed, metrics, shutdown));
    may_lead_rx
}

fn is_leader(metrics: &ReplicationMetrics) -> bool {
    ClusterMetrics::get(&metrics.cluster.leader)
}

fn term(metrics: &ReplicationMetrics) -> u64 {
    metrics.cluster.term.load(std::sync::atomic::Ordering::Relaxed)
}

/// A transaction to publish, with the one before it in this node's stream.
type Publish = (Option<Lsn>, Arc<Transaction>, u64);

/// The node's own replication → the feed → the publish queue (never waits for it).
async fn lead(
    stage: LocalBus,
    feed: Arc<Mutex<Feed>>,
    queue: mpsc::Sender<Publish>,
    metrics: Arc<ReplicationMetrics>,
    shutdown: CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut transactions = stage.subscribe_transactions();
    let mut database_broadcasts = stage.subscribe_database_broadcasts();
    let bus = lock(&feed).bus().clone();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            received = transactions.recv() => match received {
                Ok(transaction) => {
                    let term = term(&metrics);
                    let fed = {
                        let mut feed = lock(&feed);
                        let fed = feed.feed(Source::Own, term, None, transaction.clone());
                        // Past the re-read of the window: what comes now is news.
                        if !transaction.backlog {
                            feed.tail_mut().warmed();
                        }
                        fed
                    };
                    if let Fed::Handed { prev } = fed
                        && queue.try_send((prev, transaction, term)).is_err()
                    {
                        ReplicationMetrics::count(&metrics.cluster.publish_dropped, 1);
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::error!(skipped = n, "the cluster feed fell behind this node's replication; subscribers here are told to refetch");
                    lock(&feed).own_gap();
                }
                Err(RecvError::Closed) => return,
            },
            // Broadcasts from the database are the leader node's to send (see `db_broadcast`).
            received = database_broadcasts.recv() => {
                if let Ok(messages) = received {
                    bus.publish_database_broadcasts(messages);
                }
            }
        }
    }
}

/// The publish queue → `cdc.tx` frames. Consecutive transactions share a frame.
async fn publish(cluster: Cluster, mut queued: mpsc::Receiver<Publish>, metrics: Arc<ReplicationMetrics>) {
    let subject = cluster.subject("cdc.tx");
    let mut next: Option<Publish> = None;
    loop {
        let first = match next.take() {
            Some(p) => p,
            None => match queued.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let (prev, transaction, term) = first;
        let mut batch = Batch {
            term,
            epoch: transaction.epoch,
            prev,
            more: false,
            transactions: vec![fitting(transaction)],
        };
        let mut bytes = wire::approximate_size(&batch.transactions[0]);
        while bytes < FRAME_BYTES {
            let Ok(p) = queued.try_recv() else { break };
            let last = batch.transactions.last().map(|t| t.commit_lsn);
            if p.2 != batch.term || p.1.epoch != batch.epoch || p.0 != last {
                next = Some(p);
                break;
            }
            bytes += wire::approximate_size(&p.1);
            batch.transactions.push(fitting(p.1));
        }
        let count = batch.transactions.len() as u64;
        let payload = Bytes::from(wire::encode(&Frame::Batch(batch)));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(NODE_HEADER, cluster.node_id());
        headers.insert(SENT_HEADER, now_micros().to_string().as_str());
        if let Err(error) = cluster
            .cdc
            .publish_with_headers(subject.clone(), headers, payload)
            .await
        {
            tracing::debug!(error = %chain(&error), "cannot publish transactions; followers fetch them");
            ReplicationMetrics::count(&metrics.cluster.publish_dropped, count);
        }
    }
}

/// `transaction`, or its overflow signal when no frame could carry it: subscribers of its
/// tables refetch, as for a transaction too large to decode.
fn fitting(transaction: Arc<Transaction>) -> Arc<Transaction> {
    if transaction.overflow.is_some() || wire::approximate_size(&transaction) <= MAX_TRANSACTION_BYTES {
        return transaction;
    }
    let mut tables: Vec<(Arc<crate::change::Table>, ChangeKinds)> = Vec::new();
    for change in &transaction.changes {
        match tables.iter_mut().find(|(t, _)| Arc::ptr_eq(t, &change.table)) {
            Some((_, kinds)) => kinds.insert(change.kind),
            None => {
                let mut kinds = ChangeKinds::default();
                kinds.insert(change.kind);
                tables.push((change.table.clone(), kinds));
            }
        }
    }
    let mut t = (*transaction).clone();
    t.overflow = Some(Arc::new(Overflow {
        tables,
        changes: t.changes.len() as u64,
    }));
    t.changes = Vec::new();
    Arc::new(t)
}

/// The leader answers fetches from its window; other nodes stay silent (the requester must
/// hear the leader, not the first node to answer).
async fn answer(
    cluster: Cluster,
    feed: Arc<Mutex<Feed>>,
    metrics: Arc<ReplicationMetrics>,
    shutdown: CancellationToken,
) {
    let mut requests = loop {
        match cluster.cdc.subscribe(cluster.subject("cdc.fetch")).await {
            Ok(s) => break s,
            Err(error) => {
                tracing::warn!(error = %chain(&error), "cannot subscribe to fetches; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = requests.next() => match r { Some(r) => r, None => return },
        };
        let Some(reply) = request.reply else { continue };
        // A leader that heard of a later term is about to find out it no longer leads: the
        // requester must hear the new leader, not this one.
        if !is_leader(&metrics) || lock(&feed).tail().term() > term(&metrics) {
            continue;
        }
        let frame = match serde_json::from_slice::<FetchRequest>(&request.payload) {
            Err(error) => {
                tracing::debug!(error = %chain(&error), "an unreadable fetch request");
                continue;
            }
            Ok(asked) => {
                let after = asked.after.map(|(e, l)| (Epoch(e), Lsn(l)));
                let max = asked.max_bytes.clamp(1, FRAME_BYTES);
                match lock(&feed).answer(term(&metrics), after, max) {
                    Some(mut batch) => {
                        batch.transactions = batch.transactions.into_iter().map(fitting).collect();
                        Frame::Batch(batch)
                    }
                    None => Frame::Refused(Refusal::OutsideWindow),
                }
            }
        };
        if let Err(error) = cluster
            .cdc
            .publish(reply, Bytes::from(wire::encode(&frame)))
            .await
        {
            tracing::debug!(error = %chain(&error), "cannot answer a fetch");
        }
    }
}

/// The leader's head, every heartbeat: followers that missed the last transactions fetch them.
async fn announce(
    cluster: Cluster,
    stage: LocalBus,
    feed: Arc<Mutex<Feed>>,
    metrics: Arc<ReplicationMetrics>,
    shutdown: CancellationToken,
) {
    let subject = cluster.subject("cdc.head");
    let mut ticker = tokio::time::interval(cluster.config.heartbeat);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if !is_leader(&metrics) || !metrics.is_streaming() {
            continue;
        }
        let (epoch, head) = {
            let feed = lock(&feed);
            let head = feed.tail().head().filter(|(e, _)| Some(*e) == stage.epoch());
            // Before the first transaction of its epoch the stream's epoch is what replication
            // announced; the node's bus learns it too (resumes are judged by it).
            if head.is_none()
                && let Some(epoch) = stage.epoch()
                && feed.bus().epoch() != Some(epoch)
            {
                feed.bus().announce_epoch(epoch);
            }
            (stage.epoch(), head.map(|(_, l)| l.0))
        };
        let Some(epoch) = epoch else { continue };
        let announced = Head {
            term: term(&metrics),
            epoch: epoch.0,
            node: cluster.node_id().to_owned(),
            head,
        };
        let payload = serde_json::to_vec(&announced).unwrap_or_default();
        if let Err(error) = cluster.cdc.publish(subject.clone(), payload.into()).await {
            tracing::debug!(error = %chain(&error), "cannot announce the head");
        }
    }
}

/// Reads the leader's stream and heads; hands on what continues this node's head, fetches holes.
async fn follow(
    cluster: Cluster,
    feed: Arc<Mutex<Feed>>,
    metrics: Arc<ReplicationMetrics>,
    shutdown: CancellationToken,
) {
    let subscribe = |subject: &'static str| {
        let cluster = cluster.clone();
        async move {
            loop {
                match cluster.cdc.subscribe(cluster.subject(subject)).await {
                    Ok(s) => return s,
                    Err(error) => {
                        tracing::warn!(error = %chain(&error), subject, "cannot subscribe; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    };
    let mut frames = subscribe("cdc.tx").await;
    let mut heads = subscribe("cdc.head").await;
    loop {
        let fetch = tokio::select! {
            _ = shutdown.cancelled() => return,
            message = frames.next() => {
                let Some(message) = message else { return };
                let own = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(NODE_HEADER))
                    .is_some_and(|n| n.as_str() == cluster.node_id());
                if own {
                    continue;
                }
                let sent = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(SENT_HEADER))
                    .and_then(|v| v.as_str().parse::<i64>().ok());
                let mut feed = lock(&feed);
                let frame = wire::decode_with(&message.payload, &mut |t| feed.intern(t));
                match frame {
                    Ok(Frame::Batch(batch)) => {
                        let before = feed.tail().head();
                        let fetch = receive(&mut feed, Source::Live, batch);
                        if let Some(sent) = sent
                            && feed.tail().head() != before
                        {
                            events().bus_lag(sent);
                        }
                        fetch
                    }
                    Ok(Frame::Refused(_)) => None,
                    Err(error) => {
                        tracing::warn!(error = %chain(&error), "an unreadable change stream frame; fetching instead");
                        None
                    }
                }
            }
            message = heads.next() => {
                let Some(message) = message else { return };
                let Ok(head) = serde_json::from_slice::<Head>(&message.payload) else { continue };
                if head.node == cluster.node_id() {
                    continue;
                }
                let mut feed = lock(&feed);
                feed.tail_mut().saw_term(head.term);
                // A leader's own term is the one it publishes under; never raise it from outside.
                if !is_leader(&metrics) {
                    metrics.cluster.term.fetch_max(head.term, std::sync::atomic::Ordering::Relaxed);
                }
                let mine = feed.tail().head().filter(|(e, _)| e.0 == head.epoch).map_or(0, |(_, l)| l.0);
                metrics.cluster.lag_bytes.store(head.head.unwrap_or(0).saturating_sub(mine), std::sync::atomic::Ordering::Relaxed);
                match head.head {
                    // The leader has handed nothing on: there is nothing to hold.
                    None => {
                        feed.tail_mut().warmed();
                        None
                    }
                    Some(_) => {
                        let behind = feed.tail().behind(head.term, Epoch(head.epoch), head.head.map(Lsn));
                        if behind.is_none() {
                            feed.tail_mut().warmed();
                        }
                        behind
                    }
                }
            }
        };
        if let Some(fetch) = fetch
            && !is_leader(&metrics)
        {
            fetch_from_leader(&cluster, &feed, &metrics, fetch).await;
        }
        record_warm(&feed, &metrics);
    }
}

/// Feeds a batch's transactions in order; returns the fetch the first hole asks for.
fn receive(feed: &mut Feed, source: Source, batch: Batch) -> Option<Fetch> {
    let mut prev = batch.prev;
    for transaction in batch.transactions {
        let commit = transaction.commit_lsn;
        if let Fed::Fetch(fetch) = feed.feed(source, batch.term, prev, transaction) {
            return Some(fetch);
        }
        prev = Some(commit);
    }
    None
}

/// Asks the leader for what follows this node's head, page by page, until caught up.
async fn fetch_from_leader(
    cluster: &Cluster,
    feed: &Mutex<Feed>,
    metrics: &ReplicationMetrics,
    mut fetch: Fetch,
) {
    ReplicationMetrics::count(&metrics.cluster.gap_fetches, 1);
    let subject = cluster.subject("cdc.fetch");
    loop {
        let request = FetchRequest {
            after: fetch.after.map(|(e, l)| (e.0, l.0)),
            max_bytes: FRAME_BYTES,
        };
        let payload = serde_json::to_vec(&request).unwrap_or_default();
        let asked = cluster.cdc.request(subject.clone(), payload.into());
        let reply = match tokio::time::timeout(FETCH_TIMEOUT, asked).await {
            Ok(Ok(reply)) => reply,
            // No leader yet, or it is busy: the next head announcement asks again.
            Ok(Err(error)) => {
                tracing::debug!(error = %chain(&error), "fetch from the leader failed");
                return;
            }
            Err(_) => {
                tracing::debug!("fetch from the leader timed out");
                return;
            }
        };
        let mut feed = lock(feed);
        let batch = match wire::decode_with(&reply.payload, &mut |t| feed.intern(t)) {
            Ok(Frame::Batch(batch)) => batch,
            Ok(Frame::Refused(refusal)) => {
                tracing::debug!(%refusal, "the leader refused a fetch");
                return;
            }
            Err(error) => {
                tracing::warn!(error = %chain(&error), "an unreadable fetch answer");
                return;
            }
        };
        let more = batch.more;
        ReplicationMetrics::count(
            &metrics.cluster.fetched_transactions,
            batch.transactions.len() as u64,
        );
        let _ = receive(&mut feed, Source::Fetched, batch);
        if !more {
            feed.tail_mut().warmed();
            return;
        }
        fetch = Fetch {
            after: feed.tail().head(),
        };
    }
}

/// Whether this node may lead: not while it cannot reach NATS for longer than the grace.
async fn watch_bus(
    cluster: Cluster,
    may_lead: watch::Sender<bool>,
    metrics: Arc<ReplicationMetrics>,
    feed: Arc<Mutex<Feed>>,
    shutdown: CancellationToken,
) {
    let grace = cluster.config.leader_bus_grace;
    let mut reached = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let connected = matches!(
            cluster.cdc.connection_state(),
            async_nats::connection::State::Connected
        );
        if connected {
            reached = Instant::now();
        }
        let allowed = connected || reached.elapsed() < grace;
        if *may_lead.borrow() != allowed {
            if allowed {
                tracing::info!("NATS is reachable: this node may lead the change stream");
            } else {
                tracing::warn!(
                    grace_ms = grace.as_millis() as u64,
                    "NATS unreachable for longer than the grace: stepping down from (or not contending for) the change stream"
                );
            }
            may_lead.send_replace(allowed);
        }
        record_warm(&feed, &metrics);
    }
}

/// Ready to serve resumes: the node holds the leader's window, or leads (its window is the
/// slot's, re-read by its replication).
fn record_warm(feed: &Mutex<Feed>, metrics: &ReplicationMetrics) {
    let warm = lock(feed).tail().is_warm() || (is_leader(metrics) && metrics.is_streaming());
    ClusterMetrics::set(&metrics.cluster.warm, warm);
}
