//! The `changes` benchmark: Postgres Changes delivery through table policy rules, on loopback.
//!
//! One throwaway Postgres (`fsync=off`, `synchronous_commit=on` so commits reach the WAL sender
//! at once), the replication task and the server in this process on one bus, exactly as
//! `realtime serve` wires them; the subscribers run in a child process (see [`clients`]).
//!
//! Table `items(id, grp, band, sent_us, body)`, one policy rule
//! `rows = "band = (auth.jwt() ->> 'band')::int OR grp = (auth.jwt() ->> 'grp')::int"`, and
//! `subscribers` sockets (default 1,000) in `groups` claim groups (default 50, `band = grp % 5`),
//! all on one topic with one INSERT binding. Phases, each bounded in time and count:
//! 1. warm-up: one 100-row transaction, waited for (binds the rules, warms caches);
//! 2. throughput: for `seconds` (10), 100-row transactions with `band = id % 5` (each row visible
//!    to 10 of 50 groups = 200 sockets), inserted as fast as the pipeline drains, with at most
//!    `window` deliveries outstanding → deliveries per second until the last one arrived;
//! 3. latency: for `latency_seconds` (10), `rate` (5,000) single-row transactions per second,
//!    paced over `writers` connections, `grp = id % 50` (each row visible to 20 sockets) →
//!    p50/p99 of receive time − the row's `clock_timestamp()` (and − `commit_timestamp`).
//!
//! After each phase every socket's count is checked against the rows visible to it, and every
//! row received against the socket's claims, and the CPU time of this process, the subscribers
//! and the whole machine is printed (see [`cpu`]). Ends with one `result changes ...` line.

mod clients;
mod cpu;
mod sweep;

use super::Line;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use realtime::bus::LocalBus;
use realtime::config::server::{AuthConfig, Limits, ServerConfig};
use realtime::config::{Config, DatabaseConfig, ReplicationConfig, Secret};
use realtime::embedded::{EmbeddedPostgres, Options as PgOptions};
use realtime::replication::{Replication, State};

pub use clients::main as clients_main;
pub use sweep::main as sweep_main;

const POLICY: &str = r#"[[table]]
description = "A row reaches the claim groups of its band and the group it names"
table = "public.items"
rows = "band = (auth.jwt() ->> 'band')::int OR grp = (auth.jwt() ->> 'grp')::int"
"#;

#[derive(Clone, Debug)]
struct Options {
    subscribers: u64,
    groups: u64,
    seconds: u64,
    batch: u64,
    window: u64,
    rate: u64,
    latency_seconds: u64,
    writers: u64,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Options> {
        Options::parse_with(args, |key, _| bail!("unknown option {key:?}"))
    }

    /// [`Options::parse`], handing keys it does not know to `other` (the sweep's own).
    fn parse_with(
        args: impl Iterator<Item = String>,
        mut other: impl FnMut(&str, &str) -> anyhow::Result<()>,
    ) -> anyhow::Result<Options> {
        let mut o = Options {
            subscribers: 1_000,
            groups: 50,
            seconds: 10,
            batch: 100,
            window: 200_000,
            rate: 5_000,
            latency_seconds: 10,
            writers: 4,
        };
        for arg in args {
            let (key, value) = arg
                .split_once('=')
                .with_context(|| format!("expected key=value, got {arg:?}"))?;
            let known = [
                "subscribers",
                "groups",
                "seconds",
                "batch",
                "window",
                "rate",
                "latency_seconds",
                "writers",
            ];
            if !known.contains(&key) {
                other(key, value)?;
                continue;
            }
            let n: u64 = value.parse().with_context(|| format!("{key}= needs a number"))?;
            match key {
                "subscribers" => o.subscribers = n.max(1),
                "groups" => o.groups = n.clamp(5, o.subscribers.max(5)),
                "seconds" => o.seconds = n,
                "batch" => o.batch = n.max(1),
                "window" => o.window = n.max(1),
                "rate" => o.rate = n.max(1),
                "latency_seconds" => o.latency_seconds = n,
                "writers" => o.writers = n.max(1),
                _ => bail!("unknown option {key:?}"),
            }
        }
        if o.subscribers > 18_000 {
            bail!("subscribers must stay below 18,000 (one process holds the server's sockets)");
        }
        Ok(o)
    }

