//! Limits against `server::run`, with Supabase's error strings: connections, channels per
//! client, joins per second, events per second, presence rate, size and caps per topic, REST
//! broadcast batches and rates, the outbound queue's byte bound and the write stall deadline.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use realtime_tests::{auth::*, phoenix::*, server::*};
use serde_json::json;

#[tokio::test]
async fn too_many_connections_is_http_429() {
    let server = TestServer::start_with(|c| c.server.limits.max_connections = 1).await;
    let mut first = server.client("2.0.0").await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(response)) =
        tokio_tungstenite::connect_async(server.url("2.0.0")).await
    else {
        panic!("second connection accepted");
    };
    assert_eq!(response.status().as_u16(), 429);
    let body: serde_json::Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
    assert_eq!(body, json!({"error": "Too many connected users"}));
    first.heartbeat().await;
    // The slot is released when the first socket goes.
    drop(first);
    let mut connected = None;
    for _ in 0..50 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(server.url("2.0.0")).await {
            connected = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(connected.is_some(), "slot released after disconnect");
}

#[tokio::test]
async fn too_many_channels_per_client() {
    let server = TestServer::start_with(|c| c.server.limits.max_channels_per_client = 2).await;
    let mut c = server.client("2.0.0").await;
    c.join("realtime:a", json!({})).await;
    c.join("realtime:b", json!({})).await;
    c.join_raw("realtime:c", json!({"config": {}})).await;
    let reply = c.recv_event("phx_reply").await;
    assert_eq!(
        reply.payload(),
        &json!({"status": "error", "response": {"reason": "ChannelRateLimitReached: Too many channels"}})
    );
    // Rejoining a joined topic does not count twice.
    c.join("realtime:a", json!({})).await;
}

#[tokio::test]
async fn too_many_joins_per_second_refuses_and_disconnects() {
    let server = TestServer::start_with(|c| c.server.limits.max_joins_per_second_per_socket = 2).await;
    let mut c = server.client("2.0.0").await;
    c.join("realtime:a", json!({})).await;
    c.join("realtime:b", json!({})).await;
    c.join_raw("realtime:c", json!({})).await;
    let reply = c.recv_event("phx_reply").await;
    assert_eq!(
        reply.payload()["response"]["reason"],
        "ClientJoinRateLimitReached: Too many joins per second"
    );
    assert_eq!(
        c.recv().await,
        Frame::Close(Some(1001), "too many joins per second".into())
    );
}

#[tokio::test]
async fn too_many_messages_per_second_shuts_the_channel_down() {
    let server = TestServer::start_with(|c| c.server.limits.max_events_per_second = 3).await;
    let mut c = server.client("2.0.0").await;
    let join_ref = c.join("realtime:room", json!({"broadcast": {"ack": true}})).await;
    for _ in 0..3 {
        c.send_user_broadcast(&join_ref, "realtime:room", "e", 1, b"{}")
            .await;
        assert_eq!(c.recv_event("phx_reply").await.payload()["status"], "ok");
    }
    c.send_user_broadcast(&join_ref, "realtime:room", "e", 1, b"{}")
        .await;
    let system = c.recv().await;
    assert_eq!(
        system.payload(),
        &json!({"channel": "room", "extension": "system", "message": "Too many messages per second", "status": "error"})
    );
    assert_eq!(c.recv().await.event(), "phx_close");
    c.heartbeat().await;
}

#[tokio::test]
async fn client_presence_calls_are_limited_per_window() {
    let server = TestServer::start_with(|c| {
        c.server.limits.max_client_presence_events_per_window = 2;
        c.server.limits.client_presence_window = Duration::from_secs(30);
    })
    .await;
    let mut c = server.client("2.0.0").await;
    let join_ref = c.join("realtime:room", json!({"presence": {"key": "k"}})).await;
    for n in 0..2 {
        c.send(
            Some(&join_ref),
            "realtime:room",
            "presence",
            json!({"type": "presence", "event": "track", "payload": {"n": n}}),
        )
        .await;
        c.recv_event("phx_reply").await;
    }
    c.send(
        Some(&join_ref),
        "realtime:room",
        "presence",
        json!({"type": "presence", "event": "untrack"}),
    )
    .await;
    let system = c.recv_event("system").await;
    assert_eq!(system.payload()["message"], "Client presence rate limit exceeded");
    c.recv_event("phx_close").await;
}

