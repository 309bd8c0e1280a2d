//! Resuming database broadcasts from a position: the gate that keeps a resuming channel's live
//! copies out until its replay has been sent, and the `system` messages that say how it went.
//!
//! A channel joins with `config.broadcast.since` set to the `meta.position` of the last database
//! broadcast it processed. It is registered at once, but its gate holds every database broadcast
//! back; the service then sends it, from its window, every database broadcast of its topic after
//! that position, and opens the gate after the newest position it looked at. Live copies at or
//! below that position are dropped by the gate (the replay had them), later ones pass: each
//! message reaches the channel once, in commit order.

pub use crate::channels::gate::ResumeGate;

/// The `system` payload after a replay: the channel now receives live database broadcasts.
pub fn resumed_payload(sub_topic: &str, replayed: usize) -> String {
    serde_json::json!({
        "channel": sub_topic,
        "extension": "broadcast",
        "status": "ok",
        "resumed": true,
        "replayed": replayed,
        "message": format!("Resumed: {replayed} missed database broadcasts were sent; live broadcasts follow"),
    })
    .to_string()
}

/// The `system` payload when the position cannot be resumed from (`reason` as in
/// `docs/protocol.md`): the channel continues live.
pub fn refetch_payload(sub_topic: &str, reason: &str, message: &str) -> String {
    serde_json::json!({
        "channel": sub_topic,
        "extension": "broadcast",
        "status": "error",
        "refetch": true,
        "reason": reason,
        "message": format!("Cannot resume database broadcasts: {message}. Messages from here on are delivered live."),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Epoch, Position};
    use crate::lsn::Lsn;

    fn at(epoch: u64, lsn: u64, index: u32) -> Position {
        Position {
            epoch: Epoch(epoch),
            commit_lsn: Lsn(lsn),
            index,
        }
    }

    #[test]
    fn the_gate_holds_then_passes_only_what_the_replay_did_not_cover() {
        let gate = ResumeGate::default();
        assert!(!gate.passes(&at(1, 10, 0)));
        gate.open(Some(at(1, 10, 1)));
        assert!(!gate.passes(&at(1, 10, 0)));
        assert!(!gate.passes(&at(1, 10, 1)));
        assert!(gate.passes(&at(1, 10, 2)));
        assert!(gate.passes(&at(1, 11, 0)));
        // A new epoch is not comparable: it is news.
        assert!(gate.passes(&at(2, 1, 0)));
        gate.open(None);
        assert!(gate.passes(&at(1, 1, 0)));
    }
}
