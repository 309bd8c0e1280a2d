//! OpenTelemetry tracing of `realtime serve`, exported to an OTLP/HTTP receiver this test runs
//! itself (it decodes the protobuf requests as a collector would): the spans a user gets for
//! connections, joins, authorization checks, REST broadcasts and replicated transactions, their
//! parent links, attributes without tokens or values, the same ids in the JSON log lines; and,
//! without the `OTEL_*` variables, no exporter at all.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use realtime::embedded::Options;
use realtime_tests::auth::token;
use realtime_tests::phoenix::Client;
use realtime_tests::server::http;
use realtime_tests::service::{Service, Subscriber, reader_role_sql};
use realtime_tests::{exec, pool, start_postgres};
use serde_json::{Value, json};

/// One span as the receiver decoded it.
#[derive(Clone, Debug)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    /// Empty for a root span.
    parent: String,
    attributes: BTreeMap<String, String>,
    service: String,
}

/// What the receiver got: every request (on any path) and the spans of `POST /v1/traces`.
#[derive(Default)]
struct Received {
    requests: Vec<String>,
    spans: Vec<Span>,
}

type Shared = Arc<Mutex<Received>>;

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

async fn traces(
    State(received): State<Shared>,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1]) {
    let content = [(header::CONTENT_TYPE, "application/x-protobuf")];
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, content);
    };
    let mut received = received.lock().unwrap_or_else(|p| p.into_inner());
    received.requests.push("POST /v1/traces".to_owned());
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.spans.push(Span {
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                    service: service.clone(),
                });
            }
        }
    }
    // An empty ExportTraceServiceResponse: full success.
    (StatusCode::OK, content)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Starts the receiver on `port` (0: any); `None` when that port is taken.
async fn start_receiver(port: u16) -> Option<(u16, Shared)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.ok()?;
    let port = listener.local_addr().expect("address").port();
    let received = Shared::default();
    let fallback = received.clone();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(traces))
        .fallback(move |request: axum::extract::Request| {
            let fallback = fallback.clone();
            async move {
                let line = format!("{} {}", request.method(), request.uri());
                fallback
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .requests
                    .push(line);
                StatusCode::NOT_FOUND
            }
        })
        .with_state(received.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Some((port, received))
}

/// Waits until the receiver holds spans for which `done` holds; panics with what it got.
async fn wait_spans(received: &Shared, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans = received.lock().unwrap_or_else(|p| p.into_inner()).spans.clone();
        if done(&spans) {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "the spans never arrived; got:\n{spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A vsn 1.0.0 client of `service` with `token`.
async fn connect(service: &Service, token: &str) -> Client {
    let mut client = Client::connect(&service.url(token), "1.0.0").await;
    client.patience = Duration::from_secs(10);
    client
}

/// Sends a join of `topic` and returns the reply's status.
async fn join(client: &mut Client, topic: &str, private: bool) -> String {
    let payload = json!({"config": {"broadcast": {"self": true}, "private": private}});
    let msg_ref = client.join_raw(topic, payload).await;
    let reply = client.reply_to(&msg_ref).await;
    reply["status"].as_str().unwrap_or("").to_owned()
}

/// `POST /api/broadcast` with `body`; the status.
async fn rest_broadcast(port: u16, token: &str, body: &Value) -> u16 {
    let bearer = format!("Bearer {token}");
    let headers = [
        ("Authorization", bearer.as_str()),
        ("Content-Type", "application/json"),
    ];
    let body = body.to_string();
    http(
        ("127.0.0.1", port),
        "POST",
        "/api/broadcast",
        &headers,
        body.as_bytes(),
    )
    .await
    .0
}

/// The names of the process's threads (`/proc/<pid>/task/*/comm`, at most 15 bytes each).
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("list the threads");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

fn one<'a>(spans: &'a [Span], what: &str, pick: impl Fn(&Span) -> bool) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(found.len(), 1, "{what}: {found:#?}\nall spans: {spans:#?}");
    found[0]
}

