//! Presence: who is tracked on each channel topic, and the diffs that keep clients in sync.
//!
//! Owns the presence entries of this node: one entry per tracking channel (subscriber), under
//! the channel's presence key; several channels may share a key and then appear as several metas
//! of it. Every change is published as a `presence_diff` event on the bus while the topic's
//! lock is held, so diffs leave in the order the state changed. A joining client reads the
//! state with [`Presence::state`] after it is registered for diffs: a diff may then reach it
//! twice (once inside the state), which clients apply idempotently, but never zero times.
//!
//! Each meta is the tracked payload plus `phx_ref` (unique per track), and `phx_ref_prev` when
//! it replaces an earlier payload of the same channel.
//!
//! Each topic holds at most [`PresenceLimits::max_entries`] entries and
//! [`PresenceLimits::max_bytes`] bytes of tracked payloads: a track past either is refused
//! ([`Full`]), so one client cannot grow a topic's state, which every joiner receives whole,
//! without bound.
//!
//! In a cluster, each node owns the entries its sockets track; the others' arrive as messages
//! and are kept apart ([`remote`]). Every local diff is also numbered and handed to the
//! replication outbox ([`Presence::replicate_to`]), never waiting: a full outbox drops the diff,
//! which receivers see as a hole in the numbers and repair by asking for a snapshot. The state
//! a joiner receives is the union of both.

pub(crate) mod remote;

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::bus::LocalBus;
use crate::channels::{ChannelEvent, EventKind, SubscriberId, TopicKey};
use crate::locks::lock;
use remote::{DiffOutcome, Malformed, RemoteEntries};

const SHARDS: usize = 16;

#[derive(Debug)]
struct Entry {
    owner: SubscriberId,
    key: String,
    phx_ref: String,
    phx_ref_prev: Option<String>,
    meta: Map<String, Value>,
    /// The payload's size as the client sent it (what the topic's byte cap counts).
    bytes: usize,
}

#[derive(Debug, Default)]
struct TopicPresence {
    entries: Vec<Entry>,
    /// Where each owner's entry is in `entries`: tracking and leaving stay O(1) on a big topic.
    by_owner: HashMap<SubscriberId, usize>,
    /// Sum of the entries' `bytes`.
    bytes: usize,
    /// Number of the topic's last diff (0: none since the topic had entries).
    last_seq: u64,
}

/// A local presence change, numbered for the other nodes of a cluster (see [`remote`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalDiff {
    pub topic: TopicKey,
    pub seq: u64,
    /// The number of the topic's previous diff; 0 when the topic had no entries before.
    pub prev: u64,
    /// The `presence_diff` payload.
    pub diff: String,
}

/// Caps of one topic's presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PresenceLimits {
    pub max_entries: usize,
    pub max_bytes: usize,
}

impl PresenceLimits {
    #[cfg(test)]
    pub(crate) const UNLIMITED: PresenceLimits = PresenceLimits {
        max_entries: usize::MAX,
        max_bytes: usize::MAX,
    };
}

/// Why a track was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// The topic has `max_entries` entries already.
    Entries,
    /// The topic's payloads would exceed `max_bytes`.
    Bytes,
}

/// What a `track` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TrackOutcome {
    Joined,
    Updated,
    /// Same payload as already tracked: no diff was sent.
    Unchanged,
}

#[derive(Debug)]
pub(crate) struct Presence {
    shards: Box<[Mutex<HashMap<TopicKey, TopicPresence>>]>,
    bus: LocalBus,
    limits: PresenceLimits,
    ref_prefix: u32,
    next_ref: AtomicU64,
    /// Other nodes' entries (empty on a single node).
    remote: Mutex<RemoteEntries>,
    /// Numbers local diffs across all topics (see [`remote`]).
    seq: AtomicU64,
    outbox: OnceLock<mpsc::Sender<LocalDiff>>,
    outbox_dropped: AtomicU64,
    /// Topics with a recent local diff: the number of the last one and when it was made. The
    /// relay announces these heads for a while, so a lost *last* diff is noticed (see
    /// [`Presence::recent_heads`]).
    heads: Mutex<HashMap<TopicKey, (u64, Instant)>>,
}

