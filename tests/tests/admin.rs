//! The `/admin` inspector's API against a running `realtime serve`: off unless `ADMIN_SECRET` is
//! set, every call refused without the secret, the overview shows a joined channel with its
//! subscriber and its presence, a broadcast sent from it reaches that subscriber, disconnecting
//! the subscriber closes its socket, and the live log names a change's table and position
//! without its values.

use std::time::Duration;

use realtime::embedded::Options;
use realtime_tests::auth::{SECRET, token};
use realtime_tests::free_port;
use realtime_tests::phoenix::{Client, socket_url};
use realtime_tests::server::http;
use realtime_tests::service::Service;
use realtime_tests::{Process, exec, pool, start_postgres};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN_SECRET: &str = "admin-test-secret-0123456789";

/// One HTTP/1.1 request on loopback with a JSON body: the status and the body.
async fn request(
    port: u16,
    method: &str,
    path: &str,
    secret: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = secret.map(|s| format!("Bearer {s}"));
    let mut headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    headers.push(("Content-Type", "application/json"));
    http(("127.0.0.1", port), method, path, &headers, body.as_bytes()).await
}

/// A vsn 1.0.0 client joined to public channel `channel` with broadcast and presence tracked as
/// `key`.
async fn join(port: u16, channel: &str, key: &str) -> Client {
    let jwt = token("anon");
    let mut client = Client::connect(&socket_url(port, &jwt, "1.0.0"), "1.0.0").await;
    client.patience = Duration::from_secs(10);
    let topic = format!("realtime:{channel}");
    let payload = json!({
        "config": {"broadcast": {"self": false}, "presence": {"key": key}, "private": false},
        "access_token": jwt
    });
    let join_ref = client.join_raw(&topic, payload).await;
    client.recv_event("phx_reply").await;
    let track = json!({"type": "presence", "event": "track", "payload": {"secret_note": "meta value"}});
    client.send(Some(&join_ref), &topic, "presence", track).await;
    client
}

