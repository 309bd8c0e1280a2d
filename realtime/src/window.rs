//! The resume window: the recent committed transactions kept in memory so that a client coming
//! back with its last position can be sent exactly what it missed.
//!
//! Pure (no I/O; callers pass the time, read with [`now_micros`]). Two owners apply the same rule:
//! - the changes dispatcher keeps the transactions themselves ([`Window`]) and answers
//!   [`Window::after`] for resuming subscriptions;
//! - the replication task keeps only their LSNs, commit times and sizes ([`Retention`]) and
//!   confirms to Postgres no further than the start of its window, so that after a crash the
//!   slot still holds (and sends again) every transaction of the window.
//!
//! The rule ([`WindowLimits`]): a transaction stays while it committed less than `max_age` ago
//! and the transactions after it, with it, take at most `max_bytes`. Age is measured from the
//! commit timestamp Postgres recorded, so a window re-read from the slot after a restart ages
//! exactly as the one that was lost.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::change::{Epoch, Position, Transaction};
use crate::lsn::Lsn;

/// How much history the window keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowLimits {
    /// Transactions that committed longer ago than this leave the window.
    pub max_age: Duration,
    /// The window's transactions take at most this many bytes (see [`transaction_bytes`]).
    pub max_bytes: usize,
}

impl Default for WindowLimits {
    fn default() -> WindowLimits {
        WindowLimits {
            max_age: Duration::from_secs(300),
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

impl WindowLimits {
    /// Whether the oldest entry must go: it is too old, or the window is over its byte budget.
    fn evicts(&self, oldest_commit_micros: i64, total_bytes: usize, now_micros: i64) -> bool {
        let age = now_micros.saturating_sub(oldest_commit_micros);
        let max_age = i64::try_from(self.max_age.as_micros()).unwrap_or(i64::MAX);
        age > max_age || total_bytes > self.max_bytes
    }
}

/// The wall clock in microseconds since the Unix epoch, the scale of commit timestamps: what
/// both owners of the window pass as "now".
pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The memory a transaction takes in the window, estimated from what it holds: row JSON, cell
/// tables and the fixed parts. Tables are shared between transactions and not counted.
pub(crate) fn transaction_bytes(transaction: &Transaction) -> usize {
    let rows: usize = transaction.changes.iter().map(|c| c.memory_bytes()).sum();
    std::mem::size_of::<Transaction>() + rows
}

/// The position of a transaction's last change; for one too large to keep (an overflow
/// marker, without changes), the position its last change had.
pub(crate) fn last_position(transaction: &Transaction) -> Position {
    match (&transaction.overflow, transaction.changes.last()) {
        (_, Some(last)) => last.position,
        (Some(overflow), None) => overflow.last_position(transaction.epoch, transaction.commit_lsn),
        (None, None) => Position {
            epoch: transaction.epoch,
            commit_lsn: transaction.commit_lsn,
            index: 0,
        },
    }
}

/// What the window rule needs of an entry.
trait Entry {
    fn commit_timestamp(&self) -> i64;
    fn bytes(&self) -> usize;
}

/// Entries in commit order with their total size; evicts from the front by the rule.
#[derive(Debug)]
struct Queue<T> {
    entries: VecDeque<T>,
    bytes: usize,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            entries: VecDeque::new(),
            bytes: 0,
        }
    }
}

impl<T: Entry> Queue<T> {
    fn push(&mut self, entry: T) {
        self.bytes += entry.bytes();
        self.entries.push_back(entry);
    }

