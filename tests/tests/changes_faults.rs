//! Postgres Changes under downstream faults, with `realtime serve` as a child process and
//! WebSocket subscribers: a 1,000,000-row transaction (bounded memory, an explicit overflow
//! signal, then normal delivery), a subscriber paused past `wal_sender_timeout`, and one that
//! stops reading while others measure their latency.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use realtime::embedded::Options;
use realtime_tests::auth::token;
use realtime_tests::service::{Incoming, Service, Subscriber, http_get, metric, reader_role_sql};
use realtime_tests::{exec, pool, start_postgres};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The next push or close within `timeout`, heartbeating every 20 s so a long wait is not taken
/// for an idle client.
async fn next_patiently(subscriber: &mut Subscriber, timeout: Duration) -> Option<Incoming> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(20));
        if let Some(incoming) = subscriber.next(wait).await {
            return Some(incoming);
        }
        subscriber.heartbeat().await;
    }
    None
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64
}

/// Peak memory the service may reach above its resident size before the transaction: the
/// decoder keeps at most `max_transaction_changes` (100,000) changes of this table, about 200
/// bytes each (a 120-byte `RowChange` with its `Arc`, a ~25-byte JSON row, two 12-byte cells)
/// = ~20 MB, and its `Vec` of pointers (1 MB), before it drops them for the overflow marker;
/// allocator slack and buffers come on top (measured: +23 MB). Keeping all 1,000,000 changes
/// (`MAX_TRANSACTION_CHANGES=2000000`) measured +232 MB, so this bound tells the two apart.
const MILLION_ROW_HEADROOM: u64 = 80 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_transaction_keeps_memory_bounded_and_its_subscribers_are_told_to_refetch() {
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
    let service = Service::start(
        &pg.url("postgres"),
        "s_million",
        "pub",
        &[("SLOT_CHECK_INTERVAL_MS", "250".to_owned())],
    );
    let token = token("reader");
    let bindings = json!([{"event": "*", "schema": "public", "table": "t"}]);
    let mut subscriber = Subscriber::join(&service, &token, "million", bindings, None).await;
    exec(&db, "INSERT INTO t VALUES (0, 'warm-up')").await;
    assert_eq!(
        subscriber.change(Duration::from_secs(30)).await["record"]["id"],
        0
    );
    let rss_before = service.rss();

    // Lag as /metrics reports it, sampled while the transaction streams.
    let stop = CancellationToken::new();
    let samples = Arc::new(Mutex::new(Vec::<(f64, f64)>::new()));
    let sampler = tokio::spawn({
        let (stop, samples, port) = (stop.clone(), samples.clone(), service.port);
        async move {
            while !stop.is_cancelled() {
                let text = http_get(port, "/metrics").await;
                let sample = (
                    metric(&text, "realtime_replication_slot_lag_bytes"),
                    metric(&text, "realtime_replication_slot_lag_seconds"),
                );
                samples.lock().unwrap_or_else(|p| p.into_inner()).push(sample);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });

    let started = Instant::now();
    exec(
        &db,
        "INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 1000000) g",
    )
    .await;
    let committed_after = started.elapsed();
    let signal = match next_patiently(&mut subscriber, Duration::from_secs(300)).await {
        Some(Incoming::System(payload)) => payload,
        other => panic!("expected the overflow signal, got {other:?}"),
    };
    let signalled_after = started.elapsed();
    assert_eq!(signal["reason"], "transaction_too_large", "{signal}");
    assert_eq!(signal["extension"], "postgres_changes");
    assert_eq!(signal["channel"], "million");
    assert_eq!(signal["tables"], json!(["public.t"]));
    assert_eq!(signal["changes"], 1_000_000);
    assert!(
        signal["position"]
            .as_str()
            .is_some_and(|p| p.ends_with("-000F423F")),
        "the position of the transaction's last change: {signal}"
    );

    // The stream goes on: the next transaction is delivered as usual, and nothing came between.
    exec(&db, "INSERT INTO t VALUES (1000001, 'after')").await;
    let after = subscriber.change(Duration::from_secs(60)).await;
    assert_eq!(after["record"]["id"], 1_000_001);
    let peak = service.peak_rss();

    // The lag came back down once the transaction was handed on.
    let deadline = Instant::now() + Duration::from_secs(60);
    while service.metric("realtime_replication_slot_lag_bytes").await > 1_048_576.0 {
        assert!(Instant::now() < deadline, "{}", service.metrics().await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.cancel();
    sampler.await.expect("the sampler");
    let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let max_bytes = samples.iter().map(|s| s.0).fold(0.0, f64::max);
    let max_seconds = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    let text = service.metrics().await;
    println!(
        "1,000,000-row transaction: committed after {:.1} s, overflow signal after {:.1} s; \
         RSS before {:.1} MB, peak (VmHWM) {:.1} MB, allowed {:.1} MB; \
         slot lag peaked at {:.1} MB and {max_seconds:.1} s ({} samples)",
        committed_after.as_secs_f64(),
        signalled_after.as_secs_f64(),
        rss_before as f64 / 1e6,
        peak as f64 / 1e6,
        (rss_before + MILLION_ROW_HEADROOM) as f64 / 1e6,
        max_bytes / 1e6,
        samples.len()
    );
    assert!(
        peak <= rss_before + MILLION_ROW_HEADROOM,
        "peak RSS {peak} exceeds {rss_before} + {MILLION_ROW_HEADROOM}"
    );
    assert_eq!(
        metric(&text, "realtime_replication_overflowed_transactions_total"),
        1.0
    );
    assert!(
        max_bytes >= 50e6,
        "the lag in bytes grew while the transaction streamed"
    );
    assert!(
        max_seconds >= 1.0,
        "the lag in seconds grew while the transaction streamed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_paused_past_wal_sender_timeout_misses_nothing_and_replication_stays_connected() {
    let pg = start_postgres(Options::default().setting("wal_sender_timeout", "5s"));
    let db = pool(&pg).await;
    exec(
        &db,
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE t; {}",
            reader_role_sql(&["t"])
        ),
    )
    .await;
    let service = Service::start(&pg.url("postgres"), "s_pause", "pub", &[]);
    let token = token("reader");
    let bindings = json!([{"event": "INSERT", "schema": "public", "table": "t"}]);
    let mut subscriber = Subscriber::join(&service, &token, "paused", bindings, None).await;
    let walsender = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 's_pause'",
        )
        .fetch_one(&db)
        .await
        .expect("the slot is active")
    };
    let before = walsender().await;
    // 300 single-row transactions over ~8 s while the subscriber reads nothing.
    let writer = tokio::spawn({
        let db = db.clone();
        async move {
            for id in 0..300 {
                exec(&db, &format!("INSERT INTO t VALUES ({id})")).await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(walsender().await, before, "the same walsender after the pause");
    writer.await.expect("the writer");
    for id in 0..300 {
        let change = subscriber.change(Duration::from_secs(30)).await;
        assert_eq!(change["record"]["id"], id, "in commit order, none missing");
    }
    assert!(
        subscriber.next(Duration::from_millis(500)).await.is_none(),
        "nothing more"
    );
    assert_eq!(walsender().await, before);
    let log = std::fs::read_to_string(pg.log_file()).unwrap_or_default();
    assert!(
        !log.contains("terminating walsender process due to replication timeout"),
        "{log}"
    );
}

/// Latencies (µs) of the probe rows of one phase, sorted.
fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_closed_with_4008_and_the_others_keep_their_latency() {
    const NORMAL: usize = 20;
    let pg = start_postgres(Options::default().setting("synchronous_commit", "on"));
    let db = pool(&pg).await;
    exec(
        &db,
        &format!(
            "CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, kind text NOT NULL, \
             sent_us bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, \
             body text NOT NULL); CREATE PUBLICATION pub FOR TABLE items; {}",
            reader_role_sql(&["items"])
        ),
    )
    .await;
    let service = Service::start(
        &pg.url("postgres"),
        "s_slow",
        "pub",
        &[("OUTBOUND_QUEUE_FRAMES", "64".to_owned())],
    );
    let token = token("reader");

    // The normal subscribers get the small probe rows only; they record each one's latency
    // from its insert (clock_timestamp()) to its arrival.
    let probes =
        json!([{"event": "INSERT", "schema": "public", "table": "items", "filter": "kind=eq.probe"}]);
    let latencies = Arc::new(Mutex::new(Vec::<(i64, i64)>::new()));
    let counts = Arc::new(Mutex::new(vec![0usize; NORMAL]));
    let stop = CancellationToken::new();
    let mut readers = Vec::new();
    for i in 0..NORMAL {
        let mut subscriber = Subscriber::join(&service, &token, "probes", probes.clone(), None).await;
        let (latencies, counts, stop) = (latencies.clone(), counts.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            loop {
                let incoming = tokio::select! {
                    _ = stop.cancelled() => return,
                    incoming = subscriber.next(Duration::from_secs(20)) => incoming,
                };
                match incoming {
                    Some(Incoming::Change(data)) => {
                        let received = now_us();
                        let sent = data["record"]["sent_us"].as_i64().expect("sent_us");
                        latencies
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((sent, received - sent));
                        counts.lock().unwrap_or_else(|p| p.into_inner())[i] += 1;
                    }
                    None => subscriber.heartbeat().await,
                    other => panic!("subscriber {i}: {other:?}"),
                }
            }
        }));
    }

    // The load: 100 probe rows and 100 16 kB rows per second, each its own transaction.
    let load_stop = CancellationToken::new();
    let load = tokio::spawn({
        let (db, stop) = (db.clone(), load_stop.clone());
        async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(10));
            let mut probes = 0usize;
            while !stop.is_cancelled() {
                ticker.tick().await;
                exec(&db, "INSERT INTO items (kind, body) VALUES ('probe', '')").await;
                exec(
                    &db,
                    "INSERT INTO items (kind, body) VALUES ('bulk', repeat('x', 16000))",
                )
                .await;
                probes += 1;
            }
            probes
        }
    });

    // Phase A: nobody stalls.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a_start = now_us();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let a_end = now_us();

    // Phase B: one more subscriber, for every row, stops reading. A tiny receive buffer makes
    // its queue overflow within seconds.
    let everything = json!([{"event": "INSERT", "schema": "public", "table": "items"}]);
    let mut stalled = Subscriber::join(&service, &token, "everything", everything, Some(4096)).await;
    let b_start = now_us();
    let deadline = Instant::now() + Duration::from_secs(60);
    while service.metric("realtime_slow_consumer_closes_total").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the stalled subscriber was never closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed_after = (now_us() - b_start) as f64 / 1e6;
    // It reads again: what was in flight, then the close frame with the slow-consumer code.
    let close = loop {
        match stalled.next(Duration::from_secs(10)).await {
            Some(Incoming::Closed(code)) => break code,
            Some(_) => continue,
            None => panic!("no close frame within 10 s"),
        }
    };
    assert_eq!(close, Some(4008), "closed as a slow consumer");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b_end = now_us();
    load_stop.cancel();
    let probes_sent = load.await.expect("the load");

    // Every normal subscriber got every probe.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = counts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if counts.iter().all(|c| *c == probes_sent) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{probes_sent} probes sent, received per subscriber: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    for reader in readers {
        reader.await.expect("a reader");
    }
    let all = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let phase = |from: i64, to: i64| {
        let mut v: Vec<i64> = all
            .iter()
            .filter(|(sent, _)| (from..to).contains(sent))
            .map(|(_, l)| *l)
            .collect();
        v.sort_unstable();
        v
    };
    let (normal, with_stall) = (phase(a_start, a_end), phase(b_start, b_end));
    let (a50, a99) = (percentile(&normal, 0.5), percentile(&normal, 0.99));
    let (b50, b99) = (percentile(&with_stall, 0.5), percentile(&with_stall, 0.99));
    println!(
        "slow subscriber: closed with 4008 {closed_after:.1} s after it stopped reading; \
         others' latency without a stalled socket p50 {a50:.2} ms p99 {a99:.2} ms ({} deliveries), \
         with it p50 {b50:.2} ms p99 {b99:.2} ms ({} deliveries); p50 ratio {:.2}",
        normal.len(),
        with_stall.len(),
        b50 / a50
    );
    // The goal is within 20%. On a shared 2-core machine the scheduler alone moves a 2 ms
    // median by a few tenths and the p99 by tens of ms between runs, so the assertion allows
    // 20% plus 2 ms at the median and 2x plus 100 ms at the tail: still far below what a
    // stalled socket holding the fan-out back would cost (seconds, until its 4008).
    assert!(b50 <= a50 * 1.2 + 2.0, "p50 {b50:.2} ms vs {a50:.2} ms");
    assert!(b99 <= a99 * 2.0 + 100.0, "p99 {b99:.2} ms vs {a99:.2} ms");
}
