//! Presence entries owned by other nodes of a cluster: a pure store, fed by the messages those
//! nodes publish (diffs, and state snapshots they send on request).
//!
//! Each entry has exactly one writer, the node that tracks it, so the union of the nodes' sets
//! needs no conflict resolution: per (topic, node) we keep the owner's incarnation, the sequence
//! of the last diff applied and its metas. A node numbers its presence diffs with one counter
//! across all topics and tells, in each diff, the number of the topic's previous diff (`prev`,
//! 0 when the topic had no entries). A snapshot carries the counter's value when it was taken:
//! it holds exactly the diffs numbered up to it. With these, a receiver can tell an old message
//! (skip), the next one (apply) and a hole (ask for a snapshot again).
//!
//! Every change returns the `presence_diff` payloads local sockets must get, so the caller
//! delivers exactly what changed here.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::channels::TopicKey;

/// A message whose presence payload is not the shape nodes send.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed presence payload from node {node}: {reason}")]
pub(crate) struct Malformed {
    pub node: String,
    pub reason: String,
}

/// What became of a diff.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DiffOutcome {
    /// Applied; the payloads to deliver locally (the diff itself, after the leaves of a previous
    /// incarnation when the node restarted).
    Applied(Vec<String>),
    /// Already contained in what we hold.
    Stale,
    /// Diffs are missing before this one: the topic must be synced from the node again.
    Gap,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    key: String,
    phx_ref: String,
    /// The meta as the owner wrote it, `phx_ref` included.
    json: Box<str>,
}

#[derive(Debug, Default)]
struct NodeEntries {
    incarnation: u64,
    /// The diff number everything held is up to date with.
    last: u64,
    /// Whether `last` is the number of an actual diff of the topic (else a snapshot's counter).
    exact: bool,
    metas: Vec<Meta>,
}

/// Other nodes' presence entries, by topic and node.
#[derive(Debug, Default)]
pub(crate) struct RemoteEntries {
    topics: HashMap<TopicKey, HashMap<String, NodeEntries>>,
}

#[derive(Deserialize)]
struct Group<'a> {
    #[serde(borrow)]
    metas: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct WithRef {
    phx_ref: String,
}

#[derive(Deserialize)]
struct Diff<'a> {
    #[serde(borrow)]
    joins: HashMap<String, Group<'a>>,
    #[serde(borrow)]
    leaves: HashMap<String, Group<'a>>,
}

fn metas(groups: HashMap<String, Group<'_>>, node: &str) -> Result<Vec<Meta>, Malformed> {
    let mut out = Vec::new();
    for (key, group) in groups {
        for raw in group.metas {
            let WithRef { phx_ref } = serde_json::from_str(raw.get()).map_err(|e| Malformed {
                node: node.to_owned(),
                reason: format!("a meta without phx_ref: {e}"),
            })?;
            out.push(Meta {
                key: key.clone(),
                phx_ref,
                json: raw.get().into(),
            });
        }
    }
    Ok(out)
}

fn malformed(node: &str, e: serde_json::Error) -> Malformed {
    Malformed {
        node: node.to_owned(),
        reason: e.to_string(),
    }
}

impl RemoteEntries {
    /// Applies diff number `seq` (the topic's previous one was `prev`) of `node`'s incarnation.
    pub(crate) fn apply_diff(
        &mut self,
        topic: &TopicKey,
        node: &str,
        incarnation: u64,
        seq: u64,
        prev: u64,
        diff: &str,
    ) -> Result<DiffOutcome, Malformed> {
        let parsed: Diff<'_> = serde_json::from_str(diff).map_err(|e| malformed(node, e))?;
        let joins = metas(parsed.joins, node)?;
        let leaves = metas(parsed.leaves, node)?;
        let nodes = self.topics.entry(topic.clone()).or_default();
        let mut out = Vec::new();
        let held = nodes.entry(node.to_owned()).or_default();
        if held.incarnation != incarnation {
            // A restarted node: what its previous life tracked is gone.
            let old = std::mem::take(held);
            held.incarnation = incarnation;
            if !old.metas.is_empty() {
                out.push(diff_json(&[], &old.metas));
            }
        }
        if seq <= held.last {
            return Ok(if out.is_empty() {
                DiffOutcome::Stale
            } else {
                DiffOutcome::Applied(out)
            });
        }
        // `prev` 0: the topic had no entries at the owner, so the diff follows from holding
        // nothing. A snapshot holds every diff up to its counter: a diff whose predecessor is
        // at or before it follows it (unless the owner emptied the topic since).
        let from_empty = prev == 0 && held.metas.is_empty();
        let follows = if held.exact {
            prev == held.last
        } else {
            prev <= held.last && (prev != 0 || held.metas.is_empty())
        };
        if !(follows || from_empty) {
            return Ok(if out.is_empty() {
                DiffOutcome::Gap
            } else {
                DiffOutcome::Applied(out)
            });
        }
        held.metas
            .retain(|m| !leaves.iter().any(|l| l.phx_ref == m.phx_ref));
        for join in joins {
            held.metas.retain(|m| m.phx_ref != join.phx_ref);
            held.metas.push(join);
        }
        held.last = seq;
        held.exact = true;
        out.push(diff.to_owned());
        Ok(DiffOutcome::Applied(out))
    }

