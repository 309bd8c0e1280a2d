//! `snapshot` in a `postgres_changes` binding: the channel's rows as of a Postgres snapshot,
//! then the changes the snapshot did not show (see `changes::snapshot`).
//!
//! The read runs as a task of its own beside the session, which goes on draining the socket's
//! queue: the task sends a page only when the queue has room for it, so a large snapshot never
//! makes its client a slow consumer and holds one page in memory. Rows go through the same
//! decisions as live changes (filters, `select`, policy rules or row-level security, payload
//! limits). Once the last row is queued, the task hands the channel's subscription, with the
//! snapshot's seam, to the dispatcher, which sends the end-of-snapshot message and the changes.

use std::sync::{Arc, Mutex};

use tokio::task::AbortHandle;

use crate::change::{Epoch, Transaction};
use crate::changes::dispatch::{Audience, Dispatcher};
use crate::changes::service::{Changes, Subscription};
use crate::changes::snapshot::{MAX_ROWS, Seam, SnapshotError, SnapshotRequest, failed_payload};
use crate::changes::subscription::Binding;
use crate::channels::registry::SubscriberId;
use crate::locks::lock;
use crate::lsn::Lsn;
use crate::protocol::outbound::Outbound;

/// Rows per page, at most.
const PAGE_ROWS: usize = 128;
/// Outbound frames left free for the session's own replies.
const RESERVED_ROOM: usize = 16;

/// A snapshot being read for a channel.
#[derive(Debug)]
pub(super) struct SnapshotTask {
    /// True while the read runs and the channel is open: the task subscribes only under this
    /// lock and only while it is true (then sets it false), so a channel closed meanwhile never
    /// gets a subscription that outlives it.
    open: Arc<Mutex<bool>>,
    task: AbortHandle,
}

impl SnapshotTask {
    /// Stops the read; the task will not subscribe the channel.
    pub(super) fn stop(&self) {
        *lock(&self.open) = false;
        self.task.abort();
    }

    /// Stops the read if it has not subscribed the channel yet; true when it was stopped.
    pub(super) fn stop_if_running(&self) -> bool {
        let mut open = lock(&self.open);
        // Under the lock: the task subscribes only while holding it, and closes it when done.
        let running = *open;
        *open = false;
        self.task.abort();
        running
    }
}

/// The snapshot each binding asks for; `Err` with the first refusal.
pub(super) fn requests(bindings: &[Binding]) -> Result<Vec<(Binding, SnapshotRequest)>, String> {
    let mut out = Vec::new();
    for binding in bindings {
        if let Some(request) = SnapshotRequest::parse(&binding.params)? {
            out.push((binding.clone(), request));
        }
    }
    Ok(out)
}

/// Starts reading the snapshot of `requests` for the channel whose subscription (without a
/// seam) is `subscription`; the task subscribes it as `id` when done.
pub(super) fn start(
    changes: Arc<Changes>,
    subscription: Subscription,
    requests: Vec<(Binding, SnapshotRequest)>,
    id: SubscriberId,
) -> SnapshotTask {
    let open = Arc::new(Mutex::new(true));
    let gate = open.clone();
    let task = tokio::spawn(async move {
        let subscription = Arc::new(subscription);
        let seam = match read(&changes, &subscription, &requests).await {
            Ok(seam) => Some(Arc::new(seam)),
            Err((error, sent)) => {
                tracing::info!(%error, sent, "a snapshot was refused");
                subscription.push_system(&failed_payload(
                    subscription.sub_topic(),
                    &error.to_string(),
                    sent,
                ));
                None
            }
        };
        let mut open = lock(&gate);
        if *open {
            changes.subscribe(id, with_seam(&subscription, seam));
            // Done: from here on the channel's subscription is the session's to replace.
            *open = false;
        }
    });
    SnapshotTask {
        open,
        task: task.abort_handle(),
    }
}

fn with_seam(subscription: &Subscription, seam: Option<Arc<Seam>>) -> Subscription {
    Subscription {
        outbound: subscription.outbound.clone(),
        vsn: subscription.vsn,
        topic: subscription.topic.clone(),
        claims: subscription.claims.clone(),
        bindings: subscription.bindings.clone(),
        legacy: subscription.legacy,
        since: None,
        seam,
    }
}

/// Reads and sends every requested table; on failure, the error and how many rows were sent.
async fn read(
    changes: &Arc<Changes>,
    subscription: &Arc<Subscription>,
    requests: &[(Binding, SnapshotRequest)],
) -> Result<Seam, (SnapshotError, u64)> {
    let mut sent = 0;
    let mut reader = changes.begin_snapshot().await.map_err(|e| (e, 0))?;
    // A dispatcher of its own: the same decisions as live changes, for this channel alone.
    let mut dispatcher = Dispatcher::new(changes.clone());
    let mut audience = Audience::single(subscription.clone());
    let mut done: Vec<u32> = Vec::new();
    let epoch = changes.head().map_or(Epoch(0), |p| p.epoch);
    for (binding, request) in requests {
        let tables = changes.snapshot_tables(binding).await.map_err(|e| (e, sent))?;
        for read in tables {
            if done.contains(&read.table.oid) {
                continue;
            }
            done.push(read.table.oid);
            reader
                .open(changes, &read, &subscription.claims, request.order.as_ref())
                .await
                .map_err(|e| (e, sent))?;
            let limit = request.limit.unwrap_or(MAX_ROWS);
            let mut from_table = 0;
            while from_table < limit {
                let room = room(&subscription.outbound).await.map_err(|e| (e, sent))?;
                let want = room.min(usize::try_from(limit - from_table).unwrap_or(usize::MAX));
                let page = reader.page(want).await.map_err(|e| (e, sent))?;
                if page.is_empty() {
                    break;
                }
                let rows = Transaction {
                    epoch,
                    xid: 0,
                    commit_lsn: Lsn::ZERO,
                    end_lsn: Lsn::ZERO,
                    commit_timestamp: crate::window::now_micros(),
                    // Not news: kept out of the delivery-latency metric.
                    backlog: true,
                    changes: page,
                    overflow: None,
                    access_changed: false,
                    follows_gap: false,
                };
                let pushed = dispatcher.deliver(&rows, &mut audience).await as u64;
                from_table += pushed;
                sent += pushed;
            }
            if request.limit.is_none() && from_table >= MAX_ROWS {
                let more = reader.page(1).await.map_err(|e| (e, sent))?;
                if !more.is_empty() {
                    return Err((SnapshotError::TooLarge(MAX_ROWS), sent));
                }
            }
        }
    }
    reader.close().await.map_err(|e| (e, sent))?;
    let seam = Seam {
        snapshot: reader.snapshot.clone(),
        lsn: reader.lsn,
        rows: sent,
    };
    reader.finish().await;
    Ok(seam)
}

/// Waits until the socket's queue has room for a page; returns how many rows to read.
async fn room(outbound: &Outbound) -> Result<usize, SnapshotError> {
    loop {
        let room = outbound.room();
        if room == 0 && (outbound.is_empty() || outbound.is_overflowed()) {
            return Err(SnapshotError::Refused("the socket closed".to_owned()));
        }
        if room >= PAGE_ROWS + RESERVED_ROOM {
            return Ok(PAGE_ROWS);
        }
        if outbound.is_empty() && room > RESERVED_ROOM {
            return Ok(room - RESERVED_ROOM);
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
