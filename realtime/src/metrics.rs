//! Metrics served at `GET /metrics`, encoded by the `prometheus-client` library.
//!
//! The process's events (joins, broadcasts, latencies, bytes) are counted where they happen,
//! in [`events`]. Owns no other state. The replication task writes its gauges and counters into a shared
//! [`ReplicationMetrics`] (it travels with the bus, as the task's transactions do); the node's
//! figures (sockets, subscriptions, slow consumers) are read from the node at scrape time, and
//! its [`Refusals`] (refused tokens and joins, by reason) render themselves.
//! [`render`] reads them all into one registry per scrape.

mod events;
mod process;

pub(crate) use events::events;

use crate::locks::lock;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// What the last slot check found (see `replication::watchdog`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlotGauges {
    /// WAL written since the slot's confirmed position: what the service has yet to confirm.
    pub lag_bytes: u64,
    /// How long ago the WAL was at the slot's confirmed position.
    pub lag_seconds: f64,
    /// WAL kept on disk for the slot (from its `restart_lsn`): what `max_slot_wal_keep_size`
    /// limits.
    pub retained_bytes: u64,
    /// `pg_replication_slots.safe_wal_size`: WAL that may still be written before the slot is
    /// in danger of invalidation (`None`: no limit is set).
    pub safe_wal_bytes: Option<i64>,
    /// `max_slot_wal_keep_size` in bytes (`None`: unlimited, the default).
    pub max_slot_wal_keep_size_bytes: Option<u64>,
    /// `pg_replication_slots.wal_status`: `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: String,
}

/// The replication task's figures. Counters only grow; gauges hold the latest value.
#[derive(Debug, Default)]
pub struct ReplicationMetrics {
    streaming: AtomicBool,
    /// `None` until a slot check succeeds, and again while the slot is missing.
    slot: Mutex<Option<SlotGauges>>,
    pub transactions: AtomicU64,
    pub changes: AtomicU64,
    pub overflowed_transactions: AtomicU64,
    /// Replication sessions that ended in an error (each is followed by a reconnect).
    pub interruptions: AtomicU64,
    pub slots_created: AtomicU64,
    pub slots_invalidated: AtomicU64,
    pub epochs_started: AtomicU64,
    pub slot_check_failures: AtomicU64,
    /// The clustered change stream's figures (shown only on a node of a cluster).
    pub cluster: ClusterMetrics,
}

/// A clustered node's part in the change stream: leadership, and how it follows the leader.
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    /// The node is part of a cluster: the figures below are shown.
    pub enabled: AtomicBool,
    /// The node leads the change stream now.
    pub leader: AtomicBool,
    /// The leadership term this node last held or saw.
    pub term: AtomicU64,
    /// The node holds the leader's window (it caught up once): it is ready.
    pub warm: AtomicBool,
    /// WAL bytes between the leader's announced head and this node's head.
    pub lag_bytes: AtomicU64,
    pub gap_fetches: AtomicU64,
    pub fetched_transactions: AtomicU64,
    /// Transactions the leader could not publish (its publish queue was full or NATS refused).
    pub publish_dropped: AtomicU64,
    /// Times this node became the leader.
    pub leader_changes: AtomicU64,
    /// Transactions applied after a hole the leader could no longer fill (subscribers refetch).
    pub gaps: AtomicU64,
}

impl ClusterMetrics {
    pub fn set(flag: &AtomicBool, on: bool) {
        flag.store(on, Ordering::Relaxed);
    }

    pub fn get(flag: &AtomicBool) -> bool {
        flag.load(Ordering::Relaxed)
    }
}

impl ReplicationMetrics {
    /// Whether the replication stream is streaming now.
    pub fn is_streaming(&self) -> bool {
        self.streaming.load(Ordering::Relaxed)
    }

    pub fn set_streaming(&self, streaming: bool) {
        self.streaming.store(streaming, Ordering::Relaxed);
    }

    pub fn set_slot(&self, slot: Option<SlotGauges>) {
        *lock(&self.slot) = slot;
    }

