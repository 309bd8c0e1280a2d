//! A Phoenix client over tokio-tungstenite for both serializers (vsn 1.0.0 JSON objects, vsn
//! 2.0.0 JSON arrays and binary user broadcasts): join, send, receive, decoded into [`Frame`]s.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a client waits for an expected frame.
pub const WAIT: Duration = Duration::from_secs(5);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a client received, decoded for either serializer version.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A Phoenix message: `[join_ref, ref, topic, event, payload]` (v1 frames have no join_ref:
    /// it is `Value::Null` and `v1` is true).
    Msg {
        join_ref: Value,
        msg_ref: Value,
        topic: String,
        event: String,
        payload: Value,
        v1: bool,
    },
    /// A binary kind 4 user broadcast.
    UserBroadcast {
        topic: String,
        event: String,
        meta: String,
        enc: u8,
        data: Vec<u8>,
    },
    Close(Option<u16>, String),
}

impl Frame {
    pub fn event(&self) -> &str {
        match self {
            Frame::Msg { event, .. } => event,
            Frame::UserBroadcast { .. } => "broadcast(binary)",
            Frame::Close(..) => "close",
        }
    }

    pub fn payload(&self) -> &Value {
        match self {
            Frame::Msg { payload, .. } => payload,
            other => panic!("not a message: {other:?}"),
        }
    }
}

/// The vsn 1.0.0 (or 2.0.0) URL of the socket at `127.0.0.1:port` with `token` as its apikey.
pub fn socket_url(port: u16, token: &str, vsn: &str) -> String {
    format!("ws://127.0.0.1:{port}/socket/websocket?apikey={token}&vsn={vsn}")
}

pub struct Client {
    pub ws: Ws,
    pub vsn: String,
    /// How long [`Client::recv`], [`Client::recv_event`], [`Client::recv_broadcast`] and
    /// [`Client::reply_to`] wait: [`WAIT`] unless a test sets more (a server with a database
    /// behind it answers a join after a policy check or a snapshot).
    pub patience: Duration,
    next_ref: u64,
}

impl Client {
    /// A client on an already open WebSocket.
    pub fn new(ws: Ws, vsn: &str) -> Client {
        Client {
            ws,
            vsn: vsn.to_owned(),
            patience: WAIT,
            next_ref: 0,
        }
    }

    pub async fn connect(url: &str, vsn: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
        Client {
            ws,
            vsn: vsn.to_owned(),
            patience: WAIT,
            next_ref: 0,
        }
    }

