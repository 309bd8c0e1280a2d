//! Faults between the replication task and Postgres, each under a running write load, checked
//! by comparing every change the stream handed on with what the table holds at the end:
//! 0 missing, 0 duplicated, 0 out of commit order. The connection cut by a TCP proxy, Postgres
//! restarted (fast and crash) mid-stream, and a consumer that stops reading for longer than
//! `wal_sender_timeout`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use realtime::change::RowChange;
use realtime::config::DatabaseConfig;
use realtime::embedded::{EmbeddedPostgres, Options, StopMode};
use realtime_tests::proxy::TcpProxy;
use realtime_tests::{Stream, database, exec, pool, replication_config, start_postgres};
use tokio::task::JoinHandle;

const SETUP: &str = "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE t;";

/// Commits `batches` transactions of `per` rows (ids `0..batches * per`), `pause` apart, on its
/// own connection. A batch whose connection failed is retried; if it had committed after all,
/// its duplicate key says so and the writer moves on.
fn writer(url: String, batches: u32, per: u32, pause: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        let db = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy(&url)
            .expect("a pool");
        for batch in 0..batches {
            let sql = format!(
                "INSERT INTO t SELECT g FROM generate_series({}, {}) g",
                batch * per,
                batch * per + per - 1
            );
            loop {
                assert!(Instant::now() < deadline, "the writer is stuck at batch {batch}");
                match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone())).execute(&db).await {
                    Ok(_) => break,
                    Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => break,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            tokio::time::sleep(pause).await;
        }
    })
}

/// What the stream handed on, checked against what was committed.
#[derive(Debug, Default, PartialEq, Eq)]
struct Report {
    received: usize,
    missing: usize,
    duplicates: usize,
    out_of_order: usize,
}

fn id_of(change: &RowChange) -> i64 {
    change
        .new
        .as_ref()
        .and_then(|r| r.value(0))
        .and_then(|v| v.parse().ok())
        .expect("an inserted id")
}

fn check(changes: &[Arc<RowChange>], committed: &BTreeSet<i64>) -> Report {
    let mut seen = BTreeSet::new();
    let mut report = Report {
        received: changes.len(),
        ..Report::default()
    };
    for change in changes {
        if !seen.insert(id_of(change)) {
            report.duplicates += 1;
        }
    }
    report.missing = committed.difference(&seen).count();
    report.out_of_order = changes
        .windows(2)
        .filter(|w| w[0].position.cmp_in_epoch(&w[1].position) != Some(std::cmp::Ordering::Less))
        .count();
    report
}

async fn committed(pg: &EmbeddedPostgres) -> BTreeSet<i64> {
    let db = pool(pg).await;
    let ids: Vec<i32> = sqlx::query_scalar("SELECT id FROM t ORDER BY id")
        .fetch_all(&db)
        .await
        .expect("read the table");
    ids.into_iter().map(i64::from).collect()
}

/// Receives until every committed id arrived, then makes sure nothing more comes.
async fn drain(stream: &mut Stream, into: &mut Vec<Arc<RowChange>>, committed: &BTreeSet<i64>) {
    let mut ids: BTreeSet<i64> = into.iter().map(|c| id_of(c)).collect();
    while !committed.is_subset(&ids) {
        for change in stream.next_transaction().await.changes.iter() {
            ids.insert(id_of(change));
            into.push(change.clone());
        }
    }
    stream.assert_quiet(Duration::from_secs(1)).await;
}