    /// Removes what the rule evicts at `now_micros`; returns the newest entry removed.
    fn evict(&mut self, limits: &WindowLimits, now_micros: i64) -> Option<T> {
        let mut last = None;
        while let Some(oldest) = self.entries.front() {
            if !limits.evicts(oldest.commit_timestamp(), self.bytes, now_micros) {
                break;
            }
            self.bytes -= oldest.bytes();
            last = self.entries.pop_front();
        }
        last
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

/// A transaction in the dispatcher's window, with its size computed once.
#[derive(Debug)]
struct Held {
    transaction: Arc<Transaction>,
    bytes: usize,
}

impl Entry for Held {
    fn commit_timestamp(&self) -> i64 {
        self.transaction.commit_timestamp
    }
    fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Up to where the window is complete: every change after this point (in the window's epoch)
/// is held, or not committed yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Floor {
    /// Nothing seen yet, or a gap was cut: complete from the next transaction on.
    Unknown,
    /// Complete from this commit LSN on (the first transaction seen after a start or a gap).
    From(Lsn),
    /// Complete after this position (the last change of the newest evicted transaction).
    After(Position),
}

/// Why a position cannot be resumed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// The changes right after the position have left the window (or were never in it).
    #[error("the position is older than the resume window")]
    OutsideWindow,
    /// The position belongs to an earlier history of the stream (a recreated slot, another
    /// database), so nothing after it can be trusted.
    #[error("the position is from another epoch of the change stream")]
    OtherEpoch,
}

/// How much the dispatcher's window holds right now: written by the dispatcher after each
/// step, read by `/admin`.
#[derive(Debug, Default)]
pub struct WindowSize {
    transactions: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
}

impl WindowSize {
    pub fn record(&self, window: &Window) {
        use std::sync::atomic::Ordering::Relaxed;
        self.transactions.store(window.len() as u64, Relaxed);
        self.bytes.store(window.bytes() as u64, Relaxed);
    }

    /// Transactions and bytes held.
    pub fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.transactions.load(Relaxed), self.bytes.load(Relaxed))
    }
}

/// The dispatcher's window: recent transactions of one epoch, in commit order.
#[derive(Debug)]
pub struct Window {
    limits: WindowLimits,
    epoch: Option<Epoch>,
    floor: Floor,
    held: Queue<Held>,
    /// Position of the newest change appended (the head of the stream as far as we know).
    head: Option<Position>,
}

/// What [`Window::append`] noticed about continuity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// The transaction continues the window.
    Continued,
    /// The transaction starts a new epoch: the window was emptied first. Subscribers that were
    /// following the old epoch have a gap.
    NewEpoch,
    /// The transaction is at or below the head already held (a resend): it was not appended
    /// and must not be delivered again.
    Repeated,
}

impl Window {
    pub fn new(limits: WindowLimits) -> Window {
        Window {
            limits,
            epoch: None,
            floor: Floor::Unknown,
            held: Queue::default(),
            head: None,
        }
    }

    pub fn epoch(&self) -> Option<Epoch> {
        self.epoch
    }

    /// The newest position held or delivered through this window.
    pub fn head(&self) -> Option<Position> {
        self.head
    }

    pub fn len(&self) -> usize {
        self.held.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.entries.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.held.bytes
    }

    /// Adds a committed transaction (in bus order), then evicts by the rule at `now_micros`.
    pub fn append(&mut self, transaction: Arc<Transaction>, now_micros: i64) -> Appended {
        let mut appended = Appended::Continued;
        if self.epoch != Some(transaction.epoch) {
            if self.epoch.is_some() {
                appended = Appended::NewEpoch;
            }
            self.epoch = Some(transaction.epoch);
            self.held.clear();
            self.floor = Floor::Unknown;
            self.head = None;
        } else if self.head.is_some_and(|h| transaction.commit_lsn <= h.commit_lsn) {
            return Appended::Repeated;
        }
        if self.floor == Floor::Unknown {
            self.floor = Floor::From(transaction.commit_lsn);
        }
        self.head = Some(last_position(&transaction));
        let bytes = transaction_bytes(&transaction);
        self.held.push(Held { transaction, bytes });
        self.evict(now_micros);
        appended
    }

