//! Broadcast from the database: rows inserted into `realtime.messages` (by `realtime.send`,
//! `realtime.send_binary`, `realtime.broadcast_changes` or a plain insert) reach the channels of
//! their topic as Supabase sends them.
//!
//! The rows travel the service's own replication slot (publication [`message::PUBLICATION`],
//! `publish_via_partition_root`), so they are ordered, survive restarts and carry positions like
//! Postgres Changes. The replication task takes them out of each transaction
//! ([`message::split`]) and hands them to the bus apart from the row changes; the service here
//! is their one consumer on a node:
//! - live: each message becomes a broadcast [`ChannelEvent`] on the bus (one of a transaction
//!   re-read after a restart, `backlog`, is history: it reaches only channels that resume);
//! - resume: the recent messages are kept in a [`Window`] (the Postgres Changes rule and limits),
//!   and a channel that joins with `config.broadcast.since` gets every message of its topic after
//!   that position, then the live stream (see `resume`).
//!
//! `partitions` keeps the table's daily partitions ahead of time and drops old ones.

pub mod message;
pub mod partitions;
pub mod ready;
pub mod replay;
pub mod resume;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::bus::LocalBus;
use crate::change::Transaction;
use crate::changes::resume::Since;
use crate::channels::TopicKey;
use crate::channels::event::{ChannelEvent, EventKind};
use crate::locks::lock;
use crate::protocol::outbound::Outbound;
use crate::protocol::phoenix::{self, Vsn};
use crate::telemetry::chain;
use crate::window::{self, Appended, Resume, ResumeError, Window, WindowLimits};
use resume::ResumeGate;

/// How long a resume waits for the stream to reach its position (after a restart the slot is
/// re-read first) before the channel is told to refetch.
const RESUME_WAIT: Duration = Duration::from_secs(30);

/// A channel that asked to resume database broadcasts.
#[derive(Debug)]
pub struct ResumeRequest {
    pub outbound: Arc<Outbound>,
    pub vsn: Vsn,
    pub topic: TopicKey,
    pub since: Since,
    /// Shared with the channel's registry entry.
    pub gate: Arc<ResumeGate>,
}

/// The node's handle on the service: sessions hand it resume requests.
#[derive(Debug)]
pub struct DbBroadcasts {
    /// For replay reads (connects on first use).
    pub pool: Option<sqlx::PgPool>,
    requests: mpsc::UnboundedSender<ResumeRequest>,
    /// Taken by [`DbBroadcasts::run`].
    receiver: Mutex<Option<mpsc::UnboundedReceiver<ResumeRequest>>>,
}

impl Default for DbBroadcasts {
    fn default() -> Self {
        let (requests, receiver) = mpsc::unbounded_channel();
        DbBroadcasts {
            pool: None,
            requests,
            receiver: Mutex::new(Some(receiver)),
        }
    }
}

impl DbBroadcasts {
    /// The service for `database`.
    pub fn new(database: &crate::config::DatabaseConfig) -> DbBroadcasts {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy_with(crate::db::connect_options(database));
        DbBroadcasts {
            pool: Some(pool),
            ..DbBroadcasts::default()
        }
    }

    /// Asks for the replay of `request`'s channel; its gate opens once it is sent.
    pub fn resume(&self, request: ResumeRequest) {
        if let Err(unsent) = self.requests.send(request) {
            // The service has stopped (shutting down): let live messages through.
            unsent.0.gate.open(None);
        }
    }

    /// Runs the service until `shutdown`. Call once (later calls return at once).
    pub async fn run(
        &self,
        bus: LocalBus,
        limits: WindowLimits,
        max_payload_bytes: usize,
        shutdown: CancellationToken,
    ) {
        let Some(requests) = lock(&self.receiver).take() else {
            return;
        };
        let service = Service {
            window: Window::new(limits),
            pending: Vec::new(),
            bus: bus.clone(),
            max_payload_bytes,
        };
        service
            .run(bus.subscribe_database_broadcasts(), requests, shutdown)
            .await;
    }
}

struct Pending {
    request: ResumeRequest,
    deadline: tokio::time::Instant,
}

struct Service {
    window: Window,
    pending: Vec<Pending>,
    bus: LocalBus,
    max_payload_bytes: usize,
}

