//! Broadcast messages: what a client (text or binary frame), the REST API or a database sends to
//! a channel, and how one message is encoded for each serializer version.
//!
//! A message is encoded at most once per serializer version, whatever the number of receivers
//! (see `channels::event`): v2 receivers get a binary kind 4 frame when the message fits one,
//! v1 receivers a JSON text frame. Binary payloads cannot be expressed in v1 JSON and are not
//! delivered to v1 receivers, as in Supabase.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::protocol::phoenix::{self, UserData, Vsn};
use crate::protocol::ws_frame;

/// The event name of every broadcast frame.
pub(crate) const EVENT: &str = "broadcast";

/// Why a broadcast with `persist` is refused (REST and WebSocket).
pub(crate) const PERSIST_UNSUPPORTED: &str =
    "UnableToPersistMessage: this server does not store client broadcasts; send without persist";
/// One broadcast message.
#[derive(Clone, Debug)]
pub struct Broadcast {
    /// The user event (`payload.event` in the JSON shape).
    pub event: String,
    pub body: Body,
    /// JSON object text sent as `meta` (e.g. `{"id":"…"}` for REST messages with an id).
    pub meta: Option<Box<RawValue>>,
}

#[derive(Clone, Debug)]
pub enum Body {
    /// The user payload, JSON or opaque bytes.
    Data(UserData),
    /// A client's JSON object that does not have exactly the `{type, event, payload}` shape:
    /// passed through unchanged as the text payload (Supabase re-publishes the map as is).
    Verbatim(Box<RawValue>),
}

impl Broadcast {
    /// From the payload of a text `broadcast` push,
    /// `{"type":"broadcast","event":"<e>","payload":<any>}`. `None` when it is not an object.
    pub fn from_client_json(payload: &RawValue) -> Option<Broadcast> {
        let fields: HashMap<String, &RawValue> = serde_json::from_str(payload.get()).ok()?;
        let event = fields
            .get("event")
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
        let is_broadcast = fields
            .get("type")
            .is_some_and(|raw| serde_json::from_str::<String>(raw.get()).is_ok_and(|t| t == EVENT));
        let canonical = fields.len() == 3 && is_broadcast && fields.contains_key("payload");
        match (event, fields.get("payload")) {
            (Some(event), Some(inner)) if canonical => Some(Broadcast {
                event,
                body: Body::Data(UserData::Json((*inner).to_owned())),
                meta: None,
            }),
            (event, _) => Some(Broadcast {
                event: event.unwrap_or_default(),
                body: Body::Verbatim(payload.to_owned()),
                meta: None,
            }),
        }
    }

    /// From a binary kind 3 frame or a REST message.
    pub fn from_data(event: String, data: UserData) -> Broadcast {
        Broadcast {
            event,
            body: Body::Data(data),
            meta: None,
        }
    }

    /// Size of the user payload, checked against `max_payload_size_kb`.
    pub fn payload_size(&self) -> usize {
        match &self.body {
            Body::Data(data) => data.len(),
            Body::Verbatim(raw) => raw.get().len(),
        }
    }

    /// The JSON payload of a text `broadcast` frame; `None` for binary payloads.
    pub fn text_payload(&self) -> Option<String> {
        match &self.body {
            Body::Verbatim(raw) => Some(raw.get().to_owned()),
            Body::Data(UserData::Binary(_)) => None,
            Body::Data(UserData::Json(inner)) => {
                let meta = self.meta.as_deref().map(RawValue::get);
                let mut out = String::with_capacity(
                    inner.get().len() + self.event.len() + 48 + meta.map_or(0, str::len),
                );
                out.push_str("{\"event\":");
                crate::json::write_string(&self.event, &mut out);
                if let Some(meta) = meta {
                    out.push_str(",\"meta\":");
                    out.push_str(meta);
                }
                out.push_str(",\"payload\":");
                out.push_str(inner.get());
                out.push_str(",\"type\":\"broadcast\"}");
                Some(out)
            }
        }
    }

