//! A clustered node's one entrance for committed transactions: its own replication's (when it
//! leads) and the leader's (when it follows) both pass the follower rule here, and what is new
//! to the node goes on to its bus, exactly as a single node's replication hands it on. The feed
//! also keeps the window the leader answers fetches from (every node keeps it: any node may
//! lead next).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::bus::LocalBus;
use crate::change::{Epoch, Table, Transaction};
use crate::cluster::follow::{Admit, Fetch, Source, Tail};
use crate::cluster::wire::Batch;
use crate::lsn::Lsn;
use crate::metrics::ReplicationMetrics;
use crate::window::{WindowLimits, now_micros, transaction_bytes};

/// A transaction handed on, with the one handed on before it.
#[derive(Debug)]
struct Held {
    prev: Option<Lsn>,
    transaction: Arc<Transaction>,
    bytes: usize,
}

/// What the feed did with a transaction.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fed {
    /// Handed on, after `prev`.
    Handed { prev: Option<Lsn> },
    /// Not handed on (a duplicate, or from a leader whose term is over).
    Dropped,
    /// Something before it is missing: fetch this, then continue.
    Fetch(Fetch),
}

#[derive(Debug)]
pub(crate) struct Feed {
    tail: Tail,
    limits: WindowLimits,
    held: VecDeque<Held>,
    bytes: usize,
    /// The node's own stream lost transactions on its way here: the next is a gap.
    own_gap: bool,
    /// Table shapes by OID: a received shape equal to the last one is the same `Arc`, so the
    /// dispatcher keeps what it learned of the table (it compares shapes by pointer).
    tables: HashMap<u32, Arc<Table>>,
    bus: LocalBus,
}

impl Feed {
    pub(crate) fn new(bus: LocalBus, limits: WindowLimits) -> Feed {
        Feed {
            tail: Tail::default(),
            limits,
            held: VecDeque::new(),
            bytes: 0,
            own_gap: false,
            tables: HashMap::new(),
            bus,
        }
    }

    /// The node's bus, which the feed hands on to.
    pub(crate) fn bus(&self) -> &LocalBus {
        &self.bus
    }

    pub(crate) fn tail(&self) -> &Tail {
        &self.tail
    }

    pub(crate) fn tail_mut(&mut self) -> &mut Tail {
        &mut self.tail
    }

    fn metrics(&self) -> &ReplicationMetrics {
        self.bus.replication_metrics()
    }

    /// The shared shape equal to `table`.
    pub(crate) fn intern(&mut self, table: Table) -> Arc<Table> {
        match self.tables.get(&table.oid) {
            Some(known) if **known == table => known.clone(),
            _ => {
                let table = Arc::new(table);
                self.tables.insert(table.oid, table.clone());
                table
            }
        }
    }

    /// The node's own replication lost transactions before the next one (its stage fell
    /// behind).
    pub(crate) fn own_gap(&mut self) {
        self.own_gap = true;
    }

    /// A transaction from `source`, sent by a leader of `term` with `prev` before it.
    pub(crate) fn feed(
        &mut self,
        source: Source,
        term: u64,
        prev: Option<Lsn>,
        transaction: Arc<Transaction>,
    ) -> Fed {
        let own_prev = self
            .tail
            .head()
            .filter(|(e, _)| *e == transaction.epoch)
            .map(|(_, l)| l);
        let prev = if source == Source::Own { own_prev } else { prev };
        let verdict = self
            .tail
            .admit(source, term, transaction.epoch, prev, transaction.commit_lsn);
        self.tail.saw_term(term);
        match verdict {
            Admit::Duplicate | Admit::Stale => Fed::Dropped,
            Admit::Fetch(fetch) => Fed::Fetch(fetch),
            Admit::Apply { gap, backlog } => {
                let gap = gap || (source == Source::Own && std::mem::take(&mut self.own_gap));
                // The node decides what is history to it, not the sender (see `follow`).
                let backlog = match source {
                    Source::Own if self.tail.is_warm() => false,
                    Source::Own => transaction.backlog,
                    _ => backlog,
                };
                let transaction = if transaction.backlog != backlog || transaction.follows_gap != gap {
                    let mut t = (*transaction).clone();
                    t.backlog = backlog;
                    t.follows_gap = gap;
                    Arc::new(t)
                } else {
                    transaction
                };
                if gap {
                    ReplicationMetrics::count(&self.metrics().cluster.gaps, 1);
                }
                // The node's own chain: across a gap, the sender's `prev`, so that a fetch from
                // this node never claims continuity it does not have.
                let handed_prev = if gap { prev } else { own_prev };
                self.hand_on(handed_prev, transaction);
                Fed::Handed { prev: handed_prev }
            }
        }
    }

    fn hand_on(&mut self, prev: Option<Lsn>, transaction: Arc<Transaction>) {
        let epoch = transaction.epoch;
        if self.tail.head().is_none_or(|(e, _)| e != epoch) {
            self.held.clear();
            self.bytes = 0;
            self.bus.announce_epoch(epoch);
        }
        self.tail.applied(epoch, transaction.commit_lsn);
        let bytes = transaction_bytes(&transaction);
        self.bytes += bytes;
        self.held.push_back(Held {
            prev,
            transaction: transaction.clone(),
            bytes,
        });
        self.evict();
        self.bus.publish_transaction(transaction);
    }

