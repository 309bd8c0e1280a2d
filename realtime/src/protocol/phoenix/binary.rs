//! Binary frames of serializer 2.0.0.
//!
//! The first byte is the kind; the header lengths are single bytes (so each string is at most
//! 255 bytes of UTF-8) and the strings follow without separators:
//! - kind 0, client push: `0, jr_len, ref_len, topic_len, event_len, join_ref, ref, topic, event, data…`
//! - kind 3, client user broadcast:
//!   `3, jr_len, ref_len, topic_len, event_len, meta_len, enc, join_ref, ref, topic, event, meta, data…`
//! - kind 4, server user broadcast: `4, topic_len, event_len, meta_len, enc, topic, event, meta, data…`
//!
//! `enc` is 0 for an opaque binary payload and 1 for JSON text. Client metadata is read past and
//! ignored, as Supabase does. An empty ref string decodes as no ref.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;

use super::{FrameError, Inbound, Payload};

const KIND_PUSH: u8 = 0;
const KIND_USER_BROADCAST_PUSH: u8 = 3;
const KIND_USER_BROADCAST: u8 = 4;

/// How a user broadcast payload is encoded on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Binary = 0,
    Json = 1,
}

/// A user broadcast payload: JSON (validated) or opaque bytes.
#[derive(Clone, Debug)]
pub enum UserData {
    Json(Box<RawValue>),
    Binary(Bytes),
}

impl UserData {
    pub fn encoding(&self) -> Encoding {
        match self {
            UserData::Json(_) => Encoding::Json,
            UserData::Binary(_) => Encoding::Binary,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            UserData::Json(raw) => raw.get().as_bytes(),
            UserData::Binary(b) => b,
        }
    }

    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }
}

/// Reads length-prefixed fields off a binary frame without ever indexing out of bounds.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, FrameError> {
        let b = *self.data.get(self.pos).ok_or(FrameError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn bytes(&mut self, len: u8) -> Result<&'a [u8], FrameError> {
        let end = self.pos + usize::from(len);
        let slice = self.data.get(self.pos..end).ok_or(FrameError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn string(&mut self, len: u8) -> Result<String, FrameError> {
        let bytes = self.bytes(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| FrameError::Utf8)
    }

    fn opt_ref(&mut self, len: u8) -> Result<Option<String>, FrameError> {
        self.string(len)
            .map(|s| if s.is_empty() { None } else { Some(s) })
    }
}

/// Decodes a client binary frame (kinds 0 and 3).
pub fn decode_binary(frame: Bytes) -> Result<Inbound, FrameError> {
    let mut r = Reader { data: &frame, pos: 0 };
    match r.byte()? {
        KIND_PUSH => {
            let (jr_len, ref_len, topic_len, event_len) = (r.byte()?, r.byte()?, r.byte()?, r.byte()?);
            let join_ref = r.opt_ref(jr_len)?;
            let msg_ref = r.opt_ref(ref_len)?;
            let topic = r.string(topic_len)?;
            let event = r.string(event_len)?;
            let data = frame.slice(r.pos..);
            Ok(Inbound {
                join_ref,
                msg_ref,
                topic,
                event,
                payload: Payload::Binary(data),
            })
        }
        KIND_USER_BROADCAST_PUSH => {
            let (jr_len, ref_len, topic_len, event_len, meta_len, enc) =
                (r.byte()?, r.byte()?, r.byte()?, r.byte()?, r.byte()?, r.byte()?);
            let join_ref = r.opt_ref(jr_len)?;
            let msg_ref = r.opt_ref(ref_len)?;
            let topic = r.string(topic_len)?;
            let user_event = r.string(event_len)?;
            let persist = asks_persist(r.bytes(meta_len)?);
            let rest = frame.slice(r.pos..);
            let data = match enc {
                0 => UserData::Binary(rest),
                1 => {
                    if !super::within_depth(&rest, super::MAX_JSON_DEPTH) {
                        return Err(FrameError::TooDeep);
                    }
                    let text = std::str::from_utf8(&rest).map_err(|_| FrameError::Utf8)?;
                    let raw = RawValue::from_string(text.to_owned())
                        .map_err(|_| FrameError::Json("2.0.0 binary"))?;
                    UserData::Json(raw)
                }
                other => return Err(FrameError::Encoding(other)),
            };
            Ok(Inbound {
                join_ref,
                msg_ref,
                topic,
                event: "broadcast".to_owned(),
                payload: Payload::UserBroadcast {
                    event: user_event,
                    data,
                    persist,
                },
            })
        }
        other => Err(FrameError::BinaryKind(other)),
    }
}

/// Whether kind 3 metadata (`{"persist":true}` or `{"persist":{"ttl":60}}`, realtime-js's only
/// metadata) asks for the message to be stored. Other metadata is ignored.
fn asks_persist(meta: &[u8]) -> bool {
    if meta.is_empty() {
        return false;
    }
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(meta)
        .ok()
        .and_then(|m| m.get("persist").cloned())
        .is_some_and(|v| !matches!(v, serde_json::Value::Null | serde_json::Value::Bool(false)))
}

/// Encodes a kind 4 user broadcast. `meta` is JSON object text or empty. Returns `None` when
/// the topic, event or metadata is longer than 255 bytes (the caller then sends a text frame).
pub fn encode_user_broadcast(topic: &str, event: &str, meta: &str, data: &UserData) -> Option<Bytes> {
    let topic_len = u8::try_from(topic.len()).ok()?;
    let event_len = u8::try_from(event.len()).ok()?;
    let meta_len = u8::try_from(meta.len()).ok()?;
    let payload = data.as_bytes();
    let mut out = BytesMut::with_capacity(5 + topic.len() + event.len() + meta.len() + payload.len());
    out.put_u8(KIND_USER_BROADCAST);
    out.put_u8(topic_len);
    out.put_u8(event_len);
    out.put_u8(meta_len);
    out.put_u8(data.encoding() as u8);
    out.put_slice(topic.as_bytes());
    out.put_slice(event.as_bytes());
    out.put_slice(meta.as_bytes());
    out.put_slice(payload);
    Some(out.freeze())
}
