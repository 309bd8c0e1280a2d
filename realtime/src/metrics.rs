//! Metrics in the Prometheus text format, served at `GET /metrics`.
//!
//! Owns no state of its own. The replication task writes its gauges and counters into a shared
//! [`ReplicationMetrics`] (it travels with the bus, as the task's transactions do); the node's
//! figures (sockets, subscriptions, slow consumers) are read from the node at scrape time, and
//! its [`Refusals`] (refused tokens and joins, by reason) render themselves.
//! [`render`] is pure: numbers in, text out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
}

impl ReplicationMetrics {
    pub fn set_streaming(&self, streaming: bool) {
        self.streaming.store(streaming, Ordering::Relaxed);
    }

    pub fn is_streaming(&self) -> bool {
        self.streaming.load(Ordering::Relaxed)
    }

    pub fn set_slot(&self, slot: Option<SlotGauges>) {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = slot;
    }

    pub fn slot(&self) -> Option<SlotGauges> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The node's own figures, read when scraped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeFigures {
    pub sockets: u64,
    pub changes_subscriptions: u64,
    pub slow_consumer_closes: u64,
}

/// Every metric as Prometheus text (version 0.0.4).
pub fn render(replication: &ReplicationMetrics, node: NodeFigures) -> String {
    let mut out = String::with_capacity(4096);
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    metric(
        &mut out,
        "realtime_replication_streaming",
        "gauge",
        "1 while the replication task streams from the slot, else 0.",
        u8::from(replication.streaming.load(Ordering::Relaxed)).to_string(),
    );
    let slot = replication.slot();
    let gauge = |value: Option<String>| value.unwrap_or_else(|| "NaN".to_owned());
    metric(
        &mut out,
        "realtime_replication_slot_lag_bytes",
        "gauge",
        "WAL bytes written since what the service has received (the slot's confirmed position while it is not connected; NaN: not known). The resume window's WAL shows in retained WAL, not here.",
        gauge(slot.as_ref().map(|s| s.lag_bytes.to_string())),
    );
    metric(
        &mut out,
        "realtime_replication_slot_lag_seconds",
        "gauge",
        "How long ago the WAL was at what the service has received (NaN: not known).",
        gauge(slot.as_ref().map(|s| format!("{:.3}", s.lag_seconds))),
    );
    metric(
        &mut out,
        "realtime_replication_slot_retained_wal_bytes",
        "gauge",
        "WAL bytes Postgres keeps for the slot (from its restart_lsn).",
        gauge(slot.as_ref().map(|s| s.retained_bytes.to_string())),
    );
    metric(
        &mut out,
        "realtime_replication_slot_safe_wal_bytes",
        "gauge",
        "WAL bytes that may still be written before the slot is in danger (NaN: no limit).",
        gauge(
            slot.as_ref()
                .and_then(|s| s.safe_wal_bytes)
                .map(|b| b.to_string()),
        ),
    );
    metric(
        &mut out,
        "realtime_replication_max_slot_wal_keep_size_bytes",
        "gauge",
        "Postgres's max_slot_wal_keep_size in bytes (-1: unlimited; NaN: not known).",
        gauge(slot.as_ref().map(|s| {
            s.max_slot_wal_keep_size_bytes
                .map_or_else(|| "-1".to_owned(), |b| b.to_string())
        })),
    );
    let _ = writeln!(
        out,
        "# HELP realtime_replication_slot_wal_status 1 for the slot's current wal_status.\n\
         # TYPE realtime_replication_slot_wal_status gauge"
    );
    for status in ["reserved", "extended", "unreserved", "lost"] {
        let on = slot.as_ref().is_some_and(|s| s.wal_status == status);
        let _ = writeln!(
            out,
            "realtime_replication_slot_wal_status{{status=\"{status}\"}} {}",
            u8::from(on)
        );
    }
    let counters: [(&str, &str, &AtomicU64); 8] = [
        (
            "realtime_replication_transactions_total",
            "Transactions handed on to subscribers.",
            &replication.transactions,
        ),
        (
            "realtime_replication_changes_total",
            "Row changes handed on to subscribers.",
            &replication.changes,
        ),
        (
            "realtime_replication_overflowed_transactions_total",
            "Transactions too large to keep, sent as an overflow signal instead.",
            &replication.overflowed_transactions,
        ),
        (
            "realtime_replication_interruptions_total",
            "Replication sessions that ended in an error and were retried.",
            &replication.interruptions,
        ),
        (
            "realtime_replication_slots_created_total",
            "Replication slots this process created (first start, dropped or invalidated slot).",
            &replication.slots_created,
        ),
        (
            "realtime_replication_slots_invalidated_total",
            "Invalidated slots (wal_status lost) found and replaced.",
            &replication.slots_invalidated,
        ),
        (
            "realtime_replication_epochs_started_total",
            "New epochs begun: positions from before each are not resumable.",
            &replication.epochs_started,
        ),
        (
            "realtime_replication_slot_check_failures_total",
            "Slot checks that failed (the database was unreachable or the slot missing).",
            &replication.slot_check_failures,
        ),
    ];
    for (name, help, counter) in counters {
        metric(&mut out, name, "counter", help, load(counter).to_string());
    }
    metric(
        &mut out,
        "realtime_websocket_connections",
        "gauge",
        "Open WebSocket connections.",
        node.sockets.to_string(),
    );
    metric(
        &mut out,
        "realtime_changes_subscriptions",
        "gauge",
        "Channels subscribed to Postgres Changes.",
        node.changes_subscriptions.to_string(),
    );
    metric(
        &mut out,
        "realtime_slow_consumer_closes_total",
        "counter",
        "Sockets closed with 4008 because they did not read their frames fast enough.",
        node.slow_consumer_closes.to_string(),
    );
    out
}