fn attr<'a>(span: &'a Span, key: &str) -> &'a str {
    span.attributes.get(key).map(String::as_str).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_with_parents_and_no_secrets_and_logs_carry_their_ids() {
    let (collector, received) = start_receiver(0).await.expect("a receiver");
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
    let header_secret = "collector-api-key-1f2e3d";
    let service = Service::start(
        &pg.url("postgres"),
        "s_tracing",
        "pub",
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{collector}"),
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", format!("x-api-key={header_secret}")),
            // Export every 100 ms instead of every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
        ],
    );
    let threads = thread_names(service.pid());
    assert!(
        threads.iter().any(|t| t.starts_with("OpenTelemetry")),
        "no exporter thread: {threads:?}"
    );

    let reader = token("reader");
    // A Postgres Changes subscriber, so that the rows below are dispatched and checked.
    let bindings = json!([{"event": "INSERT", "schema": "public", "table": "t"}]);
    let mut subscriber = Subscriber::join(&service, &reader, "rows", bindings, None).await;
    let mut client = connect(&service, &reader).await;
    assert_eq!(join(&mut client, "realtime:room", false).await, "ok");
    // A private channel with no policy granting it: the check says no, the join is refused.
    assert_eq!(join(&mut client, "realtime:locked", true).await, "error");
    let broadcast =
        json!({"messages": [{"topic": "room", "event": "note", "payload": {"text": "payload-secret-42"}}]});
    assert_eq!(rest_broadcast(service.port, &reader, &broadcast).await, 202);
    exec(
        &db,
        "INSERT INTO t VALUES (1, 'row-secret-a'), (2, 'row-secret-b')",
    )
    .await;
    for _ in 0..2 {
        subscriber.change(Duration::from_secs(30)).await;
    }
    client.ws.close(None).await.expect("close");

    let spans = wait_spans(&received, |spans| {
        let has = |name: &str| spans.iter().any(|s| s.name == name);
        has("connection")
            && has("authorize")
            && has("rest_broadcast")
            && spans.iter().filter(|s| s.name == "join").count() >= 2
            && spans
                .iter()
                .any(|s| s.name == "replication.transaction" && attr(s, "changes") == "2")
            && spans
                .iter()
                .any(|s| s.name == "changes.dispatch" && attr(s, "changes") == "2")
    })
    .await;

    // connection → join → authorize, in one trace.
    let accepted = one(&spans, "the public join", |s| {
        s.name == "join" && attr(s, "channel.topic") == "realtime:room"
    });
    let connection = one(&spans, "the connection", |s| {
        s.name == "connection" && s.span_id == accepted.parent
    });
    assert_eq!(connection.parent, "", "a connection is a root span");
    assert_eq!(attr(connection, "protocol.version"), "1.0.0");
    assert_eq!(attr(connection, "role"), "reader");
    assert_eq!(attr(connection, "close.reason"), "client_closed");
    assert_eq!(attr(connection, "close.code"), "1000");
    assert_eq!(attr(accepted, "outcome"), "accepted");
    let refused = one(&spans, "the private join", |s| {
        s.name == "join" && attr(s, "channel.topic") == "realtime:locked"
    });
    assert_eq!(attr(refused, "outcome"), "refused");
    assert_eq!(attr(refused, "reason"), "Unauthorized");
    for join in [accepted, refused] {
        assert_eq!(join.parent, connection.span_id);
        assert_eq!(join.trace_id, connection.trace_id);
    }
    let authorize = one(&spans, "the policy check", |s| {
        s.name == "authorize" && s.parent == refused.span_id
    });
    assert_eq!(authorize.parent, refused.span_id);
    assert_eq!(authorize.trace_id, connection.trace_id);
    assert_eq!(attr(authorize, "authorization.mode"), "policies");
    assert_eq!(attr(authorize, "outcome"), "denied");

    let rest = one(&spans, "the REST broadcast", |s| s.name == "rest_broadcast");
    assert_eq!(attr(rest, "http.response.status_code"), "202");
    assert_eq!(attr(rest, "messages"), "1");
    assert_eq!(attr(rest, "http.route"), "/api/broadcast");
    assert_ne!(rest.trace_id, connection.trace_id, "a request is its own trace");

    let transaction = one(&spans, "the transaction", |s| {
        s.name == "replication.transaction" && attr(s, "changes") == "2"
    });
    assert!(attr(transaction, "commit_lsn").contains('/'), "{transaction:?}");
    assert_eq!(attr(transaction, "overflowed"), "false");
    // Its delivery to the subscriber, with the row check (Postgres decides: no policy file
    // names the table) as a child.
    let dispatch = one(&spans, "the delivery", |s| {
        s.name == "changes.dispatch" && attr(s, "changes") == "2"
    });
    assert_eq!(attr(dispatch, "commit_lsn"), attr(transaction, "commit_lsn"));
    assert_eq!(attr(dispatch, "frames"), "2");
    let row_check = one(&spans, "the row check", |s| {
        s.name == "authorize" && s.parent == dispatch.span_id
    });
    assert_eq!(attr(row_check, "authorization.mode"), "database");
    assert_eq!(attr(row_check, "changes"), "2");
    assert_eq!(attr(row_check, "visible"), "2");
    // One span per transaction, never one per delivered message or per change.
    assert!(spans.iter().all(|s| s.name != "change" && s.name != "push"));
    assert!(spans.iter().all(|s| s.service == "realtime"), "{spans:#?}");

    // No token, payload, row value, collector key or peer address in any attribute.
    let everything = format!("{spans:?}");
    for secret in [
        reader.as_str(),
        "payload-secret-42",
        "row-secret-a",
        "row-secret-b",
        header_secret,
        "127.0.0.1",
    ] {
        assert!(
            !everything.contains(secret),
            "{secret:?} is in a span: {everything}"
        );
    }

    // Logs: one JSON object per line, and the refused join's log line names its span.
    let logs = service.process.stderr();
    let lines: Vec<Value> = logs
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"))
        })
        .collect();
    let refusal = lines
        .iter()
        .find(|l| l["fields"]["message"] == "join refused")
        .unwrap_or_else(|| panic!("no join refusal logged:\n{logs}"));
    assert_eq!(refusal["trace_id"], refused.trace_id.as_str(), "{refusal}");
    assert_eq!(refusal["span_id"], refused.span_id.as_str(), "{refusal}");
    let outside = lines
        .iter()
        .find(|l| l["fields"]["message"] == "streaming changes")
        .expect("the replication start is logged");
    assert!(outside.get("trace_id").is_none(), "outside any span: {outside}");
    assert!(!logs.contains(header_secret), "the collector's key was logged");
    assert!(
        logs.contains(&format!("http://127.0.0.1:{collector}/v1/traces")),
        "{logs}"
    );

    let requests = received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .requests
        .clone();
    assert!(requests.iter().all(|r| r == "POST /v1/traces"), "{requests:?}");
}

