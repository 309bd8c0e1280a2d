//! Broadcast against `server::run`: text and binary sends, fan-out per serializer version,
//! `self`, `ack`, payload limits, REST, public/private isolation and slow consumers.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use realtime_tests::{auth::*, phoenix::*, server::*};
use serde_json::{Value, json};

const ROOM: &str = "realtime:room";

fn text_broadcast(event: &str, payload: Value) -> Value {
    json!({"type": "broadcast", "event": event, "payload": payload})
}

#[tokio::test]
async fn binary_broadcast_reaches_v2_as_kind4_and_v1_as_json() {
    let server = TestServer::start().await;
    let mut sender = server.client("2.0.0").await;
    let mut v2 = server.client("2.0.0").await;
    let mut v1 = server.client("1.0.0").await;
    let join_ref = sender.join(ROOM, json!({})).await;
    v2.join(ROOM, json!({})).await;
    v1.join(ROOM, json!({})).await;

    sender
        .send_user_broadcast(&join_ref, ROOM, "user_event", 1, br#"{"a":"b"}"#)
        .await;
    assert_eq!(
        v2.recv().await,
        Frame::UserBroadcast {
            topic: ROOM.into(),
            event: "user_event".into(),
            meta: String::new(),
            enc: 1,
            data: br#"{"a":"b"}"#.to_vec()
        }
    );
    let Frame::Msg {
        topic,
        event,
        payload,
        msg_ref,
        ..
    } = v1.recv().await
    else {
        panic!()
    };
    assert_eq!(
        (topic.as_str(), event.as_str(), msg_ref),
        (ROOM, "broadcast", Value::Null)
    );
    assert_eq!(payload, text_broadcast("user_event", json!({"a": "b"})));
    // self defaults to false: the sender gets nothing.
    sender.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn text_broadcast_fans_out_and_binary_payloads_skip_v1() {
    let server = TestServer::start().await;
    let mut sender = server.client("1.0.0").await;
    let mut v2 = server.client("2.0.0").await;
    let mut v1 = server.client("1.0.0").await;
    let join_ref = sender.join(ROOM, json!({})).await;
    v2.join(ROOM, json!({})).await;
    v1.join(ROOM, json!({})).await;

    sender
        .send(
            Some(&join_ref),
            ROOM,
            "broadcast",
            text_broadcast("msg", json!({"n": 1})),
        )
        .await;
    let Frame::UserBroadcast { event, enc, data, .. } = v2.recv().await else {
        panic!("kind 4 expected")
    };
    assert_eq!((event.as_str(), enc), ("msg", 1));
    assert_eq!(serde_json::from_slice::<Value>(&data).unwrap(), json!({"n": 1}));
    assert_eq!(v1.recv().await.payload(), &text_broadcast("msg", json!({"n": 1})));

    // A binary (enc 0) payload from a v2 client reaches v2 receivers only.
    let mut binary_sender = server.client("2.0.0").await;
    let jr = binary_sender.join(ROOM, json!({})).await;
    binary_sender
        .send_user_broadcast(&jr, ROOM, "bin", 0, &[0, 1, 2, 255])
        .await;
    let Frame::UserBroadcast { enc, data, .. } = v2.recv().await else {
        panic!()
    };
    assert_eq!((enc, data), (0, vec![0, 1, 2, 255]));
    v1.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn self_true_echoes_and_ack_replies() {
    let server = TestServer::start().await;
    let mut c = server.client("2.0.0").await;
    let join_ref = c
        .join(ROOM, json!({"broadcast": {"self": true, "ack": true}}))
        .await;
    let push_ref = c.send_user_broadcast(&join_ref, ROOM, "e", 1, b"{}").await;
    let mut got_ack = false;
    let mut got_echo = false;
    for _ in 0..2 {
        match c.recv().await {
            Frame::Msg {
                event,
                msg_ref,
                payload,
                ..
            } if event == "phx_reply" => {
                assert_eq!(msg_ref, Value::String(push_ref.clone()));
                assert_eq!(payload, json!({"status": "ok", "response": {}}));
                got_ack = true;
            }
            Frame::UserBroadcast { event, .. } if event == "e" => got_echo = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(got_ack && got_echo);
}

#[tokio::test]
async fn oversized_payloads_are_refused_with_ack_error() {
    let server = TestServer::start_with(|c| c.server.limits.max_payload_size_kb = 1).await;
    let mut sender = server.client("2.0.0").await;
    let mut receiver = server.client("2.0.0").await;
    let join_ref = sender.join(ROOM, json!({"broadcast": {"ack": true}})).await;
    receiver.join(ROOM, json!({})).await;
    let big = format!("\"{}\"", "x".repeat(1200));
    let push_ref = sender
        .send_user_broadcast(&join_ref, ROOM, "e", 1, big.as_bytes())
        .await;
    let Frame::Msg { msg_ref, payload, .. } = sender.recv_event("phx_reply").await else {
        panic!()
    };
    assert_eq!(msg_ref, Value::String(push_ref));
    assert_eq!(
        payload,
        json!({"status": "error", "response": "payload_size_exceeded"})
    );
    receiver.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn public_and_private_channels_of_one_name_are_separate() {
    let server = TestServer::start().await;
    let mut public = server.client("2.0.0").await;
    public.join(ROOM, json!({"private": false})).await;
    // No policy grants access to private channels by default.
    let mut private = server.client("2.0.0").await;
    private.join_raw(ROOM, json!({"config": {"private": true}})).await;
    let reply = private.recv_event("phx_reply").await;
    assert_eq!(
        reply.payload()["response"]["reason"],
        "Unauthorized: You do not have permissions to read from this Channel topic: room"
    );
    // REST messages to the private topic are dropped; public ones arrive.
    let bearer = format!("Bearer {}", user_token(60));
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    let body = json!({"messages": [
        {"topic": "room", "event": "secret", "payload": {}, "private": true},
        {"topic": "room", "event": "open", "payload": {"x": 1}}
    ]});
    let (status, _) = http(
        server.addr,
        "POST",
        "/api/broadcast",
        &headers,
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 202);
    let Frame::UserBroadcast { event, .. } = public.recv().await else {
        panic!()
    };
    assert_eq!(event, "open");
    public.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn rest_batch_and_single_broadcasts() {
    let server = TestServer::start().await;
    let mut v2 = server.client("2.0.0").await;
    let mut v1 = server.client("1.0.0").await;
    v2.join(ROOM, json!({})).await;
    v1.join(ROOM, json!({})).await;
    let key = user_token(60);
    let bearer = format!("Bearer {key}");

    let body =
        json!({"messages": [{"topic": "room", "event": "hello", "payload": {"t": "hi"}, "id": "m-1"}]});
    let json_headers = [("apikey", key.as_str()), ("Content-Type", "application/json")];
    let (status, _) = http(
        server.addr,
        "POST",
        "/api/broadcast",
        &json_headers,
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        v1.recv().await.payload(),
        &json!({"type": "broadcast", "event": "hello", "payload": {"t": "hi"}, "meta": {"id": "m-1"}})
    );
    let Frame::UserBroadcast { meta, .. } = v2.recv().await else {
        panic!()
    };
    assert_eq!(
        serde_json::from_str::<Value>(&meta).unwrap(),
        json!({"id": "m-1"})
    );

    // realtime-js httpSend: the API under the WebSocket prefix, query string kept.
    let path = format!("/realtime/v1/api/broadcast/room/events/ping?apikey={key}&vsn=2.0.0");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    assert_eq!(
        http(server.addr, "POST", &path, &headers, b"{\"n\":2}").await.0,
        202
    );
    assert_eq!(
        v1.recv().await.payload(),
        &text_broadcast("ping", json!({"n": 2}))
    );
    let Frame::UserBroadcast { event, enc, .. } = v2.recv().await else {
        panic!()
    };
    assert_eq!((event.as_str(), enc), ("ping", 1));

    let headers = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/octet-stream"),
    ];
    assert_eq!(
        http(
            server.addr,
            "POST",
            "/api/broadcast/room/events/bin",
            &headers,
            &[9, 8]
        )
        .await
        .0,
        202
    );
    let Frame::UserBroadcast { enc, data, .. } = v2.recv().await else {
        panic!()
    };
    assert_eq!((enc, data), (0, vec![9, 8]));
    v1.expect_silence(Duration::from_millis(200)).await;

    let headers = [("Authorization", bearer.as_str()), ("Content-Type", "text/plain")];
    let (status, body) = http(
        server.addr,
        "POST",
        "/api/broadcast/room/events/x",
        &headers,
        b"hi",
    )
    .await;
    assert_eq!(status, 415);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"error": "Unsupported Media Type. Use application/json or application/octet-stream"})
    );

    let headers = [
        ("Authorization", "Bearer nope"),
        ("Content-Type", "application/json"),
    ];
    let (status, body) = http(
        server.addr,
        "POST",
        "/api/broadcast",
        &headers,
        b"{\"messages\":[]}",
    )
    .await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (401, json!({"message": "Unauthorized"}))
    );
    let (status, _) = http(server.addr, "POST", "/api/broadcast", &[], b"{\"messages\":[]}").await;
    assert_eq!(status, 401);

    // Browsers preflight the cross-origin POST.
    let preflight = [
        ("Origin", "https://app.example"),
        ("Access-Control-Request-Method", "POST"),
        (
            "Access-Control-Request-Headers",
            "authorization,apikey,content-type",
        ),
    ];
    let (status, _) = http(
        server.addr,
        "OPTIONS",
        "/realtime/v1/api/broadcast",
        &preflight,
        b"",
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_slow_consumer_is_closed_with_4008_and_does_not_hold_others_back() {
    let server = TestServer::start_with(|c| {
        c.server.limits.outbound_queue_frames = 8;
        c.server.limits.max_events_per_second = 10_000;
    })
    .await;
    let mut slow = server.client("2.0.0").await;
    let mut fast = server.client("2.0.0").await;
    let mut sender = server.client("2.0.0").await;
    slow.join(ROOM, json!({})).await;
    fast.join(ROOM, json!({})).await;
    let join_ref = sender.join(ROOM, json!({})).await;

    // Far more than the kernel's socket buffers can hold for a client that does not read.
    let payload = format!("\"{}\"", "x".repeat(256 * 1024));
    let count = 120;
    // Paced by the fast client: it always keeps up, the slow one never reads.
    for _ in 0..count {
        sender
            .send_user_broadcast(&join_ref, ROOM, "big", 1, payload.as_bytes())
            .await;
        let Frame::UserBroadcast { .. } = fast.recv().await else {
            panic!("fast client lost a message")
        };
    }
    fast.heartbeat().await;

    // Now the slow client reads: some messages, then the close frame.
    let mut received = 0;
    loop {
        match slow.recv().await {
            Frame::UserBroadcast { .. } => received += 1,
            Frame::Close(code, reason) => {
                assert_eq!((code, reason.as_str()), (Some(4008), "slow consumer"));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        received < count,
        "the slow client was cut off ({received} of {count})"
    );
}
