//! `presence` from a client: `{"type":"presence","event":"track","payload":{…}}` or
//! `{"event":"untrack"}` (event names are case-insensitive). Replies ok, or an error reply
//! (a topic at its presence caps answers `{"reason":"PresenceLimitReached: …"}`). A payload over
//! `max_presence_entry_bytes` (or the payload size limit) shuts the channel down with
//! Supabase's `Track message size exceeded`.
//!
//! Unlike Supabase, a `track` on a channel joined without presence also pushes the current
//! `presence_state`, so realtime-js (which waits for a state before applying diffs) shows it.

use serde_json::Value;

use super::Session;
use crate::limits::{
    CLIENT_PRESENCE_RATE, PRESENCE_TOPIC_FULL, PRESENCE_TOPIC_TOO_LARGE, TOO_MANY_PRESENCE_MESSAGES,
    TRACK_TOO_LARGE,
};
use crate::presence::Full;
use crate::protocol::phoenix::{Inbound, Status};

const NOT_A_MAP: &str = r#"{"reason":"Presence track payload must be a map"}"#;

impl Session {
    pub(super) fn presence(&mut self, msg: &Inbound) {
        let Some(body) = msg
            .payload
            .as_json()
            .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
        else {
            return self.reply(msg, Status::Error, "{}");
        };
        let now = tokio::time::Instant::now();
        let Some(ch) = self.channel(&msg.topic) else {
            return;
        };
        if !self
            .node
            .limits
            .presence_event(&ch.subject, self.slot.address(), now)
        {
            return self.shutdown_channel(&msg.topic, TOO_MANY_PRESENCE_MESSAGES);
        }
        let node = self.node.clone();
        let Some(ch) = self.channel_mut(&msg.topic) else {
            return;
        };
        if !ch.presence_mut(&node.config.server.limits).calls.hit(now) {
            return self.shutdown_channel(&msg.topic, CLIENT_PRESENCE_RATE);
        }
        match body["event"].as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("track") => self.track(msg, body.get("payload")),
            Some("untrack") => self.untrack(msg),
            _ => self.reply(msg, Status::Error, "{}"),
        }
    }

    fn track(&mut self, msg: &Inbound, payload: Option<&Value>) {
        let Some(Value::Object(meta)) = payload else {
            return self.reply(msg, Status::Error, NOT_A_MAP);
        };
        let Some(ch) = self.channel(&msg.topic) else {
            return;
        };
        if !ch.access.presence_write {
            crate::metrics::events().presence.add("refused");
            return self.reply(msg, Status::Error, "{}");
        }
        let size = msg.payload.as_json().map_or(0, |raw| raw.get().len());
        let max_entry = self.node.config.server.limits.max_presence_entry_bytes;
        if size > self.node.max_payload_bytes() || size > max_entry {
            return self.shutdown_channel(&msg.topic, TRACK_TOO_LARGE);
        }
        if !ch.presence_enabled {
            if let Some(ch) = self.channel_mut(&msg.topic) {
                ch.presence_enabled = true;
            }
            if let Some(ch) = self.channel(&msg.topic) {
                self.node.registry.subscribe(&ch.key, self.subscriber(ch));
                if ch.access.presence_read {
                    self.push_presence_state(ch, &msg.topic);
                }
            }
        }
        let node = self.node.clone();
        let Some(ch) = self.channel_mut(&msg.topic) else {
            return;
        };
        let (topic, id) = (ch.key.clone(), ch.id);
        let presence = ch.presence_mut(&node.config.server.limits);
        let key = presence
            .key
            .get_or_insert_with(|| uuid::Uuid::new_v4().to_string());
        // A full topic refuses the track with a reason; the channel stays.
        let reason = match node.presence.track(&topic, id, key, meta.clone(), size) {
            Ok(_) => {
                presence.tracked = true;
                crate::metrics::events().presence.add("track");
                return self.reply(msg, Status::Ok, "{}");
            }
            Err(Full::Entries) => PRESENCE_TOPIC_FULL,
            Err(Full::Bytes) => PRESENCE_TOPIC_TOO_LARGE,
        };
        crate::metrics::events().presence.add("refused");
        let response = serde_json::json!({ "reason": reason }).to_string();
        self.reply(msg, Status::Error, &response);
    }

    fn untrack(&mut self, msg: &Inbound) {
        let node = self.node.clone();
        if let Some(ch) = self.channel_mut(&msg.topic)
            && let Some(presence) = ch.presence.as_mut().filter(|p| p.tracked)
        {
            presence.tracked = false;
            node.presence.untrack(&ch.key, ch.id);
            crate::metrics::events().presence.add("untrack");
        }
        self.reply(msg, Status::Ok, "{}");
    }
}
