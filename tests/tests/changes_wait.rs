//! `postgres_changes_options {wait, timeout}` against a real Postgres and the `realtime` binary:
//! a waiting join is answered only once the changes subscription is live, fails with Supabase's
//! `PostgresChangesSubscribeTimeout` reason when the replication stream is not up in time (here:
//! the slot is held by another service), and with `RealtimeDisabledForConfiguration` when a
//! binding is refused. A join that waited misses none of the rows committed after its reply.

use std::time::{Duration, Instant};

use realtime_tests::auth::{SECRET, token};
use realtime_tests::free_port;
use realtime_tests::phoenix::{Client, Frame, socket_url};
use realtime_tests::service::Service;
use realtime_tests::{Process, exec, pool, start_postgres};
use serde_json::{Value, json};

const SLOT: &str = "realtime_wait";
const PUBLICATION: &str = "realtime_wait_pub";

async fn connect(port: u16) -> Client {
    Client::connect(&socket_url(port, &token("service_role"), "1.0.0"), "1.0.0").await
}

/// Sends a join of `realtime:<sub_topic>` with `bindings` and `options`; returns the reply's
/// status and response, and how long it took.
async fn join(
    client: &mut Client,
    sub_topic: &str,
    bindings: Value,
    options: Value,
) -> (String, Value, Duration) {
    let topic = format!("realtime:{sub_topic}");
    let payload = json!({"config": {"postgres_changes": bindings, "postgres_changes_options": options,
                                    "private": false}});
    let started = Instant::now();
    client.join_raw(&topic, payload).await;
    let (event, payload) = next(client, &topic, Duration::from_secs(40))
        .await
        .expect("a join reply");
    assert_eq!(event, "phx_reply", "{event} before the join reply: {payload}");
    let status = payload["status"].as_str().unwrap_or_default().to_owned();
    (status, payload["response"].clone(), started.elapsed())
}

/// The event and payload of the next frame on `topic` (`None` after `wait`).
async fn next(client: &mut Client, topic: &str, wait: Duration) -> Option<(String, Value)> {
    let on_topic = |frame: &Frame| matches!(frame, Frame::Msg { topic: t, .. } if t == topic);
    let frame = client.recv_where(wait, on_topic).await?;
    Some((frame.event().to_owned(), frame.payload().clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_join_fails_on_timeout_and_refusal_and_succeeds_once_streaming() {
    let pg = start_postgres(realtime::embedded::Options::default());
    let db = pool(&pg).await;
    exec(
        &db,
        &format!(
            "CREATE ROLE service_role NOLOGIN BYPASSRLS;
             CREATE TABLE items (id serial PRIMARY KEY, v text);
             GRANT SELECT ON items TO service_role;
             CREATE PUBLICATION {PUBLICATION} FOR TABLE items;"
        ),
    )
    .await;
    let url = pg.url("postgres");
    // The first service streams the slot; the second waits for it.
    let mut holder = Service::start(&url, SLOT, PUBLICATION, &[]);
    let port = free_port();
    let env = [
        ("DATABASE_URL", url.clone()),
        ("SLOT_NAME", SLOT.to_owned()),
        ("PUBLICATIONS", PUBLICATION.to_owned()),
        ("PORT", port.to_string()),
        ("API_JWT_SECRET", SECRET.to_owned()),
        ("CHANNEL_ERROR_BACKOFF_MS", "0".to_owned()),
        ("CONNECT_ERROR_BACKOFF_MS", "0".to_owned()),
    ];
    let waiting = Process::spawn(&["serve"], &env);
    waiting.wait_stderr("listening", Duration::from_secs(30));
    waiting.wait_stderr("is in use", Duration::from_secs(30));

    let items = json!([{"event": "INSERT", "schema": "public", "table": "items"}]);
    let mut client = connect(port).await;
    // Not streaming: the join waits out its timeout, then fails with Supabase's reason.
    let (status, response, took) = join(
        &mut client,
        "t1",
        items.clone(),
        json!({"wait": true, "timeout": 1200}),
    )
    .await;
    assert_eq!(status, "error");
    assert_eq!(
        response["reason"],
        "PostgresChangesSubscribeTimeout: Timed out after 1200ms waiting for the postgres_changes subscription"
    );
    assert!(took >= Duration::from_millis(1200), "answered after {took:?}");
    // Without `wait` the join is answered at once, as before.
    let (status, _, _) = join(&mut client, "t2", items.clone(), json!(null)).await;
    assert_eq!(status, "ok");

    // A refused binding fails a waiting join (the table is not published).
    let unpublished = json!([{"event": "*", "schema": "public", "table": "nowhere"}]);
    let (status, response, _) = join(&mut client, "t3", unpublished, json!({"wait": "true"})).await;
    assert_eq!(status, "error");
    let reason = response["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("RealtimeDisabledForConfiguration: "),
        "{response}"
    );

    // The slot is released: the waiting service takes it, and a waiting join succeeds; the row
    // committed right after its reply arrives.
    holder.process.kill();
    let (status, _, _) = join(&mut client, "t4", items, json!({"wait": true, "timeout": 20000})).await;
    assert_eq!(status, "ok");
    let (event, payload) = next(&mut client, "realtime:t4", Duration::from_secs(10))
        .await
        .expect("a push");
    assert_eq!(
        (event.as_str(), payload["message"].as_str()),
        ("system", Some("Subscribed to PostgreSQL")),
        "{payload}"
    );
    exec(&db, "INSERT INTO items (v) VALUES ('first')").await;
    loop {
        let (event, payload) = next(&mut client, "realtime:t4", Duration::from_secs(30))
            .await
            .expect("the change");
        if event == "postgres_changes" {
            assert_eq!(payload["data"]["record"]["v"], "first", "{payload}");
            break;
        }
    }
    drop(waiting);
}
