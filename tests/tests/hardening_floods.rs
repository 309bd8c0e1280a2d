//! Floods from clients. Joins, on one socket and across sockets (the node's rate set strict, with
//! no queue): every join gets an explicit answer with Supabase's reason (never a timeout),
//! flooding sockets are closed with 1001,
//! refused joins count toward the rate like the others, and the node serves normally once the
//! second is over. Heartbeats: a client that keeps its socket busy still loses its channel when
//! the channel's token expires.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::StreamExt;
use realtime_tests::{auth::*, phoenix::*, server::*};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const RATE: &str = "ClientJoinRateLimitReached: Too many joins per second";

/// Reads a socket's frames until it closes: the join replies' reasons (`"ok"` for accepted
/// joins) in order, and the close.
async fn replies_until_close(c: &mut Client) -> (Vec<String>, Frame) {
    let mut reasons = Vec::new();
    loop {
        match c.recv().await {
            close @ Frame::Close(..) => return (reasons, close),
            Frame::Msg { event, payload, .. } if event == "phx_reply" => {
                reasons.push(match payload["status"].as_str() {
                    Some("ok") => "ok".to_owned(),
                    _ => payload["response"]["reason"].as_str().unwrap_or("?").to_owned(),
                })
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_flood_across_sockets_gets_supabase_errors_and_the_node_recovers() {
    const LIMIT: usize = 20;
    let server = TestServer::start_with(|c| {
        c.server.limits.max_joins_per_second = LIMIT as u32;
        // No queue: joins over the node's rate are refused at once.
        c.server.limits.join_queue_max_wait = Duration::ZERO;
    })
    .await;
    let mut flooders = Vec::new();
    for _ in 0..5 {
        flooders.push(server.client("2.0.0").await);
    }
    // Each socket fires 30 joins without waiting for replies (a socket the server already
    // closed takes no more).
    for (s, c) in flooders.iter_mut().enumerate() {
        use futures::SinkExt;
        for n in 0..30 {
            let text = json!([n.to_string(), n.to_string(), format!("realtime:s{s}-{n}"), "phx_join", {"config": {}}]);
            if c.ws.send(Message::Text(text.to_string().into())).await.is_err() {
                break;
            }
        }
    }
    let (mut accepted, mut closed) = (0, 0);
    for c in &mut flooders {
        let (reasons, close) = replies_until_close(c).await;
        let refused = reasons.iter().filter(|r| *r != "ok").count();
        accepted += reasons.len() - refused;
        // Every answer is ok or the rate reason; a refusal is the socket's last answer.
        if refused > 0 {
            assert_eq!(refused, 1, "{reasons:?}");
            assert_eq!(reasons.last().map(String::as_str), Some(RATE));
            assert_eq!(
                close,
                Frame::Close(Some(1001), "too many joins per second".into())
            );
            closed += 1;
        }
    }
    println!("join flood: 150 joins on 5 sockets, {accepted} accepted, {closed} sockets closed");
    // One window, or two if the flood straddled a second boundary.
    assert!(
        (LIMIT..=2 * LIMIT).contains(&accepted),
        "{accepted} joins accepted"
    );
    assert!(closed >= 4, "only {closed} of 5 flooding sockets were closed");

    // While joins keep coming faster than the node's rate, a new socket is refused at the
    // handshake. The pace is exhausted only while the flood lasts (it spaces joins 1/rate
    // apart), so a background task keeps it up; how soon the server reads the flood depends
    // on the machine, hence the attempts.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let url = server.url("2.0.0");
    let flood = tokio::spawn({
        let url = url.clone();
        async move {
            use futures::SinkExt;
            for s in 0.. {
                let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                for n in 0..30 {
                    let text = json!([n.to_string(), n.to_string(), format!("realtime:b{s}-{n}"), "phx_join", {"config": {}}]);
                    if ws.send(Message::Text(text.to_string().into())).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut refused = None;
    for _ in 0..400 {
        match tokio_tungstenite::connect_async(&url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                refused = Some(response);
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => panic!("handshake failed otherwise: {e}"),
        }
    }
    flood.abort();
    let response = refused.expect("a handshake during a join flood was refused");
    assert_eq!(response.status().as_u16(), 429);
    let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
    assert_eq!(body, json!({"error": "Too many joins per second"}));

    // The next second, a new client connects, joins and broadcasts.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut c = server.client("2.0.0").await;
    let join_ref = c.join("realtime:room", json!({"broadcast": {"ack": true}})).await;
    c.send(
        Some(&join_ref),
        "realtime:room",
        "broadcast",
        json!({"type": "broadcast", "event": "e", "payload": {}}),
    )
    .await;
    assert_eq!(c.recv_event("phx_reply").await.payload()["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_joins_count_toward_the_rate_and_a_closing_socket_stops_reading() {
    const LIMIT: usize = 50;
    const FLOOD: usize = 20_000;
    let server = TestServer::start_with(|c| {
        c.server.limits.max_joins_per_second_per_socket = LIMIT as u32;
        c.server.limits.channel_error_backoff = Duration::from_millis(300);
    })
    .await;
    let c = server.client("2.0.0").await;
    let (mut write, mut read) = c.ws.split();
    // 20,000 joins of an empty topic name, each refused after the error backoff: without a
    // rate on refused joins each would wait in memory for its delayed reply.
    let writer = tokio::spawn(async move {
        use futures::SinkExt;
        for n in 0..FLOOD {
            let text = format!(r#"["{n}","{n}","realtime:","phx_join",{{}}]"#);
            if write.feed(Message::Text(text.into())).await.is_err() {
                return n;
            }
        }
        let _ = write.flush().await;
        FLOOD
    });
    let mut reasons = Vec::new();
    let close = loop {
        let next = tokio::time::timeout(WAIT, read.next())
            .await
            .unwrap_or_else(|_| panic!("no close after {} replies", reasons.len()));
        match next {
            Some(Ok(Message::Text(text))) => match decode_text(text.as_str()) {
                Frame::Msg { payload, .. } => reasons.push(payload["response"]["reason"].clone()),
                other => panic!("{other:?}"),
            },
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    let sent = writer.await.unwrap();
    println!(
        "refused-join flood: {sent} joins sent, {} answered before the close",
        reasons.len()
    );
    assert!(
        reasons.len() <= 2 * LIMIT + 1,
        "{} answers: refused joins were not rate limited",
        reasons.len()
    );
    assert_eq!(reasons.last(), Some(&json!(RATE)));
    for reason in &reasons[..reasons.len() - 1] {
        assert_eq!(reason, "TopicNameRequired: You must provide a topic name");
    }
    assert_eq!(close, Some(1001));
}

#[tokio::test]
async fn joins_to_topics_outside_realtime_are_answered_at_once_and_not_counted() {
    let server = TestServer::start_with(|c| c.server.limits.max_joins_per_second_per_socket = 3).await;
    let mut c = server.client("2.0.0").await;
    for n in 0..10 {
        c.join_raw(&format!("other:{n}"), json!({})).await;
        let reply = c.recv_event("phx_reply").await;
        assert_eq!(reply.payload()["response"]["reason"], "unmatched topic");
    }
    c.join("realtime:room", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_socket_still_has_its_channel_closed_when_the_token_expires() {
    let server = TestServer::start().await;
    let c = server.client("2.0.0").await;
    let (mut write, mut read) = c.ws.split();
    use futures::SinkExt;
    let join = json!(["1", "1", "realtime:room", "phx_join", {"config": {}, "access_token": user_token(2)}]);
    write.send(Message::Text(join.to_string().into())).await.unwrap();
    // Heartbeats as fast as the socket takes them, for up to 10 s.
    let flood = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut n = 0u64;
        while started.elapsed() < Duration::from_secs(10) {
            n += 1;
            let text = format!(r#"[null,"h{n}","phoenix","heartbeat",{{}}]"#);
            if write.feed(Message::Text(text.into())).await.is_err() {
                break;
            }
            if n.is_multiple_of(256) && write.flush().await.is_err() {
                break;
            }
        }
        n
    });
    let started = std::time::Instant::now();
    let system = loop {
        let next = tokio::time::timeout(Duration::from_secs(10), read.next())
            .await
            .expect("the socket stays open")
            .expect("a frame")
            .expect("a good frame");
        let Message::Text(text) = next else { continue };
        let frame = decode_text(text.as_str());
        if frame.event() == "system" {
            break frame;
        }
    };
    let after = started.elapsed();
    flood.abort();
    println!("busy socket: channel closed for its expired token after {after:?}");
    let message = system.payload()["message"].as_str().unwrap().to_owned();
    assert!(message.starts_with("Token has expired"), "{message}");
    assert!(after < Duration::from_secs(4), "the expiry waited {after:?}");
}
