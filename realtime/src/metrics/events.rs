//! What happens in the process, counted as it happens: joins, leaves, broadcasts, presence
//! events and resumes by outcome, bytes in and out, and the two latencies operators watch
//! (commit → push, authorization checks).
//!
//! One set per process ([`events`]), so the place where something happens counts it with one
//! line and no node at hand. Every labelled counter is created up front for its fixed set of
//! outcomes, so counting is a short scan of a few static strings and one atomic add: no lock,
//! no allocation. Histograms take the library's (uncontended) lock per observation, which is
//! why they are observed once per transaction or per decision batch, never per delivery.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// One label pair; labels here are always a fixed word from our own code.
pub(super) type Label = Vec<(&'static str, &'static str)>;

/// A counter family over a fixed set of outcomes, each counter made once.
#[derive(Debug)]
pub(crate) struct Outcomes {
    family: Family<Label, Counter>,
    /// `(outcome, its counter)`; the last is `other`, counted for a word not in the set.
    counters: Vec<(&'static str, Counter)>,
}

impl Outcomes {
    fn new(label: &'static str, outcomes: &[&'static str]) -> Self {
        let family = Family::<Label, Counter>::default();
        let counters = outcomes
            .iter()
            .chain(std::iter::once(&"other"))
            .map(|&o| (o, family.get_or_create_owned(&vec![(label, o)])))
            .collect();
        Outcomes { family, counters }
    }

    /// Counts one event of `outcome` (a word of the set, else `other`).
    pub(crate) fn add(&self, outcome: &str) {
        let counter = self
            .counters
            .iter()
            .find(|(o, _)| *o == outcome)
            .or(self.counters.last())
            .map(|(_, c)| c);
        if let Some(counter) = counter {
            counter.inc();
        }
    }
}

/// The process's event counters and latency histograms.
#[derive(Debug)]
pub(crate) struct Events {
    /// Commit timestamp of a transaction to the moment its frames are handed to the sockets.
    pub commit_to_push_seconds: Histogram,
    /// Time of one batch of authorization decisions (channel policies, row access).
    pub authorization_seconds: Histogram,
    /// On a follower of a cluster: from the leader publishing a frame of transactions to this
    /// node handing them on (once per frame that brought something new).
    pub cluster_bus_lag_seconds: Histogram,
    /// `accepted`, `refused` (the reason is in `realtime_joins_refused_total`).
    pub joins: Outcomes,
    /// `left` (the client's `phx_leave`), `closed` (token expired or the server closed it).
    pub leaves: Outcomes,
    /// `sent` (handed to subscribers), `refused` (not allowed, too large, rate limited).
    pub broadcasts: Outcomes,
    /// `track`, `untrack`, `refused`.
    pub presence: Outcomes,
    /// `resumed`, and each reason a resume was not possible.
    pub resumes: Outcomes,
    /// Bytes read from sockets (counted per read, not per frame).
    pub bytes_received: Counter,
    /// Bytes written to sockets (counted per write, not per frame).
    pub bytes_sent: Counter,
}

/// The outcomes of a resume (`changes_since`): resumed, or why not.
pub(crate) const RESUME_OUTCOMES: &[&str] = &[
    "resumed",
    "outside_window",
    "other_epoch",
    "invalid_position",
    "gap",
];

static EVENTS: LazyLock<Events> = LazyLock::new(Events::new);

/// The process's event counters.
pub(crate) fn events() -> &'static Events {
    &EVENTS
}

impl Events {
    fn new() -> Self {
        Events {
            // 1 ms .. ~16 s: a push normally takes milliseconds; seconds mean lag.
            commit_to_push_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15),
            ),
            // 50 µs .. ~1.6 s: policy checks are in memory; row checks ask the database.
            authorization_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.000_05, 2.0, 16),
            ),
            // 100 µs .. ~3 s: NATS on a LAN takes well under a millisecond; seconds mean a
            // follower that cannot keep up.
            cluster_bus_lag_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.000_1, 2.0, 15),
            ),
            joins: Outcomes::new("outcome", &["accepted", "refused"]),
            leaves: Outcomes::new("outcome", &["left", "closed"]),
            broadcasts: Outcomes::new("outcome", &["sent", "refused"]),
            presence: Outcomes::new("outcome", &["track", "untrack", "refused"]),
            resumes: Outcomes::new("outcome", RESUME_OUTCOMES),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
        }
    }

    /// Observes one transaction's commit → push latency. `commit_unix_micros` is the commit
    /// timestamp; a clock behind the database's counts as zero.
    pub(crate) fn pushed(&self, commit_unix_micros: i64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        let micros = now.saturating_sub(commit_unix_micros).max(0);
        self.commit_to_push_seconds.observe(micros as f64 / 1e6);
    }

    /// Observes one frame of the change stream applied by a follower, published by the leader at
    /// `sent_unix_micros` (the two clocks may differ: a clock behind the leader's counts as zero).
    pub(crate) fn bus_lag(&self, sent_unix_micros: i64) {
        let micros = crate::window::now_micros()
            .saturating_sub(sent_unix_micros)
            .max(0);
        self.cluster_bus_lag_seconds.observe(micros as f64 / 1e6);
    }

    /// Observes one batch of authorization decisions that took `took`.
    pub(crate) fn authorized(&self, took: Duration) {
        self.authorization_seconds.observe(took.as_secs_f64());
    }

    /// Registers shared handles of every metric in `registry` (clones share the counts).
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "realtime_commit_to_push_seconds",
            "From a transaction's commit to its frames being handed to the sockets (once per transaction).",
            self.commit_to_push_seconds.clone(),
        );
        registry.register(
            "realtime_authorization_check_seconds",
            "Time of one batch of authorization decisions (channel policies, row access).",
            self.authorization_seconds.clone(),
        );
        for (name, help, outcomes) in [
            ("realtime_joins", "Channel joins, by outcome.", &self.joins),
            ("realtime_leaves", "Channels left, by outcome.", &self.leaves),
            (
                "realtime_broadcasts",
                "Broadcast messages from clients, by outcome.",
                &self.broadcasts,
            ),
            (
                "realtime_presence_events",
                "Presence track and untrack events, by outcome.",
                &self.presence,
            ),
            (
                "realtime_resumes",
                "Postgres Changes resumes (changes_since), by outcome.",
                &self.resumes,
            ),
        ] {
            registry.register(name, help, outcomes.family.clone());
        }
        registry.register(
            "realtime_websocket_received_bytes",
            "Bytes read from WebSocket connections.",
            self.bytes_received.clone(),
        );
        registry.register(
            "realtime_websocket_sent_bytes",
            "Bytes written to WebSocket connections.",
            self.bytes_sent.clone(),
        );
    }
}