/// The last spans are sent on shutdown: a socket still open when SIGTERM arrives is closed by
/// the shutdown, and its span (which ends only then) reaches the collector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_the_last_spans() {
    let (collector, received) = start_receiver(0).await.expect("a receiver");
    let pg = start_postgres(Options::default());
    let db = pool(&pg).await;
    exec(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE t",
    )
    .await;
    let mut service = Service::start(
        &pg.url("postgres"),
        "s_tracing_flush",
        "pub",
        &[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                format!("http://127.0.0.1:{collector}/v1/traces"),
            ),
            // Far longer than the test: only the flush at shutdown can send the spans.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000".to_owned()),
            ("OTEL_SERVICE_NAME", "realtime-eu-1".to_owned()),
        ],
    );
    let mut client = connect(&service, &token("anon")).await;
    assert_eq!(join(&mut client, "realtime:room", false).await, "ok");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spans
            .is_empty(),
        "spans were sent before the schedule"
    );
    assert!(service.process.terminate(Duration::from_secs(30)).success());
    let spans = received.lock().unwrap_or_else(|p| p.into_inner()).spans.clone();
    let connection = one(&spans, "the connection", |s| s.name == "connection");
    assert_eq!(attr(connection, "close.reason"), "shutdown");
    assert_eq!(attr(connection, "close.code"), "1001");
    assert_eq!(connection.service, "realtime-eu-1");
    assert!(
        spans
            .iter()
            .any(|s| s.name == "join" && s.parent == connection.span_id)
    );
}

/// Without `OTEL_*` there is no exporter: no thread, and nothing reaches a collector listening
/// on the OTLP default address (`localhost:4318`) while clients join, broadcast and rows change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_otel_variables_nothing_is_exported() {
    // The default port, when free here, catches an exporter that would start by default.
    let receiver = start_receiver(4318).await;
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
    // Emptied, in case the environment running the tests sets them.
    let unset = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_TRACES_EXPORTER",
        "OTEL_SDK_DISABLED",
    ]
    .map(|name| (name, String::new()));
    let service = Service::start(&pg.url("postgres"), "s_tracing_off", "pub", &unset);
    let reader = token("reader");
    let mut client = connect(&service, &reader).await;
    assert_eq!(join(&mut client, "realtime:room", false).await, "ok");
    assert_eq!(join(&mut client, "realtime:locked", true).await, "error");
    let broadcast = json!({"messages": [{"topic": "room", "event": "note", "payload": {}}]});
    assert_eq!(rest_broadcast(service.port, &reader, &broadcast).await, 202);
    exec(&db, "INSERT INTO t VALUES (1, 'a')").await;
    client.ws.close(None).await.expect("close");
    tokio::time::sleep(Duration::from_secs(2)).await;

    let threads = thread_names(service.pid());
    assert!(
        !threads
            .iter()
            .any(|t| t.starts_with("OpenTelemetry") || t.starts_with("reqwest")),
        "an exporter thread runs: {threads:?}"
    );
    if let Some((_, received)) = receiver {
        let requests = received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .requests
            .clone();
        assert!(requests.is_empty(), "something was exported: {requests:?}");
    }
    assert!(!service.process.stderr().contains("exporting traces"));
}

/// A protocol this build cannot speak stops the start with the variable's name, rather than
/// sending nothing without a word.
#[test]
fn an_unsupported_protocol_is_refused_with_its_variable() {
    let output = realtime_tests::run_realtime(
        &["config", "check"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317".to_owned()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL: grpc is not supported"),
        "{stderr}"
    );
}
