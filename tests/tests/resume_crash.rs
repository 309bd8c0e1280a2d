//! No missed changes across a crash: the `realtime` binary is killed with SIGKILL while changes
//! are being committed, started again, and WebSocket clients that come back with their last
//! position get every change they missed exactly once, in commit order.
//!
//! The clients are raw WebSocket clients speaking the Phoenix protocol (both serializers): the
//! server process is killed and restarted, which the realtime-js harness cannot do with its
//! embedded database. They do what a realtime-js app does with `postgres_changes_options`:
//! reconnect, and rejoin with `since` set to the position of the last change they processed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use realtime::embedded::EmbeddedPostgres;
use realtime_tests::auth::{SECRET, token};
use realtime_tests::phoenix::socket_url;
use realtime_tests::{Process, exec, free_port, items_database, write_items};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Longest wait for anything in these tests.
const PATIENCE: Duration = Duration::from_secs(60);

/// A Postgres with `items` published, and the environment of a `realtime serve` for it.
async fn setup() -> (EmbeddedPostgres, sqlx::PgPool, Vec<(&'static str, String)>) {
    let (pg, db) = items_database().await;
    let env = vec![
        ("DATABASE_URL", pg.url("postgres")),
        ("PORT", free_port().to_string()),
        ("API_JWT_SECRET", SECRET.to_owned()),
        ("CHANNEL_ERROR_BACKOFF_MS", "0".to_owned()),
        ("CONNECT_ERROR_BACKOFF_MS", "0".to_owned()),
    ];
    (pg, db, env)
}

fn serve(env: &[(&'static str, String)]) -> Process {
    let process = Process::spawn(&["serve"], env);
    process.wait_stderr("streaming changes", PATIENCE);
    process
}

/// One change as a client received it.
#[derive(Clone, Debug)]
struct Received {
    position: String,
    id: i64,
}

/// What a client saw, shared with the test.
#[derive(Debug, Default)]
struct Seen {
    changes: Vec<Received>,
    /// `system` payloads with `refetch: true`.
    refetches: Vec<Value>,
    /// How many times it joined.
    joins: usize,
    /// How many times it heard "Subscribed to PostgreSQL".
    subscribed: usize,
}

/// How a client comes back after losing its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Comeback {
    /// With `since`: the last position it processed.
    Resume,
    /// Without: an ordinary realtime-js app that only follows what is new.
    Plain,
}

struct Client {
    seen: Arc<Mutex<Seen>>,
    label: String,
    filter: Option<i32>,
    task: JoinHandle<()>,
}

impl Client {
    fn start(
        port: u16,
        vsn: &'static str,
        filter: Option<i32>,
        comeback: Comeback,
        stop: CancellationToken,
    ) -> Client {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let label = format!(
            "vsn {vsn}, {}, {comeback:?}",
            filter.map_or("all rows".to_owned(), |g| format!("grp=eq.{g}"))
        );
        let task = tokio::spawn(follow(port, vsn, filter, comeback, seen.clone(), stop));
        Client {
            seen,
            label,
            filter,
            task,
        }
    }

    fn count(&self) -> usize {
        self.seen.lock().expect("lock").changes.len()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().expect("lock")
    }
}

/// Connects, joins, records every change; on any loss of the connection, connects again and
/// rejoins (with `since` for [`Comeback::Resume`]) until `stop`.
///
/// Raw WebSocket frames rather than [`realtime_tests::phoenix::Client`]: it keeps retrying while
/// the server is down, where the shared client panics on a refused connection or a close.
async fn follow(
    port: u16,
    vsn: &'static str,
    filter: Option<i32>,
    comeback: Comeback,
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
) {
    let url = socket_url(port, &token("service_role"), vsn);
    let topic = format!("realtime:resume-{vsn}-{filter:?}-{comeback:?}");
    let mut binding = json!({ "event": "INSERT", "schema": "public", "table": "items" });
    if let Some(g) = filter {
        binding["filter"] = json!(format!("grp=eq.{g}"));
    }
    while !stop.is_cancelled() {
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let since = match comeback {
            Comeback::Resume => seen
                .lock()
                .expect("lock")
                .changes
                .last()
                .map(|c| c.position.clone()),
            Comeback::Plain => None,
        };
        let mut config = json!({ "postgres_changes": [binding.clone()] });
        if let Some(since) = since {
            config["postgres_changes_options"] = json!({ "since": since });
        }
        let payload = json!({ "config": config });
        let join = if vsn == "1.0.0" {
            json!({ "topic": topic, "event": "phx_join", "ref": "1", "join_ref": "1", "payload": payload })
        } else {
            json!(["1", "1", topic, "phx_join", payload])
        };
        if ws.send(Message::text(join.to_string())).await.is_err() {
            continue;
        }
        seen.lock().expect("lock").joins += 1;
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => return,
                m = ws.next() => m,
            };
            let Some(Ok(message)) = message else { break };
            let Message::Text(text) = message else { continue };
            let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let (event, payload) = if vsn == "1.0.0" {
                (frame["event"].clone(), frame["payload"].clone())
            } else {
                (frame[3].clone(), frame[4].clone())
            };
            match event.as_str() {
                Some("postgres_changes") => {
                    let received = Received {
                        position: payload["position"].as_str().unwrap_or_default().to_owned(),
                        id: payload["data"]["record"]["id"].as_i64().unwrap_or(-1),
                    };
                    seen.lock().expect("lock").changes.push(received);
                }
                Some("system") if payload["refetch"] == json!(true) => {
                    seen.lock().expect("lock").refetches.push(payload);
                }
                Some("system") if payload["message"] == json!("Subscribed to PostgreSQL") => {
                    seen.lock().expect("lock").subscribed += 1;
                }
                _ => {}
            }
        }
    }
}

