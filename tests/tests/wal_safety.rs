//! The slot under a running service: dropped, or invalidated past `max_slot_wal_keep_size`
//! while the consumer is paused, it is recreated and a new epoch begins (the service stays up
//! and streams on); WAL retained past 50% of `max_slot_wal_keep_size` is warned about and
//! exported in `/metrics`.

use std::time::{Duration, Instant};

use realtime::embedded::{EmbeddedPostgres, Options};
use realtime_tests::service::{Service, metric};
use realtime_tests::{Process, exec, pool, start_postgres};

const SETUP: &str = "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE t;";

fn tail(pg: &EmbeddedPostgres, slot: &str) -> Process {
    let env = [
        ("DATABASE_URL", pg.url("postgres")),
        ("SLOT_NAME", slot.to_owned()),
        ("PUBLICATIONS", "pub".to_owned()),
    ];
    let process = Process::spawn(&["tail"], &env);
    process.wait_stderr("streaming changes", Duration::from_secs(30));
    process
}

/// Waits until stderr holds `needle` at least `n` times.
fn wait_count(process: &Process, needle: &str, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while process.stderr().matches(needle).count() < n {
        assert!(
            Instant::now() < deadline,
            "stderr never held {needle:?} {n} times:\n{}",
            process.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Inserts `id` and returns the epoch of the event `tail` prints for it.
fn insert_and_read_epoch(pg: &EmbeddedPostgres, tail: &Process, id: i32) -> String {
    pg.psql("postgres", &format!("INSERT INTO t VALUES ({id})"))
        .expect("insert");
    let line = tail
        .stdout
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no event for row {id}; stderr:\n{}", tail.stderr()));
    let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(event["record"]["id"], id, "{line}");
    let position = event["position"].as_str().expect("a position");
    position.split('-').next().expect("an epoch").to_owned()
}

fn stored_epoch(pg: &EmbeddedPostgres, slot: &str) -> String {
    pg.psql(
        "postgres",
        &format!(
            "SELECT lpad(to_hex(epoch), 16, '0') FROM realtime.replication_epochs WHERE slot_name = '{slot}'"
        ),
    )
    .expect("read the stored epoch")
}

fn still_running(process: &mut Process) {
    assert!(
        process.child.try_wait().expect("poll").is_none(),
        "the service exited; stderr:\n{}",
        process.stderr()
    );
}

#[test]
fn a_slot_dropped_under_a_running_service_is_recreated_and_a_new_epoch_begins() {
    let pg = start_postgres(Options::default());
    pg.psql("postgres", SETUP).expect("setup");
    let mut tail = tail(&pg, "s_drop");
    let first = insert_and_read_epoch(&pg, &tail, 1);
    assert_eq!(stored_epoch(&pg, "s_drop"), first);

    // As an operator would: end our walsender, then drop the slot before the service takes it
    // back (it reconnects within its backoff, so try again if it won the race).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = pg.psql(
            "postgres",
            "SELECT pg_terminate_backend(active_pid, 10000) FROM pg_replication_slots \
             WHERE slot_name = 's_drop' AND active_pid IS NOT NULL",
        );
        if pg
            .psql("postgres", "SELECT pg_drop_replication_slot('s_drop')")
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "could not drop the slot");
    }
    wait_count(&tail, "created the replication slot", 2, Duration::from_secs(30));
    // Wait for the epoch line itself (the first epoch is logged differently): "streaming
    // changes" is also logged by reconnects that won the race against the drop above.
    wait_count(&tail, "a new epoch begins", 1, Duration::from_secs(30));
    let stderr = tail.stderr();
    assert!(stderr.contains("the slot was created"), "{stderr}");
    let second = insert_and_read_epoch(&pg, &tail, 2);
    assert_ne!(second, first, "a recreated slot is a new history");
    assert_eq!(stored_epoch(&pg, "s_drop"), second);
    still_running(&mut tail);
}

