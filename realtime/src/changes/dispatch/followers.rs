//! Who gets which transaction: the resume window, the subscriptions being caught up from it,
//! and the live audiences.
//!
//! Owned by the dispatcher task. Every transaction from the bus goes into the [`Window`] first,
//! then to the live audience (transactions marked `backlog` only to subscriptions that resumed:
//! history is not news to the others). A subscription that joined with `since` is not live at
//! first: it is caught up from the window alone, through the same delivery as live changes, a
//! piece at a time as its socket has room (so a long replay never makes it a slow consumer and
//! never holds up the others), and joins the live audience only once it has reached the head of
//! the window. The live audience therefore never sends it a change the replay will send, and the
//! replay never sends a change the live audience sent: each change once, in commit order. A
//! transaction too large to keep reaches both paths as its overflow signal, in its place.
//!
//! A replay is authorized as of each change's commit or not at all: it stops with a `refetch`
//! signal (and the subscription goes live) when it crosses a change of grants, policies or roles
//! (a transaction marked `access_changed`), or reaches a table whose rows Postgres's row-level
//! security decides for the subscriber (Postgres can only check rows as they are now). Tables
//! with policy rules decide on the row image itself and replay exactly.

use std::collections::HashMap;
use std::sync::Arc;

use crate::change::{Epoch, Position, Transaction};
use crate::changes::resume::{Refetch, resumed_payload};
use crate::changes::service::{Changes, Subscription};
use crate::changes::snapshot::complete_payload;
use crate::channels::registry::SubscriberId;
use crate::window::{Appended, Resume, ResumeError, Slice, Window, WindowLimits, last_position, now_micros};

use super::{Audience, Dispatcher};

/// Most changes replayed per round, over all subscriptions being caught up: live delivery
/// comes between rounds.
const ROUND_CHANGES: usize = 1024;
/// Most changes replayed to one subscription at a time.
const PIECE_CHANGES: usize = 256;
/// Outbound frames left free for the session's own replies and the message at the seam.
const RESERVED_ROOM: usize = 16;

/// Where one subscription stands.
enum Follower {
    /// Being sent the window after `after` (from its start when `None`: a snapshot's seam),
    /// alone. `since`: the position it resumes from, if it resumes.
    CatchingUp {
        subscription: Arc<Subscription>,
        since: Option<Position>,
        after: Option<Position>,
        audience: Audience,
    },
    /// In the live audience. `resumed`: it came with `since` (or a snapshot) and caught up, so
    /// history re-read after a restart is news to it. `seam`: it started at a snapshot whose
    /// transactions may still arrive, so it is sent only those the snapshot did not show,
    /// alone, until the stream passes the snapshot's LSN.
    Live {
        subscription: Arc<Subscription>,
        resumed: bool,
        seam: bool,
    },
}

pub struct Followers {
    window: Window,
    /// The subscription-set generation `states` was built from.
    generation: Option<u64>,
    states: HashMap<SubscriberId, Follower>,
    /// Every live subscription; built when first needed after a membership change.
    live: Option<Audience>,
    /// The live subscriptions that resumed.
    live_resumed: Option<Audience>,
    /// The live subscriptions still at a snapshot's seam (in neither audience above).
    seamed: Option<Vec<(SubscriberId, Arc<Subscription>)>>,
}

impl Followers {
    pub fn new(limits: WindowLimits) -> Followers {
        Followers {
            window: Window::new(limits),
            generation: None,
            states: HashMap::new(),
            live: None,
            live_resumed: None,
            seamed: None,
        }
    }