/// Waits until the overview satisfies `ready` (joins and presence land asynchronously).
async fn overview_until(port: u16, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = request(port, "GET", "/admin/api/overview", Some(ADMIN_SECRET), None).await;
        assert_eq!(status, 200, "{body}");
        let overview: Value = serde_json::from_str(&body).expect("JSON");
        if ready(&overview) {
            return overview;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "overview never got there: {overview}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_is_off_without_a_secret() {
    let port = free_port();
    let service = Process::spawn(
        &["serve"],
        &[("PORT", port.to_string()), ("API_JWT_SECRET", SECRET.to_owned())],
    );
    service.wait_stderr("listening", Duration::from_secs(30));
    for path in ["/admin", "/admin/api/overview"] {
        let (status, _) = request(port, "GET", path, Some(ADMIN_SECRET), None).await;
        assert_eq!(status, 404, "{path} without ADMIN_SECRET");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_inspects_sends_and_disconnects() {
    let pg = start_postgres(Options::default());
    pg.psql(
        "postgres",
        "CREATE TABLE items (id int PRIMARY KEY, secret_value text); \
         CREATE PUBLICATION pub FOR TABLE items;",
    )
    .expect("setup");
    let service = Service::start(
        &pg.url("postgres"),
        "admin_slot",
        "pub",
        &[("ADMIN_SECRET", ADMIN_SECRET.to_owned())],
    );
    let port = service.port;

    // Without the secret, or with a wrong one, every API call is refused; the page itself
    // holds no data.
    for secret in [None, Some("admin-test-secret-012345678X"), Some("short")] {
        let (status, body) = request(port, "GET", "/admin/api/overview", secret, None).await;
        assert_eq!(status, 401, "{body}");
        let (status, _) = request(port, "POST", "/admin/api/broadcast", secret, Some(json!({}))).await;
        assert_eq!(status, 401);
        let (status, _) = request(
            port,
            "POST",
            "/admin/api/token",
            secret,
            Some(json!({"role": "anon"})),
        )
        .await;
        assert_eq!(status, 401);
    }
    let (status, page) = request(port, "GET", "/admin", None, None).await;
    assert_eq!(status, 200);
    assert!(page.contains("/admin/api/"), "the page calls the API");

    // A joined channel shows with its subscriber and presence key, never the presence meta.
    let mut client = join(port, "room-1", "alice").await;
    let overview = overview_until(port, |o| {
        o["channels"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["topic"] == "room-1" && c["presence"][0]["key"] == "alice")
        })
    })
    .await;
    assert_eq!(overview["replication"]["slot"], "admin_slot");
    assert_eq!(overview["replication"]["streaming"], true);
    let room = overview["channels"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["topic"] == "room-1"))
        .expect("room-1");
    assert_eq!(room["private"], false);
    let subscribers = room["subscribers"].as_array().expect("subscribers");
    assert_eq!(subscribers.len(), 1, "{room}");
    let subscriber = subscribers[0]["id"].as_u64().expect("a subscriber id");
    assert!(
        !overview.to_string().contains("meta value"),
        "presence metas stay out: {overview}"
    );

    // A broadcast sent from the inspector reaches the subscriber.
    let (status, body) = request(
        port,
        "POST",
        "/admin/api/broadcast",
        Some(ADMIN_SECRET),
        Some(json!({"topic": "room-1", "event": "notice", "payload": {"text": "hello"}})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let received = client.recv_event("broadcast").await;
    assert_eq!(received.payload()["event"], "notice");
    assert_eq!(received.payload()["payload"]["text"], "hello");
    let (status, _) = request(
        port,
        "POST",
        "/admin/api/broadcast",
        Some(ADMIN_SECRET),
        Some(json!({"topic": "room-1"})),
    )
    .await;
    assert_eq!(status, 400, "a broadcast without event and payload is refused");

    // The live log names a change's table, kind and position, never its values.
    let mut log = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let head = format!(
        "GET /admin/api/log HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_SECRET}\r\n\r\n"
    );
    log.write_all(head.as_bytes()).await.expect("send");
    exec(&pool(&pg).await, "INSERT INTO items VALUES (7, 'do-not-show')").await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains("\"table\":\"items\"") {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, log.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no change in the live log within 10 s: {seen}"))
            .expect("read the log");
        assert!(n > 0, "the log ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert!(seen.contains("\"type\":\"INSERT\""), "{seen}");
    assert!(seen.contains("\"position\":\""), "{seen}");
    // The overview follows: the change's position, and the window holding its transaction.
    let overview = overview_until(port, |o| o["replication"]["window"]["transactions"] == 1).await;
    let position = overview["replication"]["position"].as_str().expect("a position");
    assert!(
        seen.contains(&format!("\"position\":\"{position}\"")),
        "{position} {seen}"
    );
    assert!(overview["replication"]["window"]["bytes"].as_u64() > Some(0));
    assert!(
        seen.contains("\"kind\":\"broadcast\"") && seen.contains("\"event\":\"notice\""),
        "{seen}"
    );
    assert!(
        !seen.contains("do-not-show") && !seen.contains("hello"),
        "values stay out: {seen}"
    );

    // A minted token carries the role asked for and is signed with the service's secret.
    let (status, body) = request(
        port,
        "POST",
        "/admin/api/token",
        Some(ADMIN_SECRET),
        Some(json!({"role": "reader", "sub": "u1"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let minted: Value = serde_json::from_str(&body).expect("JSON");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(
        minted["token"].as_str().expect("a token"),
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .expect("a valid token")
    .claims;
    assert_eq!(
        (claims["role"].as_str(), claims["sub"].as_str()),
        (Some("reader"), Some("u1"))
    );

    // Disconnecting the subscriber closes its socket, and its channel leaves the overview.
    let (status, body) = request(
        port,
        "POST",
        "/admin/api/disconnect",
        Some(ADMIN_SECRET),
        Some(json!({"subscriber": subscriber})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        client.closes(Duration::from_secs(10)).await,
        "the subscriber's socket closes"
    );
    overview_until(port, |o| o["channels"].as_array().is_some_and(|c| c.is_empty())).await;
    let (status, _) = request(
        port,
        "POST",
        "/admin/api/disconnect",
        Some(ADMIN_SECRET),
        Some(json!({"subscriber": subscriber})),
    )
    .await;
    assert_eq!(status, 404, "an unknown subscriber");

    // The secret never reaches the log.
    assert!(!service.process.stderr().contains(ADMIN_SECRET));
}
