//! Channel protocol lifecycle against `server::run` on port 0: handshake, heartbeat, join, leave,
//! duplicate joins, unmatched topics, token expiry and refresh, idle timeout, shutdown.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use realtime_tests::{auth::*, phoenix::*, server::*};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn heartbeat_is_answered_on_both_paths_and_versions() {
    let server = TestServer::start().await;
    for path in ["/socket/websocket", "/realtime/v1/websocket"] {
        for vsn in ["1.0.0", "2.0.0"] {
            let url = format!("ws://{}{path}?apikey={}&vsn={vsn}", server.addr, user_token(60));
            let mut c = Client::connect(&url, vsn).await;
            let reply = c.heartbeat().await;
            let Frame::Msg {
                topic, payload, v1, ..
            } = reply
            else {
                unreachable!()
            };
            assert_eq!(topic, "phoenix");
            assert_eq!(payload, json!({"status": "ok", "response": {}}));
            assert_eq!(v1, vsn == "1.0.0");
        }
    }
    // Without vsn the server speaks 1.0.0.
    let url = format!("ws://{}/socket/websocket?apikey={}", server.addr, user_token(60));
    let mut c = Client::connect(&url, "1.0.0").await;
    let Frame::Msg { v1, .. } = c.heartbeat().await else {
        unreachable!()
    };
    assert!(v1);
}

#[tokio::test]
async fn join_replies_ok_with_empty_postgres_changes() {
    let server = TestServer::start().await;
    for vsn in ["1.0.0", "2.0.0"] {
        let mut c = server.client(vsn).await;
        let join_ref = c
            .join_raw("realtime:room", json!({"config": {"broadcast": {"self": false}}}))
            .await;
        let Frame::Msg {
            join_ref: jr,
            msg_ref,
            topic,
            event,
            payload,
            ..
        } = c.recv().await
        else {
            panic!()
        };
        assert_eq!((topic.as_str(), event.as_str()), ("realtime:room", "phx_reply"));
        assert_eq!(msg_ref, Value::String(join_ref.clone()));
        if vsn == "2.0.0" {
            assert_eq!(jr, Value::String(join_ref));
        }
        assert_eq!(
            payload,
            json!({"status": "ok", "response": {"postgres_changes": []}})
        );
    }
}

#[tokio::test]
async fn messages_to_unjoined_or_foreign_topics_get_unmatched_topic() {
    let server = TestServer::start().await;
    let mut c = server.client("2.0.0").await;
    c.send(
        Some("1"),
        "realtime:nowhere",
        "broadcast",
        json!({"type": "broadcast", "event": "e", "payload": {}}),
    )
    .await;
    let reply = c.recv_event("phx_reply").await;
    assert_eq!(
        reply.payload(),
        &json!({"status": "error", "response": {"reason": "unmatched topic"}})
    );

    c.join_raw("other:topic", json!({})).await;
    let reply = c.recv_event("phx_reply").await;
    assert_eq!(reply.payload()["response"]["reason"], "unmatched topic");

    c.join_raw("realtime:", json!({})).await;
    let reply = c.recv_event("phx_reply").await;
    assert_eq!(
        reply.payload()["response"]["reason"],
        "TopicNameRequired: You must provide a topic name"
    );

    // A joined topic with a stale join_ref is not matched either.
    let join_ref = c.join("realtime:room", json!({})).await;
    c.send(
        Some("999"),
        "realtime:room",
        "presence",
        json!({"type": "presence", "event": "untrack"}),
    )
    .await;
    assert_eq!(
        c.recv_event("phx_reply").await.payload()["response"]["reason"],
        "unmatched topic"
    );
    c.send(
        Some(&join_ref),
        "realtime:room",
        "presence",
        json!({"type": "presence", "event": "untrack"}),
    )
    .await;
    assert_eq!(c.recv_event("phx_reply").await.payload()["status"], "ok");
}

#[tokio::test]
async fn leave_replies_ok_then_closes_with_the_join_ref() {
    let server = TestServer::start().await;
    for vsn in ["1.0.0", "2.0.0"] {
        let mut c = server.client(vsn).await;
        let join_ref = c.join("realtime:room", json!({})).await;
        let leave_ref = c
            .send(Some(&join_ref), "realtime:room", "phx_leave", json!({}))
            .await;
        let Frame::Msg { msg_ref, payload, .. } = c.recv_event("phx_reply").await else {
            panic!()
        };
        assert_eq!(msg_ref, Value::String(leave_ref));
        assert_eq!(payload["status"], "ok");
        let Frame::Msg {
            join_ref: jr,
            msg_ref,
            payload,
            ..
        } = c.recv_event("phx_close").await
        else {
            panic!()
        };
        assert_eq!(
            msg_ref,
            Value::String(join_ref.clone()),
            "phx_close ref is the join ref"
        );
        if vsn == "2.0.0" {
            assert_eq!(jr, Value::String(join_ref));
        }
        assert_eq!(payload, json!({}));
        // The channel is gone.
        c.send(
            None,
            "realtime:room",
            "presence",
            json!({"type": "presence", "event": "untrack"}),
        )
        .await;
        assert_eq!(
            c.recv_event("phx_reply").await.payload()["response"]["reason"],
            "unmatched topic"
        );
    }
}