    /// Brings the table up to date with the subscriptions, if they changed.
    pub fn sync(&mut self, changes: &Changes) {
        if self.generation == Some(changes.generation()) {
            return;
        }
        let (generation, subscriptions) = changes.snapshot();
        let mut states = HashMap::with_capacity(subscriptions.len());
        for (id, subscription) in subscriptions {
            let follower = match self.states.remove(&id) {
                // A replaced subscription (new claims after a token refresh) carries on where
                // the old one was.
                Some(Follower::CatchingUp {
                    subscription: old,
                    since,
                    after,
                    audience,
                }) => {
                    let audience = if Arc::ptr_eq(&old, &subscription) {
                        audience
                    } else {
                        Audience::single(subscription.clone())
                    };
                    Follower::CatchingUp {
                        subscription,
                        since,
                        after,
                        audience,
                    }
                }
                Some(Follower::Live { resumed, seam, .. }) => Follower::Live {
                    seam: seam && subscription.seam.is_some(),
                    subscription,
                    resumed,
                },
                None => match (&subscription.seam, subscription.since) {
                    (Some(_), _) => self.start_at_seam(subscription),
                    (None, Some(since)) => Follower::CatchingUp {
                        audience: Audience::single(subscription.clone()),
                        subscription,
                        since: Some(since),
                        after: Some(since),
                    },
                    (None, None) => Follower::Live {
                        subscription,
                        resumed: false,
                        seam: false,
                    },
                },
            };
            states.insert(id, follower);
        }
        self.states = states;
        self.generation = Some(generation);
        self.membership_changed();
    }

    fn membership_changed(&mut self) {
        self.live = None;
        self.live_resumed = None;
        self.seamed = None;
    }

    /// A subscription whose snapshot was sent: it is told the snapshot is complete, then is
    /// offered the whole window (its rule picks what the snapshot did not show), then goes live.
    ///
    /// The position in the message is where a later resume may start without losing a change
    /// the snapshot did not show: just before the oldest held transaction it did not show (the
    /// window's head when there is none).
    fn start_at_seam(&self, subscription: Arc<Subscription>) -> Follower {
        let Some(seam) = &subscription.seam else {
            return Follower::Live {
                subscription,
                resumed: false,
                seam: false,
            };
        };
        let mut position = self.window.floor_position();
        for transaction in self.window.transactions() {
            if !seam.snapshot.visible(transaction.xid) {
                break;
            }
            position = Some(last_position(transaction));
        }
        let position = position.or(self.window.head());
        subscription.push_system(&complete_payload(
            subscription.sub_topic(),
            seam.rows,
            position.as_ref(),
        ));
        if self.window.is_empty() {
            return Follower::Live {
                subscription,
                resumed: true,
                seam: true,
            };
        }
        Follower::CatchingUp {
            audience: Audience::single(subscription.clone()),
            subscription,
            since: None,
            after: None,
        }
    }

    /// Records how much the window holds (for `/admin`).
    pub fn record_window(&self, size: &crate::window::WindowSize) {
        size.record(&self.window);
    }

    /// The position of the newest change in the window.
    pub fn head(&self) -> Option<Position> {
        self.window.head()
    }

    /// Whether some subscription is still being caught up.
    pub fn catching_up(&self) -> bool {
        self.states
            .values()
            .any(|f| matches!(f, Follower::CatchingUp { .. }))
    }

    /// A committed transaction from the bus: into the window, then to the live audience.
    pub async fn publish(&mut self, dispatcher: &mut Dispatcher, transaction: Arc<Transaction>) {
        match self.window.append(transaction.clone(), now_micros()) {
            Appended::Continued => {}
            Appended::Repeated => {
                tracing::warn!(commit_lsn = %transaction.commit_lsn, "a transaction came again; not delivered twice");
                return;
            }
            // Whatever happened between the two histories is lost to whoever followed the old
            // one. Those being caught up learn it from the window on their next piece.
            Appended::NewEpoch => self.tell_live(Refetch::Gap),
        }
        let audience = if transaction.backlog {
            self.live_resumed
                .get_or_insert_with(|| Audience::new(live(&self.states, |resumed| resumed)))
        } else {
            self.live
                .get_or_insert_with(|| Audience::new(live(&self.states, |_| true)))
        };
        if transaction.access_changed {
            // In commit order: every change after this one is decided with fresh facts.
            dispatcher.access_changed();
        }
        if transaction.overflow.is_some() {
            dispatcher
                .notify_overflow(audience.subscriptions(), &transaction)
                .await;
        } else {
            dispatcher.deliver(&transaction, audience).await;
        }
        self.publish_at_seams(dispatcher, &transaction).await;
    }

