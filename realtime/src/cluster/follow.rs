//! The follower rule: where a node stands in the leader's stream, and what to do with each
//! transaction that arrives. Pure.
//!
//! Every transaction the leader sends carries its epoch and `prev`, the commit LSN of the
//! transaction before it in the leader's stream. A node whose head is `H`:
//! - drops a transaction at or below `H` (a duplicate: a resend, or a new leader re-reading the
//!   window this node already has);
//! - applies one whose `prev` is `H` (or, in an epoch it does not follow yet, one with no
//!   `prev`: the start of a new history);
//! - otherwise fetches from the leader after `H` (a hole: a message lost by NATS, a pause, a
//!   cold start). A fetched transaction that still does not continue `H` means the leader no
//!   longer holds what is missing: it is applied as following a gap, and subscribers refetch.
//!
//! The node's own replication (when it leads) goes through the same rule, so a new leader's
//! re-read of the window reaches its subscribers only where it is news to them.

use crate::change::Epoch;
use crate::lsn::Lsn;

/// Where a transaction came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// This node's own replication (it leads).
    Own,
    /// The leader's live stream.
    Live,
    /// An answer to this node's fetch.
    Fetched,
}

/// What to fetch: the leader's window after `after` (in `epoch`), or all of it (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fetch {
    pub after: Option<(Epoch, Lsn)>,
}

/// What to do with one transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Already handed on here: drop it.
    Duplicate,
    /// From a leader whose term is over: ignore it.
    Stale,
    /// Hand it on. `gap`: something before it never arrived (subscribers must refetch).
    /// `backlog`: it is history to this node (it warms up), not news.
    Apply { gap: bool, backlog: bool },
    /// Something before it is missing: fetch first (the transaction itself comes again).
    Fetch(Fetch),
}

/// This node's place in the leader's stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tail {
    epoch: Option<Epoch>,
    /// Commit LSN of the last transaction handed on in `epoch`.
    head: Option<Lsn>,
    /// Highest leadership term seen.
    term: u64,
    /// Caught up with the leader at least once: what arrives from here on is news.
    warm: bool,
}

impl Tail {
    pub(crate) fn head(&self) -> Option<(Epoch, Lsn)> {
        self.epoch.zip(self.head)
    }

    pub(crate) fn term(&self) -> u64 {
        self.term
    }

    pub(crate) fn is_warm(&self) -> bool {
        self.warm
    }

    /// The node has caught up with the leader (a fetch came back complete, or it leads).
    pub(crate) fn warmed(&mut self) {
        self.warm = true;
    }

    /// A leader of `term` spoke: lower terms are over.
    pub(crate) fn saw_term(&mut self, term: u64) {
        self.term = self.term.max(term);
    }

    /// The verdict on a transaction committed at `commit` in `epoch`, sent by a leader of
    /// `term` with `prev` before it.
    pub(crate) fn admit(
        &self,
        source: Source,
        term: u64,
        epoch: Epoch,
        prev: Option<Lsn>,
        commit: Lsn,
    ) -> Admit {
        if source != Source::Own && term < self.term {
            return Admit::Stale;
        }
        let backlog = !self.warm && source != Source::Live;
        let same_epoch = self.epoch == Some(epoch);
        if same_epoch && self.head.is_some_and(|h| commit <= h) {
            return Admit::Duplicate;
        }
        let continues = if same_epoch {
            prev == self.head
        } else {
            prev.is_none()
        };
        if continues {
            return Admit::Apply {
                gap: false,
                backlog: backlog && source != Source::Own,
            };
        }
        match source {
            // The node's own stream is the source of truth: what it skips was never there.
            Source::Own => Admit::Apply {
                gap: false,
                backlog: false,
            },
            Source::Live => Admit::Fetch(Fetch {
                after: if same_epoch { self.head() } else { None },
            }),
            // The leader answered from what it holds; anything before that is gone. A node that
            // followed this epoch has a hole; a node that did not simply starts here.
            Source::Fetched => Admit::Apply {
                gap: same_epoch && self.head.is_some(),
                backlog,
            },
        }
    }

    /// `commit` in `epoch` was handed on.
    pub(crate) fn applied(&mut self, epoch: Epoch, commit: Lsn) {
        self.epoch = Some(epoch);
        self.head = Some(commit);
    }