    /// How many sockets see a row of `band` / of `grp` (socket `i` is in group `i % groups`).
    fn sockets_where(&self, pred: impl Fn(u64, u64) -> bool) -> u64 {
        (0..self.subscribers)
            .filter(|&i| {
                let (grp, band) = clients::group_of(i, self.groups);
                pred(grp, band)
            })
            .count() as u64
    }
}

pub fn main() -> anyhow::Result<()> {
    let options = Options::parse(std::env::args().skip(2))?;
    with_pipeline(&options, |o, pipeline| Box::pin(changes(o, pipeline)))
}

/// What a benchmark run gets once the pipeline is up: the subscribers joined and warmed up.
struct Pipeline {
    db: sqlx::PgPool,
    clients: Clients,
    next_id: u64,
}

type PhasesFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + 'a>>;

/// Starts Postgres, the server and the subscribers, warms up, runs `phases`, and stops.
fn with_pipeline(
    options: &Options,
    phases: impl for<'a> FnOnce(&'a Options, &'a mut Pipeline) -> PhasesFuture<'a>,
) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    println!("changes: starting a throwaway Postgres (fsync=off, synchronous_commit=on)");
    let pg = EmbeddedPostgres::start(
        PgOptions::default()
            .setting("synchronous_commit", "on")
            .setting("shared_buffers", "256MB"),
    )
    .context("cannot start the benchmark's Postgres")?;
    pg.psql(
        "postgres",
        "CREATE TABLE items (id bigint PRIMARY KEY, grp int NOT NULL, band int NOT NULL, \
         sent_us bigint NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, \
         body text NOT NULL); \
         CREATE PUBLICATION bench_changes FOR TABLE items;",
    )?;
    let policies = std::env::temp_dir().join(format!("realtime-changes-bench-{}", std::process::id()));
    std::fs::create_dir_all(&policies)?;
    std::fs::write(policies.join("bench.toml"), POLICY)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(run(options, &pg, policies.clone(), phases));
    let _ = std::fs::remove_dir_all(&policies);
    result
}

fn config(database: DatabaseConfig, policies: PathBuf, secret: &str) -> Config {
    Config {
        database: Some(database),
        replication: ReplicationConfig {
            slot_name: "bench_changes".to_owned(),
            temporary_slot: true,
            publications: vec!["bench_changes".to_owned()],
            manage_publication: false,
            ..ReplicationConfig::default()
        },
        server: ServerConfig {
            port: 0,
            auth: AuthConfig {
                jwt_secret: Some(Secret::new(secret)),
                ..AuthConfig::default()
            },
            limits: Limits {
                max_channels_per_client: 100,
                channel_error_backoff: Duration::ZERO,
                connect_error_backoff: Duration::ZERO,
                // Throughput is measured, not slow-consumer policing: queues may grow.
                outbound_queue_frames: 1_000_000,
                outbound_queue_bytes: usize::MAX,
                ..super::unpoliced_limits()
            },
            policies_dir: Some(policies),
            ..ServerConfig::default()
        },
        ..Config::default()
    }
}