/// Refused tokens and refused joins, counted by reason and logged (the reason only: never the
/// token, never a claim). Reasons are the codes of Supabase's error replies
/// (`InvalidJWTToken`, `ClientJoinRateLimitReached`, `Unauthorized`, ...), a small fixed set.
#[derive(Debug, Default)]
pub struct Refusals {
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
    pub fn token_refused(&self, code: &str) {
        let reason = reason_label(code);
        if let Some(more) = tally(&self.tokens, reason) {
            tracing::info!(reason, refused_since_last_line = more, "token refused");
        }
    }

    /// A `phx_join` was refused with `reason` (`"<Code>: <message>"`); only the code is kept.
    pub fn join_refused(&self, reason: &str) {
        let code = reason_label(reason.split(':').next().unwrap_or(""));
        if let Some(more) = tally(&self.joins, code) {
            tracing::info!(reason = code, refused_since_last_line = more, "join refused");
        }
    }

    /// Appends `realtime_auth_refused_total` and `realtime_joins_refused_total`.
    pub fn render(&self, out: &mut String) {
        for (name, help, map) in [
            (
                "realtime_auth_refused_total",
                "Tokens refused at connect or join, by reason.",
                &self.tokens,
            ),
            (
                "realtime_joins_refused_total",
                "Channel joins refused, by reason.",
                &self.joins,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (reason, t) in map.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", t.count);
            }
        }
    }
}

/// Counts one refusal of `reason`; returns the refusals to report when a log line is due.
fn tally(map: &Mutex<BTreeMap<String, Tally>>, reason: &str) -> Option<u64> {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
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

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: String) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
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
        let text = render(&metrics, NodeFigures::default());
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
                changes_subscriptions: 2,
                slow_consumer_closes: 1,
            },
        );
        assert_eq!(value(&text, "realtime_replication_streaming"), "1");
        assert_eq!(value(&text, "realtime_replication_slot_lag_bytes"), "1234");
        assert_eq!(value(&text, "realtime_replication_slot_lag_seconds"), "2.500");
        assert_eq!(
            value(&text, "realtime_replication_max_slot_wal_keep_size_bytes"),
            "-1"
        );
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
        let mut text = String::new();
        refusals.render(&mut text);
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

    #[test]
    fn every_sample_has_help_and_type_and_a_unique_name() {
        let mut text = render(&ReplicationMetrics::default(), NodeFigures::default());
        let refusals = Refusals::default();
        refusals.token_refused("MalformedJWT");
        refusals.join_refused("TopicNameRequired: You must provide a topic name");
        refusals.render(&mut text);
        let names: Vec<String> = samples(&text).into_iter().map(|(n, _)| n).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        for name in &names {
            let family = name.split('{').next().unwrap_or(name);
            assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
        }
    }
}
