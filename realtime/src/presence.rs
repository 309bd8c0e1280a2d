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

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

use crate::bus::LocalBus;
use crate::channels::{ChannelEvent, EventKind, SubscriberId, TopicKey};

const SHARDS: usize = 16;

#[derive(Debug)]
struct Entry {
    owner: SubscriberId,
    key: String,
    phx_ref: String,
    phx_ref_prev: Option<String>,
    meta: Map<String, Value>,
}

#[derive(Debug, Default)]
struct TopicPresence {
    entries: Vec<Entry>,
}

/// What a `track` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackOutcome {
    Joined,
    Updated,
    /// Same payload as already tracked: no diff was sent.
    Unchanged,
}

#[derive(Debug)]
pub struct Presence {
    shards: Box<[Mutex<HashMap<TopicKey, TopicPresence>>]>,
    bus: LocalBus,
    ref_prefix: u32,
    next_ref: AtomicU64,
}

impl Presence {
    pub fn new(bus: LocalBus) -> Self {
        Presence {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            bus,
            ref_prefix: rand::random(),
            next_ref: AtomicU64::new(1),
        }
    }

    fn shard(&self, topic: &TopicKey) -> std::sync::MutexGuard<'_, HashMap<TopicKey, TopicPresence>> {
        let mut h = DefaultHasher::new();
        topic.hash(&mut h);
        let shard = &self.shards[(h.finish() as usize) % self.shards.len()];
        // Each critical section is a vector edit plus a non-blocking publish; a poisoned lock
        // still holds a consistent map.
        shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_ref(&self) -> String {
        let n = self.next_ref.fetch_add(1, Ordering::Relaxed);
        format!("F{:08x}{n:x}", self.ref_prefix)
    }

    /// Tracks `meta` for channel `owner` under `key`, replacing what that channel tracked before.
    pub fn track(
        &self,
        topic: &TopicKey,
        owner: SubscriberId,
        key: &str,
        meta: Map<String, Value>,
    ) -> TrackOutcome {
        let mut shard = self.shard(topic);
        let state = shard.entry(topic.clone()).or_default();
        let phx_ref = self.new_ref();
        let (outcome, diff) = match state.entries.iter_mut().find(|e| e.owner == owner) {
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
                    },
                );
                (TrackOutcome::Updated, Some(diff_json(Some(entry), Some(&old))))
            }
            None => {
                state.entries.push(Entry {
                    owner,
                    key: key.to_owned(),
                    phx_ref,
                    phx_ref_prev: None,
                    meta,
                });
                (TrackOutcome::Joined, Some(diff_json(state.entries.last(), None)))
            }
        };
        if let Some(diff) = diff {
            self.bus.publish_channel_event(ChannelEvent::new(
                topic.clone(),
                None,
                EventKind::PresenceDiff(diff),
            ));
        }
        outcome
    }

    /// Removes what channel `owner` tracked; returns whether there was anything.
    pub fn untrack(&self, topic: &TopicKey, owner: SubscriberId) -> bool {
        let mut shard = self.shard(topic);
        let Some(state) = shard.get_mut(topic) else {
            return false;
        };
        let Some(i) = state.entries.iter().position(|e| e.owner == owner) else {
            return false;
        };
        let old = state.entries.remove(i);
        if state.entries.is_empty() {
            shard.remove(topic);
        }
        let diff = diff_json(None, Some(&old));
        self.bus.publish_channel_event(ChannelEvent::new(
            topic.clone(),
            None,
            EventKind::PresenceDiff(diff),
        ));
        true
    }

    /// The `presence_state` payload of `topic`: `{"<key>":{"metas":[…]}, …}`.
    pub fn state(&self, topic: &TopicKey) -> String {
        let shard = self.shard(topic);
        let entries = shard.get(topic).map_or(&[][..], |s| &s.entries[..]);
        let mut keys: Vec<&str> = Vec::new();
        for e in entries {
            if !keys.contains(&e.key.as_str()) {
                keys.push(&e.key);
            }
        }
        let mut out = String::from("{");
        for (i, key) in keys.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            crate::json::write_string(key, &mut out);
            out.push_str(":{\"metas\":[");
            for (j, e) in entries.iter().filter(|e| e.key == *key).enumerate() {
                if j > 0 {
                    out.push(',');
                }
                write_meta(&mut out, e);
            }
            out.push_str("]}");
        }
        out.push('}');
        out
    }

    /// The presence keys tracked on `topic`, each with its number of entries (no metas: they
    /// are the clients' payloads), for the `/admin` inspector.
    pub fn keys(&self, topic: &TopicKey) -> Vec<(String, usize)> {
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
    pub fn len(&self, topic: &TopicKey) -> usize {
        self.shard(topic).get(topic).map_or(0, |s| s.entries.len())
    }
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

    #[test]
    fn track_update_untrack_produce_diffs_with_refs() {
        let bus = LocalBus::new(16);
        let mut rx = bus.subscribe_channel_events();
        let p = Presence::new(bus);
        let room = TopicKey::new("room", false);
        let alice = SubscriberId::next();

        assert_eq!(
            p.track(&room, alice, "u1", meta(json!({"name":"Alice"}))),
            TrackOutcome::Joined
        );
        let d = next_diff(&mut rx);
        let first_ref = d["joins"]["u1"]["metas"][0]["phx_ref"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(d["joins"]["u1"]["metas"][0]["name"], "Alice");
        assert_eq!(d["leaves"], json!({}));

        assert_eq!(
            p.track(&room, alice, "u1", meta(json!({"name":"Alice"}))),
            TrackOutcome::Unchanged
        );
        assert!(rx.try_recv().is_err(), "no diff for an identical payload");

        assert_eq!(
            p.track(&room, alice, "u1", meta(json!({"name":"Al"}))),
            TrackOutcome::Updated
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
        p.track(&room, SubscriberId::next(), "u1", meta(json!({"tab":1})));
        p.track(&room, SubscriberId::next(), "u2", meta(json!({})));
        p.track(
            &room,
            SubscriberId::next(),
            "u1",
            meta(json!({"tab":2, "phx_ref":"spoof"})),
        );
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
}