#[tokio::test]
async fn oversized_track_shuts_the_channel_down() {
    let server = TestServer::start_with(|c| c.server.limits.max_payload_size_kb = 1).await;
    let mut c = server.client("2.0.0").await;
    let join_ref = c.join("realtime:room", json!({"presence": {"key": "k"}})).await;
    let big = "x".repeat(2000);
    c.send(
        Some(&join_ref),
        "realtime:room",
        "presence",
        json!({"type": "presence", "event": "track", "payload": {"big": big}}),
    )
    .await;
    let system = c.recv_event("system").await;
    assert_eq!(system.payload()["message"], "Track message size exceeded");
    c.recv_event("phx_close").await;
}

#[tokio::test]
async fn too_many_presence_messages_per_second_on_the_node() {
    let server = TestServer::start_with(|c| c.server.limits.max_presence_events_per_second = 1).await;
    let mut c = server.client("2.0.0").await;
    let join_ref = c.join("realtime:room", json!({"presence": {"key": "k"}})).await;
    let track = json!({"type": "presence", "event": "track", "payload": {"n": 1}});
    c.send(Some(&join_ref), "realtime:room", "presence", track.clone())
        .await;
    c.recv_event("phx_reply").await;
    c.send(Some(&join_ref), "realtime:room", "presence", track).await;
    let system = c.recv_event("system").await;
    assert_eq!(
        system.payload()["message"],
        "Too many presence messages per second"
    );
    c.recv_event("phx_close").await;
}

#[tokio::test]
async fn presence_is_capped_per_topic_and_per_entry() {
    let server = TestServer::start_with(|c| {
        c.server.limits.max_presence_entries_per_topic = 2;
        c.server.limits.max_presence_entry_bytes = 200;
    })
    .await;
    let track = |n: u32| json!({"type": "presence", "event": "track", "payload": {"n": n}});
    let mut clients = Vec::new();
    for n in 0..2 {
        let mut c = server.client("2.0.0").await;
        let join_ref = c
            .join("realtime:room", json!({"presence": {"key": format!("k{n}")}}))
            .await;
        c.send(Some(&join_ref), "realtime:room", "presence", track(n))
            .await;
        assert_eq!(c.recv_event("phx_reply").await.payload()["status"], "ok");
        clients.push((c, join_ref));
    }
    let mut third = server.client("2.0.0").await;
    let join_ref = third
        .join("realtime:room", json!({"presence": {"key": "k2"}}))
        .await;
    third
        .send(Some(&join_ref), "realtime:room", "presence", track(2))
        .await;
    let reply = third.recv_event("phx_reply").await;
    assert_eq!(
        reply.payload(),
        &json!({"status": "error", "response": {"reason": "PresenceLimitReached: Too many presence entries on this topic"}})
    );
    // The refused client keeps its channel; an entry over the byte cap closes it.
    let big = json!({"type": "presence", "event": "track", "payload": {"big": "x".repeat(300)}});
    let (first, first_ref) = &mut clients[0];
    first
        .send(Some(first_ref), "realtime:room", "presence", big)
        .await;
    let system = first.recv_event("system").await;
    assert_eq!(system.payload()["message"], "Track message size exceeded");
    first.recv_event("phx_close").await;
    // Its entry left with its channel: the third client now fits.
    third
        .send(Some(&join_ref), "realtime:room", "presence", track(2))
        .await;
    assert_eq!(third.recv_event("phx_reply").await.payload()["status"], "ok");
}

/// Sends one raw HTTP request; returns the status, the headers (lowercase names) and the body.
async fn http_full(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn batch(n: usize) -> String {
    let messages: Vec<_> = (0..n)
        .map(|i| json!({"topic": "room", "event": "e", "payload": {"i": i}}))
        .collect();
    json!({ "messages": messages }).to_string()
}

#[tokio::test]
async fn rest_broadcast_batches_are_capped_and_counted_per_subject() {
    let server = TestServer::start_with(|c| {
        c.server.limits.max_broadcasts_per_second_per_subject = 10;
    })
    .await;
    let mut listener = server.client("2.0.0").await;
    listener.join("realtime:room", json!({})).await;
    let mallory = format!(
        "Bearer {}",
        sign(&json!({"role": "authenticated", "sub": "mallory", "exp": unix_now() + 60}))
    );
    let alice = format!(
        "Bearer {}",
        sign(&json!({"role": "authenticated", "sub": "alice", "exp": unix_now() + 60}))
    );
    let (status, _, body) = http_full(
        server.addr,
        "/api/broadcast",
        &[("Authorization", &mallory)],
        &batch(101),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        json!({"message": "Too many messages to broadcast, please reduce the batch size"})
    );
    let (status, _, _) = http_full(
        server.addr,
        "/api/broadcast",
        &[("Authorization", &mallory)],
        &batch(8),
    )
    .await;
    assert_eq!(status, 202);
    let (status, headers, body) = http_full(
        server.addr,
        "/api/broadcast",
        &[("Authorization", &mallory)],
        &batch(8),
    )
    .await;
    assert_eq!(status, 429, "8 + 8 > 10 in one second");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        json!({"message": "Too many requests"})
    );
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(header("x-rate-limit").as_deref(), Some("10"));
    assert_eq!(header("x-rate-rolling").as_deref(), Some("8"));
    assert_eq!(header("x-rate-limit-remaining").as_deref(), Some("2"));
    // Another subject is not affected, and its message arrives.
    let body = json!({"messages": [{"topic": "room", "event": "from-alice", "payload": {}}]}).to_string();
    let (status, _, _) = http_full(server.addr, "/api/broadcast", &[("Authorization", &alice)], &body).await;
    assert_eq!(status, 202);
    listener.recv_broadcast("from-alice").await;
}

