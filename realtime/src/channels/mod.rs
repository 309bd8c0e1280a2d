//! Channels: topics, the registry of subscribers per topic, and the events delivered to them.

pub(crate) mod event;
pub(crate) mod gate;
pub(crate) mod registry;
pub(crate) mod topic;

pub(crate) use event::{ChannelEvent, EventKind};
pub(crate) use registry::{Registry, SubscriberId};
pub(crate) use topic::TopicKey;
