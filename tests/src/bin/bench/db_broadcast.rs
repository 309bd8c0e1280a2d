//! The `db-broadcast` benchmark: Broadcast from the database to private channels authorized by
//! RLS, on loopback.
//!
//! One throwaway Postgres (`synchronous_commit=on`), the replication task and the server in this
//! process, as `realtime serve` wires them, with `CHANNEL_AUTHORIZATION=database` and Supabase's
//! room-membership policy on `realtime.messages` (`public.room_members`). `subscribers` sockets
//! (default 1,000, in a child process, see [`clients`]) each join two private channels:
//! `room:all` and `room:<i % rooms>` (default 100 rooms). Phases:
//! 1. joins: every socket is opened, then each joins its two channels; every join is authorized
//!    by the RLS probe (distinct users, so nothing is shared by the check's cache) →
//!    RLS-authorized joins per second on open sockets, and with the handshakes' time included;
//! 2. throughput: for `seconds` (10), transactions of `batch` (100) `realtime.send` calls to
//!    `room:all`, as fast as delivery drains, at most `window` deliveries outstanding →
//!    deliveries per second until the last one arrived;
//! 3. latency: for `latency_seconds` (10), `rate` (1,000) single-send transactions per second
//!    over `writers` connections, spread over the rooms (each reaches `subscribers / rooms`
//!    sockets) → p50/p99 of receive time − the send's `clock_timestamp()`.
//!
//! Ends with `result db-broadcast deliveries_per_s=… p50_ms=… p99_ms=… rls_joins_per_s=…
//! rls_joins_with_handshakes_per_s=…`.

mod clients;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use super::changes::Clients;
use realtime::bus::LocalBus;
use realtime::config::server::{AuthConfig, ChannelAuthorization, Limits, ServerConfig};
use realtime::config::{Config, DatabaseConfig, ReplicationConfig, Secret};
use realtime::embedded::{EmbeddedPostgres, Options as PgOptions};
use realtime::replication::{Replication, State};

pub use clients::main as clients_main;