    /// Evicts what the rule says has aged out by `now_micros`.
    pub fn evict(&mut self, now_micros: i64) {
        if let Some(newest) = self.held.evict(&self.limits, now_micros) {
            self.floor = Floor::After(last_position(&newest.transaction));
        }
    }

    /// Forgets everything: changes were lost between what is held and what comes next (the
    /// bus dropped some). The window is complete again from the next transaction.
    pub fn cut(&mut self) {
        self.held.clear();
        self.floor = Floor::Unknown;
    }

    /// What a subscription that has seen everything up to `position` gets next: at most
    /// `max_changes` of the held changes after it, in commit order, as slices of transactions.
    /// An empty replay means it is caught up with the head.
    pub fn after(&self, position: &Position, max_changes: usize) -> Resume {
        let Some(epoch) = self.epoch else {
            // Nothing seen since the start: the stream may still be re-reading the window.
            return Resume::NotYet;
        };
        if epoch != position.epoch {
            return Resume::Refetch(ResumeError::OtherEpoch);
        }
        let key = (position.commit_lsn, position.index);
        let complete = match self.floor {
            Floor::Unknown => false,
            Floor::From(lsn) => position.commit_lsn >= lsn,
            Floor::After(after) => key >= (after.commit_lsn, after.index),
        };
        if !complete {
            return Resume::Refetch(ResumeError::OutsideWindow);
        }
        if self.head.is_none_or(|h| key > (h.commit_lsn, h.index)) {
            // Ahead of what arrived here: after a restart the stream is still re-reading the
            // window from the slot, and will reach it.
            return Resume::NotYet;
        }
        // Transactions are in commit order: skip those wholly before the position.
        let start = self
            .held
            .entries
            .partition_point(|h| h.transaction.commit_lsn < position.commit_lsn);
        Resume::Replay(self.slices(start, Some(position), max_changes))
    }

    /// Everything the window holds, from its oldest change, a piece of at most `max_changes`
    /// at a time (go on with [`Window::after`] the last one): for a subscription that must be
    /// offered every held transaction, such as one starting at a snapshot, which filters them by
    /// transaction id. Nothing when the window holds nothing.
    pub fn everything(&self, max_changes: usize) -> Resume {
        Resume::Replay(self.slices(0, None, max_changes))
    }

    /// The held transactions, oldest first.
    pub fn transactions(&self) -> impl Iterator<Item = &Arc<Transaction>> {
        self.held.entries.iter().map(|h| &h.transaction)
    }

    /// The position after which the window is complete, when it is known as one (a
    /// transaction was evicted); `None` after a start or a cut.
    pub fn floor_position(&self) -> Option<Position> {
        match self.floor {
            Floor::After(position) => Some(position),
            Floor::Unknown | Floor::From(_) => None,
        }
    }

    /// The slices from entry `start` on of the changes after `position` (all of them when
    /// `None`), at most `max_changes` changes.
    fn slices(&self, start: usize, position: Option<&Position>, max_changes: usize) -> Vec<Slice> {
        let entries = &self.held.entries;
        let key = position.map(|p| (p.commit_lsn, p.index));
        let mut slices = Vec::new();
        let mut budget = max_changes;
        for held in entries.range(start..) {
            if budget == 0 {
                break;
            }
            let t = &held.transaction;
            if t.overflow.is_some() {
                // No changes to send, only the signal, once, unless the position is past it.
                let last = last_position(t);
                if key.is_none_or(|key| key < (last.commit_lsn, last.index)) {
                    budget -= 1;
                    slices.push(Slice {
                        transaction: t.clone(),
                        changes: 0..0,
                    });
                }
                continue;
            }
            if t.access_changed
                && t.changes.is_empty()
                && position.is_none_or(|p| p.commit_lsn < t.commit_lsn)
            {
                // A change of grants or policies with no rows: replayed as its marker, so the
                // replay knows it crossed it.
                budget -= 1;
                slices.push(Slice {
                    transaction: t.clone(),
                    changes: 0..0,
                });
                continue;
            }
            let first = t
                .changes
                .partition_point(|c| key.is_some_and(|key| (c.position.commit_lsn, c.position.index) <= key));
            let end = t.changes.len().min(first.saturating_add(budget));
            if first < end {
                budget -= end - first;
                slices.push(Slice {
                    transaction: t.clone(),
                    changes: first..end,
                });
            }
        }
        slices
    }
}

