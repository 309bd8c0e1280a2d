//! Safe defaults of the `realtime` binary: `/metrics` behind a bearer token or on a listener of
//! its own, the listen address, the policy folder (a named folder that is missing stops the
//! start; the folder in use is logged), and refused tokens and joins logged and counted.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use realtime_tests::{Process, free_port};
use realtime_tests::{auth::*, phoenix::*, server::*};
use serde_json::json;

const METRICS_SECRET: &str = "metrics-secret-with-enough-length-0123456789";

async fn get_metrics(addr: SocketAddr, bearer: Option<&str>) -> (u16, String) {
    let header = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = header.iter().map(|h| ("Authorization", h.as_str())).collect();
    http(addr, "GET", "/metrics", &headers, b"").await
}

/// The value of one sample line (`name{labels} value`), if present.
fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_need_a_token_signed_with_metrics_jwt_secret() {
    let server = ServerProcess::start(&[("METRICS_JWT_SECRET", METRICS_SECRET)]).await;
    let (status, body) = get_metrics(server.addr, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("realtime_"), "{body}");

    // Signed with another secret (the API's, say): refused.
    let wrong = sign_with(SECRET, &json!({ "exp": unix_now() + 60 }));
    let (status, body) = get_metrics(server.addr, Some(&wrong)).await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("realtime_"), "{body}");
    // The right secret but expired: refused.
    let expired = sign_with(METRICS_SECRET, &json!({ "exp": unix_now() - 120 }));
    assert_eq!(get_metrics(server.addr, Some(&expired)).await.0, 401);

    let right = sign_with(METRICS_SECRET, &json!({ "exp": unix_now() + 60 }));
    let (status, body) = get_metrics(server.addr, Some(&right)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("realtime_websocket_connections "), "{body}");
    // Without exp too, as Supabase's scrapers send them.
    assert_eq!(
        get_metrics(server.addr, Some(&sign_with(METRICS_SECRET, &json!({}))))
            .await
            .0,
        200
    );
    assert!(!server.log().contains(&right), "the token was logged");

    // Without the setting, no token is asked for.
    let open = ServerProcess::start(&[]).await;
    assert_eq!(get_metrics(open.addr, None).await.0, 200);
}

#[tokio::test]
async fn metrics_port_serves_metrics_apart_from_the_public_port() {
    let metrics_port = free_port();
    let server = ServerProcess::start(&[
        ("METRICS_PORT", &metrics_port.to_string()),
        ("METRICS_JWT_SECRET", METRICS_SECRET),
    ])
    .await;
    let metrics_addr: SocketAddr = ([127, 0, 0, 1], metrics_port).into();
    // Not on the public port any more.
    assert_eq!(get_metrics(server.addr, None).await.0, 404);
    let right = sign_with(METRICS_SECRET, &json!({}));
    assert_eq!(get_metrics(server.addr, Some(&right)).await.0, 404);
    // On its own port, with the token still required.
    assert_eq!(get_metrics(metrics_addr, None).await.0, 401);
    let (status, body) = get_metrics(metrics_addr, Some(&right)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("realtime_websocket_connections "), "{body}");
    // The metrics port serves nothing else.
    assert_eq!(http(metrics_addr, "GET", "/healthz", &[], b"").await.0, 404);
    // The public port still serves clients.
    let mut client = Client::connect(&server.url(&user_token(600), "2.0.0"), "2.0.0").await;
    client.join("realtime:room", json!({})).await;
}

/// Whether a TCP connection to `ip:port` is accepted. 127.0.0.2 reaches this machine's
/// loopback too, but only listeners on every address (or on it) accept there.
async fn accepts(ip: [u8; 4], port: u16) -> bool {
    tokio::net::TcpStream::connect(SocketAddr::from((ip, port)))
        .await
        .is_ok()
}

#[tokio::test]
async fn serve_listens_on_every_address_unless_listen_address_says_otherwise() {
    let open = ServerProcess::start(&[]).await;
    assert!(accepts([127, 0, 0, 2], open.addr.port()).await, "{}", open.log());

    let local = ServerProcess::start(&[("LISTEN_ADDRESS", "127.0.0.1")]).await;
    assert!(accepts([127, 0, 0, 1], local.addr.port()).await);
    assert!(
        !accepts([127, 0, 0, 2], local.addr.port()).await,
        "{}",
        local.log()
    );
}

