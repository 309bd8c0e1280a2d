//! The gates between a channel's replay and its live stream, kept with the registry, which asks
//! them on every delivery to that channel:
//! - [`ResumeGate`], for a channel resuming database broadcasts from a position (see
//!   `db_broadcast::resume`): it keeps live copies out until the replay has been sent, then lets
//!   through only what the replay did not cover;
//! - [`ReplaySeam`], for a channel joined with Supabase's `config.broadcast.replay`: it holds
//!   live frames while the stored messages are read, and drops live copies of replayed ones.

use std::collections::HashSet;
use std::sync::Mutex;

use bytes::Bytes;

use crate::change::Position;
use crate::locks::lock;

/// Whether live database broadcasts may reach one resuming channel.
#[derive(Debug, Default)]
pub struct ResumeGate {
    state: Mutex<Gate>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Gate {
    /// The replay has not been sent yet: nothing passes.
    #[default]
    Holding,
    /// The replay covered everything up to this position (`None`: nothing; all passes).
    After(Option<Position>),
}

impl ResumeGate {
    /// Whether the live database broadcast at `position` goes to the channel.
    pub fn passes(&self, position: &Position) -> bool {
        match *lock(&self.state) {
            Gate::Holding => false,
            Gate::After(None) => true,
            Gate::After(Some(last)) => {
                position.cmp_in_epoch(&last) != Some(std::cmp::Ordering::Less) && position != &last
            }
        }
    }

    /// Lets live broadcasts after `last` through.
    pub fn open(&self, last: Option<Position>) {
        *lock(&self.state) = Gate::After(last);
    }
}

/// The seam between a Supabase-style replay (`config.broadcast.replay`, see
/// `db_broadcast::replay`) and the live stream of one channel. The channel is registered before
/// the stored messages are read, so a message committed in between is not lost; until the replay
/// has been sent the seam holds every frame for the channel, in order. Opening it sends the
/// replay, then the held frames that are not live copies of replayed messages; from then on live
/// copies of replayed messages (a row read by the replay whose live copy was still on its way)
/// are dropped. Each message reaches the channel once, replayed ones first.
#[derive(Debug, Default)]
pub(crate) struct ReplaySeam {
    state: Mutex<Seam>,
}

/// How many frames a seam holds at most while its replay is read; a channel that would need
/// more is treated like a slow receiver (its socket is closed) rather than lose messages.
pub(crate) const MAX_HELD: usize = 4096;

#[derive(Debug)]
enum Seam {
    Holding(Vec<Held>),
    /// The ids of the replayed messages.
    Open(HashSet<Box<str>>),
}

impl Default for Seam {
    fn default() -> Self {
        Seam::Holding(Vec::new())
    }
}

#[derive(Debug)]
struct Held {
    /// The `meta.id` of a database broadcast.
    id: Option<Box<str>>,
    frame: Bytes,
}

/// What delivery does with one frame for a channel behind a seam.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Push it now.
    Push(Bytes),
    /// Held until the replay is sent, or a copy of a replayed message: nothing to push.
    Nothing,
    /// Too many frames held: close the receiver.
    Overflow,
}

impl ReplaySeam {
    /// Admits `frame` of a message whose database id (`meta.id` of a database broadcast) is `id`.
    pub(crate) fn admit(&self, id: Option<&str>, frame: Bytes) -> Admit {
        match &mut *lock(&self.state) {
            Seam::Holding(held) if held.len() >= MAX_HELD => Admit::Overflow,
            Seam::Holding(held) => {
                held.push(Held {
                    id: id.map(Box::from),
                    frame,
                });
                Admit::Nothing
            }
            Seam::Open(replayed) if id.is_some_and(|id| replayed.contains(id)) => Admit::Nothing,
            Seam::Open(_) => Admit::Push(frame),
        }
    }

    /// Sends `replayed` (each frame with its message's id), then the held frames that are not
    /// copies of them, through `push`, and lets later frames through. Delivery to the channel
    /// waits meanwhile, so nothing overtakes the replay.
    pub(crate) fn open(&self, replayed: Vec<(Box<str>, Option<Bytes>)>, mut push: impl FnMut(Bytes)) {
        let mut state = lock(&self.state);
        let mut ids = HashSet::with_capacity(replayed.len());
        for (id, frame) in replayed {
            if let Some(frame) = frame {
                push(frame);
            }
            ids.insert(id);
        }
        if let Seam::Holding(held) = std::mem::replace(&mut *state, Seam::Open(HashSet::new())) {
            for h in held {
                if !h.id.as_deref().is_some_and(|id| ids.contains(id)) {
                    push(h.frame);
                }
            }
        }
        *state = Seam::Open(ids);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn the_seam_holds_then_sends_the_replay_first_and_each_message_once() {
        let seam = ReplaySeam::default();
        // Live while the replay is read: a copy of a replayed row, a new row, a client broadcast.
        assert_eq!(seam.admit(Some("a"), frame("live a")), Admit::Nothing);
        assert_eq!(seam.admit(Some("c"), frame("live c")), Admit::Nothing);
        assert_eq!(seam.admit(None, frame("client")), Admit::Nothing);
        let mut sent = Vec::new();
        seam.open(
            vec![("a".into(), Some(frame("replay a"))), ("b".into(), None)],
            |f| sent.push(f),
        );
        assert_eq!(sent, [frame("replay a"), frame("live c"), frame("client")]);
        // A late live copy of a replayed row (also one the channel could not decode) is dropped.
        assert_eq!(seam.admit(Some("a"), frame("late a")), Admit::Nothing);
        assert_eq!(seam.admit(Some("b"), frame("late b")), Admit::Nothing);
        assert_eq!(seam.admit(Some("d"), frame("d")), Admit::Push(frame("d")));
        assert_eq!(seam.admit(None, frame("e")), Admit::Push(frame("e")));
    }

    #[test]
    fn a_seam_holds_a_bounded_number_of_frames() {
        let seam = ReplaySeam::default();
        for _ in 0..MAX_HELD {
            assert_eq!(seam.admit(None, frame("x")), Admit::Nothing);
        }
        assert_eq!(seam.admit(None, frame("x")), Admit::Overflow);
    }
}
