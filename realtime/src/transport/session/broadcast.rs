//! `broadcast` from a client (text push or binary kind 3): checked (access, size, the rates of
//! the subject, the address and the node), then published on the bus.
//! With `ack` the client gets a reply once the message is handed on, or
//! `"payload_size_exceeded"` when it is too large.

use bytes::Bytes;

use super::Session;
use crate::broadcast::Broadcast;
use crate::channels::{ChannelEvent, EventKind};
use crate::protocol::phoenix::{Inbound, Payload, Status};

impl Session {
    pub(super) fn broadcast(&mut self, mut msg: Inbound) {
        let Some(ch) = self.channel(&msg.topic) else {
            return;
        };
        let payload = std::mem::replace(&mut msg.payload, Payload::Binary(Bytes::new()));
        let message = match payload {
            Payload::Json(raw) => match Broadcast::from_client_json(&raw) {
                Some(b) => b,
                None => return,
            },
            Payload::UserBroadcast { persist: true, .. } => {
                // Client broadcasts are not stored here: refused with a clear error (realtime-js
                // resolves `send()` with it when `ack` is on), never silently broadcast.
                let error = serde_json::json!({ "error": crate::broadcast::PERSIST_UNSUPPORTED });
                return self.reply(&msg, Status::Error, &error.to_string());
            }
            Payload::UserBroadcast { event, data, .. } => Broadcast::from_data(event, data),
            Payload::Binary(_) => return,
        };
        // Without write access (private channels) the message is dropped silently, even with
        // `ack`, as Supabase does: the client's push times out.
        if !ch.access.broadcast_write {
            crate::metrics::events().broadcasts.add("refused");
            return;
        }
        if message.payload_size() > self.node.max_payload_bytes() {
            crate::metrics::events().broadcasts.add("refused");
            if ch.ack {
                self.reply(&msg, Status::Error, "\"payload_size_exceeded\"");
            }
            return;
        }
        // The subject's, the address's and the node's rates (the socket's was counted already).
        let now = tokio::time::Instant::now();
        if let Err(refused) = self
            .node
            .limits
            .broadcasts(&ch.subject, self.slot.address(), 1, now)
        {
            tracing::debug!(limit = refused.limit, "broadcast rate reached");
            return self.shutdown_channel(&msg.topic, crate::limits::TOO_MANY_MESSAGES);
        }
        let exclude = (!ch.self_broadcast).then_some(ch.id);
        let ack = ch.ack;
        let event = ChannelEvent::new(ch.key.clone(), exclude, EventKind::Broadcast(message));
        self.node.bus.publish_channel_event(event);
        crate::metrics::events().broadcasts.add("sent");
        if ack {
            self.reply(&msg, Status::Ok, "{}");
        }
    }
}