async fn run(
    o: &Options,
    pg: &EmbeddedPostgres,
    policies: PathBuf,
    phases: impl for<'a> FnOnce(&'a Options, &'a mut Pipeline) -> PhasesFuture<'a>,
) -> anyhow::Result<()> {
    let secret = format!("{:032x}", std::process::id() as u128 * 0x9e37_79b9_7f4a_7c15);
    let database = DatabaseConfig::from_url(&pg.url("postgres")).map_err(anyhow::Error::msg)?;
    let config = Arc::new(config(database.clone(), policies, &secret));
    let shutdown = CancellationToken::new();
    let bus = LocalBus::new(4096);
    let replication = Replication::new(database, config.replication.clone(), bus.clone());
    let mut state = replication.state.subscribe();
    let replication_task = tokio::spawn(replication.run(shutdown.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(realtime::server::run(config, listener, bus, shutdown.clone()));
    tokio::time::timeout(
        Duration::from_secs(30),
        state.wait_for(|s| matches!(s, State::Streaming { .. })),
    )
    .await
    .context("replication did not start streaming within 30 s")??;

    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(o.writers as u32 + 1)
        .connect(&pg.url("postgres"))
        .await?;
    println!(
        "changes: server on {addr}; {} subscribers in {} claim groups (band = grp % 5) in a child process",
        o.subscribers, o.groups
    );
    let mut clients = Clients::spawn(
        "changes-clients",
        &[
            format!("url=ws://{addr}/socket/websocket"),
            format!("secret={secret}"),
            format!("subscribers={}", o.subscribers),
            format!("groups={}", o.groups),
            "concurrency=100".to_owned(),
        ],
    )?;
    let line = clients.expect("subscribed", Duration::from_secs(300)).await?;
    println!(
        "subscribed: {} sockets in {:.2} s",
        line.num("n")?,
        line.num("elapsed_us")? as f64 / 1e6
    );

    let mut next_id = 0u64;
    // 1. Warm-up.
    insert_batch(&db, next_id, o.batch).await?;
    next_id += o.batch;
    let warm_expected: u64 = (0..o.batch)
        .map(|id| o.sockets_where(|_, band| band == id % 5))
        .sum();
    clients
        .wait_delivered(warm_expected, Duration::from_secs(60))
        .await
        .context("warm-up")?;
    clients.reset().await?;

    let mut pipeline = Pipeline { db, clients, next_id };
    let outcome = phases(o, &mut pipeline).await;
    pipeline.clients.close().await?;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
    let _ = tokio::time::timeout(Duration::from_secs(30), replication_task).await;
    outcome
}

/// The `changes` benchmark's phases: throughput, then latency at `rate`.
async fn changes(o: &Options, p: &mut Pipeline) -> anyhow::Result<()> {
    // 2. Throughput.
    let t = throughput(o, &p.db, &mut p.clients, &mut p.next_id).await?;

    // 3. Latency.
    p.clients.reset().await?;
    let latency = latency(o, &p.db, &mut p.clients, &mut p.next_id).await?;
    let per_band_row = o.sockets_where(|_, band| band == 0);
    println!(
        "result changes deliveries_per_s={:.0} latency_p50_ms={:.2} latency_p99_ms={:.2} \
         commit_latency_p50_ms={:.1} commit_latency_p99_ms={:.1} latency_max_ms={:.1} latency_txn_per_s={:.0} latency_delivered_fraction={:.3} \
         server_cpu_ns_per_delivery={:.0} subscriber_cpu_ns_per_delivery={:.0} machine_busy_pct={:.0} latency_machine_busy_pct={:.0} \
         subscribers={} groups={} batch={} row_fanout_throughput={per_band_row} row_fanout_latency={}",
        t.deliveries_per_s,
        latency.p50_us as f64 / 1e3,
        latency.p99_us as f64 / 1e3,
        latency.commit_p50_us as f64 / 1e3,
        latency.commit_p99_us as f64 / 1e3,
        latency.max_us as f64 / 1e3,
        latency.txn_per_s,
        latency.delivered_fraction,
        t.server_ns,
        t.subscriber_ns,
        t.machine_busy_pct,
        latency.machine_busy_pct,
        o.subscribers,
        o.groups,
        o.batch,
        o.sockets_where(|grp, _| grp == 0),
    );
    Ok(())
}

/// One transaction of `n` rows with ids from `first`, `band = id % 5`, `grp = -1`.
async fn insert_batch(db: &sqlx::PgPool, first: u64, n: u64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO items (id, grp, band, body) \
         SELECT $1 + g, -1, ($1 + g) % 5, 'a row of the changes benchmark, about fifty bytes' \
         FROM generate_series(0, $2 - 1) g",
    )
    .bind(first as i64)
    .bind(n as i64)
    .execute(db)
    .await?;
    Ok(())
}

async fn throughput(
    o: &Options,
    db: &sqlx::PgPool,
    clients: &mut Clients,
    next_id: &mut u64,
) -> anyhow::Result<Throughput> {
    let base = clients.delivered();
    let mut rows_per_band = [0u64; 5];
    let mut expected = 0u64;
    // Sockets that see a row of each band, counted once (not per row: this process's CPU time
    // is the server's figure).
    let per_band: Vec<u64> = (0..5).map(|b| o.sockets_where(|_, band| band == b)).collect();
    let cpu_before = cpu::Sample::now(clients.pid());
    let started = Instant::now();
    let mut stalled = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(o.seconds) {
        // Closed loop: keep the pipeline full without letting queues grow without bound.
        let wait = Instant::now();
        while expected.saturating_sub(clients.delivered() - base) > o.window {
            clients.pump().await?;
        }
        stalled += wait.elapsed();
        insert_batch(db, *next_id, o.batch).await?;
        for id in *next_id..*next_id + o.batch {
            rows_per_band[(id % 5) as usize] += 1;
            expected += per_band[(id % 5) as usize];
        }
        *next_id += o.batch;
    }
    let inserted_for = started.elapsed();
    clients
        .wait_delivered(base + expected, Duration::from_secs(120))
        .await
        .context("throughput phase")?;
    let elapsed = started.elapsed();
    let spent = cpu::Sample::now(clients.pid()).since(&cpu_before);
    let rows: u64 = rows_per_band.iter().sum();
    let rate = expected as f64 / elapsed.as_secs_f64();
    let per_delivery = |cpu: Duration| cpu.as_nanos() as f64 / expected.max(1) as f64;
    println!(
        "throughput: {rows} rows in {} transactions of {} in {:.2} s, {expected} deliveries in {:.2} s = {rate:.0}/s; \
         inserter waited on the window {:.2} s; {} = {:.0} ns/delivery in the server process, {:.0} in the subscribers",
        rows / o.batch,
        o.batch,
        inserted_for.as_secs_f64(),
        elapsed.as_secs_f64(),
        stalled.as_secs_f64(),
        spent.describe(),
        per_delivery(spent.server),
        per_delivery(spent.subscribers),
    );
    let report = clients.report().await?;
    check_counts(o, &report, expected, |_, band| rows_per_band[band as usize])?;
    Ok(Throughput {
        deliveries_per_s: rate,
        server_ns: per_delivery(spent.server),
        subscriber_ns: per_delivery(spent.subscribers),
        machine_busy_pct: spent.busy_percent(),
    })
}

struct Throughput {
    deliveries_per_s: f64,
    server_ns: f64,
    subscriber_ns: f64,
    machine_busy_pct: f64,
}

struct Latency {
    p50_us: i64,
    p99_us: i64,
    max_us: i64,
    commit_p50_us: i64,
    commit_p99_us: i64,
    txn_per_s: f64,
    /// Deliveries that arrived ÷ deliveries due (below 1 when the server dropped changes).
    delivered_fraction: f64,
    machine_busy_pct: f64,
    /// CPU time of this process (server, replication, the writers) ÷ deliveries that arrived.
    server_us_per_delivery: f64,
}

async fn latency(
    o: &Options,
    db: &sqlx::PgPool,
    clients: &mut Clients,
    next_id: &mut u64,
) -> anyhow::Result<Latency> {
    let base = clients.delivered();
    let first = *next_id;
    let total = o.rate * o.latency_seconds;
    let interval = Duration::from_secs_f64(o.writers as f64 / o.rate as f64);
    let started = tokio::time::Instant::now();
    let cpu_before = cpu::Sample::now(clients.pid());
    let mut writers = tokio::task::JoinSet::new();
    let (writer_count, groups) = (o.writers, o.groups);
    for w in 0..o.writers {
        let db = db.clone();
        writers.spawn(async move {
            let mut k = 0u64;
            loop {
                let id = first + w + k * writer_count;
                if id >= first + total {
                    return Ok::<_, sqlx::Error>(());
                }
                tokio::time::sleep_until(started + interval * k as u32).await;
                sqlx::query(
                    "INSERT INTO items (id, grp, band, body) VALUES ($1, $2, -1, 'a row of the changes benchmark, about fifty bytes')",
                )
                .bind(id as i64)
                .bind((id % groups) as i32)
                .execute(&db)
                .await?;
                k += 1;
            }
        });
    }
    // Read progress meanwhile, or the child blocks on a full pipe.
    let mut finished = 0;
    while finished < o.writers {
        tokio::select! {
            joined = writers.join_next() => {
                joined.context("writer")?.context("writer panicked")??;
                finished += 1;
            }
            pumped = clients.pump() => pumped?,
        }
    }
    let insert_secs = started.elapsed().as_secs_f64();
    *next_id = first + total;
    let per_grp: Vec<u64> = (0..o.groups)
        .map(|g| o.sockets_where(|grp, _| grp == g))
        .collect();
    let mut rows_per_grp: HashMap<u64, u64> = HashMap::new();
    let mut expected = 0;
    for id in first..first + total {
        let grp = id % o.groups;
        *rows_per_grp.entry(grp).or_default() += 1;
        expected += per_grp[grp as usize];
    }
    // A server that falls behind this rate drops changes (the dispatcher's bus receiver
    // lags): report what arrived rather than wait for what never will.
    let complete = clients
        .wait_settled(base + expected, Duration::from_secs(60))
        .await;
    let spent = cpu::Sample::now(clients.pid()).since(&cpu_before);
    let txn_per_s = total as f64 / insert_secs;
    let report = clients.report().await?;
    let delivered_fraction = report.num("total")? as f64 / expected as f64;
    let checked = check_counts(o, &report, expected, |grp, _| {
        rows_per_grp.get(&grp).copied().unwrap_or(0)
    });
    if let Err(e) = checked {
        if report.num("wrong")? > 0 || complete {
            return Err(e);
        }
        println!(
            "latency: INCOMPLETE: {:.1}% of the deliveries arrived; latencies below are over those only",
            delivered_fraction * 100.0
        );
    }
    let l = Latency {
        p50_us: report.num("row_p50_us")? as i64,
        p99_us: report.num("row_p99_us")? as i64,
        max_us: report.num("row_max_us")? as i64,
        commit_p50_us: report.num("commit_p50_us")? as i64,
        commit_p99_us: report.num("commit_p99_us")? as i64,
        txn_per_s,
        delivered_fraction,
        machine_busy_pct: spent.busy_percent(),
        server_us_per_delivery: spent.server.as_secs_f64() * 1e6 / report.num("total")?.max(1) as f64,
    };
    println!(
        "latency: {total} single-row transactions in {insert_secs:.2} s ({txn_per_s:.0}/s over {} connections), \
         {expected} deliveries; receive − clock_timestamp(): p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; \
         receive − commit_timestamp (ms precision): p50 {:.1} ms, p99 {:.1} ms; {} = {:.2} µs/delivery in the server process",
        o.writers,
        l.p50_us as f64 / 1e3,
        l.p99_us as f64 / 1e3,
        l.max_us as f64 / 1e3,
        l.commit_p50_us as f64 / 1e3,
        l.commit_p99_us as f64 / 1e3,
        spent.describe(),
        l.server_us_per_delivery,
    );
    Ok(l)
}

/// Every socket got exactly the rows visible to it, and nothing outside its claims.
fn check_counts(
    o: &Options,
    report: &Line,
    expected: u64,
    visible_rows: impl Fn(u64, u64) -> u64,
) -> anyhow::Result<()> {
    let (total, wrong, closed) = (report.num("total")?, report.num("wrong")?, report.num("closed")?);
    let counts = report.fields.get("counts").context("report lacks counts")?;
    let mut mismatched = 0;
    for (i, count) in counts.split(',').enumerate() {
        let (grp, band) = clients::group_of(i as u64, o.groups);
        if count.parse::<u64>().ok() != Some(visible_rows(grp, band)) {
            mismatched += 1;
        }
    }
    println!(
        "check: {total} deliveries (expected {expected}), {wrong} outside the subscriber's claims, \
         {mismatched} sockets with a wrong count, {closed} sockets closed"
    );
    if total != expected || wrong > 0 || mismatched > 0 || closed > 0 {
        bail!("delivery check failed");
    }
    Ok(())
}

/// The subscriber child process: `progress` lines update [`Clients::delivered`], other lines
/// are answers.
pub(super) struct Clients {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    delivered: Arc<AtomicU64>,
    progress: Arc<tokio::sync::Notify>,
}

impl Clients {
    /// Starts this binary's `command` (a subscribers subcommand) with `args`.
    pub(super) fn spawn(command: &str, args: &[String]) -> anyhow::Result<Clients> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .env_remove("LD_PRELOAD")
            .arg(command)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the subscribers")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let stdin = child.stdin.take().context("child stdin")?;
        let (tx, lines) = mpsc::unbounded_channel();
        let delivered = Arc::new(AtomicU64::new(0));
        let progress = Arc::new(tokio::sync::Notify::new());
        let (d, p) = (delivered.clone(), progress.clone());
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                match line
                    .strip_prefix("progress delivered=")
                    .and_then(|n| n.parse().ok())
                {
                    Some(n) => {
                        d.store(n, Ordering::SeqCst);
                        p.notify_waiters();
                    }
                    None => {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Clients {
            child,
            stdin,
            lines,
            delivered,
            progress,
        })
    }

    pub(super) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::SeqCst)
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the next progress line (at most 100 ms).
    pub(super) async fn pump(&mut self) -> anyhow::Result<()> {
        let _ = tokio::time::timeout(Duration::from_millis(100), self.progress.notified()).await;
        Ok(())
    }

    pub(super) async fn wait_delivered(&mut self, target: u64, within: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        while self.delivered() < target {
            if started.elapsed() > within {
                bail!(
                    "only {} of {target} deliveries arrived within {within:?}",
                    self.delivered()
                );
            }
            self.pump().await?;
        }
        Ok(())
    }

    /// Waits for `target` deliveries, or until none arrived for 5 s or `within` passed.
    /// Returns whether the target was reached.
    pub(super) async fn wait_settled(&mut self, target: u64, within: Duration) -> bool {
        let started = Instant::now();
        let (mut last, mut last_change) = (self.delivered(), Instant::now());
        while self.delivered() < target && started.elapsed() < within {
            let _ = self.pump().await;
            if self.delivered() != last {
                (last, last_change) = (self.delivered(), Instant::now());
            } else if last_change.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
        self.delivered() >= target
    }

    pub(super) async fn expect(&mut self, word: &str, within: Duration) -> anyhow::Result<Line> {
        let line = tokio::time::timeout(within, self.lines.recv())
            .await
            .with_context(|| format!("subscribers: no `{word}` line within {within:?}"))?
            .with_context(|| format!("subscribers exited before `{word}`"))?;
        Line::parse(&line, word, "subscribers")
    }

    pub(super) async fn command(&mut self, command: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{command}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    pub(super) async fn reset(&mut self) -> anyhow::Result<()> {
        self.command("reset").await?;
        self.expect("reset", Duration::from_secs(30)).await?;
        Ok(())
    }

    pub(super) async fn report(&mut self) -> anyhow::Result<Line> {
        self.command("report").await?;
        self.expect("report", Duration::from_secs(60)).await
    }

    pub(super) async fn close(mut self) -> anyhow::Result<()> {
        let _ = self.command("close").await;
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .context("subscribers did not exit")??;
        if !status.success() {
            bail!("subscribers failed: {status}");
        }
        Ok(())
    }
}
