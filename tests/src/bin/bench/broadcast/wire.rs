//! The wire protocols the load generator speaks: the realtime server's (Phoenix channels) and
//! those of the peer servers of the `peers` benchmark, so that one client drives them all with
//! the same workload.
//!
//! Each protocol gives the same four steps: a greeting after the WebSocket handshake (if any), a
//! subscribe request and its acknowledgement, a publish frame, and a count of the deliveries in
//! one received frame (with a reply to keep-alive pings where the protocol has them).
//! - `phoenix`: realtime's `phx_join` and broadcast (see [`super::clients`]).
//! - `plain`: the minimal text protocol of the uWebSockets.js and ws peers
//!   (`tests/bench-peers/*.mjs`): `sub <topic>` → `subscribed <topic>`; `pub <topic> <payload>`
//!   → `<payload>` to every other subscriber.
//! - `socketio`: engine.io v4 framing over WebSocket with Socket.IO packets: the server opens
//!   with `0{...}`, the client connects to the main namespace with `40` (answered `40{...}`),
//!   events are `42["name",...]`; the server pings with `2`, the client answers `3`.
//! - `nats`: the NATS text protocol over its WebSocket listener: `CONNECT {...}`, `SUB`, `PUB`,
//!   `PING`/`PONG`; the server may pack several `MSG`s into one frame or split one across two,
//!   so deliveries are counted by a streaming parser ([`NatsReader`]).

use anyhow::{Context, bail};
use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message;

use super::clients::{Vsn, broadcast_frame, join_frame, user_payload};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Phoenix(Vsn),
    Plain,
    SocketIo,
    Nats,
}

/// What one received frame means to a subscriber.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    pub deliveries: u64,
    /// A keep-alive answer to send back.
    pub reply: Option<Message>,
}

impl Wire {
    /// `wire=` of the load generator's arguments; `vsn` applies to `phoenix`.
    pub fn parse(name: &str, vsn: Vsn) -> anyhow::Result<Wire> {
        match name {
            "phoenix" => Ok(Wire::Phoenix(vsn)),
            "plain" => Ok(Wire::Plain),
            "socketio" => Ok(Wire::SocketIo),
            "nats" => Ok(Wire::Nats),
            other => bail!("wire must be phoenix, plain, socketio or nats, got {other:?}"),
        }
    }

    /// The frame sent right after the WebSocket handshake; the greeting ends at the first frame
    /// for which [`Wire::ends_greeting`] holds.
    pub fn greeting(self) -> Option<Message> {
        match self {
            Wire::Phoenix(_) | Wire::Plain => None,
            Wire::SocketIo => Some(Message::text("40")),
            // `PING` makes the server answer once it has taken the CONNECT.
            Wire::Nats => Some(Message::binary(
                &b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"echo\":false}\r\nPING\r\n"
                    [..],
            )),
        }
    }

    pub fn ends_greeting(self, message: &Message) -> bool {
        match self {
            Wire::Phoenix(_) | Wire::Plain => true,
            Wire::SocketIo => text_of(message).is_some_and(|t| t.starts_with("40")),
            Wire::Nats => contains(&bytes_of(message), b"PONG\r\n"),
        }
    }

    /// The subscribe request for `topic`; the subscription stands once [`Wire::acknowledges`]
    /// holds for a received frame.
    pub fn subscribe(self, topic: &str) -> Message {
        match self {
            Wire::Phoenix(vsn) => Message::text(join_frame(vsn, topic)),
            Wire::Plain => Message::text(format!("sub {topic}")),
            Wire::SocketIo => Message::text(format!("42[\"join\",{}]", json_string(topic))),
            Wire::Nats => Message::binary(format!("SUB {topic} 1\r\nPING\r\n").into_bytes()),
        }
    }

