//! Health of `realtime serve` against a real Postgres: `/readyz` follows the change stream, the
//! database and shutdown; `realtime healthcheck` exits 0 exactly when `/readyz` says ready;
//! Supabase's tenant health and ping answer as Supabase's do.

use std::time::{Duration, Instant};

use realtime::embedded::{Options, StopMode};
use realtime_tests::auth::{SECRET, sign, sign_with, token, unix_now};
use realtime_tests::free_port;
use realtime_tests::server::http;
use realtime_tests::service::Service;
use realtime_tests::{Process, run_realtime, start_postgres};
use serde_json::{Value, json};

/// `GET /readyz`: status and JSON body.
async fn readyz(port: u16) -> (u16, Value) {
    let (status, body) = http(("127.0.0.1", port), "GET", "/readyz", &[], b"").await;
    let body = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, body)
}

/// Polls `/readyz` until `wanted` holds for its answer; panics with the last answer after
/// `within`.
async fn wait_readyz(port: u16, within: Duration, wanted: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = readyz(port).await;
        if wanted(status, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never reached the expected state; last: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `realtime healthcheck` with the service's `PORT`: its exit code and what it printed.
fn healthcheck(port: u16) -> (i32, String) {
    let output = run_realtime(&["healthcheck"], &[("PORT", port.to_string())]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

fn serve_env(url: &str, port: u16, slot: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", url.to_owned()),
        ("SLOT_NAME", slot.to_owned()),
        ("PUBLICATIONS", "health_pub".to_owned()),
        ("PORT", port.to_string()),
        ("API_JWT_SECRET", SECRET.to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_follows_the_change_stream_the_database_and_shutdown() {
    let mut pg = start_postgres(Options::default());
    let url = pg.url("postgres");

    // The first service streams from the slot; a second one on the same slot cannot, and
    // waits for it (as a standby does).
    let mut first = Service::start(&url, "health_slot", "health_pub", &[]);
    let second_port = free_port();
    let mut second = Process::spawn(&["serve"], &serve_env(&url, second_port, "health_slot"));
    second.wait_stderr("listening", Duration::from_secs(30));
    second.wait_stderr("replication interrupted", Duration::from_secs(30));

    let (status, body) = readyz(first.port).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"status": "ready", "failing": [],
               "checks": {"database": "reachable", "replication": "streaming", "shutdown": "running"}})
    );
    let (code, said) = healthcheck(first.port);
    assert_eq!(code, 0, "{said}");

    let (status, body) = readyz(second_port).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["failing"], json!(["replication"]));
    assert_eq!(body["checks"]["database"], "reachable");
    assert_eq!(body["checks"]["replication"], "not_streaming");
    let (code, said) = healthcheck(second_port);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("503") && said.contains("replication"), "{said}");

    // The first one stops: the second takes the slot over and becomes ready.
    first.process.terminate(Duration::from_secs(30));
    wait_readyz(second_port, Duration::from_secs(60), |status, _| status == 200).await;
    let (code, said) = healthcheck(second_port);
    assert_eq!(code, 0, "{said}");
    // The stopped one answers nothing: its health check fails.
    let (code, said) = healthcheck(first.port);
    assert_eq!(code, 1, "{said}");

    // Postgres stops: not ready, and the body says the database is the reason.
    pg.stop(StopMode::Fast).expect("stop Postgres");
    let body = wait_readyz(second_port, Duration::from_secs(30), |status, body| {
        status == 503 && body["checks"]["database"] != "reachable"
    })
    .await;
    assert!(
        body["failing"].as_array().unwrap().contains(&json!("database")),
        "{body}"
    );
    let (code, said) = healthcheck(second_port);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("database"), "{said}");

    // Postgres is back: ready again once the stream resumes.
    pg.start_again().expect("start Postgres again");
    wait_readyz(second_port, Duration::from_secs(90), |status, _| status == 200).await;
    let (code, said) = healthcheck(second_port);
    assert_eq!(code, 0, "{said}");

    // Shutting down: the node stops answering readiness, and the health check fails.
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(second.child.id().to_string())
        .status();
    second.wait_stderr("shutting down", Duration::from_secs(10));
    let (code, said) = healthcheck(second_port);
    assert_eq!(code, 1, "{said}");
    let status = second.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", second.stderr());
}

#[tokio::test(flavor = "multi_thread")]
async fn supabase_tenant_health_and_ping() {
    let pg = start_postgres(Options::default());
    let service = Service::start(&pg.url("postgres"), "tenant_health_slot", "health_pub", &[]);
    let port = service.port;
    let good = format!("Bearer {}", token("anon"));

    for path in [
        "/api/tenants/realtime-dev/health",
        "/realtime/v1/api/tenants/any-tenant/health",
    ] {
        let (status, body) = http(("127.0.0.1", port), "GET", path, &[("Authorization", &good)], b"").await;
        assert_eq!(status, 200, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        let data = &body["data"];
        assert_eq!(data["healthy"], true, "{body}");
        assert_eq!(data["db_connected"], true, "{body}");
        assert_eq!(data["replication_connected"], true, "{body}");
        assert_eq!(data["connected_cluster"], 0, "{body}");
        assert!(
            data.get("region").is_some() && data.get("node").is_some(),
            "{body}"
        );
    }

    // HEAD, as Supabase's compose healthcheck sends it: the status, no body.
    let (status, body) = http(
        ("127.0.0.1", port),
        "HEAD",
        "/api/tenants/realtime-dev/health",
        &[("Authorization", &good)],
        b"",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, ""));

    // Without a token signed with the API secret: 403 and an empty body, as Supabase answers.
    let now = unix_now();
    let refused = [
        None,
        Some("Bearer".to_owned()),
        Some("Bearer not-a-jwt".to_owned()),
        Some(format!("Basic {}", token("anon"))),
        Some(format!(
            "Bearer {}",
            sign_with(
                "another-secret-that-is-long-enough-for-hs256",
                &json!({ "role": "anon", "exp": now + 3600 })
            )
        )),
        Some(format!(
            "Bearer {}",
            sign(&json!({ "role": "anon", "exp": now - 3600 }))
        )),
    ];
    for header in refused {
        let headers: Vec<(&str, &str)> = header.iter().map(|h| ("Authorization", h.as_str())).collect();
        for method in ["GET", "HEAD"] {
            let (status, body) = http(
                ("127.0.0.1", port),
                method,
                "/api/tenants/realtime-dev/health",
                &headers,
                b"",
            )
            .await;
            assert_eq!((status, body.as_str()), (403, ""), "{method} with {headers:?}");
        }
    }

    let (status, body) = http(("127.0.0.1", port), "GET", "/api/ping", &[], b"").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"message": "Success"})
    );
}