    pub async fn connect_with_header(url: &str, vsn: &str, key: &str) -> Result<Client, WsError> {
        let mut request = url.into_client_request()?;
        request
            .headers_mut()
            .insert("x-api-key", key.parse().expect("header"));
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Client {
            ws,
            vsn: vsn.to_owned(),
            patience: WAIT,
            next_ref: 0,
        })
    }

    pub fn v1(&self) -> bool {
        self.vsn == "1.0.0"
    }

    pub fn make_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    /// Sends a message; returns its ref.
    pub async fn send(&mut self, join_ref: Option<&str>, topic: &str, event: &str, payload: Value) -> String {
        let msg_ref = self.make_ref();
        let text = if self.v1() {
            json!({"topic": topic, "event": event, "payload": payload, "ref": msg_ref, "join_ref": join_ref})
        } else {
            json!([join_ref, msg_ref, topic, event, payload])
        };
        self.send_raw(Message::Text(text.to_string().into())).await;
        msg_ref
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// Sends a binary kind 3 user broadcast.
    pub async fn send_user_broadcast(
        &mut self,
        join_ref: &str,
        topic: &str,
        event: &str,
        enc: u8,
        data: &[u8],
    ) -> String {
        let msg_ref = self.make_ref();
        let mut frame = vec![
            3,
            join_ref.len() as u8,
            msg_ref.len() as u8,
            topic.len() as u8,
            event.len() as u8,
            0,
            enc,
        ];
        for part in [
            join_ref.as_bytes(),
            msg_ref.as_bytes(),
            topic.as_bytes(),
            event.as_bytes(),
            data,
        ] {
            frame.extend_from_slice(part);
        }
        self.send_raw(Message::Binary(frame.into())).await;
        msg_ref
    }

    /// Joins `topic` with `payload`; returns the join ref (the reply is not read).
    pub async fn join_raw(&mut self, topic: &str, payload: Value) -> String {
        let msg_ref = self.make_ref();
        let text = if self.v1() {
            json!({"topic": topic, "event": "phx_join", "payload": payload, "ref": msg_ref, "join_ref": msg_ref})
        } else {
            json!([msg_ref, msg_ref, topic, "phx_join", payload])
        };
        self.send_raw(Message::Text(text.to_string().into())).await;
        msg_ref
    }

    /// Joins and asserts an ok reply; returns the join ref.
    pub async fn join(&mut self, topic: &str, config: Value) -> String {
        let join_ref = self.join_raw(topic, json!({ "config": config })).await;
        let reply = self.recv_event("phx_reply").await;
        assert_eq!(
            reply.payload()["status"],
            "ok",
            "join of {topic} refused: {reply:?}"
        );
        join_ref
    }

    /// The next frame, or panic after [`Client::patience`].
    pub async fn recv(&mut self) -> Frame {
        match self.try_recv(self.patience).await {
            Some(frame) => frame,
            None => panic!("no frame within {:?}", self.patience),
        }
    }

    /// The next frame within `within`; `None` on timeout.
    pub async fn try_recv(&mut self, within: Duration) -> Option<Frame> {
        loop {
            let message = match tokio::time::timeout(within, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(Frame::Close(None, "connection ended".into())),
                Ok(Some(Err(e))) => return Some(Frame::Close(None, format!("error: {e}"))),
                Ok(Some(Ok(m))) => m,
            };
            match message {
                Message::Text(text) => return Some(decode_text(text.as_str())),
                Message::Binary(data) => return Some(decode_kind4(&data)),
                Message::Close(frame) => {
                    let (code, reason) = frame
                        .map(|CloseFrame { code, reason }| (Some(u16::from(code)), reason.to_string()))
                        .unwrap_or((None, String::new()));
                    return Some(Frame::Close(code, reason));
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            }
        }
    }

    /// Reads frames until one with `event` (others are returned in order, skipped here).
    pub async fn recv_event(&mut self, event: &str) -> Frame {
        let deadline = tokio::time::Instant::now() + self.patience;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_recv(left).await {
                Some(frame) if frame.event() == event => return frame,
                Some(Frame::Close(code, reason)) => {
                    panic!("closed ({code:?} {reason}) while waiting for {event}")
                }
                Some(_) => continue,
                None => panic!("no {event} within {:?}", self.patience),
            }
        }
    }

    /// Reads frames until a broadcast of `event` (text or binary), skipping others.
    pub async fn recv_broadcast(&mut self, event: &str) -> Frame {
        let deadline = tokio::time::Instant::now() + self.patience;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_recv(left).await {
                Some(frame @ Frame::UserBroadcast { .. }) => {
                    if matches!(&frame, Frame::UserBroadcast { event: e, .. } if e == event) {
                        return frame;
                    }
                }
                Some(frame @ Frame::Msg { .. }) => {
                    if frame.event() == "broadcast" && frame.payload()["event"] == event {
                        return frame;
                    }
                }
                Some(Frame::Close(code, reason)) => {
                    panic!("closed ({code:?} {reason}) while waiting for broadcast {event}")
                }
                None => panic!("no broadcast {event} within {:?}", self.patience),
            }
        }
    }

    /// The first frame within `within` for which `wanted` holds, skipping others; `None` when
    /// none came or the connection closed first.
    pub async fn recv_where(&mut self, within: Duration, wanted: impl Fn(&Frame) -> bool) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_recv(left).await? {
                Frame::Close(..) => return None,
                frame if wanted(&frame) => return Some(frame),
                _ => continue,
            }
        }
    }

    /// The payload (`{"status": …, "response": …}`) of the reply to `msg_ref`, skipping other
    /// frames; panics after [`Client::patience`].
    pub async fn reply_to(&mut self, msg_ref: &str) -> Value {
        let patience = self.patience;
        let is_reply = |frame: &Frame| matches!(frame, Frame::Msg { event, msg_ref: r, .. } if event == "phx_reply" && r == msg_ref);
        match self.recv_where(patience, is_reply).await {
            Some(reply) => reply.payload().clone(),
            None => panic!("no reply to {msg_ref} within {patience:?}"),
        }
    }

    /// Whether the server closes the socket within `within` (frames before are skipped).
    pub async fn closes(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_recv(left).await {
                Some(Frame::Close(..)) => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    }

    /// Asserts nothing arrives within `within`.
    pub async fn expect_silence(&mut self, within: Duration) {
        if let Some(frame) = self.try_recv(within).await {
            panic!("expected no frame, got {frame:?}");
        }
    }

    pub async fn heartbeat(&mut self) -> Frame {
        let msg_ref = self.send(None, "phoenix", "heartbeat", json!({})).await;
        let reply = self.recv_event("phx_reply").await;
        let Frame::Msg { msg_ref: got, .. } = &reply else {
            unreachable!()
        };
        assert_eq!(got, &Value::String(msg_ref));
        reply
    }
}

pub fn decode_text(text: &str) -> Frame {
    let v: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("server sent invalid JSON {text}: {e}"));
    match v {
        Value::Array(items) => {
            assert_eq!(items.len(), 5, "v2 frames have 5 elements: {text}");
            let mut it = items.into_iter();
            let (join_ref, msg_ref, topic, event, payload) = (
                it.next().unwrap(),
                it.next().unwrap(),
                it.next().unwrap(),
                it.next().unwrap(),
                it.next().unwrap(),
            );
            Frame::Msg {
                join_ref,
                msg_ref,
                topic: topic.as_str().expect("topic").to_owned(),
                event: event.as_str().expect("event").to_owned(),
                payload,
                v1: false,
            }
        }
        Value::Object(map) => {
            assert!(
                !map.contains_key("join_ref"),
                "v1 server frames carry no join_ref: {text}"
            );
            let keys: Vec<&str> = map.keys().map(String::as_str).collect();
            assert_eq!(keys.len(), 4, "v1 frames have event, payload, ref, topic: {text}");
            Frame::Msg {
                join_ref: Value::Null,
                msg_ref: map["ref"].clone(),
                topic: map["topic"].as_str().expect("topic").to_owned(),
                event: map["event"].as_str().expect("event").to_owned(),
                payload: map["payload"].clone(),
                v1: true,
            }
        }
        other => panic!("unexpected frame {other}"),
    }
}

pub fn decode_kind4(data: &[u8]) -> Frame {
    assert_eq!(data[0], 4, "the server sends only kind 4 binary frames");
    let (tl, el, ml, enc) = (data[1] as usize, data[2] as usize, data[3] as usize, data[4]);
    let mut at = 5;
    let mut take = |n: usize| {
        let s = &data[at..at + n];
        at += n;
        s.to_vec()
    };
    let topic = String::from_utf8(take(tl)).unwrap();
    let event = String::from_utf8(take(el)).unwrap();
    let meta = String::from_utf8(take(ml)).unwrap();
    let rest = data[5 + tl + el + ml..].to_vec();
    Frame::UserBroadcast {
        topic,
        event,
        meta,
        enc,
        data: rest,
    }
}