    pub fn slot(&self) -> Option<SlotGauges> {
        lock(&self.slot).clone()
    }

    pub fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The node's own figures, read when scraped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct NodeFigures {
    pub sockets: u64,
    pub channels: u64,
    pub changes_subscriptions: u64,
    pub slow_consumer_closes: u64,
    /// Set on a clustered node.
    pub cluster: Option<ClusterFigures>,
}

/// A clustered node's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClusterFigures {
    /// Nodes believed alive, this one included.
    pub nodes: u64,
    /// Broadcasts and presence diffs not published because the publisher fell behind.
    pub publish_dropped: u64,
    /// Other nodes' presence entries held here.
    pub remote_entries: u64,
}

/// Every metric as OpenMetrics text (which Prometheus reads), encoded by `prometheus-client`.
/// Figures kept elsewhere (replication, the node, refusals, `/proc`) are read now into a
/// registry made for this scrape; the process's event counters join it by shared handle.
pub(crate) fn render(replication: &ReplicationMetrics, node: NodeFigures, refusals: &Refusals) -> String {
    let mut registry = Registry::default();
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let r = &mut registry;
    gauge(
        r,
        "realtime_replication_streaming",
        "1 while the replication task streams from the slot, else 0.",
        i64::from(replication.is_streaming()),
    );
    let slot = replication.slot();
    let known = |value: Option<f64>| value.unwrap_or(f64::NAN);
    gauge(
        r,
        "realtime_replication_slot_lag_bytes",
        "WAL bytes written since what the service has received (the slot's confirmed position while it is not connected; NaN: not known). The resume window's WAL shows in retained WAL, not here.",
        known(slot.as_ref().map(|s| s.lag_bytes as f64)),
    );
    gauge(
        r,
        "realtime_replication_slot_lag_seconds",
        "How long ago the WAL was at what the service has received (NaN: not known).",
        known(slot.as_ref().map(|s| s.lag_seconds)),
    );
    gauge(
        r,
        "realtime_replication_slot_retained_wal_bytes",
        "WAL bytes Postgres keeps for the slot (from its restart_lsn).",
        known(slot.as_ref().map(|s| s.retained_bytes as f64)),
    );
    gauge(
        r,
        "realtime_replication_slot_safe_wal_bytes",
        "WAL bytes that may still be written before the slot is in danger (NaN: no limit).",
        known(slot.as_ref().and_then(|s| s.safe_wal_bytes).map(|b| b as f64)),
    );
    gauge(
        r,
        "realtime_replication_max_slot_wal_keep_size_bytes",
        "Postgres's max_slot_wal_keep_size in bytes (-1: unlimited; NaN: not known).",
        known(
            slot.as_ref()
                .map(|s| s.max_slot_wal_keep_size_bytes.map_or(-1.0, |b| b as f64)),
        ),
    );
    let wal_status = Family::<events::Label, Gauge>::default();
    for status in ["reserved", "extended", "unreserved", "lost"] {
        let on = slot.as_ref().is_some_and(|s| s.wal_status == status);
        wal_status
            .get_or_create(&vec![("status", status)])
            .set(i64::from(on));
    }
    r.register(
        "realtime_replication_slot_wal_status",
        "1 for the slot's current wal_status.",
        wal_status,
    );
    let counters: [(&str, &str, &AtomicU64); 8] = [
        (
            "realtime_replication_transactions",
            "Transactions handed on to subscribers.",
            &replication.transactions,
        ),
        (
            "realtime_replication_changes",
            "Row changes handed on to subscribers.",
            &replication.changes,
        ),
        (
            "realtime_replication_overflowed_transactions",
            "Transactions too large to keep, sent as an overflow signal instead.",
            &replication.overflowed_transactions,
        ),
        (
            "realtime_replication_interruptions",
            "Replication sessions that ended in an error and were retried.",
            &replication.interruptions,
        ),
        (
            "realtime_replication_slots_created",
            "Replication slots this process created (first start, dropped or invalidated slot).",
            &replication.slots_created,
        ),
        (
            "realtime_replication_slots_invalidated",
            "Invalidated slots (wal_status lost) found and replaced.",
            &replication.slots_invalidated,
        ),
        (
            "realtime_replication_epochs_started",
            "New epochs begun: positions from before each are not resumable.",
            &replication.epochs_started,
        ),
        (
            "realtime_replication_slot_check_failures",
            "Slot checks that failed (the database was unreachable or the slot missing).",
            &replication.slot_check_failures,
        ),
    ];
    for (name, help, counter) in counters {
        r.register(name, help, ConstCounter::new(load(counter)));
    }
    let cluster = &replication.cluster;
    if ClusterMetrics::get(&cluster.enabled) {
        r.register(
            "realtime_cluster_bus_lag_seconds",
            "On a follower: from the leader publishing a frame of transactions on NATS to this node handing them on (wall clocks of both nodes).",
            events().cluster_bus_lag_seconds.clone(),
        );
        gauge(
            r,
            "realtime_cluster_leader",
            "1 while this node leads the change stream (streams the slot), else 0.",
            i64::from(ClusterMetrics::get(&cluster.leader)),
        );
        gauge(
            r,
            "realtime_cluster_term",
            "The leadership term this node last held or heard of.",
            to_i64(load(&cluster.term)),
        );
        gauge(
            r,
            "realtime_cluster_warm",
            "1 once this node holds the leader's resume window, else 0.",
            i64::from(ClusterMetrics::get(&cluster.warm)),
        );
        gauge(
            r,
            "realtime_cluster_cdc_lag_bytes",
            "WAL bytes between the leader's announced head and this node's.",
            to_i64(load(&cluster.lag_bytes)),
        );
        let counters: [(&str, &str, &AtomicU64); 5] = [
            (
                "realtime_cluster_gap_fetches",
                "Fetches from the leader's window to fill a hole in what this node received.",
                &cluster.gap_fetches,
            ),
            (
                "realtime_cluster_fetched_transactions",
                "Transactions received by fetch rather than live.",
                &cluster.fetched_transactions,
            ),
            (
                "realtime_cluster_publish_dropped",
                "Transactions the leader did not publish (queue full or NATS unavailable); followers fetch them.",
                &cluster.publish_dropped,
            ),
            (
                "realtime_cluster_leader_changes",
                "Times this node became the leader of the change stream.",
                &cluster.leader_changes,
            ),
            (
                "realtime_cluster_gaps",
                "Holes the leader could no longer fill: subscribers on this node were told to refetch.",
                &cluster.gaps,
            ),
        ];
        for (name, help, counter) in counters {
            r.register(name, help, ConstCounter::new(load(counter)));
        }
    }
    gauge(
        r,
        "realtime_websocket_connections",
        "Open WebSocket connections.",
        to_i64(node.sockets),
    );
    gauge(
        r,
        "realtime_channels",
        "Channel topics with at least one subscriber on this node.",
        to_i64(node.channels),
    );
    gauge(
        r,
        "realtime_changes_subscriptions",
        "Channels subscribed to Postgres Changes.",
        to_i64(node.changes_subscriptions),
    );
    r.register(
        "realtime_slow_consumer_closes",
        "Sockets closed with 4008 because they did not read their frames fast enough.",
        ConstCounter::new(node.slow_consumer_closes),
    );
    if let Some(cluster) = node.cluster {
        gauge(
            r,
            "realtime_cluster_nodes",
            "Nodes of the cluster believed alive (from heartbeats), this one included.",
            to_i64(cluster.nodes),
        );
        r.register(
            "realtime_cluster_publish_dropped",
            "Broadcasts and presence diffs not published to the other nodes because the publisher fell behind.",
            ConstCounter::new(cluster.publish_dropped),
        );
        gauge(
            r,
            "realtime_presence_remote_entries",
            "Presence entries of other nodes held by this node.",
            to_i64(cluster.remote_entries),
        );
    }
    refusals.register(r);
    events::events().register(r);
    r.register(
        "realtime_build",
        "The running build (always 1).",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
    if let Some(p) = process::read() {
        gauge(
            r,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            to_i64(p.resident_memory_bytes),
        );
        gauge(
            r,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            to_i64(p.virtual_memory_bytes),
        );
        r.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            ConstCounter::new(p.cpu_seconds),
        );
        gauge(
            r,
            "process_open_fds",
            "Number of open file descriptors.",
            to_i64(p.open_fds),
        );
        if let Some(max) = p.max_fds {
            gauge(
                r,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                to_i64(max),
            );
        }
        gauge(
            r,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        );
    }
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// The content type of [`render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn gauge<N>(registry: &mut Registry, name: &str, help: &str, value: N)
where
    N: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug + Send + Sync + 'static,
{
    registry.register(name, help, ConstGauge::new(value));
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Refused tokens and refused joins, counted by reason and logged (the reason only: never the
/// token, never a claim). Reasons are the codes of Supabase's error replies
/// (`InvalidJWTToken`, `ClientJoinRateLimitReached`, `Unauthorized`, ...), a small fixed set.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    tokens: Mutex<BTreeMap<String, Tally>>,
    joins: Mutex<BTreeMap<String, Tally>>,
}

/// One reason's count, and how its log lines are thinned out.
#[derive(Debug, Default)]
struct Tally {
    count: u64,
    logged_at: Option<Instant>,
    /// Refusals since the last log line of this reason.
    unlogged: u64,
}

/// At most one log line per reason this often: a flood of refusals must not flood the log.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl Refusals {
    /// A token was refused (at the handshake or at a join); `code` is the error's code.
    pub(crate) fn token_refused(&self, code: &str) {
        let reason = reason_label(code);
        if let Some(more) = tally(&self.tokens, reason) {
            tracing::info!(reason, refused_since_last_line = more, "token refused");
        }
    }

    /// A `phx_join` was refused with `reason` (`"<Code>: <message>"`); only the code is kept.
    pub(crate) fn join_refused(&self, reason: &str) {
        let code = reason_label(reason.split(':').next().unwrap_or(""));
        if let Some(more) = tally(&self.joins, code) {
            tracing::info!(reason = code, refused_since_last_line = more, "join refused");
        }
    }

    /// Registers `realtime_auth_refused_total` and `realtime_joins_refused_total` as they
    /// stand now.
    fn register(&self, registry: &mut Registry) {
        for (name, help, map) in [
            (
                "realtime_auth_refused",
                "Tokens refused at connect or join, by reason.",
                &self.tokens,
            ),
            (
                "realtime_joins_refused",
                "Channel joins refused, by reason.",
                &self.joins,
            ),
        ] {
            let family = Family::<Vec<(&'static str, String)>, Counter>::default();
            for (reason, t) in lock(map).iter() {
                family
                    .get_or_create(&vec![("reason", reason.clone())])
                    .inc_by(t.count);
            }
            registry.register(name, help, family);
        }
    }
}

/// Counts one refusal of `reason`; returns the refusals to report when a log line is due.
fn tally(map: &Mutex<BTreeMap<String, Tally>>, reason: &str) -> Option<u64> {
    let mut map = lock(map);
    let t = map.entry(reason.to_owned()).or_default();
    t.count += 1;
    t.unlogged += 1;
    let now = Instant::now();
    if t.logged_at.is_some_and(|at| now.duration_since(at) < LOG_EVERY) {
        return None;
    }
    t.logged_at = Some(now);
    Some(std::mem::take(&mut t.unlogged))
}

/// A code as a label value: letters, digits and `_` only, at most 64 of them (the codes are
/// ours, but a label must never carry client text nor grow without bound); else `other`.
fn reason_label(code: &str) -> &str {
    let code = code.trim();
    let plain =
        !code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain { code } else { "other" }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name value` pairs of the sample lines.
    fn samples(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (name, value) = l.rsplit_once(' ').expect("name value");
                (name.to_owned(), value.to_owned())
            })
            .collect()
    }

    fn value(text: &str, name: &str) -> String {
        samples(text)
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
            .1
    }

    #[test]
    fn unknown_slot_figures_are_nan_and_known_ones_are_numbers() {
        let metrics = ReplicationMetrics::default();
        let text = render(&metrics, NodeFigures::default(), &Refusals::default());
        assert_eq!(value(&text, "realtime_replication_slot_lag_bytes"), "NaN");
        assert_eq!(value(&text, "realtime_replication_streaming"), "0");
        metrics.set_streaming(true);
        metrics.set_slot(Some(SlotGauges {
            lag_bytes: 1234,
            lag_seconds: 2.5,
            retained_bytes: 99,
            safe_wal_bytes: None,
            max_slot_wal_keep_size_bytes: None,
            wal_status: "extended".into(),
        }));
        ReplicationMetrics::count(&metrics.transactions, 3);
        let text = render(
            &metrics,
            NodeFigures {
                sockets: 7,
                channels: 3,
                changes_subscriptions: 2,
                slow_consumer_closes: 1,
                cluster: None,
            },
            &Refusals::default(),
        );
        assert_eq!(value(&text, "realtime_replication_streaming"), "1");
        let number = |name: &str| value(&text, name).parse::<f64>().expect("a number");
        assert_eq!(number("realtime_replication_slot_lag_bytes"), 1234.0);
        assert_eq!(number("realtime_replication_slot_lag_seconds"), 2.5);
        assert_eq!(number("realtime_replication_max_slot_wal_keep_size_bytes"), -1.0);
        assert_eq!(
            value(&text, "realtime_replication_slot_wal_status{status=\"extended\"}"),
            "1"
        );
        assert_eq!(
            value(&text, "realtime_replication_slot_wal_status{status=\"lost\"}"),
            "0"
        );
        assert_eq!(value(&text, "realtime_replication_transactions_total"), "3");
        assert_eq!(value(&text, "realtime_websocket_connections"), "7");
        assert_eq!(value(&text, "realtime_slow_consumer_closes_total"), "1");
        assert_eq!(value(&text, "realtime_channels"), "3");
    }

    /// Log lines of refusals are thinned by Tokio's clock: paused time shows the interval.
    #[tokio::test(start_paused = true)]
    async fn refusal_log_lines_come_at_most_once_per_interval_per_reason() {
        let map = Mutex::new(BTreeMap::new());
        assert_eq!(
            tally(&map, "InvalidJWTToken"),
            Some(1),
            "the first refusal is logged"
        );
        assert_eq!(tally(&map, "InvalidJWTToken"), None);
        assert_eq!(
            tally(&map, "JwtExpired"),
            Some(1),
            "each reason has its own interval"
        );
        tokio::time::advance(LOG_EVERY - Duration::from_millis(1)).await;
        assert_eq!(tally(&map, "InvalidJWTToken"), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            tally(&map, "InvalidJWTToken"),
            Some(3),
            "the line counts the refusals since the last one"
        );
        assert_eq!(tally(&map, "InvalidJWTToken"), None);
    }

    #[test]
    fn refusals_are_counted_by_code_and_never_by_client_text() {
        let refusals = Refusals::default();
        refusals.token_refused("InvalidJWTToken");
        refusals.token_refused("InvalidJWTToken");
        refusals.token_refused("JwtSignatureError");
        refusals.join_refused("ClientJoinRateLimitReached: Too many joins per second");
        refusals.join_refused("Unauthorized: You do not have permissions to read from this Channel topic: a");
        refusals.join_refused("Unauthorized: You do not have permissions to read from this Channel topic: b");
        refusals.join_refused("room {\"x\"} said: hello");
        let text = render(&ReplicationMetrics::default(), NodeFigures::default(), &refusals);
        assert_eq!(
            value(&text, "realtime_auth_refused_total{reason=\"InvalidJWTToken\"}"),
            "2"
        );
        assert_eq!(
            value(&text, "realtime_auth_refused_total{reason=\"JwtSignatureError\"}"),
            "1"
        );
        assert_eq!(
            value(&text, "realtime_joins_refused_total{reason=\"Unauthorized\"}"),
            "2"
        );
        assert_eq!(
            value(
                &text,
                "realtime_joins_refused_total{reason=\"ClientJoinRateLimitReached\"}"
            ),
            "1"
        );
        assert_eq!(
            value(&text, "realtime_joins_refused_total{reason=\"other\"}"),
            "1"
        );
        assert!(!text.contains("room"), "{text}");
    }

    /// `# TYPE` lines: family name to type.
    fn types(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(n, t)| (n.to_owned(), t.to_owned()))
            .collect()
    }

    #[test]
    fn every_metric_has_its_name_type_help_and_labels() {
        let refusals = Refusals::default();
        refusals.token_refused("MalformedJWT");
        refusals.join_refused("TopicNameRequired: You must provide a topic name");
        events().joins.add("accepted");
        events().broadcasts.add("no such outcome");
        events().pushed(0);
        let text = render(&ReplicationMetrics::default(), NodeFigures::default(), &refusals);
        let types = types(&text);
        let expected = [
            ("realtime_replication_streaming", "gauge"),
            ("realtime_replication_slot_lag_bytes", "gauge"),
            ("realtime_replication_slot_retained_wal_bytes", "gauge"),
            ("realtime_replication_slot_wal_status", "gauge"),
            ("realtime_replication_transactions", "counter"),
            ("realtime_replication_changes", "counter"),
            ("realtime_websocket_connections", "gauge"),
            ("realtime_channels", "gauge"),
            ("realtime_changes_subscriptions", "gauge"),
            ("realtime_slow_consumer_closes", "counter"),
            ("realtime_auth_refused", "counter"),
            ("realtime_joins_refused", "counter"),
            ("realtime_commit_to_push_seconds", "histogram"),
            ("realtime_authorization_check_seconds", "histogram"),
            ("realtime_joins", "counter"),
            ("realtime_leaves", "counter"),
            ("realtime_broadcasts", "counter"),
            ("realtime_presence_events", "counter"),
            ("realtime_resumes", "counter"),
            ("realtime_websocket_received_bytes", "counter"),
            ("realtime_websocket_sent_bytes", "counter"),
            ("realtime_build", "info"),
            ("process_resident_memory_bytes", "gauge"),
            ("process_cpu_seconds", "counter"),
            ("process_open_fds", "gauge"),
        ];
        for (name, kind) in expected {
            assert_eq!(
                types.get(name).map(String::as_str),
                Some(kind),
                "{name} in\n{text}"
            );
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
        // Counters are sampled as `_total`, as the names in the docs and dashboards say.
        assert_eq!(
            value(&text, "realtime_auth_refused_total{reason=\"MalformedJWT\"}"),
            "1"
        );
        assert_eq!(
            value(
                &text,
                "realtime_joins_refused_total{reason=\"TopicNameRequired\"}"
            ),
            "1"
        );
        assert_ne!(value(&text, "realtime_joins_total{outcome=\"accepted\"}"), "0");
        assert_ne!(value(&text, "realtime_broadcasts_total{outcome=\"other\"}"), "0");
        // Every outcome is there from the start, counted or not.
        value(&text, "realtime_presence_events_total{outcome=\"refused\"}");
        for outcome in events::RESUME_OUTCOMES {
            value(&text, &format!("realtime_resumes_total{{outcome=\"{outcome}\"}}"));
        }
        // A commit at the Unix epoch is decades old: it lands in the +Inf bucket only.
        assert_ne!(value(&text, "realtime_commit_to_push_seconds_count"), "0");
        assert_ne!(
            value(&text, "realtime_commit_to_push_seconds_bucket{le=\"+Inf\"}"),
            "0"
        );
        value(&text, "realtime_authorization_check_seconds_sum");
        assert_eq!(
            value(
                &text,
                &format!("realtime_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))
            ),
            "1"
        );
        assert!(value(&text, "process_cpu_seconds_total").parse::<f64>().is_ok());
        let names: Vec<String> = samples(&text).into_iter().map(|(n, _)| n).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
