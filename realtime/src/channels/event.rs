//! Events addressed to every subscriber of one channel topic, as carried by the bus.
//!
//! Each event caches its frame per serializer version: the first receiver speaking a version
//! pays for the encoding and every other receiver gets a clone of the same shared bytes.

use std::sync::OnceLock;

use bytes::Bytes;

use super::TopicKey;
use super::registry::SubscriberId;
use crate::broadcast::Broadcast;
use crate::change::Position;
use crate::protocol::phoenix::{self, Vsn};
use crate::protocol::ws_frame;

#[derive(Debug)]
pub struct ChannelEvent {
    pub topic: TopicKey,
    /// A subscriber that must not receive the event (the sender of a broadcast with `self: false`).
    pub exclude: Option<SubscriberId>,
    pub kind: EventKind,
    /// The stream position of a database broadcast (resuming channels skip what they replayed).
    pub position: Option<Position>,
    /// A database broadcast committed before this process streamed (re-read after a restart):
    /// history, delivered only to channels that resume (see `db_broadcast::resume`).
    pub backlog: bool,
    /// Came from another node of the cluster (it is not published to the cluster again).
    pub from_peer: bool,
    encoded: [OnceLock<Option<Bytes>>; 2],
}

#[derive(Debug)]
pub enum EventKind {
    Broadcast(Broadcast),
    /// A `presence_diff` payload, `{"joins":{…},"leaves":{…}}`, already encoded.
    PresenceDiff(String),
}

impl ChannelEvent {
    pub fn new(topic: TopicKey, exclude: Option<SubscriberId>, kind: EventKind) -> Self {
        ChannelEvent {
            topic,
            exclude,
            kind,
            position: None,
            backlog: false,
            from_peer: false,
            encoded: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// The event of a database broadcast at `position`; `backlog` as in [`ChannelEvent::backlog`].
    pub fn at(mut self, position: Position, backlog: bool) -> Self {
        self.position = Some(position);
        self.backlog = backlog;
        self
    }

    /// The event as received from another node.
    pub fn received_from_peer(mut self) -> Self {
        self.from_peer = true;
        self
    }

    /// The `meta.id` of a database broadcast (the row's id in `realtime.messages`).
    pub fn database_id(&self) -> Option<String> {
        self.position?;
        let EventKind::Broadcast(b) = &self.kind else {
            return None;
        };
        #[derive(serde::Deserialize)]
        struct Meta {
            id: String,
        }
        let meta: Meta = serde_json::from_str(b.meta.as_deref()?.get()).ok()?;
        Some(meta.id)
    }

    pub fn is_presence(&self) -> bool {
        matches!(self.kind, EventKind::PresenceDiff(_))
    }

    /// The WebSocket frame for receivers speaking `vsn`, encoded on first use; `None` when the
    /// event cannot be delivered in that version (binary payloads to v1).
    pub fn frame(&self, vsn: Vsn) -> Option<&Bytes> {
        let slot = match vsn {
            Vsn::V1 => &self.encoded[0],
            Vsn::V2 => &self.encoded[1],
        };
        slot.get_or_init(|| {
            let topic = self.topic.wire_topic();
            match &self.kind {
                EventKind::Broadcast(b) => b.encode(vsn, &topic),
                EventKind::PresenceDiff(diff) => Some(ws_frame::text(&phoenix::encode_text(
                    vsn,
                    None,
                    None,
                    &topic,
                    "presence_diff",
                    diff,
                ))),
            }
        })
        .as_ref()
    }
}
