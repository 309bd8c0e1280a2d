//! `phx_leave`, and every other way a channel ends while its socket stays open: a duplicate
//! join, an expired or refused token, a rate limit. Each ends with `phx_close` carrying the
//! channel's join ref (realtime-js ignores a close with any other ref).

use super::Session;
use crate::protocol::phoenix::{Inbound, Status};

impl Session {
    pub(super) fn leave(&mut self, msg: &Inbound) {
        self.reply(msg, Status::Ok, "{}");
        crate::metrics::events().leaves.add("left");
        self.close_channel(&msg.topic);
    }

    /// Sends `phx_close` for the channel on `topic` and forgets it.
    pub(super) fn close_channel(&mut self, topic: &str) {
        let Some(ch) = self.take_channel(topic) else {
            return;
        };
        self.forget(&ch);
        let join_ref = ch.join_ref.as_deref();
        let frame =
            crate::protocol::phoenix::encode_text(self.vsn, join_ref, join_ref, topic, "phx_close", "{}");
        self.send_text(frame);
    }

    /// Shuts a channel down with a `system` error (`message`) followed by `phx_close`.
    pub(super) fn shutdown_channel(&mut self, topic: &str, message: &str) {
        let Some(ch) = self.channel(topic) else {
            return;
        };
        let payload = serde_json::json!({
            "channel": ch.key.sub_topic(),
            "extension": "system",
            "message": message,
            "status": "error",
        });
        self.push(ch.join_ref.as_deref(), topic, "system", &payload.to_string());
        crate::metrics::events().leaves.add("closed");
        self.close_channel(topic);
    }
}
