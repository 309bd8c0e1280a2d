//! The HTTP edge under hostile clients, against the `realtime` binary (its memory and file
//! descriptors are read from `/proc`): slow handshakes (slowloris) are cut at the handshake
//! timeout without starving anyone, and oversized request heads get 431.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use realtime_tests::{auth::*, phoenix::*, server::*};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// How long each slow client is given before the test calls it "never closed".
const GIVE_UP: Duration = Duration::from_secs(15);

/// A WebSocket upgrade request for `key`, complete (ends with the blank line).
fn upgrade_request(key: &str) -> Vec<u8> {
    format!(
        "GET /socket/websocket?apikey={key}&vsn=2.0.0 HTTP/1.1\r\nHost: localhost\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .into_bytes()
}

/// Sends `request` one byte per second (nothing at all when `drip` is false) until the server
/// closes the connection; returns how long that took, or `None` after [`GIVE_UP`].
async fn slow_client(mut stream: TcpStream, request: Vec<u8>, drip: bool) -> Option<Duration> {
    let started = Instant::now();
    let mut sent = 0;
    let mut buf = [0u8; 1024];
    while started.elapsed() < GIVE_UP {
        if drip && sent < request.len() {
            if stream.write_all(&request[sent..=sent]).await.is_err() {
                return Some(started.elapsed());
            }
            sent += 1;
        }
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            // Closed (possibly after a short error response, read on the next turn).
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) | Err(_) => continue,
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handshakes_are_closed_at_the_handshake_timeout_and_others_keep_working() {
    const SLOW: usize = 500;
    let server = ServerProcess::start(&[("HANDSHAKE_TIMEOUT_MS", "2000")]).await;
    let (rss_before, fds_before) = (server.rss_kib(), server.fds());

    let mut slow = JoinSet::new();
    for i in 0..SLOW {
        let stream = TcpStream::connect(server.addr).await.expect("connect");
        // Half send nothing, half drip a valid upgrade request (which would take ~300 s).
        slow.spawn(slow_client(
            stream,
            upgrade_request(&user_token(3600)),
            i % 2 == 1,
        ));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fds_during = server.fds();
    let rss_during = server.rss_kib();

    // While the slow clients hold their connections, a normal client connects and works.
    let mut c = Client::connect(&server.url(&user_token(3600), "2.0.0"), "2.0.0").await;
    let join_ref = c
        .join("realtime:room", json!({"broadcast": {"self": true}}))
        .await;
    c.send(
        Some(&join_ref),
        "realtime:room",
        "broadcast",
        json!({"type": "broadcast", "event": "e", "payload": {"n": 1}}),
    )
    .await;
    assert_eq!(
        c.recv_event("broadcast(binary)").await.event(),
        "broadcast(binary)"
    );

    let mut closed_after = Vec::new();
    while let Some(result) = slow.join_next().await {
        closed_after.push(result.unwrap());
    }
    let never = closed_after.iter().filter(|t| t.is_none()).count();
    assert_eq!(never, 0, "{never} of {SLOW} slow connections were never closed");
    let mut times: Vec<Duration> = closed_after.into_iter().flatten().collect();
    times.sort();
    let (first, last) = (times[0], times[times.len() - 1]);
    println!(
        "slowloris: {SLOW} connections closed after {:.1}–{:.1} s; while open: server fds \
         {fds_before} -> {fds_during}, RSS {rss_before} KiB -> {rss_during} KiB",
        first.as_secs_f64(),
        last.as_secs_f64()
    );
    assert!(
        first >= Duration::from_millis(1500),
        "closed before the timeout: {first:?}"
    );
    assert!(last < Duration::from_secs(6), "closed too late: {last:?}");

    // Nothing leaks: descriptors return to where they were (plus the normal client's socket).
    let settled = server
        .wait_for(Duration::from_secs(5), |s| s.fds() <= fds_before + 1)
        .await;
    let (fds_after, rss_after) = (server.fds(), server.rss_kib());
    println!("slowloris: after: fds {fds_after}, RSS {rss_after} KiB");
    assert!(settled, "fds {fds_before} before, {fds_after} after");
    // The allocator keeps some of the memory the 500 pending handshakes used (about 40 KiB
    // each at most, seen as 20 MiB here); a leak per connection would keep growing past that.
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    c.heartbeat().await;
}

/// Sends a raw request head and returns the status line's code, or `None` when the server
/// closed the connection without answering. Write errors are ignored: the server may answer
/// and close before it has read everything.
async fn send_head(addr: std::net::SocketAddr, head: Vec<u8>) -> Option<u16> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&head).await;
        write
    });
    let mut response = Vec::new();
    let _ = tokio::time::timeout(WAIT, read.read_to_end(&mut response)).await;
    drop(writer.await);
    let text = String::from_utf8_lossy(&response);
    text.split(' ').nth(1).and_then(|s| s.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_get_431_and_memory_stays_bounded() {
    let server = ServerProcess::start(&[]).await;
    let rss_before = server.rss_kib();
    let head = |extra: &str| {
        format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n").into_bytes()
    };

    // An ordinary large header (an 8 KB cookie) is fine.
    let cookie = format!("Cookie: c={}\r\n", "x".repeat(8 * 1024));
    assert_eq!(send_head(server.addr, head(&cookie)).await, Some(200));

    // One 100 KB header, a 1 MiB one, and 1,000 small ones are refused.
    let big = format!("X-Big: {}\r\n", "x".repeat(100 * 1024));
    assert_eq!(send_head(server.addr, head(&big)).await, Some(431));
    let huge = format!("X-Huge: {}\r\n", "x".repeat(1024 * 1024));
    assert_eq!(send_head(server.addr, head(&huge)).await, Some(431));
    let many: String = (0..1000).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(send_head(server.addr, head(&many)).await, Some(431));

    // 200 clients at once sending 1 MiB heads: each refused, memory bounded.
    let mut all = JoinSet::new();
    for _ in 0..200 {
        all.spawn(send_head(server.addr, head(&huge)));
    }
    let mut refused = 0;
    while let Some(status) = all.join_next().await {
        let status = status.unwrap();
        assert!(matches!(status, Some(431) | None), "unexpected status {status:?}");
        refused += 1;
    }
    assert_eq!(refused, 200);
    let rss_after = server.rss_kib();
    println!("oversized heads: RSS {rss_before} KiB -> {rss_after} KiB after 200 × 1 MiB heads");
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );

    // The WebSocket endpoint still works, and a token of realistic size fits in the head.
    let fat = sign(&json!({"role": "authenticated", "exp": unix_now() + 60, "pad": "p".repeat(6000)}));
    let mut c = Client::connect(&server.url(&fat, "2.0.0"), "2.0.0").await;
    c.heartbeat().await;
}

#[tokio::test]
async fn a_rest_body_that_never_arrives_is_cut_at_the_handshake_timeout() {
    let server = ServerProcess::start(&[("HANDSHAKE_TIMEOUT_MS", "1000")]).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let head = format!(
        "POST /api/broadcast HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"messages\":",
        user_token(60)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("the server answers before the test gives up")
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(900));
}
