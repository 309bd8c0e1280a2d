//! A joined channel, as its session sees it.

use crate::channels::access::ChannelAccess;
use crate::channels::registry::{Subscriber, SubscriberId};
use crate::channels::TopicKey;
use crate::limits::SlidingLog;

use super::Session;

#[derive(Debug)]
pub(super) struct Channel {
    pub key: TopicKey,
    pub join_ref: Option<String>,
    /// This channel's identity in the registry and in presence.
    pub id: SubscriberId,
    /// `config.broadcast.ack`: acknowledge each broadcast with a reply.
    pub ack: bool,
    /// `config.broadcast.self`: receive one's own broadcasts.
    pub self_broadcast: bool,
    pub presence_enabled: bool,
    pub presence_key: String,
    pub tracked: bool,
    /// The token given in the join or a later `access_token` event; `None` means the socket's
    /// API key.
    pub token: Option<String>,
    /// Expiry of the channel's token, Unix seconds.
    pub exp: i64,
    /// Everything on public channels; what the policy grants on private ones.
    pub access: ChannelAccess,
    pub presence_calls: SlidingLog,
}

impl Session {
    /// The registry entry of `ch` (who receives what follows from its access and settings).
    pub(super) fn subscriber(&self, ch: &Channel) -> Subscriber {
        Subscriber {
            id: ch.id,
            outbound: self.outbound.clone(),
            vsn: self.vsn,
            broadcast: ch.access.broadcast_read,
            presence: ch.presence_enabled && ch.access.presence_read,
        }
    }

    /// Removes `ch` from the registry and its presence from the topic.
    pub(super) fn forget(&self, ch: &Channel) {
        self.node.registry.unsubscribe(&ch.key, ch.id);
        if ch.tracked {
            self.node.presence.untrack(&ch.key, ch.id);
        }
    }
}
