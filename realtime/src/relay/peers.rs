//! Which other nodes are alive, from their heartbeats. Pure: the caller passes the time.
//!
//! A node silent for `down_after` is down. But silence can also be ours: when our own link to
//! NATS is cut or paused, every other node falls silent at once. We hear our own heartbeats too
//! (NATS echoes them), so while ours do not come back we are the one cut off: the table freezes
//! (nobody is declared down) and, once our echo returns, every node gets a fresh `down_after`.

use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
struct Peer {
    incarnation: u64,
    last: Instant,
}

/// What a heartbeat told.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Heard {
    /// A node we did not know (new, or back after being declared down).
    New,
    /// A node we knew, heard again after a silence longer than two heartbeats: it may have
    /// missed our messages and we its (its entries are synced again).
    Returned,
    /// A node that restarted: its previous incarnation's entries are gone.
    Restarted,
    Known,
}

#[derive(Debug)]
pub(crate) struct Peers {
    heartbeat: Duration,
    down_after: Duration,
    nodes: HashMap<String, Peer>,
    /// When our own heartbeat last came back.
    own_echo: Instant,
    frozen: bool,
}

impl Peers {
    pub(crate) fn new(heartbeat: Duration, down_after: Duration, now: Instant) -> Self {
        Peers {
            heartbeat,
            down_after,
            nodes: HashMap::new(),
            own_echo: now,
            frozen: false,
        }
    }

    /// Two heartbeats and some slack for a busy machine.
    pub(crate) fn silence(&self) -> Duration {
        self.heartbeat * 2 + Duration::from_millis(250)
    }

    pub(crate) fn heard(&mut self, node: &str, incarnation: u64, now: Instant) -> Heard {
        let silence = self.silence();
        match self.nodes.get_mut(node) {
            None => {
                self.nodes.insert(
                    node.to_owned(),
                    Peer {
                        incarnation,
                        last: now,
                    },
                );
                Heard::New
            }
            Some(peer) if peer.incarnation != incarnation => {
                *peer = Peer {
                    incarnation,
                    last: now,
                };
                Heard::Restarted
            }
            Some(peer) => {
                let returned = now.duration_since(peer.last) > silence;
                peer.last = now;
                if returned { Heard::Returned } else { Heard::Known }
            }
        }
    }

    /// Our own heartbeat came back. `true` when we had been cut off: everything must be synced
    /// again.
    pub(crate) fn own_echo(&mut self, now: Instant) -> bool {
        self.own_echo = now;
        if !self.frozen {
            return false;
        }
        self.frozen = false;
        for peer in self.nodes.values_mut() {
            peer.last = now;
        }
        true
    }

    /// A node said goodbye.
    pub(crate) fn remove(&mut self, node: &str) -> bool {
        self.nodes.remove(node).is_some()
    }

    /// The nodes down as of `now` (removed from the table); none while we are cut off.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<String> {
        if now.duration_since(self.own_echo) > self.silence() {
            self.frozen = true;
        }
        if self.frozen {
            return Vec::new();
        }
        let down: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, peer)| now.duration_since(peer.last) > self.down_after)
            .map(|(node, _)| node.clone())
            .collect();
        for node in &down {
            self.nodes.remove(node);
        }
        down
    }

    #[cfg(test)]
    pub(crate) fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// The other nodes believed alive.
    pub(crate) fn alive(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_silent_node_is_down_after_down_after_and_not_before() {
        let t0 = Instant::now();
        let mut p = Peers::new(100 * MS, 1000 * MS, t0);
        assert_eq!(p.heard("a", 1, t0), Heard::New);
        for step in 1..=9 {
            let now = t0 + step * 100 * MS;
            p.own_echo(now);
            assert!(p.tick(now).is_empty());
        }
        let now = t0 + 1001 * MS;
        p.own_echo(now);
        assert_eq!(p.tick(now), vec!["a".to_owned()]);
        assert_eq!(p.alive(), 0);
        assert_eq!(p.heard("a", 1, now), Heard::New);
    }

    #[test]
    fn while_our_own_echo_is_missing_nobody_is_declared_down() {
        let t0 = Instant::now();
        let mut p = Peers::new(100 * MS, 1000 * MS, t0);
        p.heard("a", 1, t0);
        // Cut off for 5 s: frozen, no one down.
        assert!(p.tick(t0 + 5000 * MS).is_empty());
        assert!(p.is_frozen());
        // Back: a fresh window for everyone.
        assert!(p.own_echo(t0 + 5100 * MS));
        assert!(p.tick(t0 + 5200 * MS).is_empty());
        assert_eq!(p.heard("a", 1, t0 + 5300 * MS), Heard::Known);
        p.own_echo(t0 + 6000 * MS);
        p.own_echo(t0 + 6300 * MS);
        assert_eq!(p.tick(t0 + 6400 * MS), vec!["a".to_owned()]);
    }

    #[test]
    fn restarts_and_returns_are_told_apart() {
        let t0 = Instant::now();
        let mut p = Peers::new(100 * MS, 1000 * MS, t0);
        p.heard("a", 1, t0);
        assert_eq!(p.heard("a", 1, t0 + 100 * MS), Heard::Known);
        assert_eq!(p.heard("a", 1, t0 + 900 * MS), Heard::Returned);
        assert_eq!(p.heard("a", 2, t0 + 950 * MS), Heard::Restarted);
        assert!(p.remove("a"));
    }
}
