//! Limits against `server::run`, with Supabase's error strings: connections, channels per
//! client, joins per second, events per second, presence rate and size.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
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
    let server = TestServer::start_with(|c| c.server.limits.max_joins_per_second = 2).await;
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
