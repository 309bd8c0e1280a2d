//! Phoenix channel frames: the pure codec between WebSocket messages and [`Inbound`] messages,
//! and the encoders for every frame the server sends.
//!
//! Two serializer versions exist (`vsn` query parameter):
//! - `1.0.0`: text frames holding a JSON object `{"topic","event","payload","ref","join_ref"}`.
//!   Server frames carry only `event, payload, ref, topic` (never `join_ref`).
//! - `2.0.0`: text frames holding a JSON array `[join_ref, ref, topic, event, payload]`, plus binary
//!   frames (kind 3 user broadcast in, kind 4 user broadcast out; see [`binary`]).
//!
//! Nothing here does I/O and nothing panics on any input: a frame that does not parse is a
//! [`FrameError`] and the caller drops it, keeping the connection.

pub mod binary;
mod json;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

pub use binary::{Encoding, UserData, decode_binary, encode_user_broadcast};
pub use crate::json::{MAX_JSON_DEPTH, within_depth};

/// Serializer version chosen by the client at connect time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Vsn {
    V1,
    V2,
}

impl Vsn {
    /// Parses the `vsn` query parameter; absent means `1.0.0` as in Phoenix. Phoenix matches
    /// `~> 1.0.0` and `~> 2.0.0`, i.e. any `1.0.x` / `2.0.x`.
    pub fn parse(param: Option<&str>) -> Option<Vsn> {
        match param {
            None => Some(Vsn::V1),
            Some(v) if v == "1.0.0" || v.starts_with("1.0.") => Some(Vsn::V1),
            Some(v) if v == "2.0.0" || v.starts_with("2.0.") => Some(Vsn::V2),
            Some(_) => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Vsn::V1 => "1.0.0",
            Vsn::V2 => "2.0.0",
        }
    }
}

/// A decoded client message.
#[derive(Clone, Debug)]
pub struct Inbound {
    pub join_ref: Option<String>,
    pub msg_ref: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Payload,
}

/// The payload of a client message.
#[derive(Clone, Debug)]
pub enum Payload {
    /// Any JSON text frame payload, kept unparsed.
    Json(Box<RawValue>),
    /// A binary kind 3 frame: a user broadcast; the message event is `broadcast`.
    UserBroadcast { event: String, data: UserData },
    /// A binary kind 0 push with an opaque payload (not sent by realtime-js).
    Binary(Bytes),
}

impl Payload {
    pub fn as_json(&self) -> Option<&RawValue> {
        match self {
            Payload::Json(raw) => Some(raw),
            _ => None,
        }
    }
}