impl Service {
    async fn run(
        mut self,
        mut messages: tokio::sync::broadcast::Receiver<Arc<Transaction>>,
        mut requests: mpsc::UnboundedReceiver<ResumeRequest>,
        shutdown: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                received = messages.recv() => match received {
                    Ok(transaction) => {
                        self.on_transaction(transaction);
                        self.retry_pending();
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "database broadcasts fell behind the bus; messages were dropped, resumes across them refetch");
                        self.window.cut();
                    }
                    Err(RecvError::Closed) => return,
                },
                Some(request) = requests.recv() => {
                    let deadline = tokio::time::Instant::now() + RESUME_WAIT;
                    if let Some(request) = self.try_resume(request) {
                        self.pending.push(Pending { request, deadline });
                    }
                }
                _ = ticker.tick() => {
                    self.window.evict(window::now_micros());
                    self.expire_pending();
                }
            }
        }
    }

    fn on_transaction(&mut self, transaction: Arc<Transaction>) {
        if self.window.append(transaction.clone(), window::now_micros()) == Appended::Repeated {
            return;
        }
        // A backlog transaction (re-read after a restart) still goes out, marked: channels that
        // resume may have been answered before the stream reached it, and their gates let it
        // through; channels that only follow what is new never see it.
        for change in &transaction.changes {
            let Some(m) = message::message(change) else {
                continue;
            };
            if m.broadcast.payload_size() > self.max_payload_bytes {
                tracing::warn!(
                    topic = m.topic.sub_topic(),
                    "a database broadcast exceeds the payload size limit; not sent"
                );
                continue;
            }
            let event = ChannelEvent::new(m.topic, None, EventKind::Broadcast(m.broadcast))
                .at(m.position, transaction.backlog);
            self.bus.publish_channel_event(event);
        }
    }

    fn retry_pending(&mut self) {
        for p in std::mem::take(&mut self.pending) {
            if let Some(request) = self.try_resume(p.request) {
                self.pending.push(Pending {
                    request,
                    deadline: p.deadline,
                });
            }
        }
    }

    fn expire_pending(&mut self) {
        let now = tokio::time::Instant::now();
        let (expired, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.deadline <= now);
        self.pending = waiting;
        for p in expired {
            let r = p.request;
            refuse(&r, "outside_window", "the position was not reached by the stream");
        }
    }

    /// Sends the replay and opens the gate; gives the request back when the window cannot tell
    /// yet (the stream has not reached the position).
    fn try_resume(&self, request: ResumeRequest) -> Option<ResumeRequest> {
        let position = match &request.since {
            Since::Position(position) => *position,
            Since::Invalid(problem) => {
                refuse(
                    &request,
                    "invalid_position",
                    &format!("invalid config.broadcast.since: {problem}"),
                );
                return None;
            }
        };
        let slices = match self.window.after(&position, usize::MAX) {
            Resume::NotYet => return Some(request),
            Resume::Refetch(e) => {
                let reason = match e {
                    ResumeError::OutsideWindow => "outside_window",
                    ResumeError::OtherEpoch => "other_epoch",
                };
                refuse(&request, reason, &e.to_string());
                return None;
            }
            Resume::Replay(slices) => slices,
        };
        let mut replayed = 0;
        for slice in &slices {
            for change in &slice.transaction.changes[slice.changes.clone()] {
                let Some(m) = message::message(change) else {
                    continue;
                };
                if m.topic != request.topic || m.broadcast.payload_size() > self.max_payload_bytes {
                    continue;
                }
                let event = ChannelEvent::new(m.topic, None, EventKind::Broadcast(m.broadcast));
                if let Some(frame) = event.frame(request.vsn) {
                    let _ = request.outbound.push(frame.clone());
                    replayed += 1;
                }
            }
        }
        request.gate.open(self.window.head());
        push_system(
            &request,
            &resume::resumed_payload(request.topic.sub_topic(), replayed),
        );
        None
    }
}

/// Makes sure the publication of `realtime.messages` exists and publishes inserts through the
/// partitioned table. Returns its name to stream from, or `None` (with a warning) when it cannot
/// exist: Postgres Changes then stream without database broadcasts.
pub async fn ensure_publication(pool: &sqlx::PgPool) -> Option<String> {
    let name = message::PUBLICATION;
    let result: Result<(), sqlx::Error> = async {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_publication WHERE pubname = $1)")
                .bind(name)
                .fetch_one(pool)
                .await?;
        if exists {
            // Another definition (Supabase's own lists the table without the options): ours.
            sqlx::query("ALTER PUBLICATION supabase_realtime_messages_publication SET TABLE realtime.messages")
                .execute(pool)
                .await?;
            sqlx::query(
                "ALTER PUBLICATION supabase_realtime_messages_publication \
                 SET (publish = 'insert', publish_via_partition_root = true)",
            )
            .execute(pool)
            .await?;
        } else {
            let create = "CREATE PUBLICATION supabase_realtime_messages_publication FOR TABLE realtime.messages \
                          WITH (publish = 'insert', publish_via_partition_root = true)";
            match sqlx::query(create).execute(pool).await {
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42710") => {}
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Some(name.to_owned()),
        Err(error) => {
            tracing::warn!(error = %chain(&error), publication = name, "cannot prepare the publication of realtime.messages: database broadcasts are not delivered");
            None
        }
    }
}

/// Tells the channel it cannot resume; it continues live.
fn refuse(request: &ResumeRequest, reason: &str, message: &str) {
    request.gate.open(None);
    push_system(
        request,
        &resume::refetch_payload(request.topic.sub_topic(), reason, message),
    );
}

fn push_system(request: &ResumeRequest, payload: &str) {
    let text = phoenix::encode_text(
        request.vsn,
        None,
        None,
        &request.topic.wire_topic(),
        "system",
        payload,
    );
    let _ = request.outbound.push(crate::protocol::ws_frame::text(&text));
}