/// Receives until at least `n` changes were collected.
async fn receive_until(stream: &mut Stream, into: &mut Vec<Arc<RowChange>>, n: usize) {
    while into.len() < n {
        into.extend(stream.next_transaction().await.changes.iter().cloned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replication_connection_cut_by_a_proxy_mid_stream_reconnects_without_loss_or_duplicates() {
    let pg = start_postgres(Options::default());
    exec(&pool(&pg).await, SETUP).await;
    let proxy = TcpProxy::start(pg.port()).await;
    let through_proxy = DatabaseConfig::from_url(&format!(
        "postgres://postgres:{}@127.0.0.1:{}/postgres",
        realtime::embedded::SUPERUSER_PASSWORD,
        proxy.port
    ))
    .expect("url");
    let mut stream = Stream::start(through_proxy, replication_config("s_cut", "pub"));
    stream.wait_streaming().await;
    let connections_before = proxy.accepted();

    // 300 transactions of 20 rows, a few milliseconds apart: the cuts land mid-stream.
    let load = writer(pg.url("postgres"), 300, 20, Duration::from_millis(5));
    let mut received = Vec::new();
    for at in [1_000, 2_500, 4_000] {
        receive_until(&mut stream, &mut received, at).await;
        proxy.cut();
    }
    load.await.expect("the writer");
    let committed = committed(&pg).await;
    drain(&mut stream, &mut received, &committed).await;
    let report = check(&received, &committed);
    println!(
        "proxy cuts: committed={} {report:?} connections through the proxy={}",
        committed.len(),
        proxy.accepted()
    );
    assert_eq!(committed.len(), 6_000);
    assert_eq!(
        report,
        Report {
            received: 6_000,
            ..Report::default()
        }
    );
    assert!(
        proxy.accepted() >= connections_before + 3,
        "the stream reconnected after each cut"
    );
    let epochs: BTreeSet<u64> = received.iter().map(|c| c.position.epoch.0).collect();
    assert_eq!(epochs.len(), 1, "a cut connection does not start a new history");
    stream.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_and_crashed_mid_stream_loses_and_repeats_nothing() {
    // Acknowledged commits survive the crash, so the writer's every batch must arrive.
    let mut pg = start_postgres(Options::default().setting("synchronous_commit", "on"));
    exec(&pool(&pg).await, SETUP).await;
    let mut stream = Stream::start(database(&pg), replication_config("s_midstream", "pub"));
    stream.wait_streaming().await;
    let load = writer(pg.url("postgres"), 400, 20, Duration::from_millis(5));
    let mut received = Vec::new();
    for (at, mode) in [(1_500, StopMode::Fast), (4_000, StopMode::Immediate)] {
        receive_until(&mut stream, &mut received, at).await;
        // The writer keeps writing (and retrying) while Postgres is down.
        pg.stop(mode).expect("stop Postgres");
        tokio::time::sleep(Duration::from_millis(500)).await;
        pg.start_again().expect("start Postgres");
        stream.wait_streaming().await;
    }
    load.await.expect("the writer");
    let committed = committed(&pg).await;
    drain(&mut stream, &mut received, &committed).await;
    let report = check(&received, &committed);
    println!("postgres restarts: committed={} {report:?}", committed.len());
    assert_eq!(committed.len(), 8_000);
    assert_eq!(
        report,
        Report {
            received: 8_000,
            ..Report::default()
        }
    );
    stream.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_paused_past_wal_sender_timeout_keeps_the_replication_connection() {
    let pg = start_postgres(Options::default().setting("wal_sender_timeout", "5s"));
    let db = pool(&pg).await;
    exec(&db, SETUP).await;
    let mut stream = Stream::start(database(&pg), replication_config("s_paused", "pub"));
    stream.wait_streaming().await;
    let walsender = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 's_paused'",
        )
        .fetch_one(&db)
        .await
        .expect("the slot is active")
    };
    let before = walsender().await;
    // The consumer reads nothing for 8 s (more than wal_sender_timeout) while 400 single-row
    // transactions are committed.
    let paused_at = Instant::now();
    let load = writer(pg.url("postgres"), 400, 1, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        walsender().await,
        before,
        "the same walsender: the connection survived the pause"
    );
    println!(
        "consumer paused {:.1} s with wal_sender_timeout = 5 s",
        paused_at.elapsed().as_secs_f64()
    );
    load.await.expect("the writer");
    let committed = committed(&pg).await;
    let mut received = Vec::new();
    drain(&mut stream, &mut received, &committed).await;
    assert_eq!(
        check(&received, &committed),
        Report {
            received: 400,
            ..Report::default()
        }
    );
    assert_eq!(walsender().await, before);
    let log = std::fs::read_to_string(pg.log_file()).unwrap_or_default();
    assert!(
        !log.contains("terminating walsender process due to replication timeout"),
        "{log}"
    );
    stream.stop().await.expect("clean stop");
}