#[test]
fn a_slot_invalidated_while_its_consumer_is_paused_is_recreated_and_a_new_epoch_begins() {
    let pg = start_postgres(Options::default().setting("max_slot_wal_keep_size", "16MB"));
    pg.psql("postgres", &format!("{SETUP} CREATE TABLE filler (x text);"))
        .expect("setup");
    let mut tail = tail(&pg, "s_lost");
    let first = insert_and_read_epoch(&pg, &tail, 1);

    // Pause the consumer, then write past max_slot_wal_keep_size and checkpoint: Postgres ends
    // the walsender and invalidates the slot.
    let pid = tail.child.id().to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig}");
    };
    signal("-STOP");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        pg.psql(
            "postgres",
            "INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 2000); \
             SELECT pg_switch_wal(); CHECKPOINT;",
        )
        .expect("write WAL");
        let status = pg
            .psql(
                "postgres",
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 's_lost'",
            )
            .expect("slot status");
        if status == "lost" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot was never invalidated ({status})"
        );
    }
    signal("-CONT");

    wait_count(&tail, "was invalidated", 1, Duration::from_secs(30));
    wait_count(&tail, "streaming changes", 2, Duration::from_secs(30));
    let second = insert_and_read_epoch(&pg, &tail, 2);
    assert_ne!(second, first, "no silent resume after invalidation");
    assert_eq!(stored_epoch(&pg, "s_lost"), second);
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 's_lost'"
        )
        .expect("slot status"),
        "reserved"
    );
    // One replacement, not a crash loop.
    assert_eq!(tail.stderr().matches("was invalidated").count(), 1);
    still_running(&mut tail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_retained_past_half_of_max_slot_wal_keep_size_is_warned_about_and_exported() {
    let pg = start_postgres(Options::default().setting("max_slot_wal_keep_size", "64MB"));
    let db = pool(&pg).await;
    exec(&db, &format!("{SETUP} CREATE TABLE filler (x text);")).await;
    let service = Service::start(
        &pg.url("postgres"),
        "s_retain",
        "pub",
        &[("SLOT_CHECK_INTERVAL_MS", "200".to_owned())],
    );
    let text = wait_for_metrics(&service, |m| {
        metric(m, "realtime_replication_slot_wal_status{status=\"reserved\"}") == 1.0
    })
    .await;
    assert_eq!(
        metric(&text, "realtime_replication_max_slot_wal_keep_size_bytes"),
        (64u64 << 20) as f64
    );
    assert_eq!(metric(&text, "realtime_replication_streaming"), 1.0);

    // An open transaction holds the slot's restart point while 40 MB of WAL is written.
    let mut open = db.begin().await.expect("begin");
    sqlx::query("INSERT INTO filler VALUES ('held')")
        .execute(&mut *open)
        .await
        .expect("insert");
    exec(
        &db,
        "INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 40000)",
    )
    .await;
    service
        .process
        .wait_stderr("retains 50% of max_slot_wal_keep_size", Duration::from_secs(30));
    let text = service.metrics().await;
    let retained = metric(&text, "realtime_replication_slot_retained_wal_bytes");
    assert!(retained >= (32u64 << 20) as f64, "retained {retained}");
    println!(
        "retained {:.1} MB of 64 MB; lag {} bytes",
        retained / 1e6,
        metric(&text, "realtime_replication_slot_lag_bytes")
    );
    open.commit().await.expect("commit");
    // A checkpoint logs the running transactions, which lets the slot move its restart point.
    // The loop writes only to the unpublished table: a change of `t` would enter the resume
    // window and (by design) hold the confirmed position behind it for the window's 300 s,
    // while an empty window lets the service confirm each keepalive's WAL end.
    let deadline = Instant::now() + Duration::from_secs(90);
    while !service
        .process
        .stderr()
        .contains("back under 50% of max_slot_wal_keep_size")
    {
        assert!(Instant::now() < deadline, "{}", service.process.stderr());
        exec(&db, "CHECKPOINT; INSERT INTO filler VALUES ('tick')").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Scrapes until `ready` holds (30 s at most); returns that scrape.
async fn wait_for_metrics(service: &Service, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = service.metrics().await;
        if ready(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "metrics never got ready:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
