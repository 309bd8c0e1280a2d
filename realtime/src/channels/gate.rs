//! The gate of a channel resuming database broadcasts from a position (see
//! `db_broadcast::resume`): it keeps live copies out until the replay has been sent, then lets
//! through only what the replay did not cover. It lives with the registry, which asks it on
//! every delivery to that channel.

use std::sync::Mutex;

use crate::change::Position;

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
        match *self.state.lock().unwrap_or_else(|p| p.into_inner()) {
            Gate::Holding => false,
            Gate::After(None) => true,
            Gate::After(Some(last)) => {
                position.cmp_in_epoch(&last) != Some(std::cmp::Ordering::Less) && position != &last
            }
        }
    }

    /// Lets live broadcasts after `last` through.
    pub fn open(&self, last: Option<Position>) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Gate::After(last);
    }
}