#[derive(Debug)]
struct Options {
    subscribers: u64,
    rooms: u64,
    seconds: u64,
    batch: u64,
    window: u64,
    rate: u64,
    latency_seconds: u64,
    writers: u64,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Options> {
        let mut o = Options {
            subscribers: 1_000,
            rooms: 100,
            seconds: 10,
            batch: 100,
            window: 200_000,
            rate: 1_000,
            latency_seconds: 10,
            writers: 4,
        };
        for arg in args {
            let (key, value) = arg
                .split_once('=')
                .with_context(|| format!("expected key=value, got {arg:?}"))?;
            let n: u64 = value.parse().with_context(|| format!("{key}= needs a number"))?;
            match key {
                "subscribers" => o.subscribers = n.max(1),
                "rooms" => o.rooms = n.max(1),
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

    /// How many sockets are members of room `r`.
    fn members(&self, r: u64) -> u64 {
        (0..self.subscribers).filter(|i| i % self.rooms == r).count() as u64
    }
}

pub fn main() -> anyhow::Result<()> {
    let options = Options::parse(std::env::args().skip(2))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    println!("db-broadcast: starting a throwaway Postgres (fsync=off, synchronous_commit=on)");
    let pg = EmbeddedPostgres::start(
        PgOptions::default()
            .setting("synchronous_commit", "on")
            .setting("shared_buffers", "256MB"),
    )
    .context("cannot start the benchmark's Postgres")?;
    pg.psql(
        "postgres",
        "CREATE ROLE authenticated NOLOGIN; CREATE TABLE bench_unused (id int PRIMARY KEY); \
         CREATE PUBLICATION bench_dbb FOR TABLE bench_unused;",
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(&options, &pg))
}

fn config(database: DatabaseConfig, secret: &str) -> Config {
    Config {
        database: Some(database),
        replication: ReplicationConfig {
            slot_name: "bench_dbb".to_owned(),
            temporary_slot: true,
            publications: vec!["bench_dbb".to_owned()],
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
                channel_error_backoff: Duration::ZERO,
                connect_error_backoff: Duration::ZERO,
                // Throughput is measured, not slow-consumer policing: queues may grow.
                outbound_queue_frames: 1_000_000,
                outbound_queue_bytes: usize::MAX,
                ..super::unpoliced_limits()
            },
            channel_authorization: ChannelAuthorization::Database,
            ..ServerConfig::default()
        },
        ..Config::default()
    }
}

/// Supabase's Authorization guide: members of a room may receive on its topic.
const POLICY: &str = "
    CREATE TABLE public.room_members (user_id uuid NOT NULL, room text NOT NULL, PRIMARY KEY (room, user_id));
    GRANT SELECT ON public.room_members TO authenticated;
    CREATE POLICY \"members can receive\" ON realtime.messages FOR SELECT TO authenticated
    USING (
      realtime.messages.extension IN ('broadcast', 'presence')
      AND EXISTS (SELECT 1 FROM public.room_members m
                  WHERE m.user_id = (SELECT auth.uid()) AND m.room = (SELECT realtime.topic()))
    );
";

async fn run(o: &Options, pg: &EmbeddedPostgres) -> anyhow::Result<()> {
    let secret = format!("{:032x}", std::process::id() as u128 * 0x9e37_79b9_7f4a_7c15);
    let database = DatabaseConfig::from_url(&pg.url("postgres")).map_err(anyhow::Error::msg)?;
    let config = Arc::new(config(database.clone(), &secret));
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

    // The migrations ran as the stream started: `realtime.messages` exists for the policy.
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(o.writers as u32 + 1)
        .connect(&pg.url("postgres"))
        .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(POLICY)).execute(&db).await?;
    sqlx::query(
        "INSERT INTO public.room_members \
         SELECT u, r FROM generate_series(0, $1 - 1) i, \
           LATERAL (SELECT format('00000000-0000-0000-0000-%s', lpad(i::text, 12, '0'))::uuid AS u) id, \
           LATERAL (VALUES ('room:all'), ('room:' || (i % $2))) rooms(r)",
    )
    .bind(o.subscribers as i64)
    .bind(o.rooms as i64)
    .execute(&db)
    .await?;

    println!(
        "db-broadcast: server on {addr}; {} subscribers (child process), each joins room:all and one of {} rooms, \
         both private, authorized by RLS",
        o.subscribers, o.rooms
    );
    let mut clients = Clients::spawn(
        "db-broadcast-clients",
        &[
            format!("url=ws://{addr}/socket/websocket"),
            format!("secret={secret}"),
            format!("subscribers={}", o.subscribers),
            format!("rooms={}", o.rooms),
            "concurrency=100".to_owned(),
        ],
    )?;
    let line = clients.expect("subscribed", Duration::from_secs(300)).await?;
    let joins = line.num("joins")?;
    let sockets = line.num("n")?;
    let handshakes_s = line.num("handshakes_us")? as f64 / 1e6;
    let joins_s = line.num("joins_us")? as f64 / 1e6;
    let total_s = line.num("elapsed_us")? as f64 / 1e6;
    let rls_joins_per_s = joins as f64 / joins_s;
    let with_handshakes_per_s = joins as f64 / total_s;
    println!(
        "joins: {sockets} sockets opened in {handshakes_s:.2} s ({:.0} handshakes/s), then {joins} private joins \
         on them in {joins_s:.2} s = {rls_joins_per_s:.0}/s (an RLS check each); \
         handshakes included: {joins} joins in {total_s:.2} s = {with_handshakes_per_s:.0}/s",
        sockets as f64 / handshakes_s
    );

    // Warm-up: one transaction, waited for.
    let mut next = 0u64;
    send_batch(&db, "room:all", next, o.batch).await?;
    next += o.batch;
    clients
        .wait_delivered(o.batch * o.subscribers, Duration::from_secs(60))
        .await
        .context("warm-up")?;

    let deliveries_per_s = throughput(o, &db, &mut clients, &mut next).await?;
    clients.reset().await?;
    let (p50_ms, p99_ms) = latency(o, &db, &mut clients, &mut next).await?;

    clients.close().await?;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
    let _ = tokio::time::timeout(Duration::from_secs(30), replication_task).await;
    println!(
        "result db-broadcast deliveries_per_s={deliveries_per_s:.0} p50_ms={p50_ms:.2} p99_ms={p99_ms:.2} \
         rls_joins_per_s={rls_joins_per_s:.0} rls_joins_with_handshakes_per_s={with_handshakes_per_s:.0} \
         subscribers={} rooms={} batch={} rate={}",
        o.subscribers, o.rooms, o.batch, o.rate
    );
    Ok(())
}

/// One transaction of `n` `realtime.send` calls to `topic` (private), each payload
/// `{"n": …, "sent_us": <clock_timestamp() in µs>}`.
async fn send_batch(db: &sqlx::PgPool, topic: &str, first: u64, n: u64) -> anyhow::Result<()> {
    sqlx::query(
        "SELECT realtime.send(jsonb_build_object('n', $1 + g, \
           'sent_us', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint), 'bench', $3, true) \
         FROM generate_series(0, $2 - 1) g",
    )
    .bind(first as i64)
    .bind(n as i64)
    .bind(topic)
    .execute(db)
    .await?;
    Ok(())
}

async fn throughput(
    o: &Options,
    db: &sqlx::PgPool,
    clients: &mut Clients,
    next: &mut u64,
) -> anyhow::Result<f64> {
    let base = clients.delivered();
    let mut expected = 0u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(o.seconds) {
        // Closed loop: keep the pipeline full without letting queues grow without bound.
        while expected.saturating_sub(clients.delivered() - base) > o.window {
            clients.pump().await?;
        }
        send_batch(db, "room:all", *next, o.batch).await?;
        *next += o.batch;
        expected += o.batch * o.subscribers;
    }
    let sent_for = started.elapsed();
    clients
        .wait_delivered(base + expected, Duration::from_secs(120))
        .await
        .context("throughput phase")?;
    let elapsed = started.elapsed();
    let rate = expected as f64 / elapsed.as_secs_f64();
    println!(
        "throughput: {} messages sent in {:.2} s (transactions of {}), {expected} deliveries in {:.2} s = {rate:.0}/s",
        expected / o.subscribers,
        sent_for.as_secs_f64(),
        o.batch,
        elapsed.as_secs_f64(),
    );
    Ok(rate)
}

/// Paced single-send transactions over the rooms; returns p50 and p99 in ms.
async fn latency(
    o: &Options,
    db: &sqlx::PgPool,
    clients: &mut Clients,
    next: &mut u64,
) -> anyhow::Result<(f64, f64)> {
    let base = clients.delivered();
    let total = o.rate * o.latency_seconds;
    let per_writer = total / o.writers;
    let interval = Duration::from_secs_f64(o.writers as f64 / o.rate as f64);
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..o.writers {
        let (db, first, rooms) = (db.clone(), *next + w * per_writer, o.rooms);
        writers.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for k in 0..per_writer {
                tick.tick().await;
                let n = first + k;
                send_batch(&db, &format!("room:{}", n % rooms), n, 1).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    let sent_for = started.elapsed();
    let expected: u64 = (0..o.writers * per_writer)
        .map(|k| o.members((*next + k) % o.rooms))
        .sum();
    *next += o.writers * per_writer;
    clients
        .wait_delivered(base + expected, Duration::from_secs(120))
        .await
        .context("latency phase")?;
    let report = clients.report().await?;
    let (p50, p99, max) = (
        report.num("p50_us")? as f64 / 1e3,
        report.num("p99_us")? as f64 / 1e3,
        report.num("max_us")? as f64 / 1e3,
    );
    println!(
        "latency: {} sends in {:.2} s ({:.0}/s, one per transaction, over {} rooms), {expected} deliveries; \
         send → client p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.1} ms ({} samples)",
        o.writers * per_writer,
        sent_for.as_secs_f64(),
        (o.writers * per_writer) as f64 / sent_for.as_secs_f64(),
        o.rooms,
        report.num("samples")?,
    );
    Ok((p50, p99))
}
