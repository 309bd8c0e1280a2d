//! Fair limits: what one client does counts against its socket, its subject (the token's `sub`)
//! and its address before the node's totals, so a flood from one client never refuses another
//! user; a restart's reconnect storm is joined, paced, without a single refusal; ordinary
//! traffic never meets a limit. Each test also shows a well-behaved client being served while
//! the limit bites.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use realtime_tests::{auth::*, phoenix::*, server::*};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const RATE: &str = "ClientJoinRateLimitReached: Too many joins per second";

/// A token for user `sub` (role `authenticated`).
fn user(sub: &str) -> String {
    sign(&json!({"role": "authenticated", "sub": sub, "exp": unix_now() + 3600}))
}

fn url_for(server: &TestServer, key: &str) -> String {
    format!("ws://{}/socket/websocket?apikey={key}&vsn=2.0.0", server.addr)
}

/// Connects with `key`, as if through a proxy that names `forwarded_for` as the client.
async fn connect(server: &TestServer, key: &str, forwarded_for: Option<&str>) -> Result<Client, u16> {
    let mut request = url_for(server, key).into_client_request().unwrap();
    if let Some(ip) = forwarded_for {
        request
            .headers_mut()
            .insert("x-forwarded-for", ip.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(Client::new(ws, "2.0.0")),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_flood_from_one_socket_never_fails_another_users_join() {
    let server = TestServer::start_with(|c| {
        c.server.limits.max_joins_per_second = 20;
        // Strict: no queue, a join over the node's rate is refused.
        c.server.limits.join_queue_max_wait = Duration::ZERO;
        c.server.limits.max_joins_per_second_per_socket = 5;
    })
    .await;
    let mut flooder = connect(&server, &user("mallory"), None).await.unwrap();
    // 200 joins without waiting for replies; the server closes the socket partway through.
    for n in 0..200 {
        use futures::SinkExt;
        let text =
            json!([n.to_string(), n.to_string(), format!("realtime:flood-{n}"), "phx_join", {"config": {}}]);
        let message = tokio_tungstenite::tungstenite::Message::Text(text.to_string().into());
        if flooder.ws.send(message).await.is_err() {
            break;
        }
    }
    let mut answers = Vec::new();
    let close = loop {
        match flooder.recv().await {
            close @ Frame::Close(..) => break close,
            Frame::Msg { event, payload, .. } if event == "phx_reply" => answers.push(payload),
            _ => {}
        }
    };
    assert_eq!(
        close,
        Frame::Close(Some(1001), "too many joins per second".into())
    );
    assert_eq!(answers.len(), 6, "5 joins, then the refusal: {answers:?}");
    assert_eq!(answers[5]["response"]["reason"], RATE);

    // At once, while the flooder's second lasts: another user joins. Without the per-socket
    // limit the flood would have taken the node's whole second and this join would be refused.
    let mut alice = connect(&server, &user("alice"), None).await.unwrap();
    alice.join("realtime:room", json!({})).await;
    alice.heartbeat().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_count_per_subject_and_per_address() {
    let server = TestServer::start_with(|c| {
        c.server.limits.max_joins_per_second_per_subject = 3;
        c.server.limits.max_joins_per_second_per_ip = 6;
        c.server.auth.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    // One user on three sockets: the subject's rate is shared by them.
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(connect(&server, &user("bob"), Some("203.0.113.1")).await.unwrap());
    }
    for (n, c) in sockets.iter_mut().enumerate() {
        c.join(&format!("realtime:b{n}"), json!({})).await;
    }
    let mut fourth = connect(&server, &user("bob"), Some("203.0.113.1")).await.unwrap();
    fourth.join_raw("realtime:b3", json!({"config": {}})).await;
    let reply = fourth.recv_event("phx_reply").await;
    assert_eq!(reply.payload()["response"]["reason"], RATE);

    // Other users at the same address still join until the address's rate (6) is used up.
    let mut carol = connect(&server, &user("carol"), Some("203.0.113.1"))
        .await
        .unwrap();
    for n in 0..3 {
        carol.join(&format!("realtime:c{n}"), json!({})).await;
    }
    carol.join_raw("realtime:c3", json!({"config": {}})).await;
    let reply = carol.recv_event("phx_reply").await;
    assert_eq!(
        reply.payload()["response"]["reason"],
        RATE,
        "the address's 7th join"
    );

    // A user elsewhere is not affected.
    let mut dave = connect(&server, &user("dave"), Some("198.51.100.7"))
        .await
        .unwrap();
    dave.join("realtime:d", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_count_per_subject_and_per_trusted_address() {
    let server = TestServer::start_with(|c| {
        c.server.limits.max_connections_per_subject = 2;
        c.server.limits.max_connections_per_ip = 3;
        c.server.auth.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let _a1 = connect(&server, &user("erin"), Some("203.0.113.5"))
        .await
        .unwrap();
    let _a2 = connect(&server, &user("erin"), Some("203.0.113.6"))
        .await
        .unwrap();
    assert_eq!(
        connect(&server, &user("erin"), Some("203.0.113.7")).await.err(),
        Some(429),
        "a third socket of the same user"
    );
    let _b1 = connect(&server, &user("frank"), Some("203.0.113.5"))
        .await
        .unwrap();
    let _b2 = connect(&server, &user("grace"), Some("203.0.113.5"))
        .await
        .unwrap();
    assert_eq!(
        connect(&server, &user("heidi"), Some("203.0.113.5")).await.err(),
        Some(429),
        "a fourth socket from the same address"
    );
    // Another address is served; a slot comes back when its socket goes.
    let mut ok = connect(&server, &user("heidi"), Some("198.51.100.1"))
        .await
        .unwrap();
    ok.join("realtime:room", json!({})).await;
    drop(_b2);
    let mut back = None;
    for _ in 0..50 {
        if let Ok(c) = connect(&server, &user("ivan"), Some("203.0.113.5")).await {
            back = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(back.is_some(), "the address's slot was returned");
}

#[tokio::test]
async fn forwarded_for_is_ignored_without_trusted_proxies() {
    let server = TestServer::start_with(|c| c.server.limits.max_connections_per_ip = 2).await;
    let _a = connect(&server, &user("a"), Some("203.0.113.1")).await.unwrap();
    let _b = connect(&server, &user("b"), Some("203.0.113.2")).await.unwrap();
    // Every socket is 127.0.0.1 whatever the header says.
    assert_eq!(
        connect(&server, &user("c"), Some("203.0.113.3")).await.err(),
        Some(429)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_flood_is_stopped_at_its_subject_and_others_keep_broadcasting() {
    let server = TestServer::start_with(|c| {
        c.server.limits.max_broadcasts_per_second_per_subject = 5;
        c.server.limits.max_events_per_second = 1000;
    })
    .await;
    let mut listener = connect(&server, &user("listener"), None).await.unwrap();
    listener.join("realtime:room", json!({})).await;
    // Mallory on two sockets: five broadcasts in the second are the subject's share.
    let mut m1 = connect(&server, &user("mallory"), None).await.unwrap();
    let mut m2 = connect(&server, &user("mallory"), None).await.unwrap();
    let j1 = m1
        .join("realtime:room", json!({"broadcast": {"ack": true}}))
        .await;
    let j2 = m2
        .join("realtime:room", json!({"broadcast": {"ack": true}}))
        .await;
    let push = json!({"type": "broadcast", "event": "e", "payload": {}});
    for _ in 0..3 {
        m1.send(Some(&j1), "realtime:room", "broadcast", push.clone())
            .await;
        assert_eq!(m1.recv_event("phx_reply").await.payload()["status"], "ok");
    }
    for _ in 0..2 {
        m2.send(Some(&j2), "realtime:room", "broadcast", push.clone())
            .await;
        assert_eq!(m2.recv_event("phx_reply").await.payload()["status"], "ok");
    }
    m2.send(Some(&j2), "realtime:room", "broadcast", push.clone())
        .await;
    let system = m2.recv_event("system").await;
    assert_eq!(system.payload()["message"], "Too many messages per second");
    m2.recv_event("phx_close").await;

    // Alice broadcasts on the same topic, and the listener gets it.
    let mut alice = connect(&server, &user("alice"), None).await.unwrap();
    let ja = alice
        .join("realtime:room", json!({"broadcast": {"ack": true}}))
        .await;
    let hello = json!({"type": "broadcast", "event": "hello", "payload": {"from": "alice"}});
    alice.send(Some(&ja), "realtime:room", "broadcast", hello).await;
    assert_eq!(alice.recv_event("phx_reply").await.payload()["status"], "ok");
    listener.recv_broadcast("hello").await;
}

#[tokio::test]
async fn postgres_changes_bindings_per_join_are_capped() {
    let server = TestServer::start_with(|c| c.server.limits.max_changes_bindings_per_join = 2).await;
    let mut c = server.client("2.0.0").await;
    let binding = json!({"event": "*", "schema": "public", "table": "t"});
    c.join_raw(
        "realtime:many",
        json!({"config": {"postgres_changes": [binding, binding, binding]}}),
    )
    .await;
    let reply = c.recv_event("phx_reply").await;
    assert_eq!(
        reply.payload()["response"]["reason"],
        "PostgresChangesLimitReached: Too many postgres_changes bindings in one join"
    );
    // The socket stays usable.
    c.join("realtime:room", json!({})).await;
}

#[tokio::test]
async fn access_token_messages_are_rate_limited() {
    let server = TestServer::start_with(|c| c.server.limits.max_access_tokens_per_second = 3).await;
    let mut c = server.client("2.0.0").await;
    let join_ref = c.join("realtime:room", json!({})).await;
    for _ in 0..3 {
        c.send(
            Some(&join_ref),
            "realtime:room",
            "access_token",
            json!({"access_token": user_token(3600)}),
        )
        .await;
    }
    c.heartbeat().await;
    c.send(
        Some(&join_ref),
        "realtime:room",
        "access_token",
        json!({"access_token": user_token(3600)}),
    )
    .await;
    let system = c.recv_event("system").await;
    assert_eq!(
        system.payload()["message"],
        "Too many access_token messages per second"
    );
    c.recv_event("phx_close").await;
    c.heartbeat().await;
}

/// A restart's reconnect storm: every client comes back at once. 3,000 sockets (each its own
/// user behind a trusted proxy, as real clients are) send their joins together to a node whose
/// join rate is scaled down to 300/s (this test's client sends them over a few seconds, so a
/// faster rate would never be reached): the first second's worth joins at once, the rest wait
/// their turn, about 9 s for the last, and not one is refused. A node that refused joins over
/// its rate (as Supabase's 100/s does) would refuse most of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_is_joined_without_a_refusal() {
    const CLIENTS: usize = 3_000;
    let server = TestServer::start_with(|c| {
        c.server.limits.max_joins_per_second = 300;
        c.server.auth.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let addr = server.addr;
    // The sockets first (at most 256 handshakes in flight, so the test's own burst does not
    // overflow the kernel's listen backlog), then every join at once.
    let connecting = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
    let sockets: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let connecting = connecting.clone();
            tokio::spawn(async move {
                let key = user(&format!("storm-{n}"));
                let url = format!("ws://{addr}/socket/websocket?apikey={key}&vsn=2.0.0");
                let mut request = url.into_client_request().unwrap();
                let ip = format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255);
                request
                    .headers_mut()
                    .insert("x-forwarded-for", ip.parse().unwrap());
                let _permit = connecting.acquire().await.unwrap();
                let (ws, _) = tokio_tungstenite::connect_async(request)
                    .await
                    .unwrap_or_else(|e| panic!("connect: {e}"));
                Client::new(ws, "2.0.0")
            })
        })
        .collect();
    let mut clients = Vec::new();
    for socket in sockets {
        clients.push(socket.await.unwrap());
    }
    let started = Instant::now();
    let joins: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                c.join_raw("realtime:lobby", json!({"config": {}})).await;
                match tokio::time::timeout(Duration::from_secs(60), c.ws.next()).await {
                    Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text)))) => {
                        let reply = decode_text(text.as_str());
                        match reply.payload()["status"].as_str() {
                            Some("ok") => Ok(c),
                            _ => Err(format!("refused: {}", reply.payload())),
                        }
                    }
                    other => Err(format!("no reply: {other:?}")),
                }
            })
        })
        .collect();
    let mut joined = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    for join in joins {
        match join.await.unwrap() {
            Ok(c) => joined.push(c),
            Err(e) => refused.push(e),
        }
    }
    let took = started.elapsed();
    println!(
        "reconnect storm: {} of {CLIENTS} joined in {took:?}",
        joined.len()
    );
    assert!(
        refused.is_empty(),
        "{} refused, e.g. {:?}",
        refused.len(),
        &refused[..refused.len().min(3)]
    );
    assert!(took < Duration::from_secs(60), "{took:?}");
    // The node still answers its clients.
    joined[0].heartbeat().await;
    joined[CLIENTS - 1].heartbeat().await;
}

/// Ordinary churn never meets a limit: 40 clients each cycling connect → join → track →
/// broadcast → leave, about 35 cycles per second in all, for three seconds, with the default
/// limits and every socket from one address as one user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_clients_cycling_see_no_refusal() {
    const CLIENTS: usize = 40;
    const RUN: Duration = Duration::from_secs(3);
    let server = TestServer::start().await;
    let url = server.url("2.0.0");
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut cycles = 0u32;
                // Staggered, each client starts a cycle every 0.9 s: over the run, counting the
                // ramp up, about 35 cycles per second in all.
                tokio::time::sleep(Duration::from_millis(22 * n as u64)).await;
                while started.elapsed() < RUN {
                    let began = Instant::now();
                    let mut c = Client::connect(&url, "2.0.0").await;
                    let topic = format!("realtime:cycle-{}", n % 8);
                    let join_ref = c
                        .join(
                            &topic,
                            json!({"broadcast": {"ack": true}, "presence": {"key": format!("k{n}")}}),
                        )
                        .await;
                    let track = json!({"type": "presence", "event": "track", "payload": {"n": n}});
                    let r = c.send(Some(&join_ref), &topic, "presence", track).await;
                    expect_ok(&mut c, &r).await?;
                    let push = json!({"type": "broadcast", "event": "e", "payload": {"n": n}});
                    let r = c.send(Some(&join_ref), &topic, "broadcast", push).await;
                    expect_ok(&mut c, &r).await?;
                    let r = c.send(Some(&join_ref), &topic, "phx_leave", json!({})).await;
                    expect_ok(&mut c, &r).await?;
                    drop(c);
                    cycles += 1;
                    let pause = Duration::from_millis(900).saturating_sub(began.elapsed());
                    tokio::time::sleep(pause).await;
                }
                Ok::<u32, String>(cycles)
            })
        })
        .collect();
    let mut cycles = 0;
    for task in tasks {
        cycles += task.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    }
    let rate = f64::from(cycles) / started.elapsed().as_secs_f64();
    println!("churn: {cycles} cycles, {rate:.1} per second, no refusal");
    assert!(cycles >= 90, "only {cycles} cycles ran");
}

/// Reads until the reply to `msg_ref`; an error reply or a `system` error is a refusal.
async fn expect_ok(c: &mut Client, msg_ref: &str) -> Result<(), String> {
    loop {
        match c.recv().await {
            Frame::Msg {
                event,
                payload,
                msg_ref: got,
                ..
            } => {
                if event == "system" && payload["status"] == "error" {
                    return Err(format!("refused: {payload}"));
                }
                if event == "phx_reply" && got == Value::String(msg_ref.to_owned()) {
                    return match payload["status"].as_str() {
                        Some("ok") => Ok(()),
                        _ => Err(format!("refused: {payload}")),
                    };
                }
            }
            Frame::Close(code, reason) => return Err(format!("closed {code:?} {reason}")),
            Frame::UserBroadcast { .. } => {}
        }
    }
}