    /// Sends `transaction` to the subscriptions at a snapshot's seam whose snapshot did not
    /// show it; the first transaction at or past a seam's LSN closes that seam.
    async fn publish_at_seams(&mut self, dispatcher: &mut Dispatcher, transaction: &Transaction) {
        let seamed = self.seamed.get_or_insert_with(|| seamed(&self.states)).clone();
        for (id, subscription) in seamed {
            let Some(seam) = &subscription.seam else {
                continue;
            };
            if !seam.snapshot.visible(transaction.xid) {
                if transaction.overflow.is_some() {
                    let one = std::slice::from_ref(&subscription);
                    dispatcher.notify_overflow(one, transaction).await;
                } else {
                    dispatcher
                        .deliver(transaction, &mut Audience::single(subscription.clone()))
                        .await;
                }
            }
            if !seam.open_at(transaction.commit_lsn) {
                self.states.insert(
                    id,
                    Follower::Live {
                        subscription,
                        resumed: true,
                        seam: false,
                    },
                );
                self.membership_changed();
            }
        }
    }

    /// The bus dropped transactions on their way here: the window is cut at the gap and every
    /// subscription is told to refetch (none was sent the lost changes).
    pub fn gap(&mut self) {
        self.window.cut();
        for follower in self.states.values_mut() {
            let (Follower::Live { subscription, .. } | Follower::CatchingUp { subscription, .. }) = follower;
            subscription.push_refetch(Refetch::Gap);
            *follower = Follower::Live {
                subscription: subscription.clone(),
                resumed: false,
                seam: false,
            };
        }
        self.membership_changed();
    }

    fn tell_live(&self, reason: Refetch) {
        for follower in self.states.values() {
            if let Follower::Live { subscription, .. } = follower {
                subscription.push_refetch(reason);
            }
        }
    }