/// Some consecutive changes of one transaction; for an overflowed transaction, the whole of it
/// (no changes, only its marker).
#[derive(Clone, Debug)]
pub struct Slice {
    pub transaction: Arc<Transaction>,
    pub changes: std::ops::Range<usize>,
}

impl Slice {
    /// Position of the last change of the slice.
    pub fn last_position(&self) -> Option<Position> {
        if self.transaction.overflow.is_some() {
            return Some(last_position(&self.transaction));
        }
        let last = self.changes.end.checked_sub(1)?;
        self.transaction.changes.get(last).map(|c| c.position)
    }
}

/// The answer of [`Window::after`].
#[derive(Debug)]
pub enum Resume {
    /// The next changes after the position (none: caught up).
    Replay(Vec<Slice>),
    /// The window cannot tell yet: it has not seen the position's part of the stream.
    NotYet,
    /// The position cannot be resumed from; the client must refetch.
    Refetch(ResumeError),
}

/// A handed-on transaction as the replication task remembers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handed {
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_timestamp: i64,
    pub bytes: usize,
}

impl Handed {
    pub fn of(transaction: &Transaction) -> Handed {
        Handed {
            commit_lsn: transaction.commit_lsn,
            end_lsn: transaction.end_lsn,
            commit_timestamp: transaction.commit_timestamp,
            bytes: transaction_bytes(transaction),
        }
    }
}

impl Entry for Handed {
    fn commit_timestamp(&self) -> i64 {
        self.commit_timestamp
    }
    fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The replication side of the window: which WAL the slot must keep so that a restart re-reads
/// the whole window.
///
/// The slot is confirmed up to [`Retention::start`], the commit LSN of the newest transaction
/// that left the window (Postgres sends again every transaction whose commit record is at or
/// after the confirmed position, so that one is re-read too and a client whose last change was
/// its last still resumes). Before anything left, it is where streaming started.
#[derive(Debug)]
pub(crate) struct Retention {
    limits: WindowLimits,
    held: Queue<Handed>,
    start: Lsn,
}

impl Retention {
    /// Starts from the slot's confirmed position (what the previous run kept).
    pub(crate) fn new(limits: WindowLimits, confirmed: Lsn) -> Retention {
        Retention {
            limits,
            held: Queue::default(),
            start: confirmed,
        }
    }

    pub(crate) fn push(&mut self, handed: Handed, now_micros: i64) {
        self.held.push(handed);
        self.evict(now_micros);
    }

    pub(crate) fn evict(&mut self, now_micros: i64) {
        if let Some(newest) = self.held.evict(&self.limits, now_micros) {
            self.start = self.start.max(newest.commit_lsn);
        }
    }

    /// How far the slot may be confirmed: the start of the window.
    pub(crate) fn start(&self) -> Lsn {
        self.start
    }

    /// Whether no handed transaction is in the window any more.
    pub(crate) fn is_empty(&self) -> bool {
        self.held.entries.is_empty()
    }

    /// Moves the start to `lsn` when the window is empty (an idle stream: nothing of the window
    /// needs WAL before it).
    pub(crate) fn release_through(&mut self, lsn: Lsn) {
        if self.is_empty() {
            self.start = self.start.max(lsn);
        }
    }

    /// Moves the start to `lsn` even though the window still holds transactions: their WAL is
    /// given up (a restart can no longer re-read them).
    pub(crate) fn give_up_through(&mut self, lsn: Lsn) {
        self.start = self.start.max(lsn);
    }
}

#[cfg(test)]
mod tests;