impl Presence {
    #[cfg(test)]
    pub(crate) fn new(bus: LocalBus) -> Self {
        Self::with_limits(bus, PresenceLimits::UNLIMITED)
    }

    pub(crate) fn with_limits(bus: LocalBus, limits: PresenceLimits) -> Self {
        Presence {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            bus,
            limits,
            ref_prefix: rand::random(),
            next_ref: AtomicU64::new(1),
            remote: Mutex::default(),
            seq: AtomicU64::new(0),
            outbox: OnceLock::new(),
            outbox_dropped: AtomicU64::new(0),
            heads: Mutex::default(),
        }
    }

    /// Hands every later local diff, numbered, to `outbox` (a clustered node's publisher).
    pub(crate) fn replicate_to(&self, outbox: mpsc::Sender<LocalDiff>) {
        let _ = self.outbox.set(outbox);
    }

    /// Local diffs dropped because the outbox was full.
    pub(crate) fn outbox_dropped(&self) -> u64 {
        self.outbox_dropped.load(Ordering::Relaxed)
    }

    /// Sends a local diff to local sockets and, numbered, to the outbox. Called with the
    /// topic's shard lock held, so numbers follow the order of the changes.
    fn emit(&self, topic: &TopicKey, last_seq: &mut u64, diff: String) {
        if let Some(outbox) = self.outbox.get() {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
            let numbered = LocalDiff {
                topic: topic.clone(),
                seq,
                prev: std::mem::replace(last_seq, seq),
                diff: diff.clone(),
            };
            if outbox.try_send(numbered).is_err() {
                self.outbox_dropped.fetch_add(1, Ordering::Relaxed);
            }
            // Even a diff the outbox dropped: its head tells the receivers they miss it.
            lock(&self.heads).insert(topic.clone(), (seq, Instant::now()));
        }
        self.bus.publish_channel_event(ChannelEvent::new(
            topic.clone(),
            None,
            EventKind::PresenceDiff(diff),
        ));
    }