#[tokio::test]
async fn duplicate_join_closes_the_old_channel_and_joins_again() {
    let server = TestServer::start().await;
    let mut c = server.client("2.0.0").await;
    let first = c.join("realtime:room", json!({})).await;
    let second = c.join_raw("realtime:room", json!({"config": {}})).await;
    let Frame::Msg { msg_ref, event, .. } = c.recv().await else {
        panic!()
    };
    assert_eq!((event.as_str(), msg_ref), ("phx_close", Value::String(first)));
    let Frame::Msg {
        msg_ref,
        event,
        payload,
        ..
    } = c.recv().await
    else {
        panic!()
    };
    assert_eq!(
        (event.as_str(), msg_ref),
        ("phx_reply", Value::String(second.clone()))
    );
    assert_eq!(payload["status"], "ok");
    // The new channel works.
    c.send(
        Some(&second),
        "realtime:room",
        "presence",
        json!({"type": "presence", "event": "untrack"}),
    )
    .await;
    assert_eq!(c.recv_event("phx_reply").await.payload()["status"], "ok");
}

#[tokio::test]
async fn malformed_frames_are_dropped_and_the_socket_kept() {
    let server = TestServer::start().await;
    let mut c = server.client("2.0.0").await;
    c.send_raw(Message::Text("not json".into())).await;
    c.send_raw(Message::Text("{\"topic\":\"phoenix\"}".into())).await;
    c.send_raw(Message::Binary(vec![3, 9, 9].into())).await;
    c.heartbeat().await;
}

