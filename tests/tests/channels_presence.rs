//! Presence against `server::run`: state on join, diffs to every subscriber including the
//! tracker, updates with `phx_ref_prev`, leaves on untrack, leave and disconnect.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use realtime_tests::{phoenix::*, server::*};
use serde_json::{Value, json};

const ROOM: &str = "realtime:lobby";

fn track(payload: Value) -> Value {
    json!({"type": "presence", "event": "track", "payload": payload})
}

/// The single meta of `key` in a state or diff side.
fn meta<'a>(side: &'a Value, key: &str) -> &'a Value {
    let metas = side[key]["metas"]
        .as_array()
        .unwrap_or_else(|| panic!("no metas for {key} in {side}"));
    assert_eq!(metas.len(), 1, "{side}");
    &metas[0]
}

#[tokio::test]
async fn track_diff_state_and_leave_on_disconnect() {
    let server = TestServer::start().await;
    let mut alice = server.client("2.0.0").await;
    let join_ref = alice
        .join(ROOM, json!({"presence": {"key": "alice", "enabled": true}}))
        .await;
    let Frame::Msg {
        join_ref: jr,
        msg_ref,
        payload,
        ..
    } = alice.recv_event("presence_state").await
    else {
        panic!()
    };
    assert_eq!(
        (jr, msg_ref, payload),
        (Value::String(join_ref.clone()), Value::Null, json!({}))
    );

    let track_ref = alice
        .send(Some(&join_ref), ROOM, "presence", track(json!({"name": "Alice"})))
        .await;
    let mut replied = false;
    let mut diffed = false;
    for _ in 0..2 {
        match alice.recv().await {
            Frame::Msg {
                event,
                msg_ref,
                payload,
                ..
            } if event == "phx_reply" => {
                assert_eq!(
                    (msg_ref, payload),
                    (
                        Value::String(track_ref.clone()),
                        json!({"status": "ok", "response": {}})
                    )
                );
                replied = true;
            }
            Frame::Msg {
                event,
                join_ref,
                msg_ref,
                payload,
                ..
            } if event == "presence_diff" => {
                assert_eq!((join_ref, msg_ref), (Value::Null, Value::Null));
                assert_eq!(meta(&payload["joins"], "alice")["name"], "Alice");
                assert!(meta(&payload["joins"], "alice")["phx_ref"].is_string());
                assert_eq!(payload["leaves"], json!({}));
                diffed = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(replied && diffed, "the tracker gets its own diff");

    // A v1 client joining later sees Alice in the state.
    let mut bob = server.client("1.0.0").await;
    bob.join(ROOM, json!({"presence": {"key": "bob"}})).await;
    let state = bob.recv_event("presence_state").await;
    assert_eq!(meta(state.payload(), "alice")["name"], "Alice");

    // Alice disconnects: Bob sees her leave.
    drop(alice);
    let diff = bob.recv_event("presence_diff").await;
    assert_eq!(diff.payload()["joins"], json!({}));
    assert_eq!(meta(&diff.payload()["leaves"], "alice")["name"], "Alice");
}

#[tokio::test]
async fn update_carries_phx_ref_prev_and_untrack_leaves() {
    let server = TestServer::start().await;
    let mut a = server.client("2.0.0").await;
    let mut watcher = server.client("2.0.0").await;
    let join_ref = a.join(ROOM, json!({"presence": {"key": "a"}})).await;
    watcher.join(ROOM, json!({"presence": {"enabled": true}})).await;
    watcher.recv_event("presence_state").await;

    a.send(Some(&join_ref), ROOM, "presence", track(json!({"v": 1})))
        .await;
    let first = watcher.recv_event("presence_diff").await;
    let first_ref = meta(&first.payload()["joins"], "a")["phx_ref"].clone();

    a.send(Some(&join_ref), ROOM, "presence", track(json!({"v": 2})))
        .await;
    let update = watcher.recv_event("presence_diff").await;
    assert_eq!(meta(&update.payload()["joins"], "a")["v"], 2);
    assert_eq!(meta(&update.payload()["joins"], "a")["phx_ref_prev"], first_ref);
    assert_eq!(meta(&update.payload()["leaves"], "a")["phx_ref"], first_ref);

    a.send(
        Some(&join_ref),
        ROOM,
        "presence",
        json!({"type": "presence", "event": "UNTRACK"}),
    )
    .await;
    let leave = watcher.recv_event("presence_diff").await;
    assert_eq!(leave.payload()["joins"], json!({}));
    assert_eq!(meta(&leave.payload()["leaves"], "a")["v"], 2);
}

#[tokio::test]
async fn leaving_the_channel_untracks() {
    let server = TestServer::start().await;
    let mut a = server.client("2.0.0").await;
    let mut watcher = server.client("2.0.0").await;
    let join_ref = a.join(ROOM, json!({"presence": {"key": "a"}})).await;
    watcher.join(ROOM, json!({"presence": {"enabled": true}})).await;
    a.send(Some(&join_ref), ROOM, "presence", track(json!({}))).await;
    watcher.recv_event("presence_diff").await;
    a.send(Some(&join_ref), ROOM, "phx_leave", json!({})).await;
    let leave = watcher.recv_event("presence_diff").await;
    assert!(leave.payload()["leaves"]["a"].is_object());
}

#[tokio::test]
async fn server_assigns_a_uuid_key_and_track_enables_presence_with_a_state() {
    let server = TestServer::start().await;
    let mut c = server.client("2.0.0").await;
    // Joined without presence: no presence_state yet.
    let join_ref = c.join(ROOM, json!({})).await;
    c.expect_silence(Duration::from_millis(150)).await;
    c.send(Some(&join_ref), ROOM, "presence", track(json!({"x": 1})))
        .await;
    let mut events = Vec::new();
    let mut key = String::new();
    for _ in 0..3 {
        let Frame::Msg { event, payload, .. } = c.recv().await else {
            panic!()
        };
        if event == "presence_diff" {
            key = payload["joins"]
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap()
                .clone();
        }
        events.push(event);
    }
    assert_eq!(
        events[0], "presence_state",
        "the state comes before the diff: {events:?}"
    );
    assert!(events.contains(&"presence_diff".to_owned()) && events.contains(&"phx_reply".to_owned()));
    assert!(uuid::Uuid::parse_str(&key).is_ok(), "generated key {key}");
}

#[tokio::test]
async fn invalid_track_payloads_are_refused() {
    let server = TestServer::start().await;
    let mut c = server.client("2.0.0").await;
    let join_ref = c.join(ROOM, json!({"presence": {"key": "k"}})).await;
    c.send(Some(&join_ref), ROOM, "presence", track(json!("not a map")))
        .await;
    let reply = c.recv_event("phx_reply").await;
    assert_eq!(
        reply.payload(),
        &json!({"status": "error", "response": {"reason": "Presence track payload must be a map"}})
    );
    c.send(
        Some(&join_ref),
        ROOM,
        "presence",
        json!({"type": "presence", "event": "wave"}),
    )
    .await;
    assert_eq!(
        c.recv_event("phx_reply").await.payload(),
        &json!({"status": "error", "response": {}})
    );
}

#[tokio::test]
async fn presence_is_per_topic() {
    let server = TestServer::start().await;
    let mut a = server.client("2.0.0").await;
    let mut other_room = server.client("2.0.0").await;
    let join_ref = a.join(ROOM, json!({"presence": {"key": "a"}})).await;
    other_room
        .join("realtime:elsewhere", json!({"presence": {"enabled": true}}))
        .await;
    other_room.recv_event("presence_state").await;
    a.send(Some(&join_ref), ROOM, "presence", track(json!({}))).await;
    other_room.expect_silence(Duration::from_millis(200)).await;
}