    /// Replaces what `node` holds on `topic` with its snapshot taken at counter `seq`, unless we
    /// already hold something newer. Returns the payloads to deliver locally.
    pub(crate) fn apply_state(
        &mut self,
        topic: &TopicKey,
        node: &str,
        incarnation: u64,
        seq: u64,
        state: &str,
    ) -> Result<Vec<String>, Malformed> {
        let groups: HashMap<String, Group<'_>> =
            serde_json::from_str(state).map_err(|e| malformed(node, e))?;
        let fresh = metas(groups, node)?;
        let nodes = self.topics.entry(topic.clone()).or_default();
        let held = nodes.entry(node.to_owned()).or_default();
        if held.incarnation == incarnation && seq < held.last {
            return Ok(Vec::new());
        }
        let old = std::mem::take(&mut held.metas);
        *held = NodeEntries {
            incarnation,
            last: seq,
            exact: false,
            metas: fresh,
        };
        let joins: Vec<Meta> = held.metas.iter().filter(|m| !old.contains(m)).cloned().collect();
        let leaves: Vec<Meta> = old.into_iter().filter(|m| !held.metas.contains(m)).collect();
        if joins.is_empty() && leaves.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![diff_json(&joins, &leaves)])
    }

    /// Whether `node`'s announced head of `topic` (the number of its last diff there) says a
    /// diff never arrived here: the topic must be synced from the node. Holding nothing of the
    /// node's incarnation counts as behind, since the head says it has had entries.
    pub(crate) fn is_behind(&self, topic: &TopicKey, node: &str, incarnation: u64, head: u64) -> bool {
        match self.topics.get(topic).and_then(|nodes| nodes.get(node)) {
            Some(held) if held.incarnation == incarnation => head > held.last,
            _ => true,
        }
    }

    /// Removes every entry of `node` (down, or said goodbye), or only those of incarnations
    /// other than `except` (it restarted). Returns the leaves to deliver, per topic.
    pub(crate) fn drop_node(&mut self, node: &str, except: Option<u64>) -> Vec<(TopicKey, String)> {
        let mut out = Vec::new();
        for (topic, nodes) in &mut self.topics {
            let gone = nodes
                .get(node)
                .is_some_and(|held| except != Some(held.incarnation));
            if !gone {
                continue;
            }
            if let Some(held) = nodes.remove(node)
                && !held.metas.is_empty()
            {
                out.push((topic.clone(), diff_json(&[], &held.metas)));
            }
        }
        self.topics.retain(|_, nodes| !nodes.is_empty());
        out
    }

    /// Forgets a topic nobody here subscribes to any more (no one to tell).
    pub(crate) fn forget_topic(&mut self, topic: &TopicKey) {
        self.topics.remove(topic);
    }

    /// The other nodes' metas of `topic`, as `(key, meta JSON)`.
    pub(crate) fn metas(&self, topic: &TopicKey) -> impl Iterator<Item = (&str, &str)> {
        self.topics
            .get(topic)
            .into_iter()
            .flat_map(|nodes| nodes.values())
            .flat_map(|held| held.metas.iter())
            .map(|m| (m.key.as_str(), &*m.json))
    }

    /// Number of other nodes' entries held, over all topics.
    pub(crate) fn len(&self) -> usize {
        self.topics
            .values()
            .flat_map(|nodes| nodes.values())
            .map(|held| held.metas.len())
            .sum()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `{"joins":{…},"leaves":{…}}` of metas.
fn diff_json(joins: &[Meta], leaves: &[Meta]) -> String {
    let mut out = String::from("{\"joins\":");
    write_groups(&mut out, joins);
    out.push_str(",\"leaves\":");
    write_groups(&mut out, leaves);
    out.push('}');
    out
}

fn write_groups(out: &mut String, metas: &[Meta]) {
    let mut keys: Vec<&str> = Vec::new();
    for m in metas {
        if !keys.contains(&m.key.as_str()) {
            keys.push(&m.key);
        }
    }
    out.push('{');
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        crate::json::write_string(key, out);
        out.push_str(":{\"metas\":[");
        for (j, m) in metas.iter().filter(|m| m.key == *key).enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(&m.json);
        }
        out.push_str("]}");
    }
    out.push('}');
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn join(key: &str, r: &str) -> String {
        json!({"joins": {key: {"metas": [{"phx_ref": r}]}}, "leaves": {}}).to_string()
    }

    fn leave(key: &str, r: &str) -> String {
        json!({"joins": {}, "leaves": {key: {"metas": [{"phx_ref": r}]}}}).to_string()
    }

    fn refs(store: &RemoteEntries, topic: &TopicKey) -> Vec<String> {
        let mut refs: Vec<String> = store
            .metas(topic)
            .map(|(_, m)| {
                serde_json::from_str::<Value>(m).unwrap()["phx_ref"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        refs.sort();
        refs
    }

    #[test]
    fn a_head_beyond_what_is_held_means_a_lost_diff() {
        let room = TopicKey::new("room", false);
        let mut s = RemoteEntries::default();
        // Nothing held of the node: its head says it had entries here.
        assert!(s.is_behind(&room, "n1", 7, 3));
        s.apply_diff(&room, "n1", 7, 3, 0, &join("a", "r1")).unwrap();
        assert!(!s.is_behind(&room, "n1", 7, 3));
        // Its last diff, 5, never arrived.
        assert!(s.is_behind(&room, "n1", 7, 5));
        // A snapshot at counter 9 holds it.
        let state = json!({"a": {"metas": [{"phx_ref": "r2"}]}}).to_string();
        s.apply_state(&room, "n1", 7, 9, &state).unwrap();
        assert!(!s.is_behind(&room, "n1", 7, 5));
        // Another incarnation's head: what is held is of a previous life.
        assert!(s.is_behind(&room, "n1", 8, 1));
        // A left topic's entries stay accounted for: its leave's number is held.
        s.apply_diff(&room, "n1", 7, 10, 9, &leave("a", "r2")).unwrap();
        assert!(s.is_empty());
        assert!(!s.is_behind(&room, "n1", 7, 10));
    }

    #[test]
    fn diffs_in_sequence_apply_and_a_hole_asks_for_a_sync() {
        let room = TopicKey::new("room", false);
        let mut s = RemoteEntries::default();
        assert!(matches!(
            s.apply_diff(&room, "n1", 7, 3, 0, &join("a", "r1")),
            Ok(DiffOutcome::Applied(_))
        ));
        assert!(matches!(
            s.apply_diff(&room, "n1", 7, 9, 3, &join("b", "r2")),
            Ok(DiffOutcome::Applied(_))
        ));
        assert_eq!(
            s.apply_diff(&room, "n1", 7, 9, 3, &join("b", "r2")),
            Ok(DiffOutcome::Stale)
        );
        assert_eq!(
            s.apply_diff(&room, "n1", 7, 12, 10, &leave("a", "r1")),
            Ok(DiffOutcome::Gap)
        );
        assert_eq!(refs(&s, &room), ["r1", "r2"]);
        // The snapshot at counter 11 holds diff 10 (r1 left); diff 12 (prev 10) follows it.
        let state = json!({"b": {"metas": [{"phx_ref": "r2"}]}}).to_string();
        let delivered = s.apply_state(&room, "n1", 7, 11, &state).unwrap();
        assert_eq!(delivered, vec![leave("a", "r1")]);
        assert!(matches!(
            s.apply_diff(&room, "n1", 7, 12, 10, &leave("b", "r2")),
            Ok(DiffOutcome::Applied(_))
        ));
        assert!(s.is_empty());
        // An older snapshot than what we hold changes nothing.
        assert!(s.apply_state(&room, "n1", 7, 11, &state).unwrap().is_empty());
        assert!(s.is_empty());
    }

    #[test]
    fn a_new_incarnation_replaces_the_old_and_a_dropped_node_leaves() {
        let room = TopicKey::new("room", false);
        let mut s = RemoteEntries::default();
        s.apply_diff(&room, "n1", 1, 1, 0, &join("a", "r1")).unwrap();
        s.apply_diff(&room, "n2", 5, 1, 0, &join("b", "r9")).unwrap();
        let DiffOutcome::Applied(delivered) = s.apply_diff(&room, "n1", 2, 1, 0, &join("a", "x1")).unwrap()
        else {
            panic!()
        };
        assert_eq!(delivered, vec![leave("a", "r1"), join("a", "x1")]);
        assert_eq!(s.drop_node("n1", Some(2)), vec![]);
        assert_eq!(s.drop_node("n1", None), vec![(room.clone(), leave("a", "x1"))]);
        assert_eq!(refs(&s, &room), ["r9"]);
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        let room = TopicKey::new("room", false);
        let mut s = RemoteEntries::default();
        for bad in [
            "",
            "[]",
            "{\"joins\":1}",
            "{\"joins\":{\"a\":{\"metas\":[{}]}},\"leaves\":{}}",
            "\u{0}",
        ] {
            assert!(s.apply_diff(&room, "n", 1, 1, 0, bad).is_err(), "{bad}");
            assert!(s.apply_state(&room, "n", 1, 1, bad).is_err(), "{bad}");
        }
    }
}