#[tokio::test]
async fn handshake_failures_are_http_errors_with_json_bodies() {
    let server = TestServer::start().await;
    let cases = [
        (
            format!("ws://{}/socket/websocket?vsn=2.0.0", server.addr),
            401,
            "API key is missing",
        ),
        (
            format!("ws://{}/socket/websocket?apikey=garbage", server.addr),
            401,
            "The token provided is not a valid JWT",
        ),
        (
            format!("ws://{}/socket/websocket?apikey={}", server.addr, user_token(-10)),
            401,
            "Token has expired",
        ),
    ];
    for (url, status, message) in cases {
        let Err(tokio_tungstenite::tungstenite::Error::Http(response)) =
            tokio_tungstenite::connect_async(&url).await
        else {
            panic!("{url} was accepted");
        };
        assert_eq!(response.status().as_u16(), status, "{url}");
        let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
        assert_eq!(body, json!({"error": message}), "{url}");
    }
    // The x-api-key header wins over the query parameter.
    let url = format!("ws://{}/socket/websocket?apikey=garbage&vsn=2.0.0", server.addr);
    let mut c = Client::connect_with_header(&url, "2.0.0", &user_token(60))
        .await
        .expect("header key accepted");
    c.heartbeat().await;
    let url = format!("ws://{}/socket/websocket?apikey={}", server.addr, user_token(60));
    assert!(
        Client::connect_with_header(&url, "1.0.0", "garbage")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let server = TestServer::start().await;
    assert_eq!(
        http(server.addr, "GET", "/healthz", &[], b"").await,
        (200, "ok".to_owned())
    );
    let (status, body) = http(server.addr, "GET", "/readyz", &[], b"").await;
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn join_with_a_bad_access_token_is_refused_with_the_supabase_reason() {
    let server = TestServer::start().await;
    let mut c = server.client("2.0.0").await;
    c.join_raw(
        "realtime:room",
        json!({"config": {}, "access_token": user_token(-5)}),
    )
    .await;
    let reply = c.recv_event("phx_reply").await;
    assert_eq!(reply.payload()["status"], "error");
    let reason = reply.payload()["response"]["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.starts_with("InvalidJWTToken: Token has expired "),
        "{reason}"
    );

    c.join_raw(
        "realtime:room",
        json!({"config": {}, "access_token": "not.a.jwt"}),
    )
    .await;
    let reply = c.recv_event("phx_reply").await;
    assert_eq!(
        reply.payload()["response"]["reason"],
        "MalformedJWT: The token provided is not a valid JWT"
    );

    // `sb_` keys are not JWTs: the socket's API key is used instead.
    c.join_raw(
        "realtime:room",
        json!({"config": {}, "access_token": "sb_publishable_abc"}),
    )
    .await;
    assert_eq!(c.recv_event("phx_reply").await.payload()["status"], "ok");
}

#[tokio::test]
async fn join_errors_wait_for_the_channel_error_backoff() {
    let server =
        TestServer::start_with(|c| c.server.limits.channel_error_backoff = Duration::from_millis(700)).await;
    let mut c = server.client("2.0.0").await;
    c.join_raw("realtime:room", json!({"access_token": "not.a.jwt"}))
        .await;
    // Heartbeats are answered meanwhile: the backoff does not block the socket.
    c.heartbeat().await;
    c.expect_silence(Duration::from_millis(400)).await;
    assert_eq!(c.recv_event("phx_reply").await.payload()["status"], "error");
}

#[tokio::test]
async fn an_expiring_token_closes_its_channel_but_not_the_socket() {
    let server = TestServer::start().await;
    let mut c = server.client("2.0.0").await;
    let join_ref = c
        .join_raw(
            "realtime:room",
            json!({"config": {}, "access_token": user_token(1)}),
        )
        .await;
    assert_eq!(c.recv_event("phx_reply").await.payload()["status"], "ok");
    let Frame::Msg {
        join_ref: jr,
        msg_ref,
        payload,
        ..
    } = c.recv_event("system").await
    else {
        panic!()
    };
    assert_eq!((jr, msg_ref), (Value::String(join_ref.clone()), Value::Null));
    assert_eq!(payload["channel"], "room");
    assert_eq!(payload["extension"], "system");
    assert_eq!(payload["status"], "error");
    let message = payload["message"].as_str().unwrap();
    assert!(
        message.starts_with("Token has expired ") && message.ends_with(" seconds ago"),
        "{message}"
    );
    let Frame::Msg { msg_ref, .. } = c.recv_event("phx_close").await else {
        panic!()
    };
    assert_eq!(msg_ref, Value::String(join_ref));
    c.heartbeat().await;
}

#[tokio::test]
async fn a_refreshed_token_keeps_the_channel_open() {
    let server = TestServer::start().await;
    let mut c = server.client("2.0.0").await;
    let join_ref = c
        .join_raw(
            "realtime:room",
            json!({"config": {}, "access_token": user_token(1)}),
        )
        .await;
    assert_eq!(c.recv_event("phx_reply").await.payload()["status"], "ok");
    c.send(
        Some(&join_ref),
        "realtime:room",
        "access_token",
        json!({"access_token": user_token(3600)}),
    )
    .await;
    // No reply to access_token, and no expiry once the old token's time has passed.
    c.expect_silence(Duration::from_millis(2200)).await;
    c.send(
        Some(&join_ref),
        "realtime:room",
        "presence",
        json!({"type": "presence", "event": "untrack"}),
    )
    .await;
    assert_eq!(c.recv_event("phx_reply").await.payload()["status"], "ok");

    // A refused token shuts the channel down with its message.
    c.send(
        Some(&join_ref),
        "realtime:room",
        "access_token",
        json!({"access_token": "x.y.z"}),
    )
    .await;
    let system = c.recv_event("system").await;
    assert_eq!(
        system.payload()["message"],
        "The token provided is not a valid JWT"
    );
    c.recv_event("phx_close").await;
}

#[tokio::test]
async fn idle_sockets_are_closed() {
    let server = TestServer::start_with(|c| c.server.limits.idle_timeout = Duration::from_millis(600)).await;
    let mut busy = server.client("2.0.0").await;
    let mut idle = server.client("2.0.0").await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        busy.heartbeat().await;
    }
    assert_eq!(idle.recv().await, Frame::Close(Some(1001), "idle timeout".into()));
    busy.heartbeat().await;
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001_and_returns() {
    let server = TestServer::start().await;
    let mut a = server.client("2.0.0").await;
    let mut b = server.client("1.0.0").await;
    a.join("realtime:room", json!({})).await;
    b.heartbeat().await;
    let started = std::time::Instant::now();
    server.shutdown.cancel();
    assert_eq!(
        a.recv().await,
        Frame::Close(Some(1001), "server shutting down".into())
    );
    assert_eq!(
        b.recv().await,
        Frame::Close(Some(1001), "server shutting down".into())
    );
    let result = tokio::time::timeout(Duration::from_secs(6), server.handle)
        .await
        .expect("run returned");
    assert!(result.expect("task").is_ok());
    assert!(started.elapsed() < Duration::from_secs(5));
    // The listener is closed.
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn websocket_control_frames_and_size_limit() {
    use futures::{SinkExt, StreamExt};
    let server = TestServer::start_with(|c| c.server.limits.max_frame_size = 1000).await;
    let mut c = server.client("2.0.0").await;
    c.send_raw(Message::Ping(vec![1, 2, 3].into())).await;
    let pong = tokio::time::timeout(WAIT, c.ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Message::Pong(vec![1, 2, 3].into()));

    // The client's close is answered with a close.
    c.ws.send(Message::Close(None)).await.unwrap();
    let Frame::Close(code, _) = c.recv().await else {
        panic!()
    };
    assert_eq!(code, Some(1000));

    // A message over max_frame_size closes the socket with 1009.
    let mut c = server.client("2.0.0").await;
    c.send_raw(Message::Text("x".repeat(2000).into())).await;
    assert_eq!(
        c.recv().await,
        Frame::Close(Some(1009), "message too large".into())
    );
}

#[tokio::test]
async fn plain_http_on_the_websocket_path_is_refused() {
    let server = TestServer::start().await;
    let (status, _) = http(server.addr, "GET", "/socket/websocket?vsn=2.0.0", &[], b"").await;
    assert_eq!(status, 426);
}
