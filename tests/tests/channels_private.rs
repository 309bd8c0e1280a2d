//! Private channels against `server::run` with a policy folder: join needs read access,
//! broadcast and presence writes are checked, refreshing a token re-checks access.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use realtime_tests::{auth::*, phoenix::*, server::*};
use serde_json::json;

const POLICY: &str = r#"
[[channel]]
topic = "lobby"
actions = ["broadcast", "presence"]
when = "auth.role() = 'authenticated'"

[[channel]]
topic = "user:{user_id}:notifications"
actions = ["broadcast.read", "presence.read"]
when = "auth.uid() = user_id"
"#;

async fn server() -> (TestServer, tempdir::Dir) {
    let dir = tempdir::Dir::new();
    std::fs::write(dir.path().join("rules.toml"), POLICY).unwrap();
    let path = dir.path().to_owned();
    let server = TestServer::start_with(move |c| c.server.policies_dir = Some(path)).await;
    (server, dir)
}

/// A throwaway folder removed on drop.
mod tempdir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let n: u64 = rand::random();
            let path = std::env::temp_dir().join(format!("realtime-policies-{n:x}"));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn user_token(sub: &str) -> String {
    sign(&json!({"role": "authenticated", "sub": sub, "exp": unix_now() + 3600}))
}

#[tokio::test]
async fn join_needs_read_access_from_the_policy() {
    let (server, _dir) = server().await;
    let mut c = server.client("2.0.0").await;
    c.join("realtime:lobby", json!({"private": true})).await;
    c.join("realtime:user:user-1:notifications", json!({"private": true}))
        .await;
    c.join_raw(
        "realtime:user:user-2:notifications",
        json!({"config": {"private": true}}),
    )
    .await;
    let reply = c.recv_event("phx_reply").await;
    assert_eq!(
        reply.payload()["response"]["reason"],
        "Unauthorized: You do not have permissions to read from this Channel topic: user:user-2:notifications"
    );
    // The access token of the join is the one checked.
    c.join_raw(
        "realtime:user:user-2:notifications",
        json!({"config": {"private": true}, "access_token": user_token("user-2")}),
    )
    .await;
    assert_eq!(c.recv_event("phx_reply").await.payload()["status"], "ok");
}

#[tokio::test]
async fn writes_without_permission_are_refused() {
    let (server, _dir) = server().await;
    let topic = "realtime:user:user-1:notifications";
    let mut reader = server.client("2.0.0").await;
    let mut other = server.client("2.0.0").await;
    let join_ref = reader
        .join(
            topic,
            json!({"private": true, "broadcast": {"ack": true, "self": true}}),
        )
        .await;
    other.join(topic, json!({"private": true})).await;

    // No broadcast.write: dropped silently, no ack (as in Supabase).
    reader.send_user_broadcast(&join_ref, topic, "e", 1, b"{}").await;
    reader.expect_silence(Duration::from_millis(300)).await;
    other.expect_silence(Duration::from_millis(50)).await;

    // No presence.write: an error reply.
    reader
        .send(
            Some(&join_ref),
            topic,
            "presence",
            json!({"type": "presence", "event": "track", "payload": {}}),
        )
        .await;
    assert_eq!(
        reader.recv_event("phx_reply").await.payload(),
        &json!({"status": "error", "response": {}})
    );

    // service_role bypasses the policy: its REST message reaches the readers.
    let service = sign(&json!({"role": "service_role", "exp": unix_now() + 60}));
    let bearer = format!("Bearer {service}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    let path = "/api/broadcast/user:user-1:notifications/events/note?private=true";
    assert_eq!(
        http(server.addr, "POST", path, &headers, b"{\"n\":1}").await.0,
        202
    );
    let Frame::UserBroadcast { event, .. } = other.recv().await else {
        panic!()
    };
    assert_eq!(event, "note");
    // An authenticated user without broadcast.write is refused over REST (Supabase: 403
    // {"message":"Unauthorized"}), and nothing is delivered.
    let bearer = format!("Bearer {}", user_token("user-1"));
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    assert_eq!(
        http(server.addr, "POST", path, &headers, b"{\"n\":2}").await.0,
        403
    );
    other.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn private_and_public_channels_of_one_name_do_not_mix() {
    let (server, _dir) = server().await;
    let mut private_a = server.client("2.0.0").await;
    let mut private_b = server.client("1.0.0").await;
    let mut public = server.client("2.0.0").await;
    let join_ref = private_a.join("realtime:lobby", json!({"private": true})).await;
    private_b.join("realtime:lobby", json!({"private": true})).await;
    public.join("realtime:lobby", json!({})).await;
    private_a
        .send(
            Some(&join_ref),
            "realtime:lobby",
            "broadcast",
            json!({"type": "broadcast", "event": "hi", "payload": {}}),
        )
        .await;
    assert_eq!(private_b.recv().await.payload()["event"], "hi");
    public.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_refreshed_token_without_read_access_closes_the_channel() {
    let (server, _dir) = server().await;
    let topic = "realtime:user:user-1:notifications";
    let mut c = server.client("2.0.0").await;
    let join_ref = c.join(topic, json!({"private": true})).await;
    c.send(
        Some(&join_ref),
        topic,
        "access_token",
        json!({"access_token": user_token("user-2")}),
    )
    .await;
    let system = c.recv_event("system").await;
    assert_eq!(
        system.payload()["message"],
        "You no longer have permission to read from this Channel topic: user:user-1:notifications"
    );
    c.recv_event("phx_close").await;
}
