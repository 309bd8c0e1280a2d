//! Bad input on an open WebSocket: protocol violations (close 1002), oversized messages (close
//! 1009, refused before they are read), binary garbage, unknown events and topics, and deeply
//! nested JSON (100,000 levels). Each gets its documented answer, and the server keeps serving
//! the other clients; a flood of bad frames leaves the server's memory where it was.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use realtime_tests::{auth::*, phoenix::*, server::*};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket client that writes frames byte for byte, so it can break the protocol.
struct RawWs {
    stream: TcpStream,
    read: Vec<u8>,
}

/// A client frame: `b0` is FIN, RSV and opcode; the payload is masked unless `masked` is false.
fn frame_with(b0: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![b0];
    let bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(bit | n as u8),
        n if n <= 0xFFFF => {
            out.push(bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(b0, payload, true)
}

impl RawWs {
    async fn connect(addr: SocketAddr, vsn: &str) -> RawWs {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET /socket/websocket?apikey={}&vsn={vsn} HTTP/1.1\r\nHost: localhost\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            user_token(3600)
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = RawWs {
            stream,
            read: Vec::new(),
        };
        let head_end = loop {
            if let Some(at) = raw.read.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(raw.fill().await, "connection closed during the handshake");
        };
        let head = String::from_utf8_lossy(&raw.read[..head_end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        raw.read.drain(..head_end);
        raw
    }

    /// Reads more bytes; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut buf = [0u8; 16 * 1024];
        // Longer than WAIT: a reply may queue behind megabytes of garbage on a busy machine.
        match tokio::time::timeout(3 * WAIT, self.stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => false,
            Ok(Ok(n)) => {
                self.read.extend_from_slice(&buf[..n]);
                true
            }
            Err(_) => panic!("nothing from the server within {:?}", 3 * WAIT),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// The next server frame as (opcode, payload); `None` when the connection ended.
    async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((opcode, payload, used)) = parse_server_frame(&self.read) {
                self.read.drain(..used);
                return Some((opcode, payload));
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Reads until a close frame; returns its code and reason, and checks the socket then ends.
    async fn recv_close(&mut self) -> (u16, String) {
        loop {
            match self.recv().await {
                Some((0x8, payload)) => {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    let reason = String::from_utf8_lossy(&payload[2..]).to_string();
                    assert!(
                        self.recv().await.is_none(),
                        "the server closes the TCP connection"
                    );
                    return (code, reason);
                }
                Some(_) => continue,
                None => panic!("connection ended without a close frame"),
            }
        }
    }

    /// Sends a heartbeat with ref `hb`, then reads up to its reply; returns the text frames
    /// that came before it.
    async fn heartbeat(&mut self, vsn: &str) -> Vec<Value> {
        let text = if vsn == "1.0.0" {
            r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"hb"}"#
        } else {
            r#"[null,"hb","phoenix","heartbeat",{}]"#
        };
        self.send(&frame(0x81, text.as_bytes())).await;
        let mut before = Vec::new();
        loop {
            let Some((opcode, payload)) = self.recv().await else {
                panic!("connection ended before the heartbeat reply; frames: {before:?}");
            };
            assert_eq!(opcode, 0x1, "only text frames expected, got opcode {opcode}");
            let v: Value = serde_json::from_slice(&payload).unwrap();
            let msg_ref = if vsn == "1.0.0" { &v["ref"] } else { &v[1] };
            if msg_ref == "hb" {
                return before;
            }
            before.push(v);
        }
    }
}

/// (opcode, payload, bytes used) of a complete unmasked server frame at the start of `buf`.
fn parse_server_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (b0, b1) = (*buf.first()?, *buf.get(1)?);
    let (len, at) = match b1 & 0x7F {
        126 => (usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])), 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (usize::from(n), 2),
    };
    let payload = buf.get(at..at + len)?;
    Some((b0 & 0x0F, payload.to_vec(), at + len))
}

#[tokio::test]
async fn protocol_violations_close_with_1002_and_others_keep_working() {
    let server = TestServer::start().await;
    let mut healthy = server.client("2.0.0").await;
    let interleaved = [frame(0x01, b"[nu"), frame(0x81, b"x")].concat();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("reserved bits", frame(0xC1, b"x")),
        ("unknown opcode", frame(0x83, b"x")),
        ("unmasked frame", frame_with(0x81, b"x", false)),
        ("fragmented ping", frame(0x09, b"p")),
        ("ping over 125 bytes", frame(0x89, &[0; 126])),
        ("stray continuation", frame(0x80, b"x")),
        ("interleaved messages", interleaved),
        ("one-byte close", frame(0x88, &[3])),
        ("close reason not UTF-8", frame(0x88, &[3, 232, 0xff])),
    ];
    for (name, bytes) in cases {
        let mut raw = RawWs::connect(server.addr, "2.0.0").await;
        raw.send(&bytes).await;
        assert_eq!(raw.recv_close().await, (1002, "protocol error".into()), "{name}");
        healthy.heartbeat().await;
    }
}

#[tokio::test]
async fn oversized_messages_close_with_1009_before_they_are_read() {
    let server = TestServer::start_with(|c| c.server.limits.max_frame_size = 64 * 1024).await;
    let mut healthy = server.client("2.0.0").await;

    // Only the header of a 4 EiB frame is sent: the server refuses it without waiting for more.
    for len in [1u64 << 62, u64::MAX] {
        let mut raw = RawWs::connect(server.addr, "2.0.0").await;
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&len.to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        raw.send(&header).await;
        assert_eq!(raw.recv_close().await, (1009, "message too large".into()));
    }

    // Fragments each under the limit, adding up to more.
    let mut raw = RawWs::connect(server.addr, "2.0.0").await;
    let part = vec![b' '; 32 * 1024];
    raw.send(&frame(0x01, &part)).await;
    raw.send(&frame(0x00, &part)).await;
    raw.send(&frame(0x80, &part)).await;
    assert_eq!(raw.recv_close().await, (1009, "message too large".into()));

    healthy.heartbeat().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_from_many_clients_keep_memory_bounded() {
    const LIMIT: usize = 1024 * 1024;
    const CLIENTS: usize = 20;
    let limit = LIMIT.to_string();
    let server = ServerProcess::start(&[("MAX_FRAME_SIZE", limit.as_str())]).await;
    let rss_start = server.rss_kib();
    // Rounds of 20 clients at once, each sending a 1.5 MiB message in 64 KiB fragments.
    let mut after_round = Vec::new();
    for _ in 0..5 {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CLIENTS {
            let addr = server.addr;
            tasks.spawn(async move {
                let mut raw = RawWs::connect(addr, "2.0.0").await;
                let part = vec![b' '; 64 * 1024];
                for i in 0..24 {
                    let b0 = match i {
                        0 => 0x01,
                        23 => 0x80,
                        _ => 0x00,
                    };
                    // The server stops reading at the limit; later writes may fail.
                    if raw.stream.write_all(&frame(b0, &part)).await.is_err() {
                        break;
                    }
                }
                raw.recv_close().await
            });
        }
        while let Some(close) = tasks.join_next().await {
            assert_eq!(close.unwrap(), (1009, "message too large".into()));
        }
        after_round.push(server.rss_kib());
    }
    println!(
        "oversized messages: 5 rounds of {CLIENTS} × 1.5 MiB (limit 1 MiB): RSS {rss_start} KiB -> {after_round:?} KiB"
    );
    let (first, last) = (after_round[0], after_round[after_round.len() - 1]);
    // At most every client's buffer at the limit, twice over; and no growth from round to round.
    let bound = rss_start + (2 * CLIENTS * LIMIT / 1024) as u64;
    assert!(
        first < bound,
        "RSS {first} KiB after the first round, over {bound} KiB"
    );
    assert!(last <= first + 4 * 1024, "RSS kept growing: {after_round:?}");

    // With the clients gone and the server idle, their buffers go back to the system: the
    // allocator's background threads return freed pages without waiting for more traffic
    // (`realtime::Allocator`). A server that kept them would look, to its operator, as if a
    // burst had leaked its size.
    // Half of what the burst added, at least, within a minute.
    let held = last.saturating_sub(rss_start);
    let returned = server
        .wait_for(Duration::from_secs(60), |s| s.rss_kib() < rss_start + held / 2)
        .await;
    println!("idle again: RSS {} KiB", server.rss_kib());
    assert!(
        held >= 4 * 1024 && returned,
        "RSS still {} KiB a minute after the clients left (started at {rss_start} KiB, {after_round:?} KiB during)",
        server.rss_kib()
    );
    let mut c = Client::connect(&server.url(&user_token(60), "2.0.0"), "2.0.0").await;
    c.heartbeat().await;
}

#[tokio::test]
async fn oversized_and_deep_payloads_are_refused_and_not_delivered() {
    let server = TestServer::start_with(|c| c.server.limits.max_payload_size_kb = 1).await;
    let mut sender = server.client("2.0.0").await;
    let mut receiver = server.client("2.0.0").await;
    let topic = "realtime:room";
    let join_ref = sender.join(topic, json!({"broadcast": {"ack": true}})).await;
    receiver.join(topic, json!({})).await;
    // A text push over the payload limit (binary pushes: channels_broadcast).
    let big = json!({"type": "broadcast", "event": "e", "payload": {"x": "y".repeat(2000)}});
    sender.send(Some(&join_ref), topic, "broadcast", big).await;
    assert_eq!(
        sender.recv_event("phx_reply").await.payload(),
        &json!({"status": "error", "response": "payload_size_exceeded"})
    );

    // REST: too large, and too deep, on both endpoints.
    let bearer = format!("Bearer {}", user_token(60));
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    let rest = |path: &'static str, body: String| async move {
        http(server.addr, "POST", path, &headers, body.as_bytes()).await
    };
    let batch =
        |payload: &str| format!(r#"{{"messages":[{{"topic":"room","event":"e","payload":{payload}}}]}}"#);
    let large = format!("\"{}\"", "x".repeat(2000));
    let deep = nested(200);
    let cases = [
        (
            "/api/broadcast",
            batch(&large),
            json!({"messages": ["Payload size exceeds tenant limit"]}),
        ),
        (
            "/api/broadcast",
            batch(&deep),
            json!({"messages": ["nests deeper than 100 levels"]}),
        ),
        (
            "/api/broadcast/room/events/e",
            large.clone(),
            json!({"payload": ["Payload size exceeds tenant limit"]}),
        ),
        (
            "/api/broadcast/room/events/e",
            deep.clone(),
            json!({"payload": ["nests deeper than 100 levels"]}),
        ),
    ];
    for (path, body, errors) in cases {
        let (status, text) = rest(path, body).await;
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!((status, answer), (422, json!({"errors": errors})), "{path}");
    }

    // The receiver's first broadcast is the one that follows.
    let (status, _) = rest("/api/broadcast", batch(r#"{"ok":true}"#)).await;
    assert_eq!(status, 202);
    let Frame::UserBroadcast { data, .. } = receiver.recv_event("broadcast(binary)").await else {
        unreachable!()
    };
    assert_eq!(data, br#"{"ok":true}"#);
}

#[tokio::test]
async fn rest_payloads_up_to_the_configured_limit_are_accepted_and_larger_ones_get_422() {
    // The default limit (3,000 KB) is above the HTTP stack's own default body limit (2 MB):
    // the configured limit must decide, with its documented answer.
    let server = TestServer::start().await;
    let bearer = format!("Bearer {}", user_token(60));
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    let single = |size: usize| format!("\"{}\"", "x".repeat(size));
    let (status, _) = http(
        server.addr,
        "POST",
        "/api/broadcast/room/events/e",
        &headers,
        single(2_500_000).as_bytes(),
    )
    .await;
    assert_eq!(status, 202, "a 2.5 MB payload is within the 3,000 KB limit");
    let (status, text) = http(
        server.addr,
        "POST",
        "/api/broadcast/room/events/e",
        &headers,
        single(3_100_000).as_bytes(),
    )
    .await;
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (status, answer),
        (
            422,
            json!({"errors": {"payload": ["Payload size exceeds tenant limit"]}})
        )
    );
}

/// A deterministic byte generator (xorshift), so a failure replays.
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u8 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 24) as u8
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// Text frames a broken or hostile client might send; none of them is a message the server
/// can act on, except those addressed to topics the socket has not joined.
fn garbage_text() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = [
        "",
        "not json",
        "null",
        "42",
        "\"text\"",
        "[]",
        "[1,2,3,4]",
        "{}",
        r#"{"topic":1,"event":"x","payload":{},"ref":"1"}"#,
        r#"[{},{},"t","e",{}]"#,
        r#"[null,null,5,"e",{}]"#,
        r#"[null,null,"t",["e"],{}]"#,
        "[1e999999,2,\"t\",\"e\",{}]",
        "[\"\u{0}\",\"\\ud800\",\"t\",\"e\",{}]",
        "{\"topic\":\"phoenix\",\"event\":\"heartbeat\"",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    out.push(vec![0xff, 0xfe, b'[']);
    out.push(format!("[{}]", "1,".repeat(50_000) + "1").into_bytes());
    out
}

/// Binary frames: random bytes, and kind 0/3 headers with lengths past the data, unknown
/// encodings and fields that are not UTF-8.
fn garbage_binary() -> Vec<Vec<u8>> {
    let mut rng = Bytes(0x9E37_79B9_7F4A_7C15);
    let mut out: Vec<Vec<u8>> = (0..300)
        .map(|i| {
            let n = usize::from(rng.next()) % 64 + i % 3;
            rng.take(n)
        })
        .collect();
    out.extend([
        vec![],
        vec![3],
        vec![3, 255, 255, 255, 255, 255, 1, b'x'],
        vec![3, 0, 0, 1, 1, 0, 7, b't', b'e'],
        vec![3, 0, 0, 1, 1, 0, 1, 0xff, b'e', b'{'],
        vec![3, 0, 0, 1, 1, 0, 1, b't', b'e', b'{'],
        vec![0, 1, 1, 1, 1],
        vec![4, 1, 1, 0, 1, b't', b'e', b'1'],
        vec![1, 0, 0, 0, 0, 0],
    ]);
    out
}

#[tokio::test]
async fn garbage_frames_are_dropped_and_the_socket_kept() {
    let server = TestServer::start().await;
    for vsn in ["1.0.0", "2.0.0"] {
        let mut raw = RawWs::connect(server.addr, vsn).await;
        for text in garbage_text() {
            raw.send(&frame(0x81, &text)).await;
        }
        for binary in garbage_binary() {
            raw.send(&frame(0x82, &binary)).await;
        }
        // Unknown events on the "phoenix" topic and on topics never joined.
        let unknown = if vsn == "1.0.0" {
            [
                r#"{"topic":"phoenix","event":"reboot","payload":{},"ref":"u1"}"#,
                r#"{"topic":"realtime:nowhere","event":"broadcast","payload":{},"ref":"u2"}"#,
            ]
        } else {
            [
                r#"[null,"u1","phoenix","reboot",{}]"#,
                r#"["9","u2","realtime:nowhere","broadcast",{}]"#,
            ]
        };
        for text in unknown {
            raw.send(&frame(0x81, text.as_bytes())).await;
        }
        // Only the two unknown-topic messages were answered, with "unmatched topic".
        let answered = raw.heartbeat(vsn).await;
        assert_eq!(answered.len(), 2, "{vsn}: {answered:?}");
        for reply in answered {
            let payload = if vsn == "1.0.0" {
                &reply["payload"]
            } else {
                &reply[4]
            };
            assert_eq!(
                payload,
                &json!({"status": "error", "response": {"reason": "unmatched topic"}}),
                "{vsn}"
            );
        }
    }
}

#[tokio::test]
async fn unknown_events_on_a_joined_channel_are_ignored_but_count_toward_the_rate() {
    let server = TestServer::start_with(|c| c.server.limits.max_events_per_second = 5).await;
    let mut c = server.client("2.0.0").await;
    let join_ref = c.join("realtime:room", json!({})).await;
    for _ in 0..5 {
        c.send(Some(&join_ref), "realtime:room", "no_such_event", json!({}))
            .await;
    }
    c.expect_silence(Duration::from_millis(300)).await;
    c.send(Some(&join_ref), "realtime:room", "no_such_event", json!({}))
        .await;
    let system = c.recv_event("system").await;
    assert_eq!(system.payload()["message"], "Too many messages per second");
    c.recv_event("phx_close").await;
    c.heartbeat().await;
}

/// `levels` nested arrays around `1`.
fn nested(levels: usize) -> String {
    format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
}

#[tokio::test]
async fn deeply_nested_json_is_dropped_without_overflowing_the_stack() {
    const DEEP: usize = 100_000;
    let server = TestServer::start().await;
    let topic = "realtime:room";
    let mut v1 = server.client("1.0.0").await;
    let mut v2 = server.client("2.0.0").await;
    v1.join(topic, json!({})).await;
    v2.join(topic, json!({})).await;
    let mut sender = server.client("2.0.0").await;
    let join_ref = sender
        .join(
            topic,
            json!({"broadcast": {"ack": true}, "presence": {"key": "k"}}),
        )
        .await;

    let deep = nested(DEEP);
    let frames = [
        // Unclosed, and closed: the whole frame.
        "[".repeat(DEEP),
        deep.clone(),
        // As the payload of every client event.
        format!(
            r#"["{join_ref}","1","{topic}","broadcast",{{"type":"broadcast","event":"e","payload":{deep}}}]"#
        ),
        format!(r#"["{join_ref}","2","{topic}","broadcast",{deep}]"#),
        format!(
            r#"["{join_ref}","3","{topic}","presence",{{"type":"presence","event":"track","payload":{{"d":{deep}}}}}]"#
        ),
        format!(r#"["{join_ref}","4","{topic}","access_token",{{"access_token":{deep}}}]"#),
        format!(r#"["5","5","realtime:other","phx_join",{{"config":{deep}}}]"#),
        format!(r#"[{deep},"6","{topic}","broadcast",{{}}]"#),
    ];
    for text in frames {
        sender.send_raw(Message::Text(text.into())).await;
    }
    sender
        .send_user_broadcast(&join_ref, topic, "e", 1, deep.as_bytes())
        .await;
    // A v1 client sending the same.
    let mut v1_sender = server.client("1.0.0").await;
    v1_sender
        .send_raw(Message::Text(
            format!(r#"{{"topic":"{topic}","event":"phx_join","payload":{deep},"ref":"1"}}"#).into(),
        ))
        .await;

    // None of it was answered or delivered; what follows is.
    let after = json!({"type": "broadcast", "event": "after", "payload": {"n": 1}});
    let ack_ref = sender.send(Some(&join_ref), topic, "broadcast", after).await;
    // The first reply is the ack: no deep frame was answered.
    let frame = sender.recv_event("phx_reply").await;
    let Frame::Msg { msg_ref, payload, .. } = &frame else {
        unreachable!()
    };
    assert_eq!(msg_ref, &json!(ack_ref), "a reply to a deep frame: {frame:?}");
    assert_eq!(payload["status"], "ok");
    let Frame::UserBroadcast { event, .. } = v2.recv().await else {
        panic!("expected the broadcast")
    };
    assert_eq!(event, "after");
    assert_eq!(v1.recv().await.payload()["event"], "after");
    v1_sender.heartbeat().await;

    // Moderate nesting is ordinary data: a payload 90 levels deep goes through.
    let ninety = serde_json::from_str::<Value>(&nested(90)).unwrap();
    let msg = json!({"type": "broadcast", "event": "deep90", "payload": ninety});
    sender.send(Some(&join_ref), topic, "broadcast", msg).await;
    assert_eq!(sender.recv_event("phx_reply").await.payload()["status"], "ok");
    let Frame::UserBroadcast { event, data, .. } = v2.recv().await else {
        panic!("expected the broadcast")
    };
    assert_eq!((event.as_str(), data), ("deep90", nested(90).into_bytes()));
    assert_eq!(v1.recv().await.payload()["payload"], ninety);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_frames_leaves_memory_where_it_was() {
    const CLIENTS: usize = 20;
    const ROUNDS: usize = 5;
    let server = ServerProcess::start(&[]).await;
    let deep = "[".repeat(100_000);
    // Warm up: one client through every kind of frame, so allocator pools exist before the
    // first measurement.
    let mut frames: Vec<Vec<u8>> = garbage_text().into_iter().map(|t| frame(0x81, &t)).collect();
    frames.extend(garbage_binary().into_iter().map(|b| frame(0x82, &b)));
    frames.push(frame(0x81, deep.as_bytes()));
    let burst: Vec<u8> = frames.concat();
    let mut warm = RawWs::connect(server.addr, "2.0.0").await;
    warm.send(&burst).await;
    warm.heartbeat("2.0.0").await;
    let rss_before = server.rss_kib();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let (addr, burst) = (server.addr, burst.clone());
        tasks.spawn(async move {
            let vsn = if i % 2 == 0 { "2.0.0" } else { "1.0.0" };
            let mut raw = RawWs::connect(addr, vsn).await;
            for _ in 0..ROUNDS {
                raw.send(&burst).await;
            }
            raw.heartbeat(vsn).await;
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let rss_after = server.rss_kib();
    let sent_mib = (burst.len() * ROUNDS * CLIENTS) as f64 / (1024.0 * 1024.0);
    println!(
        "bad frames: {sent_mib:.0} MiB of garbage from {CLIENTS} clients: RSS {rss_before} KiB -> {rss_after} KiB"
    );
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    let mut c = Client::connect(&server.url(&user_token(60), "2.0.0"), "2.0.0").await;
    c.join("realtime:room", json!({})).await;
}