#[tokio::test]
async fn refused_tokens_and_joins_are_logged_without_the_token_and_counted() {
    let server = ServerProcess::start(&[]).await;
    // A handshake with a token signed by someone else.
    let forged = sign_with(
        "not-the-secret-not-the-secret-000000",
        &json!({ "role": "anon", "exp": unix_now() + 60 }),
    );
    let refused = tokio_tungstenite::connect_async(server.url(&forged, "2.0.0")).await;
    assert!(refused.is_err(), "a forged token was accepted");
    // The same token on the REST broadcast API.
    let bearer = format!("Bearer {forged}");
    let body = br#"{"messages":[{"topic":"a","event":"e","payload":{}}]}"#;
    let (status, _) = http(
        server.addr,
        "POST",
        "/api/broadcast",
        &[("Authorization", &bearer), ("Content-Type", "application/json")],
        body,
    )
    .await;
    assert_eq!(status, 401);
    // A join whose access_token has expired, and a private join no policy allows.
    let mut client = Client::connect(&server.url(&user_token(600), "2.0.0"), "2.0.0").await;
    let expired = user_token(-120);
    client
        .join_raw("realtime:a", json!({ "access_token": expired, "config": {} }))
        .await;
    assert_eq!(client.recv_event("phx_reply").await.payload()["status"], "error");
    client
        .join_raw("realtime:b", json!({ "config": { "private": true } }))
        .await;
    assert_eq!(client.recv_event("phx_reply").await.payload()["status"], "error");

    // An expired token sent to refresh a joined channel's (the channel is closed).
    let join_ref = client.join("realtime:d", json!({})).await;
    client
        .send(
            Some(&join_ref),
            "realtime:d",
            "access_token",
            json!({ "access_token": expired }),
        )
        .await;
    client.recv_event("system").await;

    let (_, text) = http(server.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(
        sample(&text, "realtime_auth_refused_total{reason=\"JwtSignatureError\"}"),
        Some(2),
        "{text}"
    );
    assert_eq!(
        sample(&text, "realtime_auth_refused_total{reason=\"InvalidJWTToken\"}"),
        Some(2),
        "{text}"
    );
    assert_eq!(
        sample(&text, "realtime_joins_refused_total{reason=\"InvalidJWTToken\"}"),
        Some(1),
        "{text}"
    );
    assert_eq!(
        sample(&text, "realtime_joins_refused_total{reason=\"Unauthorized\"}"),
        Some(1),
        "{text}"
    );
    // A well-behaved client is served meanwhile.
    client.join("realtime:c", json!({})).await;

    let log = server.log();
    assert!(
        log.contains("token refused") && log.contains("JwtSignatureError"),
        "{log}"
    );
    assert!(
        log.contains("join refused") && log.contains("Unauthorized"),
        "{log}"
    );
    for secret in [&forged, &expired] {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a token reached the log:\n{log}");
    }
}

/// Runs `realtime serve` in `dir` with `env` until it exits or `within` passes; returns whether
/// it exited with success (`None`: still running, then killed) and its output.
async fn run_briefly(
    dir: &std::path::Path,
    env: &[(&str, &str)],
    within: Duration,
) -> (Option<bool>, String) {
    let mut vars = vec![
        ("PORT", free_port().to_string()),
        ("API_JWT_SECRET", SECRET.to_owned()),
    ];
    vars.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let mut process = Process::spawn_in(dir, &["serve"], &vars);
    let deadline = tokio::time::Instant::now() + within;
    let status = loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            break Some(status.success());
        }
        if tokio::time::Instant::now() >= deadline {
            process.kill();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    process.wait_output();
    let stdout: String = process.stdout.try_iter().map(|line| line + "\n").collect();
    (status, format!("{stdout}{}", process.stderr()))
}

#[tokio::test]
async fn a_named_policy_folder_that_is_missing_stops_the_start_and_the_folder_in_use_is_logged() {
    let dir = std::env::temp_dir().join(format!("realtime-policies-{}", std::process::id()));
    let policies = dir.join("rules");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("lobby.toml"),
        "[[channel]]\ntopic = \"lobby\"\nactions = [\"broadcast\"]\nwhen = \"true\"\n",
    )
    .unwrap();

    let missing = dir.join("ruels");
    let missing_text = missing.display().to_string();
    let (status, output) =
        run_briefly(&dir, &[("POLICIES_DIR", &missing_text)], Duration::from_secs(20)).await;
    assert_eq!(status, Some(false), "{output}");
    assert!(
        output.contains(&format!("{missing_text}: the policy folder does not exist")),
        "{output}"
    );

    // The folder in use, with its file count, is in the log.
    let named = policies.display().to_string();
    let (status, output) = run_briefly(&dir, &[("POLICIES_DIR", &named)], Duration::from_secs(3)).await;
    assert_eq!(status, None, "{output}");
    assert!(output.contains("policy folder"), "{output}");
    assert!(output.contains(&named) && output.contains("files=1"), "{output}");

    // No folder named and no ./policies: said so.
    let (status, output) = run_briefly(&dir, &[], Duration::from_secs(3)).await;
    assert_eq!(status, None, "{output}");
    assert!(output.contains("no policy folder"), "{output}");
    std::fs::remove_dir_all(&dir).unwrap();
}