/// Per client, compares what it received with what was committed; prints and returns
/// (missing, out of order, duplicates).
fn check(client: &Client, committed: &[(i64, i32)]) -> (usize, usize, usize) {
    let seen = client.seen();
    let expected: Vec<i64> = committed
        .iter()
        .filter(|(_, grp)| client.filter.is_none_or(|g| g == *grp))
        .map(|(id, _)| *id)
        .collect();
    let ids: Vec<i64> = seen.changes.iter().map(|c| c.id).collect();
    let unique: std::collections::BTreeSet<i64> = ids.iter().copied().collect();
    let missing = expected.iter().filter(|id| !unique.contains(id)).count();
    let duplicates = ids.len() - unique.len();
    let out_of_order = seen
        .changes
        .windows(2)
        .filter(|w| w[0].position >= w[1].position)
        .count();
    println!(
        "{}: committed {}, received {} over {} joins, missing {missing}, out of order {out_of_order}, duplicates {duplicates}, refetch signals {}",
        client.label,
        expected.len(),
        ids.len(),
        seen.joins,
        seen.refetches.len()
    );
    (missing, out_of_order, duplicates)
}

async fn committed(db: &sqlx::PgPool) -> Vec<(i64, i32)> {
    sqlx::query_as("SELECT id::int8, grp FROM items ORDER BY id")
        .fetch_all(db)
        .await
        .expect("read what was committed")
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_10000_inserts_resuming_clients_get_every_change_once_in_order() {
    const ROWS: i64 = 10_000;
    let (_pg, db, env) = setup().await;
    let port: u16 = env[1].1.parse().expect("port");
    let mut service = serve(&env);
    let stop = CancellationToken::new();
    let resuming: Vec<Client> = [
        ("1.0.0", None),
        ("2.0.0", None),
        ("1.0.0", Some(1)),
        ("2.0.0", Some(0)),
    ]
    .into_iter()
    .map(|(vsn, filter)| Client::start(port, vsn, filter, Comeback::Resume, stop.clone()))
    .collect();
    let plain = Client::start(port, "2.0.0", None, Comeback::Plain, stop.clone());
    wait_for("every client to subscribe", || {
        resuming.iter().chain([&plain]).all(|c| c.seen().subscribed == 1)
    })
    .await;
    exec(&db, "INSERT INTO items (grp) VALUES (0), (1)").await;
    wait_for("a first change everywhere", || {
        resuming.iter().chain([&plain]).all(|c| c.count() >= 1)
    })
    .await;

    // One writer commits the rest in transactions of 1 to 9 rows, grp alternating.
    let url = env[0].1.clone();
    let writer = write_items(url, 2, ROWS);
    // Kill in the middle: once a third of the rows reached the clients.
    wait_for("a third of the rows", || {
        resuming[0].count() >= (ROWS / 3) as usize
    })
    .await;
    service.kill();
    let at_kill: Vec<usize> = resuming.iter().map(Client::count).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _service = serve(&env);
    writer.await.expect("writer");

    let all = committed(&db).await;
    assert_eq!(all.len() as i64, ROWS);
    for client in &resuming {
        let expected = all
            .iter()
            .filter(|(_, g)| client.filter.is_none_or(|f| f == *g))
            .count();
        wait_for(&format!("{} to receive every row", client.label), || {
            client.count() >= expected
        })
        .await;
    }
    // Time for anything extra (a duplicate) to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    println!(
        "killed with at least {} rows delivered to each client",
        at_kill.iter().min().unwrap_or(&0)
    );
    for (client, before) in resuming.iter().zip(&at_kill) {
        assert!(
            (*before as i64) < ROWS,
            "{}: the kill came before the end",
            client.label
        );
        assert_eq!(
            check(client, &all),
            (0, 0, 0),
            "{}: missing, out of order, duplicates",
            client.label
        );
        assert!(
            client.seen().refetches.is_empty(),
            "{}: no refetch was needed",
            client.label
        );
        assert!(
            client.seen().joins >= 2,
            "{}: it came back after the kill",
            client.label
        );
    }
    // An ordinary client that comes back without a position is not sent the history again.
    let (_, _, duplicates) = check(&plain, &all);
    assert_eq!(duplicates, 0, "a client without `since` gets no change twice");
    for client in resuming.into_iter().chain([plain]) {
        let _ = client.task.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_open_across_a_crash_arrives_once_after_the_restart() {
    let (_pg, db, env) = setup().await;
    let port: u16 = env[1].1.parse().expect("port");
    let mut service = serve(&env);
    let stop = CancellationToken::new();
    let clients: Vec<Client> = ["1.0.0", "2.0.0"]
        .into_iter()
        .map(|vsn| Client::start(port, vsn, None, Comeback::Resume, stop.clone()))
        .collect();
    wait_for("the clients to subscribe", || {
        clients.iter().all(|c| c.seen().subscribed == 1)
    })
    .await;
    exec(&db, "INSERT INTO items (grp) VALUES (0)").await;
    wait_for("a first change", || clients.iter().all(|c| c.count() == 1)).await;

    // A long transaction starts before the crash and commits after the restart.
    let mut long = db.begin().await.expect("begin");
    sqlx::raw_sql("INSERT INTO items (grp) SELECT 7 FROM generate_series(1, 500)")
        .execute(&mut *long)
        .await
        .expect("insert in the long transaction");
    exec(
        &db,
        "INSERT INTO items (grp) SELECT 1 FROM generate_series(1, 20)",
    )
    .await;
    wait_for("the short transaction", || {
        clients.iter().all(|c| c.count() == 21)
    })
    .await;
    service.kill();
    let _service = serve(&env);
    exec(
        &db,
        "INSERT INTO items (grp) SELECT 2 FROM generate_series(1, 20)",
    )
    .await;
    long.commit().await.expect("commit the long transaction");
    exec(&db, "INSERT INTO items (grp) VALUES (3)").await;

    let all = committed(&db).await;
    assert_eq!(all.len(), 542);
    for client in &clients {
        wait_for(&format!("{} to receive every row", client.label), || {
            client.count() >= all.len()
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    for client in &clients {
        assert_eq!(
            check(client, &all),
            (0, 0, 0),
            "{}: missing, out of order, duplicates",
            client.label
        );
        let seen = client.seen();
        let long_rows: Vec<i64> = all.iter().filter(|(_, g)| *g == 7).map(|(id, _)| *id).collect();
        let got: Vec<i64> = seen
            .changes
            .iter()
            .map(|c| c.id)
            .filter(|id| long_rows.contains(id))
            .collect();
        assert_eq!(
            got, long_rows,
            "{}: the long transaction, once, whole and in order",
            client.label
        );
        // Committed after the rows of grp 2, it comes after them.
        let first_long = seen
            .changes
            .iter()
            .position(|c| c.id == long_rows[0])
            .expect("long rows");
        let last_grp2 = seen
            .changes
            .iter()
            .rposition(|c| all.iter().any(|(id, g)| *id == c.id && *g == 2))
            .expect("grp 2 rows");
        assert!(
            last_grp2 < first_long,
            "{}: commit order, not id order",
            client.label
        );
    }
    for client in clients {
        let _ = client.task.await;
    }
}