    /// Whether `message` acknowledges the subscription; an error if it refuses it.
    pub fn acknowledges(self, message: &Message) -> anyhow::Result<bool> {
        match self {
            Wire::Phoenix(vsn) => phoenix_join_reply(vsn, message),
            Wire::Plain => Ok(text_of(message).is_some_and(|t| t.starts_with("subscribed "))),
            Wire::SocketIo => Ok(text_of(message).is_some_and(|t| t.starts_with("42[\"joined\""))),
            Wire::Nats => {
                let bytes = bytes_of(message);
                if bytes.starts_with(b"-ERR") {
                    bail!(
                        "NATS refused the subscription: {}",
                        String::from_utf8_lossy(&bytes)
                    );
                }
                Ok(contains(&bytes, b"PONG\r\n"))
            }
        }
    }

    /// Message `seq` of `len` payload bytes to `topic`.
    pub fn publish(self, topic: &str, reference: &str, seq: u64, len: usize) -> Message {
        let payload = user_payload(seq, len);
        match self {
            Wire::Phoenix(vsn) => broadcast_frame(vsn, topic, reference, seq, len),
            Wire::Plain => Message::text(format!("pub {topic} {payload}")),
            Wire::SocketIo => Message::text(format!("42[\"pub\",{},{payload}]", json_string(topic))),
            Wire::Nats => {
                Message::binary(format!("PUB {topic} {}\r\n{payload}\r\n", payload.len()).into_bytes())
            }
        }
    }
}

/// Counts the deliveries in the frames one subscriber receives.
#[derive(Debug)]
pub struct Deliveries {
    wire: Wire,
    nats: NatsReader,
}

impl Deliveries {
    pub fn new(wire: Wire) -> Deliveries {
        Deliveries {
            wire,
            nats: NatsReader::default(),
        }
    }

    pub fn receive(&mut self, message: &Message) -> anyhow::Result<Received> {
        let one = |hit: bool| Received {
            deliveries: u64::from(hit),
            reply: None,
        };
        Ok(match (self.wire, message) {
            // Kind 4: user broadcast.
            (Wire::Phoenix(Vsn::V2), Message::Binary(b)) => one(b.first() == Some(&4)),
            (Wire::Phoenix(_), Message::Text(t)) => one(t.contains("\"broadcast\"")),
            (Wire::Plain, Message::Text(t)) => one(!t.starts_with("subscribed ")),
            (Wire::SocketIo, Message::Text(t)) if t.as_str() == "2" => Received {
                deliveries: 0,
                reply: Some(Message::text("3")),
            },
            (Wire::SocketIo, Message::Text(t)) => one(t.starts_with("42[\"msg\"")),
            (Wire::Nats, Message::Binary(_) | Message::Text(_)) => {
                let seen = self.nats.feed(&bytes_of(message))?;
                Received {
                    deliveries: seen.messages,
                    reply: (seen.pings > 0).then(|| Message::binary(&b"PONG\r\n"[..])),
                }
            }
            _ => Received::default(),
        })
    }
}

/// What a run of NATS protocol bytes held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NatsSeen {
    pub messages: u64,
    pub pings: u64,
}

/// A streaming reader of NATS server operations: whole `MSG` operations (header line plus
/// payload) and `PING`s, across frame boundaries; other operations are skipped.
#[derive(Debug, Default)]
pub struct NatsReader {
    pending: Vec<u8>,
}

impl NatsReader {
    pub fn feed(&mut self, bytes: &[u8]) -> anyhow::Result<NatsSeen> {
        self.pending.extend_from_slice(bytes);
        let mut seen = NatsSeen::default();
        let mut at = 0;
        while let Some(eol) = find(&self.pending[at..], b"\r\n") {
            let line = &self.pending[at..at + eol];
            let mut end = at + eol + 2;
            if line.starts_with(b"MSG ") {
                // `MSG <subject> <sid> [reply-to] <#bytes>`: the payload and its CRLF follow.
                let size: usize = std::str::from_utf8(line)
                    .ok()
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|n| n.parse().ok())
                    .context("NATS MSG line without a byte count")?;
                end = end
                    .checked_add(size)
                    .and_then(|e| e.checked_add(2))
                    .context("NATS MSG size out of range")?;
                if end > self.pending.len() {
                    break;
                }
                seen.messages += 1;
            } else if line == b"PING" {
                seen.pings += 1;
            } else if line.starts_with(b"-ERR") {
                bail!("NATS error: {}", String::from_utf8_lossy(line));
            }
            at = end;
        }
        self.pending.drain(..at);
        Ok(seen)
    }
}