    fn remote(&self) -> std::sync::MutexGuard<'_, RemoteEntries> {
        lock(&self.remote)
    }

    fn deliver_remote(&self, topic: &TopicKey, diffs: Vec<String>) {
        for diff in diffs {
            self.bus.publish_channel_event(ChannelEvent::new(
                topic.clone(),
                None,
                EventKind::PresenceDiff(diff),
            ));
        }
    }

    /// The heads (number of the last diff) of the topics whose last local diff is younger than
    /// `within`; older ones are forgotten. Receivers compare a head with what they hold, so a
    /// diff NATS lost is repaired without waiting for the topic's next change.
    pub(crate) fn recent_heads(&self, now: Instant, within: Duration) -> Vec<(TopicKey, u64)> {
        let mut heads = lock(&self.heads);
        heads.retain(|_, (_, at)| now.saturating_duration_since(*at) <= within);
        heads
            .iter()
            .map(|(topic, (seq, _))| (topic.clone(), *seq))
            .collect()
    }

    /// Whether `node`'s head of `topic` says this node missed one of its diffs.
    pub(crate) fn remote_is_behind(&self, topic: &TopicKey, node: &str, incarnation: u64, head: u64) -> bool {
        self.remote().is_behind(topic, node, incarnation, head)
    }

    /// Applies another node's diff and delivers what changed to local sockets.
    pub(crate) fn apply_remote_diff(
        &self,
        topic: &TopicKey,
        node: &str,
        incarnation: u64,
        seq: u64,
        prev: u64,
        diff: &str,
    ) -> Result<DiffOutcome, Malformed> {
        let mut remote = self.remote();
        let outcome = remote.apply_diff(topic, node, incarnation, seq, prev, diff)?;
        if let DiffOutcome::Applied(diffs) = &outcome {
            self.deliver_remote(topic, diffs.clone());
        }
        Ok(outcome)
    }

    /// Applies another node's snapshot of `topic` and delivers what changed to local sockets.
    pub(crate) fn apply_remote_state(
        &self,
        topic: &TopicKey,
        node: &str,
        incarnation: u64,
        seq: u64,
        state: &str,
    ) -> Result<(), Malformed> {
        let mut remote = self.remote();
        let diffs = remote.apply_state(topic, node, incarnation, seq, state)?;
        self.deliver_remote(topic, diffs);
        Ok(())
    }

    /// Another node is gone (or restarted, keeping incarnation `except`): its entries leave.
    pub(crate) fn drop_remote_node(&self, node: &str, except: Option<u64>) {
        let mut remote = self.remote();
        for (topic, diff) in remote.drop_node(node, except) {
            self.deliver_remote(&topic, vec![diff]);
        }
    }

    /// No local subscriber is left on `topic`: other nodes' entries of it are not needed.
    pub(crate) fn forget_remote_topic(&self, topic: &TopicKey) {
        self.remote().forget_topic(topic);
    }

    /// Other nodes' entries held, over all topics.
    pub(crate) fn remote_entries(&self) -> usize {
        self.remote().len()
    }

    /// This node's own entries of `topic` and the diff counter they are up to date with, for
    /// another node that syncs the topic.
    pub(crate) fn local_snapshot(&self, topic: &TopicKey) -> (u64, String) {
        let shard = self.shard(topic);
        let seq = self.seq.load(Ordering::Relaxed);
        let entries = shard.get(topic).map_or(&[][..], |s| &s.entries[..]);
        let metas = entries.iter().map(|e| (e.key.as_str(), Meta::Local(e)));
        (seq, write_state(metas))
    }

    fn shard(&self, topic: &TopicKey) -> std::sync::MutexGuard<'_, HashMap<TopicKey, TopicPresence>> {
        let mut h = DefaultHasher::new();
        topic.hash(&mut h);
        let shard = &self.shards[(h.finish() as usize) % self.shards.len()];
        // Each critical section is a vector edit plus a non-blocking publish; a poisoned lock
        // still holds a consistent map.
        lock(shard)
    }

    fn new_ref(&self) -> String {
        let n = self.next_ref.fetch_add(1, Ordering::Relaxed);
        format!("F{:08x}{n:x}", self.ref_prefix)
    }

    /// Tracks `meta` (`bytes` long as sent) for channel `owner` under `key`, replacing what that
    /// channel tracked before; refused when the topic is full.
    pub(crate) fn track(
        &self,
        topic: &TopicKey,
        owner: SubscriberId,
        key: &str,
        meta: Map<String, Value>,
        bytes: usize,
    ) -> Result<TrackOutcome, Full> {
        let mut shard = self.shard(topic);
        let state = shard.entry(topic.clone()).or_default();
        let existing = state.by_owner.get(&owner).copied();
        let freed = existing.map_or(0, |i| state.entries[i].bytes);
        if existing.is_none() && state.entries.len() >= self.limits.max_entries {
            return Err(self.refuse(&mut shard, topic, Full::Entries));
        }
        if (state.bytes - freed).saturating_add(bytes) > self.limits.max_bytes {
            return Err(self.refuse(&mut shard, topic, Full::Bytes));
        }
        let phx_ref = self.new_ref();
        let (outcome, diff) = match existing.map(|i| &mut state.entries[i]) {
            Some(entry) if entry.meta == meta && entry.key == key => (TrackOutcome::Unchanged, None),
            Some(entry) => {
                let old = std::mem::replace(
                    entry,
                    Entry {
                        owner,
                        key: key.to_owned(),
                        phx_ref_prev: Some(entry.phx_ref.clone()),
                        phx_ref,
                        meta,
                        bytes,
                    },
                );
                state.bytes = state.bytes - old.bytes + bytes;
                (TrackOutcome::Updated, Some(diff_json(Some(entry), Some(&old))))
            }
            None => {
                state.by_owner.insert(owner, state.entries.len());
                state.entries.push(Entry {
                    owner,
                    key: key.to_owned(),
                    phx_ref,
                    phx_ref_prev: None,
                    meta,
                    bytes,
                });
                state.bytes += bytes;
                (TrackOutcome::Joined, Some(diff_json(state.entries.last(), None)))
            }
        };
        if let Some(diff) = diff {
            self.emit(topic, &mut state.last_seq, diff);
        }
        Ok(outcome)
    }

    /// Refuses a track; forgets the topic's entry when the refusal created it empty.
    fn refuse(&self, shard: &mut HashMap<TopicKey, TopicPresence>, topic: &TopicKey, full: Full) -> Full {
        if shard.get(topic).is_some_and(|s| s.entries.is_empty()) {
            shard.remove(topic);
        }
        full
    }

    /// Removes what channel `owner` tracked; returns whether there was anything.
    pub(crate) fn untrack(&self, topic: &TopicKey, owner: SubscriberId) -> bool {
        let mut shard = self.shard(topic);
        let Some(state) = shard.get_mut(topic) else {
            return false;
        };
        let Some(i) = state.by_owner.remove(&owner) else {
            return false;
        };
        // The last entry takes the leaver's place (order within the state is not meaningful).
        let old = state.entries.swap_remove(i);
        if let Some(moved) = state.entries.get(i) {
            state.by_owner.insert(moved.owner, i);
        }
        state.bytes -= old.bytes;
        let diff = diff_json(None, Some(&old));
        self.emit(topic, &mut state.last_seq, diff);
        if state.entries.is_empty() {
            shard.remove(topic);
        }
        true
    }

    /// The `presence_state` payload of `topic`: `{"<key>":{"metas":[…]}, …}`, this node's
    /// entries and other nodes'.
    pub(crate) fn state(&self, topic: &TopicKey) -> String {
        let shard = self.shard(topic);
        let remote = self.remote();
        let entries = shard.get(topic).map_or(&[][..], |s| &s.entries[..]);
        let local = entries.iter().map(|e| (e.key.as_str(), Meta::Local(e)));
        let others = remote.metas(topic).map(|(key, json)| (key, Meta::Remote(json)));
        write_state(local.chain(others))
    }

    /// The presence keys tracked on `topic`, each with its number of entries (no metas: they
    /// are the clients' payloads), for the `/admin` inspector.
    pub(crate) fn keys(&self, topic: &TopicKey) -> Vec<(String, usize)> {
        let shard = self.shard(topic);
        let mut keys: Vec<(String, usize)> = Vec::new();
        for e in shard.get(topic).map_or(&[][..], |s| &s.entries[..]) {
            match keys.iter_mut().find(|(k, _)| *k == e.key) {
                Some((_, n)) => *n += 1,
                None => keys.push((e.key.clone(), 1)),
            }
        }
        keys
    }

    /// Number of tracked entries on `topic`.
    #[cfg(test)]
    pub(crate) fn len(&self, topic: &TopicKey) -> usize {
        self.shard(topic).get(topic).map_or(0, |s| s.entries.len())
    }
}