/// Opens a client that joins `room` and then reads nothing.
async fn stalled_reader(server: &TestServer) -> Client {
    let mut c = server.client("2.0.0").await;
    c.join("realtime:room", json!({})).await;
    c
}

/// Broadcasts `count` messages of `size` bytes to `room` from a new client (with acks, so the
/// server has taken each before the next).
async fn send_big_broadcasts(server: &TestServer, count: usize, size: usize) {
    let mut sender = server.client("2.0.0").await;
    let join_ref = sender
        .join("realtime:room", json!({"broadcast": {"ack": true}}))
        .await;
    let data = vec![b'x'; size];
    for _ in 0..count {
        sender
            .send_user_broadcast(&join_ref, "realtime:room", "big", 0, &data)
            .await;
        assert_eq!(sender.recv_event("phx_reply").await.payload()["status"], "ok");
    }
}

/// Reads frames until the socket closes; returns the close.
async fn read_until_close(c: &mut Client) -> Frame {
    loop {
        match c.try_recv(Duration::from_secs(10)).await {
            Some(close @ Frame::Close(..)) => return close,
            Some(_) => continue,
            None => panic!("the socket stayed open"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbound_queue_is_bounded_in_bytes() {
    let server = TestServer::start_with(|c| {
        c.server.limits.outbound_queue_frames = 1024;
        c.server.limits.outbound_queue_bytes = 2_000_000;
        c.server.limits.max_events_per_second = 10_000;
        c.server.limits.max_broadcasts_per_second_per_subject = 10_000;
    })
    .await;
    let mut slow = stalled_reader(&server).await;
    let (mut healthy, healthy_ref) = lobby_client(&server).await;
    // 300 frames of 64 KB: far below 1024 frames, far above what the socket buffers and 2 MB
    // of queue hold.
    send_big_broadcasts(&server, 300, 64 * 1024).await;
    assert_eq!(
        read_until_close(&mut slow).await,
        Frame::Close(Some(4008), "slow consumer".into())
    );
    still_served(&mut healthy, &healthy_ref).await;
}

/// A client joined to the lobby with its broadcasts acknowledged and echoed, for [`still_served`].
async fn lobby_client(server: &TestServer) -> (Client, String) {
    let mut c = server.client("2.0.0").await;
    let join_ref = c
        .join(
            "realtime:lobby",
            json!({"broadcast": {"ack": true, "self": true}}),
        )
        .await;
    (c, join_ref)
}

/// A client that reads is served: its broadcast is acknowledged and comes back to it.
async fn still_served(c: &mut Client, join_ref: &str) {
    let push = json!({"type": "broadcast", "event": "ping", "payload": {}});
    c.send(Some(join_ref), "realtime:lobby", "broadcast", push).await;
    assert_eq!(c.recv_event("phx_reply").await.payload()["status"], "ok");
    c.recv_broadcast("ping").await;
    c.heartbeat().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_whose_writes_stall_is_closed_with_4009() {
    let server = TestServer::start_with(|c| {
        c.server.limits.write_stall_timeout = Duration::from_millis(300);
        c.server.limits.outbound_queue_bytes = 100_000_000;
        c.server.limits.max_events_per_second = 10_000;
        c.server.limits.max_broadcasts_per_second_per_subject = 10_000;
    })
    .await;
    let mut slow = stalled_reader(&server).await;
    let (mut healthy, healthy_ref) = lobby_client(&server).await;
    // 300 frames of 64 KB (19 MB) fit in the queue, not in the socket buffers: the writes to
    // the stalled client stop making progress.
    send_big_broadcasts(&server, 300, 64 * 1024).await;
    still_served(&mut healthy, &healthy_ref).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Reading again, the client finds the close at the end of what was written.
    assert_eq!(
        read_until_close(&mut slow).await,
        Frame::Close(Some(4009), "write stalled".into())
    );
}