/// Why a client frame was dropped.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame is not valid JSON for serializer {0}")]
    Json(&'static str),
    #[error("frame does not have the expected shape: {0}")]
    Shape(&'static str),
    #[error("binary frames need vsn 2.0.0")]
    BinaryOnV1,
    #[error("binary frame kind {0} is not accepted from clients")]
    BinaryKind(u8),
    #[error("binary frame is shorter than its header says")]
    Truncated,
    #[error("binary frame field is not UTF-8")]
    Utf8,
    #[error("binary frame encoding {0} is unknown")]
    Encoding(u8),
    #[error("JSON nests deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
}

/// Decodes a text frame.
pub fn decode_text(vsn: Vsn, text: &str) -> Result<Inbound, FrameError> {
    // Checked before parsing, so that no deeper value is ever parsed, stored or relayed.
    if !within_depth(text.as_bytes(), MAX_JSON_DEPTH) {
        return Err(FrameError::TooDeep);
    }
    match vsn {
        Vsn::V1 => decode_v1(text),
        Vsn::V2 => decode_v2(text),
    }
}

/// Decodes a binary frame (vsn 2.0.0 only).
pub fn decode_binary_frame(vsn: Vsn, data: Bytes) -> Result<Inbound, FrameError> {
    match vsn {
        Vsn::V1 => Err(FrameError::BinaryOnV1),
        Vsn::V2 => decode_binary(data),
    }
}

#[derive(Deserialize)]
struct V1Frame {
    topic: String,
    event: String,
    payload: Box<RawValue>,
    #[serde(rename = "ref", default, deserialize_with = "json::opt_ref")]
    msg_ref: Option<String>,
    #[serde(default, deserialize_with = "json::opt_ref")]
    join_ref: Option<String>,
}

fn decode_v1(text: &str) -> Result<Inbound, FrameError> {
    let frame: V1Frame = serde_json::from_str(text).map_err(|_| FrameError::Json("1.0.0"))?;
    Ok(Inbound {
        join_ref: frame.join_ref,
        msg_ref: frame.msg_ref,
        topic: frame.topic,
        event: frame.event,
        payload: Payload::Json(frame.payload),
    })
}

fn decode_v2(text: &str) -> Result<Inbound, FrameError> {
    let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|_| FrameError::Json("2.0.0"))?;
    // `[join_ref, ref, topic, event, payload | _]`: extra elements are ignored, as Phoenix does.
    let [join_ref, msg_ref, topic, event, payload, ..] = items.as_slice() else {
        return Err(FrameError::Shape(
            "expected [join_ref, ref, topic, event, payload]",
        ));
    };
    let parse_ref = |raw: &RawValue| -> Result<Option<String>, FrameError> {
        json::ref_from_raw(raw).ok_or(FrameError::Shape("refs must be strings, integers or null"))
    };
    let string = |raw: &RawValue, what: &'static str| -> Result<String, FrameError> {
        serde_json::from_str::<String>(raw.get()).map_err(|_| FrameError::Shape(what))
    };
    Ok(Inbound {
        join_ref: parse_ref(join_ref)?,
        msg_ref: parse_ref(msg_ref)?,
        topic: string(topic, "topic must be a string")?,
        event: string(event, "event must be a string")?,
        payload: Payload::Json((*payload).to_owned()),
    })
}

/// Encodes a server push or reply as a text frame.
///
/// `payload` must be JSON text (the callers build it with serde or splice raw values that were
/// validated on the way in). v1 frames omit `join_ref`, as Phoenix's V1 serializer does.
pub fn encode_text(
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    event: &str,
    payload: &str,
) -> String {
    let mut out = String::with_capacity(payload.len() + topic.len() + event.len() + 48);
    match vsn {
        Vsn::V1 => {
            out.push_str("{\"event\":");
            crate::json::write_string(event, &mut out);
            out.push_str(",\"payload\":");
            out.push_str(payload);
            out.push_str(",\"ref\":");
            write_opt_str(&mut out, msg_ref);
            out.push_str(",\"topic\":");
            crate::json::write_string(topic, &mut out);
            out.push('}');
        }
        Vsn::V2 => {
            out.push('[');
            write_opt_str(&mut out, join_ref);
            out.push(',');
            write_opt_str(&mut out, msg_ref);
            out.push(',');
            crate::json::write_string(topic, &mut out);
            out.push(',');
            crate::json::write_string(event, &mut out);
            out.push(',');
            out.push_str(payload);
            out.push(']');
        }
    }
    out
}

/// Reply status of a `phx_reply`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Error,
}

/// Encodes a `phx_reply` whose payload is `{"status":…,"response":<response>}`.
pub fn encode_reply(
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    status: Status,
    response: &str,
) -> String {
    let status = match status {
        Status::Ok => "\"ok\"",
        Status::Error => "\"error\"",
    };
    let mut payload = String::with_capacity(response.len() + 32);
    match vsn {
        // Phoenix's V1 serializer emits map keys in sorted order.
        Vsn::V1 => {
            payload.push_str("{\"response\":");
            payload.push_str(response);
            payload.push_str(",\"status\":");
            payload.push_str(status);
        }
        Vsn::V2 => {
            payload.push_str("{\"status\":");
            payload.push_str(status);
            payload.push_str(",\"response\":");
            payload.push_str(response);
        }
    }
    payload.push('}');
    encode_text(vsn, join_ref, msg_ref, topic, "phx_reply", &payload)
}

fn write_opt_str(out: &mut String, value: Option<&str>) {
    match value {
        Some(v) => crate::json::write_string(v, out),
        None => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests;
