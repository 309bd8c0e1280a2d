//! What nodes of a cluster send each other about channels: subjects, headers and bodies. Pure.
//!
//! A broadcast travels in a small binary body so its payload keeps its bytes (JSON text as sent,
//! or opaque binary); everything else is JSON, readable with `nats sub 'rt.main.>'`. Bodies
//! come from the network: decoding never panics, whatever the bytes.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::broadcast::{Body, Broadcast};
use crate::channels::TopicKey;
use crate::cluster::{subject, topic_from_token, topic_token};
use crate::protocol::phoenix::UserData;

/// Header naming the node a message comes from.
pub(crate) const NODE: &str = "Rt-Node";
/// Header with the sending node's incarnation (decimal).
pub(crate) const INCARNATION: &str = "Rt-Inc";
/// Header saying what the body is: [`BROADCAST`], [`PRESENCE`] or [`PRESENCE_HEAD`].
pub(crate) const KIND: &str = "Rt-Kind";
pub(crate) const BROADCAST: &str = "broadcast";
pub(crate) const PRESENCE: &str = "presence";
/// The number of the sending node's last presence diff of the topic ([`PresenceHead`]).
pub(crate) const PRESENCE_HEAD: &str = "presence_head";

const VERSION: u8 = 1;

/// `rt.<c>.ch.<public|private>.<topic64>`: broadcasts and presence diffs of one topic. Public
/// and private channels of one name are different topics, so they have different subjects.
pub(crate) fn topic_subject(cluster: &str, topic: &TopicKey) -> String {
    subject(cluster, &format!("ch.{}", topic_tokens(topic)))
}

/// `rt.<c>.presence.state.<public|private>.<topic64>`: asks every node for its entries.
pub(crate) fn state_subject(cluster: &str, topic: &TopicKey) -> String {
    subject(cluster, &format!("presence.state.{}", topic_tokens(topic)))
}

/// Every node's state requests: `rt.<c>.presence.state.>`.
pub(crate) fn state_requests(cluster: &str) -> String {
    subject(cluster, "presence.state.>")
}

fn topic_tokens(topic: &TopicKey) -> String {
    let visibility = if topic.is_private() { "private" } else { "public" };
    format!("{visibility}.{}", topic_token(topic.sub_topic()))
}

/// The topic of a state request's subject; `None` for a subject no node would send.
pub(crate) fn topic_of_state_subject(subject: &str) -> Option<TopicKey> {
    let mut tokens = subject.rsplit('.');
    let token = tokens.next()?;
    let private = match tokens.next()? {
        "private" => true,
        "public" => false,
        _ => return None,
    };
    Some(TopicKey::new(&topic_from_token(token)?, private))
}

/// Why a body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum WireError {
    #[error("broadcast body is truncated")]
    Truncated,
    #[error("broadcast body has unknown version {0}")]
    Version(u8),
    #[error("broadcast body has unknown payload kind {0}")]
    Kind(u8),
    #[error("broadcast event name is not UTF-8")]
    Event,
    #[error("broadcast {0} is not valid JSON")]
    Json(&'static str),
}

/// A broadcast as one body: version, payload kind (0 JSON, 1 binary, 2 a client's object kept
/// verbatim), u16 event length and event, u32 meta length and meta (0: none), then the payload.
pub(crate) fn encode_broadcast(b: &Broadcast) -> Bytes {
    let (kind, payload): (u8, &[u8]) = match &b.body {
        Body::Data(UserData::Json(raw)) => (0, raw.get().as_bytes()),
        Body::Data(UserData::Binary(bytes)) => (1, bytes),
        Body::Verbatim(raw) => (2, raw.get().as_bytes()),
    };
    // Event names are short; one longer than the u16 can say is cut at a character boundary.
    let mut end = b.event.len().min(usize::from(u16::MAX));
    while !b.event.is_char_boundary(end) {
        end -= 1;
    }
    let event = &b.event.as_bytes()[..end];
    let meta = b.meta.as_deref().map_or("", RawValue::get).as_bytes();
    let mut out = BytesMut::with_capacity(8 + event.len() + meta.len() + payload.len());
    out.put_u8(VERSION);
    out.put_u8(kind);
    out.put_u16(event.len() as u16);
    out.put_slice(event);
    out.put_u32(meta.len() as u32);
    out.put_slice(meta);
    out.put_slice(payload);
    out.freeze()
}

pub(crate) fn decode_broadcast(body: &Bytes) -> Result<Broadcast, WireError> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], WireError> {
        let part = body.get(at..at.checked_add(n).ok_or(WireError::Truncated)?);
        at += n;
        part.ok_or(WireError::Truncated)
    };
    let version = take(1)?[0];
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let kind = take(1)?[0];
    let event_len = u16::from_be_bytes([take(1)?[0], take(1)?[0]]);
    let event = std::str::from_utf8(take(usize::from(event_len))?)
        .map_err(|_| WireError::Event)?
        .to_owned();
    let meta_len = u32::from_be_bytes(take(4)?.try_into().map_err(|_| WireError::Truncated)?);
    let meta = take(meta_len as usize)?;
    let meta = match meta {
        [] => None,
        json => Some(serde_json::from_slice::<Box<RawValue>>(json).map_err(|_| WireError::Json("meta"))?),
    };
    let payload = body.slice(at..);
    let json =
        |bytes: &[u8]| serde_json::from_slice::<Box<RawValue>>(bytes).map_err(|_| WireError::Json("payload"));
    let body = match kind {
        0 => Body::Data(UserData::Json(json(&payload)?)),
        1 => Body::Data(UserData::Binary(payload)),
        2 => Body::Verbatim(json(&payload)?),
        other => return Err(WireError::Kind(other)),
    };
    Ok(Broadcast { event, body, meta })
}