/// A meta of the state: an entry of this node, or another node's as it wrote it.
enum Meta<'a> {
    Local(&'a Entry),
    Remote(&'a str),
}

/// `{"<key>":{"metas":[…]}, …}`. Linear in the entries: they are grouped by key through a map.
fn write_state<'a>(metas: impl Iterator<Item = (&'a str, Meta<'a>)>) -> String {
    let mut groups: Vec<(&str, Vec<Meta<'a>>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (key, meta) in metas {
        let i = *index.entry(key).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push(meta);
    }
    let mut out = String::from("{");
    for (i, (key, metas)) in groups.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        crate::json::write_string(key, &mut out);
        out.push_str(":{\"metas\":[");
        for (j, meta) in metas.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            match meta {
                Meta::Local(e) => write_meta(&mut out, e),
                Meta::Remote(json) => out.push_str(json),
            }
        }
        out.push_str("]}");
    }
    out.push('}');
    out
}

fn write_meta(out: &mut String, e: &Entry) {
    out.push_str("{\"phx_ref\":");
    crate::json::write_string(&e.phx_ref, out);
    if let Some(prev) = &e.phx_ref_prev {
        out.push_str(",\"phx_ref_prev\":");
        crate::json::write_string(prev, out);
    }
    for (k, v) in &e.meta {
        if k == "phx_ref" || k == "phx_ref_prev" {
            continue;
        }
        out.push(',');
        crate::json::write_string(k, out);
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push('}');
}

fn write_side(out: &mut String, entry: Option<&Entry>) {
    out.push('{');
    if let Some(e) = entry {
        crate::json::write_string(&e.key, out);
        out.push_str(":{\"metas\":[");
        write_meta(out, e);
        out.push_str("]}");
    }
    out.push('}');
}

fn diff_json(join: Option<&Entry>, leave: Option<&Entry>) -> String {
    let mut out = String::from("{\"joins\":");
    write_side(&mut out, join);
    out.push_str(",\"leaves\":");
    write_side(&mut out, leave);
    out.push('}');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn meta(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn next_diff(rx: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<ChannelEvent>>) -> Value {
        let event = rx.try_recv().expect("a diff was published");
        let EventKind::PresenceDiff(diff) = &event.kind else {
            panic!("not a diff")
        };
        serde_json::from_str(diff).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn recent_heads_name_each_changed_topic_with_its_last_diff_for_a_while() {
        let p = Presence::new(LocalBus::new(16));
        let (outbox, mut sent) = mpsc::channel(1);
        p.replicate_to(outbox);
        let (room, hall) = (TopicKey::new("room", false), TopicKey::new("hall", false));
        let alice = SubscriberId::next();
        p.track(&room, alice, "u1", meta(json!({"n": 1})), 8).unwrap();
        p.track(&hall, alice, "u1", meta(json!({"n": 1})), 8).unwrap();
        // The outbox holds one: the second diff is dropped, and its head still tells.
        p.untrack(&room, alice);
        assert_eq!(sent.try_recv().map(|d| d.seq), Ok(1));
        // Heads are stamped with Tokio's clock, which stands still here unless advanced.
        let within = Duration::from_secs(1);
        let mut heads = p.recent_heads(Instant::now(), within);
        heads.sort_by_key(|(_, seq)| *seq);
        assert_eq!(heads, [(hall.clone(), 2), (room.clone(), 3)]);
        tokio::time::advance(within).await;
        assert_eq!(
            p.recent_heads(Instant::now(), within).len(),
            2,
            "kept for `within`"
        );
        tokio::time::advance(within).await;
        assert!(p.recent_heads(Instant::now(), within).is_empty());
    }

    #[test]
    fn track_update_untrack_produce_diffs_with_refs() {
        let bus = LocalBus::new(16);
        let mut rx = bus.subscribe_channel_events();
        let p = Presence::new(bus);
        let room = TopicKey::new("room", false);
        let alice = SubscriberId::next();

        assert_eq!(
            p.track(&room, alice, "u1", meta(json!({"name":"Alice"})), 16),
            Ok(TrackOutcome::Joined)
        );
        let d = next_diff(&mut rx);
        let first_ref = d["joins"]["u1"]["metas"][0]["phx_ref"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(d["joins"]["u1"]["metas"][0]["name"], "Alice");
        assert_eq!(d["leaves"], json!({}));

        assert_eq!(
            p.track(&room, alice, "u1", meta(json!({"name":"Alice"})), 16),
            Ok(TrackOutcome::Unchanged)
        );
        assert!(rx.try_recv().is_err(), "no diff for an identical payload");

        assert_eq!(
            p.track(&room, alice, "u1", meta(json!({"name":"Al"})), 13),
            Ok(TrackOutcome::Updated)
        );
        let d = next_diff(&mut rx);
        assert_eq!(d["joins"]["u1"]["metas"][0]["phx_ref_prev"], first_ref.as_str());
        assert_ne!(d["joins"]["u1"]["metas"][0]["phx_ref"], first_ref.as_str());
        assert_eq!(d["leaves"]["u1"]["metas"][0]["phx_ref"], first_ref.as_str());
        assert_eq!(d["leaves"]["u1"]["metas"][0]["name"], "Alice");

        assert!(p.untrack(&room, alice));
        let d = next_diff(&mut rx);
        assert_eq!(d["joins"], json!({}));
        assert_eq!(d["leaves"]["u1"]["metas"][0]["name"], "Al");
        assert!(!p.untrack(&room, alice));
        assert_eq!(p.len(&room), 0);
    }

    #[test]
    fn state_groups_metas_by_key() {
        let p = Presence::new(LocalBus::new(16));
        let room = TopicKey::new("room", false);
        p.track(&room, SubscriberId::next(), "u1", meta(json!({"tab":1})), 9)
            .unwrap();
        p.track(&room, SubscriberId::next(), "u2", meta(json!({})), 2)
            .unwrap();
        p.track(
            &room,
            SubscriberId::next(),
            "u1",
            meta(json!({"tab":2, "phx_ref":"spoof"})),
            27,
        )
        .unwrap();
        let state: Value = serde_json::from_str(&p.state(&room)).unwrap();
        assert_eq!(state["u1"]["metas"].as_array().unwrap().len(), 2);
        assert_eq!(state["u1"]["metas"][1]["tab"], 2);
        assert_ne!(
            state["u1"]["metas"][1]["phx_ref"], "spoof",
            "the server's ref wins"
        );
        assert_eq!(state["u2"]["metas"].as_array().unwrap().len(), 1);
        assert_eq!(
            p.state(&TopicKey::new("room", true)),
            "{}",
            "private room is another topic"
        );
    }

    #[test]
    fn a_topic_is_capped_in_entries_and_bytes() {
        let limits = PresenceLimits {
            max_entries: 2,
            max_bytes: 100,
        };
        let p = Presence::with_limits(LocalBus::new(16), limits);
        let room = TopicKey::new("room", false);
        let (a, b, c) = (SubscriberId::next(), SubscriberId::next(), SubscriberId::next());
        p.track(&room, a, "a", meta(json!({"n":1})), 40).unwrap();
        assert_eq!(p.track(&room, b, "b", meta(json!({"n":2})), 61), Err(Full::Bytes));
        p.track(&room, b, "b", meta(json!({"n":2})), 60).unwrap();
        assert_eq!(p.track(&room, c, "c", meta(json!({})), 1), Err(Full::Entries));
        // Replacing one's own entry frees its bytes first; leaving frees the slot.
        p.track(&room, a, "a", meta(json!({"n":3})), 40).unwrap();
        assert!(p.untrack(&room, b));
        p.track(&room, c, "c", meta(json!({})), 60).unwrap();
        assert_eq!(p.len(&room), 2);
        // A refused track on an empty topic leaves nothing behind.
        let empty = TopicKey::new("empty", false);
        assert_eq!(p.track(&empty, a, "a", meta(json!({})), 101), Err(Full::Bytes));
        assert_eq!(p.state(&empty), "{}");
    }

    /// With one key per entry, grouping by scanning the keys seen so far made the state
    /// quadratic: 200,000 entries took minutes. Linear, it takes well under a second (the bound
    /// is generous: it only catches the quadratic kind). Tracking them is linear too.
    #[test]
    fn the_state_of_many_entries_is_built_in_linear_time() {
        const N: usize = 200_000;
        let p = Presence::new(LocalBus::new(16));
        let room = TopicKey::new("room", false);
        for n in 0..N {
            // Every fourth key is shared with the entry before it.
            let key = format!("user-{}", n - usize::from(n % 4 == 3));
            p.track(&room, SubscriberId::next(), &key, meta(json!({"n": n})), 8)
                .unwrap();
        }
        // std's clock: the bound is on the real time the state takes to build.
        let started = std::time::Instant::now();
        let state: Value = serde_json::from_str(&p.state(&room)).unwrap();
        let took = started.elapsed();
        let state = state.as_object().unwrap();
        assert_eq!(state.len(), N - N / 4);
        assert_eq!(state["user-2"]["metas"].as_array().unwrap().len(), 2);
        assert_eq!(state["user-2"]["metas"][1]["n"], 3);
        assert!(took < std::time::Duration::from_secs(20), "built in {took:?}");
    }
}