    /// One round of replay: each subscription being caught up gets what fits its socket; one
    /// that reached the head goes live, one whose position the window cannot cover is told to
    /// refetch and goes live.
    ///
    /// `stream_epoch` is the epoch the stream announced: before the first transaction of a run
    /// arrives, it is what tells a position of another epoch apart from one not re-read yet.
    pub async fn catch_up(&mut self, dispatcher: &mut Dispatcher, stream_epoch: Option<Epoch>) {
        self.window.evict(now_micros());
        let mut ids: Vec<SubscriberId> = self
            .states
            .iter()
            .filter(|(_, f)| matches!(f, Follower::CatchingUp { .. }))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        let mut budget = ROUND_CHANGES;
        for id in ids {
            if budget == 0 {
                break;
            }
            let Some(Follower::CatchingUp {
                subscription,
                since,
                after,
                audience,
            }) = self.states.get_mut(&id)
            else {
                continue;
            };
            let fits = subscription
                .outbound
                .room()
                .saturating_sub(RESERVED_ROOM)
                .min(PIECE_CHANGES)
                .min(budget);
            if fits == 0 {
                continue;
            }
            let seam = subscription.seam.clone();
            let mut answer = match after {
                Some(after) => self.window.after(after, fits),
                None => self.window.everything(fits),
            };
            if matches!(answer, Resume::NotYet)
                && self.window.epoch().is_none()
                && stream_epoch.is_some_and(|e| after.is_some_and(|a| e != a.epoch))
            {
                answer = Resume::Refetch(ResumeError::OtherEpoch);
            }
            let resumed = match answer {
                Resume::NotYet => continue,
                Resume::Refetch(error) => {
                    let reason = match error {
                        ResumeError::OutsideWindow => Refetch::OutsideWindow,
                        ResumeError::OtherEpoch => Refetch::OtherEpoch,
                    };
                    subscription.push_refetch(reason);
                    crate::metrics::events().resumes.add(reason.code());
                    false
                }
                Resume::Replay(slices) if slices.is_empty() => {
                    if let Some(since) = since {
                        crate::metrics::events().resumes.add("resumed");
                        subscription.push_system(&resumed_payload(subscription.sub_topic(), since));
                    }
                    true
                }
                Resume::Replay(slices) => {
                    let mut refused = None;
                    for slice in &slices {
                        // What the snapshot showed is skipped; what it did not is as new as a
                        // live change, and is decided like one.
                        if let Some(seam) = &seam
                            && seam.snapshot.visible(slice.transaction.xid)
                        {
                            if let Some(last) = slice.last_position() {
                                *after = Some(last);
                            }
                            continue;
                        }
                        // Authorized as of the commit or not at all: what today's facts cannot
                        // decide for then is refetched instead of replayed.
                        if slice.transaction.access_changed {
                            refused = Some(Refetch::AccessChanged);
                        } else if seam.is_none()
                            && dispatcher.decided_by_row_security(subscription, slice).await
                        {
                            refused = Some(Refetch::RowSecurity);
                        }
                        if let Some(reason) = refused {
                            subscription.push_refetch(reason);
                            break;
                        }
                        if slice.transaction.overflow.is_some() {
                            dispatcher
                                .notify_overflow(std::slice::from_ref(&*subscription), &slice.transaction)
                                .await;
                        } else {
                            dispatcher.deliver(&part(slice), audience).await;
                        }
                        budget = budget.saturating_sub(slice.changes.len());
                        if let Some(last) = slice.last_position() {
                            *after = Some(last);
                        }
                    }
                    if refused.is_none() {
                        continue;
                    }
                    false
                }
            };
            let subscription = subscription.clone();
            // Caught up at a seam: still open while the stream has not passed its LSN.
            let seam =
                resumed && seam.is_some_and(|s| self.window.head().is_none_or(|h| s.open_at(h.commit_lsn)));
            self.states.insert(
                id,
                Follower::Live {
                    subscription,
                    resumed,
                    seam,
                },
            );
            self.membership_changed();
        }
    }
}

/// The live subscriptions whose `resumed` flag passes `keep`.
fn live(states: &HashMap<SubscriberId, Follower>, keep: impl Fn(bool) -> bool) -> Vec<Arc<Subscription>> {
    states
        .values()
        .filter_map(|f| match f {
            Follower::Live {
                subscription,
                resumed,
                seam: false,
            } if keep(*resumed) => Some(subscription.clone()),
            _ => None,
        })
        .collect()
}

/// The live subscriptions at a snapshot's seam.
fn seamed(states: &HashMap<SubscriberId, Follower>) -> Vec<(SubscriberId, Arc<Subscription>)> {
    states
        .iter()
        .filter_map(|(id, f)| match f {
            Follower::Live {
                subscription,
                seam: true,
                ..
            } => Some((*id, subscription.clone())),
            _ => None,
        })
        .collect()
}

/// The changes of a slice as a transaction of their own (the rows are shared, not copied).
fn part(slice: &Slice) -> Transaction {
    let t = &slice.transaction;
    Transaction {
        epoch: t.epoch,
        xid: t.xid,
        commit_lsn: t.commit_lsn,
        end_lsn: t.end_lsn,
        commit_timestamp: t.commit_timestamp,
        backlog: t.backlog,
        changes: t.changes[slice.changes.clone()].to_vec(),
        overflow: t.overflow.clone(),
        access_changed: t.access_changed,
        follows_gap: t.follows_gap,
    }
}

#[cfg(test)]
mod tests;