fn phoenix_join_reply(vsn: Vsn, message: &Message) -> anyhow::Result<bool> {
    let Some(text) = text_of(message) else {
        return Ok(false);
    };
    let value: serde_json::Value = serde_json::from_str(text)?;
    let (event, reference, payload) = match vsn {
        Vsn::V1 => (&value["event"], &value["ref"], &value["payload"]),
        Vsn::V2 => (&value[3], &value[1], &value[4]),
    };
    if event == "phx_reply" && reference == "1" {
        if payload["status"] == "ok" {
            return Ok(true);
        }
        bail!("join refused: {payload}");
    }
    Ok(false)
}

fn text_of(message: &Message) -> Option<&str> {
    match message {
        Message::Text(t) => Some(t.as_str()),
        _ => None,
    }
}

fn bytes_of(message: &Message) -> Bytes {
    match message {
        Message::Text(t) => Bytes::copy_from_slice(t.as_bytes()),
        Message::Binary(b) => b.clone(),
        _ => Bytes::new(),
    }
}

fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_reader_counts_messages_across_frame_boundaries() {
        let stream =
            b"INFO {\"x\":1}\r\nMSG t 1 5\r\nhello\r\nPING\r\nMSG t 1 reply 3\r\nabc\r\nMSG t 1 2\r\nxy\r\n";
        // Every split point: the counts must not depend on how the server cut its frames.
        for cut in 0..=stream.len() {
            let mut reader = NatsReader::default();
            let a = reader.feed(&stream[..cut]).expect("valid");
            let b = reader.feed(&stream[cut..]).expect("valid");
            assert_eq!(a.messages + b.messages, 3, "cut at {cut}");
            assert_eq!(a.pings + b.pings, 1, "cut at {cut}");
        }
    }

    #[test]
    fn nats_reader_rejects_a_message_without_a_size_and_server_errors() {
        assert!(NatsReader::default().feed(b"MSG t 1 x\r\n").is_err());
        assert!(
            NatsReader::default()
                .feed(b"MSG t 1 99999999999999999999999\r\n")
                .is_err()
        );
        assert!(NatsReader::default().feed(b"-ERR 'Slow Consumer'\r\n").is_err());
    }

    #[test]
    fn socketio_frames_follow_the_engine_io_v4_packet_format() {
        assert_eq!(
            Wire::SocketIo.subscribe("fan\"out"),
            Message::text("42[\"join\",\"fan\\\"out\"]")
        );
        let Message::Text(publish) = Wire::SocketIo.publish("t", "2", 7, 40) else {
            panic!("text frame expected")
        };
        let value: serde_json::Value = serde_json::from_str(&publish[2..]).expect("JSON array");
        assert_eq!(value[0], "pub");
        assert_eq!(value[2]["seq"], 7);
        let mut d = Deliveries::new(Wire::SocketIo);
        let ping = d.receive(&Message::text("2")).expect("ping");
        assert_eq!((ping.deliveries, ping.reply), (0, Some(Message::text("3"))));
        let msg = d.receive(&Message::text("42[\"msg\",{\"seq\":1}]")).expect("msg");
        assert_eq!(msg.deliveries, 1);
        assert_eq!(
            d.receive(&Message::text("42[\"joined\",\"t\"]"))
                .expect("ack")
                .deliveries,
            0
        );
    }

    #[test]
    fn nats_publish_states_the_payload_length() {
        let Message::Binary(frame) = Wire::Nats.publish("t", "1", 3, 50) else {
            panic!("binary frame expected")
        };
        let text = std::str::from_utf8(&frame).expect("utf-8");
        let (head, rest) = text.split_once("\r\n").expect("header line");
        assert_eq!(head, "PUB t 50");
        assert_eq!(rest.len(), 52);
    }
}