/// A numbered presence diff of the sending node (see `presence::remote`).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PresenceDiff<'a> {
    pub seq: u64,
    pub prev: u64,
    #[serde(borrow)]
    pub diff: &'a RawValue,
}

/// The number of the sending node's last presence diff of a topic, announced on the topic's
/// subject for a while after each change: a receiver holding less missed a diff.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct PresenceHead {
    pub seq: u64,
}

/// A node's answer to a state request: its own entries of the topic at counter `seq`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PresenceState<'a> {
    pub node: String,
    pub inc: u64,
    pub seq: u64,
    #[serde(borrow)]
    pub state: &'a RawValue,
}

/// A heartbeat (`rt.<c>.node.hb`) or goodbye (`rt.<c>.node.bye`).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct NodeAnnouncement {
    pub node: String,
    pub inc: u64,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn broadcasts_round_trip_with_their_bytes() {
        let mut json = Broadcast::from_data("move".into(), UserData::Json(raw("{\"x\": 1}")));
        json.meta = Some(raw("{\"id\":\"a\"}"));
        let binary = Broadcast::from_data("bin".into(), UserData::Binary(Bytes::from_static(&[0, 255, 7])));
        let verbatim =
            Broadcast::from_client_json(&raw("{\"type\":\"broadcast\",\"event\":\"e\",\"x\":2}")).unwrap();
        for b in [json, binary, verbatim] {
            let back = decode_broadcast(&encode_broadcast(&b)).unwrap();
            assert_eq!(back.event, b.event);
            assert_eq!(format!("{:?}", back.body), format!("{:?}", b.body));
            assert_eq!(
                back.meta.as_deref().map(RawValue::get),
                b.meta.as_deref().map(RawValue::get)
            );
        }
    }

    #[test]
    fn bad_bodies_are_errors() {
        let good = encode_broadcast(&Broadcast::from_data("e".into(), UserData::Json(raw("[1]"))));
        for n in 0..good.len() {
            assert!(decode_broadcast(&good.slice(..n)).is_err(), "truncated at {n}");
        }
        let mut wrong = good.to_vec();
        wrong[0] = 9;
        assert_eq!(
            decode_broadcast(&Bytes::from(wrong)).unwrap_err(),
            WireError::Version(9)
        );
        let mut wrong = good.to_vec();
        wrong[1] = 3;
        assert_eq!(
            decode_broadcast(&Bytes::from(wrong)).unwrap_err(),
            WireError::Kind(3)
        );
    }

    proptest::proptest! {
        /// Any bytes at all, and any bytes after a valid header: an error or a broadcast, never
        /// a panic; what decodes encodes to bytes that decode to the same.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            kind in 0u8..4,
        ) {
            let _ = decode_broadcast(&Bytes::from(body.clone()));
            let mut framed = vec![VERSION, kind];
            framed.extend_from_slice(&body);
            if let Ok(b) = decode_broadcast(&Bytes::from(framed)) {
                let encoded = encode_broadcast(&b);
                let again = decode_broadcast(&encoded).map(|b| encode_broadcast(&b));
                proptest::prop_assert_eq!(again, Ok(encoded));
            }
        }

        /// Presence bodies from other nodes: an error, never a panic.
        #[test]
        fn presence_bodies_never_panic(text in ".{0,200}") {
            let _ = serde_json::from_str::<PresenceDiff<'_>>(&text);
            let _ = serde_json::from_str::<PresenceState<'_>>(&text);
            let mut store = crate::presence::remote::RemoteEntries::default();
            let topic = TopicKey::new("t", false);
            let _ = store.apply_diff(&topic, "n", 1, 1, 0, &text);
            let _ = store.apply_state(&topic, "n", 1, 1, &text);
        }
    }

    #[test]
    fn topics_map_to_subjects_and_back() {
        let private = TopicKey::new("room.a b>*", true);
        let public = TopicKey::new("room.a b>*", false);
        assert_ne!(topic_subject("main", &private), topic_subject("main", &public));
        assert!(topic_subject("main", &public).starts_with("rt.main.ch.public."));
        for topic in [private, public] {
            assert_eq!(
                topic_of_state_subject(&state_subject("main", &topic)),
                Some(topic)
            );
        }
        assert_eq!(topic_of_state_subject("rt.main.presence.state.other.abc"), None);
        assert_eq!(topic_of_state_subject("x"), None);
    }
}
