//! Channel topics: the wire topic `realtime:<sub-topic>` and the registry key, which also says
//! whether the channel is private. A public and a private channel with the same name are
//! different topics: they share no subscribers, broadcasts or presence.

use std::sync::Arc;

/// Prefix of every channel topic on the wire.
pub(crate) const PREFIX: &str = "realtime:";

/// Why a join topic was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TopicError {
    /// Not routed at all (Phoenix answers `unmatched topic`).
    #[error("unmatched topic")]
    Unmatched,
    /// `realtime:` with nothing after it.
    #[error("TopicNameRequired: You must provide a topic name")]
    NameRequired,
}

/// The sub-topic of a wire topic (`realtime:room` → `room`).
pub(crate) fn sub_topic(wire: &str) -> Result<&str, TopicError> {
    match wire.strip_prefix(PREFIX) {
        None => Err(TopicError::Unmatched),
        Some("") => Err(TopicError::NameRequired),
        Some(sub) => Ok(sub),
    }
}

/// Registry key of a channel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TopicKey {
    sub_topic: Arc<str>,
    private: bool,
}

impl TopicKey {
    pub fn new(sub_topic: &str, private: bool) -> Self {
        TopicKey {
            sub_topic: Arc::from(sub_topic),
            private,
        }
    }

    pub fn sub_topic(&self) -> &str {
        &self.sub_topic
    }

    pub fn is_private(&self) -> bool {
        self.private
    }

    /// The topic clients see in frames (the same for public and private channels).
    pub fn wire_topic(&self) -> String {
        format!("{PREFIX}{}", self.sub_topic)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_sub_topics() {
        assert_eq!(sub_topic("realtime:room-1"), Ok("room-1"));
        assert_eq!(sub_topic("realtime:a:b"), Ok("a:b"));
        assert_eq!(sub_topic("realtime:"), Err(TopicError::NameRequired));
        assert_eq!(sub_topic("phoenix"), Err(TopicError::Unmatched));
        assert_eq!(sub_topic("Realtime:x"), Err(TopicError::Unmatched));
    }

    #[test]
    fn public_and_private_channels_are_different_topics() {
        let public = TopicKey::new("room", false);
        let private = TopicKey::new("room", true);
        assert_ne!(public, private);
        assert_eq!(public.wire_topic(), private.wire_topic());
        assert_eq!(public.wire_topic(), "realtime:room");
    }
}
