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
use crate::channels::registry::SubscriberId;
use crate::window::{Appended, Resume, ResumeError, Slice, Window, WindowLimits, now_micros};

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
    /// Being sent the window after `after`, alone.
    CatchingUp {
        subscription: Arc<Subscription>,
        since: Position,
        after: Position,
        audience: Audience,
    },
    /// In the live audience. `resumed`: it came with `since` and caught up, so history re-read
    /// after a restart is news to it.
    Live {
        subscription: Arc<Subscription>,
        resumed: bool,
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
}

impl Followers {
    pub fn new(limits: WindowLimits) -> Followers {
        Followers {
            window: Window::new(limits),
            generation: None,
            states: HashMap::new(),
            live: None,
            live_resumed: None,
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
                Some(Follower::Live { resumed, .. }) => Follower::Live {
                    subscription,
                    resumed,
                },
                None => match subscription.since {
                    Some(since) => Follower::CatchingUp {
                        audience: Audience::single(subscription.clone()),
                        subscription,
                        since,
                        after: since,
                    },
                    None => Follower::Live {
                        subscription,
                        resumed: false,
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
    }

    /// Records how much the window holds (for `/admin`).
    pub fn record_window(&self, size: &crate::window::WindowSize) {
        size.record(&self.window);
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
            let mut answer = self.window.after(after, fits);
            if matches!(answer, Resume::NotYet)
                && self.window.epoch().is_none()
                && stream_epoch.is_some_and(|e| e != after.epoch)
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
                    crate::metrics::events().resumes.add("resumed");
                    subscription.push_system(&resumed_payload(subscription.sub_topic(), since));
                    true
                }
                Resume::Replay(slices) => {
                    let mut refused = None;
                    for slice in &slices {
                        // Authorized as of the commit or not at all: what today's facts cannot
                        // decide for then is refetched instead of replayed.
                        if slice.transaction.access_changed {
                            refused = Some(Refetch::AccessChanged);
                        } else if dispatcher.decided_by_row_security(subscription, slice).await {
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
                            *after = last;
                        }
                    }
                    if refused.is_none() {
                        continue;
                    }
                    false
                }
            };
            let subscription = subscription.clone();
            self.states.insert(
                id,
                Follower::Live {
                    subscription,
                    resumed,
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
            } if keep(*resumed) => Some(subscription.clone()),
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
