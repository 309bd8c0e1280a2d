//! The inspector's live log: one line of metadata per change and per channel event, as they
//! pass through the bus.
//!
//! A line names the table, the kind of change and its position, or a broadcast's topic and
//! event: never row values or payloads. The log keeps the last [`KEPT`] lines so a page that
//! opens late still sees recent traffic, and hands new lines to every open page.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::change::Transaction;
use crate::channels::{ChannelEvent, EventKind};
use crate::locks::lock;
use crate::node::Node;

/// Lines kept for pages that open later.
const KEPT: usize = 200;
/// Lines logged per transaction; a bigger one ends with a summary line.
const PER_TRANSACTION: usize = 50;

#[derive(Debug)]
pub(super) struct Log {
    kept: Mutex<VecDeque<Arc<str>>>,
    live: broadcast::Sender<Arc<str>>,
    /// The last transaction seen on the bus: its last position and commit time.
    last: Mutex<Option<(String, i64)>>,
}

impl Log {
    /// Starts following `node`'s bus until the node shuts down.
    pub(super) fn start(node: &Arc<Node>) -> Arc<Log> {
        let log = Arc::new(Log {
            kept: Mutex::new(VecDeque::with_capacity(KEPT)),
            live: broadcast::channel(1024).0,
            last: Mutex::new(None),
        });
        let mut transactions = node.bus.subscribe_transactions();
        let mut events = node.bus.subscribe_channel_events();
        let shutdown = node.shutdown.clone();
        let feeding = log.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    t = transactions.recv() => match t {
                        Ok(t) => feeding.transaction(&t),
                        Err(RecvError::Lagged(n)) => feeding.add(json!({"kind": "gap", "missed": n})),
                        Err(RecvError::Closed) => return,
                    },
                    e = events.recv() => match e {
                        Ok(e) => feeding.channel_event(&e),
                        Err(RecvError::Lagged(n)) => feeding.add(json!({"kind": "gap", "missed": n})),
                        Err(RecvError::Closed) => return,
                    },
                }
            }
        });
        log
    }

    /// The kept lines, oldest first, and a receiver of the lines that follow them.
    pub(super) fn follow(&self) -> (Vec<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        let kept = lock(&self.kept);
        // Subscribing under the lock: no line is both kept and received, none is lost between.
        (kept.iter().cloned().collect(), self.live.subscribe())
    }

    /// The last position seen and its commit time (microseconds since the Unix epoch).
    pub(super) fn last(&self) -> Option<(String, i64)> {
        lock(&self.last).clone()
    }

    fn transaction(&self, t: &Transaction) {
        if let Some(overflow) = &t.overflow {
            let position = overflow.last_position(t.epoch, t.commit_lsn).to_string();
            *lock(&self.last) = Some((position.clone(), t.commit_timestamp));
            let tables: Vec<String> = overflow
                .tables
                .iter()
                .map(|(table, _)| format!("{}.{}", table.schema, table.name))
                .collect();
            return self.add(json!({
                "kind": "overflow", "position": position, "changes": overflow.changes,
                "tables": tables, "commit_timestamp": t.commit_timestamp,
            }));
        }
        for change in t.changes.iter().take(PER_TRANSACTION) {
            self.add(json!({
                "kind": "change",
                "schema": &*change.table.schema,
                "table": &*change.table.name,
                "type": change.kind.as_str(),
                "position": change.position.to_string(),
                "commit_timestamp": change.commit_timestamp,
                "backlog": t.backlog,
            }));
        }
        if t.changes.len() > PER_TRANSACTION {
            self.add(json!({"kind": "more", "changes": t.changes.len() - PER_TRANSACTION}));
        }
        if let Some(last) = t.changes.last() {
            *lock(&self.last) = Some((last.position.to_string(), t.commit_timestamp));
        }
    }

    fn channel_event(&self, e: &ChannelEvent) {
        let (kind, event) = match &e.kind {
            EventKind::Broadcast(b) => ("broadcast", Some(b.event.as_str())),
            EventKind::PresenceDiff(_) => ("presence", None),
        };
        self.add(json!({
            "kind": kind, "topic": e.topic.sub_topic(), "private": e.topic.is_private(),
            "event": event,
        }));
    }

    fn add(&self, mut line: serde_json::Value) {
        line["at"] = json!(crate::window::now_micros());
        let line: Arc<str> = Arc::from(line.to_string());
        let mut kept = lock(&self.kept);
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(line.clone());
        // An error only means no page is open.
        let _ = self.live.send(line);
    }
}