    /// The leader announced its head: what to fetch when it is ahead of this node.
    pub(crate) fn behind(&self, term: u64, epoch: Epoch, head: Option<Lsn>) -> Option<Fetch> {
        if term < self.term {
            return None;
        }
        let head = head?;
        if self.epoch == Some(epoch) {
            self.head
                .is_none_or(|h| head > h)
                .then_some(Fetch { after: self.head() })
        } else {
            Some(Fetch { after: None })
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const E: Epoch = Epoch(1);

    fn at(commit: u64) -> Tail {
        let mut t = Tail::default();
        t.applied(E, Lsn(commit));
        t.warmed();
        t
    }

    #[test]
    fn continuing_transactions_apply_and_repeats_drop() {
        let t = at(100);
        let apply = Admit::Apply {
            gap: false,
            backlog: false,
        };
        assert_eq!(t.admit(Source::Live, 1, E, Some(Lsn(100)), Lsn(200)), apply);
        assert_eq!(
            t.admit(Source::Live, 1, E, Some(Lsn(50)), Lsn(100)),
            Admit::Duplicate
        );
        assert_eq!(
            t.admit(Source::Own, 1, E, Some(Lsn(50)), Lsn(90)),
            Admit::Duplicate
        );
        // A new leader's re-read past this node's head is news, whatever it thinks came before.
        assert_eq!(t.admit(Source::Own, 2, E, None, Lsn(300)), apply);
    }

    #[test]
    fn holes_are_fetched_and_unfillable_ones_are_gaps() {
        let t = at(100);
        let fetch = Admit::Fetch(Fetch {
            after: Some((E, Lsn(100))),
        });
        assert_eq!(t.admit(Source::Live, 1, E, Some(Lsn(150)), Lsn(200)), fetch);
        assert_eq!(t.admit(Source::Live, 1, E, None, Lsn(200)), fetch);
        assert_eq!(
            t.admit(Source::Fetched, 1, E, Some(Lsn(150)), Lsn(200)),
            Admit::Apply {
                gap: true,
                backlog: false
            }
        );
        assert_eq!(t.behind(1, E, Some(Lsn(300))), Some(Fetch { after: t.head() }));
        assert_eq!(t.behind(1, E, Some(Lsn(100))), None);
    }

    #[test]
    fn a_cold_node_warms_up_from_history_and_terms_only_rise() {
        let cold = Tail::default();
        assert_eq!(
            cold.admit(Source::Live, 1, E, Some(Lsn(10)), Lsn(20)),
            Admit::Fetch(Fetch { after: None })
        );
        assert_eq!(
            cold.admit(Source::Fetched, 1, E, Some(Lsn(10)), Lsn(20)),
            Admit::Apply {
                gap: false,
                backlog: true
            }
        );
        let mut t = at(100);
        t.saw_term(5);
        assert_eq!(
            t.admit(Source::Live, 4, E, Some(Lsn(100)), Lsn(200)),
            Admit::Stale
        );
        assert_eq!(t.behind(4, E, Some(Lsn(900))), None);
        // A new epoch starts with no `prev`; the window resets downstream.
        assert_eq!(
            t.admit(Source::Live, 5, Epoch(2), None, Lsn(5)),
            Admit::Apply {
                gap: false,
                backlog: false
            }
        );
        assert_eq!(t.behind(5, Epoch(2), Some(Lsn(5))), Some(Fetch { after: None }));
    }

    /// Hands transaction `i` of `commits` to `tail` from `source`; returns the fetch it asks for.
    fn hand(
        tail: &mut Tail,
        handed: &mut Vec<Lsn>,
        commits: &[Lsn],
        i: usize,
        source: Source,
    ) -> Option<Fetch> {
        let prev = i.checked_sub(1).map(|p| commits[p]);
        match tail.admit(source, 1, E, prev, commits[i]) {
            Admit::Apply { gap, .. } => {
                assert!(!gap, "the leader holds everything here");
                tail.applied(E, commits[i]);
                handed.push(commits[i]);
                None
            }
            Admit::Fetch(fetch) => Some(fetch),
            Admit::Duplicate | Admit::Stale => None,
        }
    }

    /// The leader answers a fetch with everything after it.
    fn serve(tail: &mut Tail, handed: &mut Vec<Lsn>, commits: &[Lsn], fetch: Fetch) {
        let start = match fetch.after {
            None => 0,
            Some((_, after)) => commits.iter().position(|c| *c > after).unwrap_or(commits.len()),
        };
        for i in start..commits.len() {
            hand(tail, handed, commits, i, Source::Fetched);
        }
    }

    proptest! {
        /// Whatever order and loss the bus inflicts, a follower that fetches what it misses
        /// hands on every transaction once, in commit order.
        #[test]
        fn any_delivery_order_hands_on_each_transaction_once_in_order(
            count in 1usize..40,
            deliveries in proptest::collection::vec((0usize..40, any::<bool>()), 0..120),
        ) {
            let commits: Vec<Lsn> = (1..=count as u64).map(|i| Lsn(i * 10)).collect();
            let mut tail = Tail::default();
            let mut handed = Vec::new();
            for (i, lost) in deliveries {
                if lost {
                    continue;
                }
                if let Some(fetch) = hand(&mut tail, &mut handed, &commits, i % count, Source::Live) {
                    serve(&mut tail, &mut handed, &commits, fetch);
                }
            }
            // The leader's heartbeat brings the rest.
            if let Some(fetch) = tail.behind(1, E, Some(commits[count - 1])) {
                serve(&mut tail, &mut handed, &commits, fetch);
            }
            prop_assert_eq!(handed, commits);
        }
    }
}