    /// The WebSocket frame for receivers speaking `vsn` on `wire_topic`, or `None` when this
    /// message cannot be delivered to them.
    pub fn encode(&self, vsn: Vsn, wire_topic: &str) -> Option<Bytes> {
        if let (Vsn::V2, Body::Data(data)) = (vsn, &self.body) {
            let meta = self.meta.as_deref().map_or("", RawValue::get);
            if let Some(frame) = phoenix::encode_user_broadcast(wire_topic, &self.event, meta, data) {
                return Some(ws_frame::binary(&frame));
            }
        }
        let payload = self.text_payload()?;
        Some(ws_frame::text(&phoenix::encode_text(
            vsn, None, None, wire_topic, EVENT, &payload,
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::protocol::ws_frame::{OpCode, decode_server};

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn text(f: Bytes) -> String {
        let (opcode, payload) = decode_server(&f).unwrap();
        assert_eq!(opcode, OpCode::Text);
        String::from_utf8(payload.to_vec()).unwrap()
    }

    fn binary(f: Option<Bytes>) -> Option<Vec<u8>> {
        let f = f?;
        let (opcode, payload) = decode_server(&f).unwrap();
        (opcode == OpCode::Binary).then(|| payload.to_vec())
    }

    #[test]
    fn canonical_client_payload_goes_out_as_kind4_for_v2_and_json_for_v1() {
        let b = Broadcast::from_client_json(&raw(r#"{"type":"broadcast","event":"pos","payload":{"x":1}}"#))
            .unwrap();
        assert_eq!(b.event, "pos");
        let Some(frame) = binary(b.encode(Vsn::V2, "realtime:room")) else {
            panic!("binary")
        };
        let mut want = vec![4u8, 13, 3, 0, 1];
        want.extend_from_slice(b"realtime:roompos{\"x\":1}");
        assert_eq!(frame.to_vec(), want);
        let v1: serde_json::Value =
            serde_json::from_str(&text(b.encode(Vsn::V1, "realtime:room").unwrap())).unwrap();
        assert_eq!(
            v1,
            serde_json::json!({"event":"broadcast","ref":null,"topic":"realtime:room",
                "payload":{"type":"broadcast","event":"pos","payload":{"x":1}}})
        );
    }

    #[test]
    fn other_shapes_pass_through_verbatim_as_text() {
        let original = r#"{"type":"broadcast","event":"e","payload":1,"extra":true}"#;
        let b = Broadcast::from_client_json(&raw(original)).unwrap();
        assert_eq!(
            text(b.encode(Vsn::V2, "realtime:r").unwrap()),
            format!("[null,null,\"realtime:r\",\"broadcast\",{original}]")
        );
        assert!(Broadcast::from_client_json(&raw("[1,2]")).is_none());
        assert!(Broadcast::from_client_json(&raw("\"x\"")).is_none());
    }

    #[test]
    fn binary_payloads_are_not_delivered_to_v1() {
        let b = Broadcast::from_data("bin".into(), UserData::Binary(Bytes::from_static(&[1, 2, 3])));
        assert!(b.encode(Vsn::V1, "realtime:r").is_none());
        assert!(binary(b.encode(Vsn::V2, "realtime:r")).is_some());
        assert_eq!(b.payload_size(), 3);
    }

    #[test]
    fn meta_goes_into_both_encodings() {
        let mut b = Broadcast::from_data("e".into(), UserData::Json(raw("{}")));
        b.meta = Some(raw(r#"{"id":"abc"}"#));
        let v1: serde_json::Value =
            serde_json::from_str(&text(b.encode(Vsn::V1, "realtime:r").unwrap())).unwrap();
        assert_eq!(v1["payload"]["meta"]["id"], "abc");
        let Some(frame) = binary(b.encode(Vsn::V2, "realtime:r")) else {
            panic!()
        };
        assert_eq!(frame[3], 12, "metadata length");
    }

    #[test]
    fn events_too_long_for_kind4_fall_back_to_text() {
        let b = Broadcast::from_data("e".repeat(300), UserData::Json(raw("{}")));
        let frame = text(b.encode(Vsn::V2, "realtime:r").unwrap());
        assert!(frame.starts_with("[null,null,\"realtime:r\",\"broadcast\",{\"event\":\"eee"));
    }
}