    /// Drops what the window rule says has aged out (the same rule as the dispatcher's).
    pub(crate) fn evict(&mut self) {
        let now = now_micros();
        let max_age = i64::try_from(self.limits.max_age.as_micros()).unwrap_or(i64::MAX);
        while let Some(oldest) = self.held.front() {
            let old = now.saturating_sub(oldest.transaction.commit_timestamp) > max_age;
            if !old && self.bytes <= self.limits.max_bytes {
                break;
            }
            self.bytes -= oldest.bytes;
            self.held.pop_front();
        }
    }

    /// The answer to a fetch: what the window holds after `after` (all of it when `after` is
    /// from another epoch or not given), at most about `max_bytes` but at least one
    /// transaction. `None` while nothing was handed on.
    pub(crate) fn answer(&self, term: u64, after: Option<(Epoch, Lsn)>, max_bytes: usize) -> Option<Batch> {
        let (epoch, _) = self.tail.head()?;
        let start = match after {
            Some((e, lsn)) if e == epoch => self.held.partition_point(|h| h.transaction.commit_lsn <= lsn),
            _ => 0,
        };
        let mut transactions = Vec::new();
        let mut bytes = 0;
        let mut more = false;
        for held in self.held.range(start..) {
            if !transactions.is_empty() && bytes + held.bytes > max_bytes {
                more = true;
                break;
            }
            bytes += held.bytes;
            transactions.push(held.transaction.clone());
        }
        let prev = match self.held.get(start) {
            Some(first) => first.prev,
            // Caught up: nothing after `after`, which is the head.
            None => after.map(|(_, lsn)| lsn),
        };
        Some(Batch {
            term,
            epoch,
            prev,
            more,
            transactions,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cluster::wire::tests::transaction;

    fn feed() -> (Feed, tokio::sync::broadcast::Receiver<Arc<Transaction>>) {
        let bus = LocalBus::new(64);
        let received = bus.subscribe_transactions();
        (Feed::new(bus, WindowLimits::default()), received)
    }

    fn tx(commit: u64) -> Arc<Transaction> {
        let mut t = transaction(Epoch(1), commit, 1);
        t.commit_timestamp = now_micros();
        Arc::new(t)
    }

    #[test]
    fn a_takeover_re_read_reaches_the_bus_only_where_it_is_news() {
        let (mut feed, mut bus) = feed();
        // Followed the old leader up to 300.
        for (prev, commit) in [(None, 100), (Some(100), 200), (Some(200), 300)] {
            let fed = feed.feed(Source::Live, 1, prev.map(Lsn), tx(commit));
            assert_eq!(fed, Fed::Handed { prev: prev.map(Lsn) });
        }
        feed.tail_mut().warmed();
        // Leads now: its replication re-reads the window from the slot, then goes on.
        for commit in [100, 200, 300, 400] {
            let mut t = (*tx(commit)).clone();
            t.backlog = true;
            let fed = feed.feed(Source::Own, 2, None, Arc::new(t));
            assert_eq!(fed == Fed::Dropped, commit <= 300, "{commit}");
        }
        let handed: Vec<(u64, bool)> = std::iter::from_fn(|| bus.try_recv().ok())
            .map(|t| (t.commit_lsn.0, t.backlog))
            .collect();
        // 400 is news to this node's subscribers, though its replication calls it history.
        assert_eq!(handed, [(100, false), (200, false), (300, false), (400, false)]);
        // The fetch answer chains `prev` through what was handed on.
        let batch = feed.answer(2, Some((Epoch(1), Lsn(200))), 1 << 20).unwrap();
        assert_eq!(batch.prev, Some(Lsn(200)));
        let commits: Vec<u64> = batch.transactions.iter().map(|t| t.commit_lsn.0).collect();
        assert_eq!(commits, [300, 400]);
        let caught_up = feed.answer(2, Some((Epoch(1), Lsn(400))), 1 << 20).unwrap();
        assert_eq!(
            (caught_up.prev, caught_up.transactions.len()),
            (Some(Lsn(400)), 0)
        );
    }

    #[test]
    fn a_hole_the_leader_cannot_fill_is_marked_as_a_gap() {
        let (mut feed, mut bus) = feed();
        feed.feed(Source::Live, 1, None, tx(100));
        assert_eq!(
            feed.feed(Source::Live, 1, Some(Lsn(200)), tx(300)),
            Fed::Fetch(Fetch {
                after: Some((Epoch(1), Lsn(100)))
            })
        );
        assert!(matches!(
            feed.feed(Source::Fetched, 1, Some(Lsn(200)), tx(300)),
            Fed::Handed { .. }
        ));
        let gaps: Vec<bool> = std::iter::from_fn(|| bus.try_recv().ok())
            .map(|t| t.follows_gap)
            .collect();
        assert_eq!(gaps, [false, true]);
    }
}
