//! Channels: topics, the registry of subscribers per topic, and the events delivered to them.

pub mod event;
pub mod gate;
pub mod registry;
pub mod topic;

pub use event::{ChannelEvent, EventKind};
pub use registry::{Registry, Subscriber, SubscriberId};
pub use topic::TopicKey;
