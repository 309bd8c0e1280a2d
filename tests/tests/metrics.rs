//! `/metrics` of `realtime serve` against a real Postgres: joins, broadcasts, leaves, refusals,
//! bytes and the commit → push latency move when clients do those things, and every metric
//! the Grafana dashboard in `docker/` plots is one the server exports.

use std::time::{Duration, Instant};

use realtime::embedded::Options;
use realtime_tests::auth::token;
use realtime_tests::phoenix::Client;
use realtime_tests::service::{Service, Subscriber, metric, reader_role_sql};
use realtime_tests::{exec, pool, start_postgres};
use serde_json::{Value, json};

/// The status of the reply to `msg_ref`.
async fn status(client: &mut Client, msg_ref: &str) -> String {
    let reply = client.reply_to(msg_ref).await;
    reply["status"].as_str().unwrap_or("").to_owned()
}

fn join_payload(private: bool, token: &str) -> Value {
    json!({
        "config": {
            "broadcast": {"ack": true, "self": true},
            "presence": {"key": "", "enabled": false},
            "postgres_changes": [],
            "private": private
        },
        "access_token": token
    })
}

/// Polls `/metrics` until `done` holds; panics with the last text after 30 s.
async fn wait_metrics(service: &Service, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = service.metrics().await;
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "metrics never moved:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The metric names an expression of the dashboard refers to.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("realtime_") || w.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// Every `expr` in the dashboard, at any depth.
fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "query", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_latency_move_and_the_dashboard_uses_only_exported_metrics() {
    let pg = start_postgres(Options::default());
    let db = pool(&pg).await;
    exec(
        &db,
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION pub FOR TABLE t; {}",
            reader_role_sql(&["t"])
        ),
    )
    .await;
    let service = Service::start(&pg.url("postgres"), "s_metrics", "pub", &[]);
    let before = service.metrics().await;
    for name in [
        "realtime_joins_total{outcome=\"accepted\"}",
        "realtime_broadcasts_total{outcome=\"sent\"}",
        "realtime_commit_to_push_seconds_count",
    ] {
        assert_eq!(metric(&before, name), 0.0, "{name}");
    }
    assert_eq!(metric(&before, "realtime_websocket_connections"), 0.0);

    let reader = token("reader");
    let bindings = json!([{"event": "INSERT", "schema": "public", "table": "t"}]);
    let mut subscriber = Subscriber::join(&service, &reader, "rows", bindings, None).await;

    // A second socket: a broadcast with ack, a refused private join, a refused token, a leave.
    let mut client = Client::connect(&service.url(&reader), "1.0.0").await;
    client.patience = Duration::from_secs(10);
    let room = client
        .join_raw("realtime:room", join_payload(false, &reader))
        .await;
    assert_eq!(status(&mut client, &room).await, "ok");
    let broadcast = json!({"type": "broadcast", "event": "hello", "payload": {"n": 1}});
    let sent = client
        .send(Some(&room), "realtime:room", "broadcast", broadcast)
        .await;
    assert_eq!(status(&mut client, &sent).await, "ok");
    let locked = client
        .join_raw("realtime:locked", join_payload(true, &reader))
        .await;
    assert_eq!(status(&mut client, &locked).await, "error");
    let other = client
        .join_raw("realtime:other", join_payload(false, "not-a-token"))
        .await;
    assert_eq!(status(&mut client, &other).await, "error");

    let during = wait_metrics(&service, |t| metric(t, "realtime_websocket_connections") == 2.0).await;
    assert!(metric(&during, "realtime_channels") >= 2.0, "{during}");
    assert_eq!(metric(&during, "realtime_changes_subscriptions"), 1.0);

    let leave = client
        .send(Some(&room), "realtime:room", "phx_leave", json!({}))
        .await;
    assert_eq!(status(&mut client, &leave).await, "ok");

    exec(&db, "INSERT INTO t VALUES (1, 'one')").await;
    assert_eq!(
        subscriber.change(Duration::from_secs(30)).await["record"]["id"],
        1
    );

    let after = wait_metrics(&service, |t| {
        metric(t, "realtime_commit_to_push_seconds_count") >= 1.0
            && metric(t, "realtime_leaves_total{outcome=\"left\"}") >= 1.0
    })
    .await;
    assert_eq!(metric(&after, "realtime_joins_total{outcome=\"accepted\"}"), 2.0);
    assert_eq!(metric(&after, "realtime_joins_total{outcome=\"refused\"}"), 2.0);
    assert_eq!(
        metric(&after, "realtime_joins_refused_total{reason=\"Unauthorized\"}"),
        1.0,
        "{after}"
    );
    assert!(after.contains("realtime_auth_refused_total{reason="), "{after}");
    assert_eq!(metric(&after, "realtime_broadcasts_total{outcome=\"sent\"}"), 1.0);
    assert!(metric(&after, "realtime_replication_transactions_total") >= 1.0);
    // The private join's policy check and the row's access check were both timed.
    assert!(
        metric(&after, "realtime_authorization_check_seconds_count") >= 2.0,
        "{after}"
    );
    // A latency within the histogram's buckets, not the overflow bucket alone.
    assert!(metric(&after, "realtime_commit_to_push_seconds_bucket{le=\"16.384\"}") >= 1.0);
    assert!(metric(&after, "realtime_websocket_received_bytes_total") > 0.0);
    assert!(metric(&after, "realtime_websocket_sent_bytes_total") > 0.0);
    assert!(metric(&after, "process_resident_memory_bytes") > 0.0);
    assert!(metric(&after, "process_open_fds") > 0.0);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        metric(&after, &format!("realtime_build_info{{version=\"{version}\"}}")),
        1.0
    );

    // Every metric the dashboard plots is exported (sample names, as PromQL uses them).
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker/grafana-dashboard.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read the dashboard")).expect("JSON");
    let mut found = Vec::new();
    exprs(&dashboard, &mut found);
    let names: Vec<String> = found.iter().flat_map(|e| metric_names(e)).collect();
    assert!(names.len() >= 20, "{names:?}");
    let exported: Vec<&str> = after
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split([' ', '{']).next())
        .collect();
    for name in &names {
        assert!(
            exported.contains(&name.as_str()),
            "the dashboard plots {name}, which /metrics lacks"
        );
    }
    drop(client);
}
