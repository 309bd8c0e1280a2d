//! What a token may do on a private channel: read and write broadcast and presence.
//!
//! The decision itself belongs to the policy files; sessions and the REST API ask through
//! [`ChannelPolicy`] so they do not depend on how policies are stored or evaluated. Public
//! channels are not asked: any valid token may use them.

use crate::auth::Claims;

/// Access of one token to one private channel topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelAccess {
    pub broadcast_read: bool,
    pub broadcast_write: bool,
    pub presence_read: bool,
    pub presence_write: bool,
}

impl ChannelAccess {
    /// Everything allowed (public channels).
    pub const ALL: ChannelAccess =
        ChannelAccess { broadcast_read: true, broadcast_write: true, presence_read: true, presence_write: true };

    /// A private channel may be joined with read access to broadcast or presence.
    pub fn can_join(&self) -> bool {
        self.broadcast_read || self.presence_read
    }
}

/// Decides private channel access for a sub-topic (the topic without `realtime:`).
pub trait ChannelPolicy: Send + Sync + std::fmt::Debug {
    fn channel_access(&self, sub_topic: &str, claims: &Claims) -> ChannelAccess;
}

/// No policy loaded: private channels are closed to everyone (default deny).
#[derive(Debug, Default)]
pub struct DenyAll;

impl ChannelPolicy for DenyAll {
    fn channel_access(&self, _sub_topic: &str, _claims: &Claims) -> ChannelAccess {
        ChannelAccess::default()
    }
}
