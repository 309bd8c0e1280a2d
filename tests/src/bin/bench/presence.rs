//! The `presence` benchmark: diff delivery latency in a large presence channel, and the time a
//! new member waits for the channel's `presence_state`.
//!
//! The server runs in this process (as in `broadcast`, with the per-channel presence rate limit
//! lifted); the members run on a separate tokio runtime of the same process.
//! 1. `members` sockets (default 1,000) join one topic with presence enabled, each under its own
//!    key, and track `{"n":<i>,"v":0}`; the setup ends when every member has seen every join.
//! 2. For `seconds` (default 10) one member per tick re-tracks with `v` = the tick number, `rate`
//!    ticks per second (default 10). Every member (the tracker too) receives the `presence_diff`;
//!    its latency is the time from the track to that receipt → p50/p99/max over all deliveries.
//! 3. `joins` (default 5) new sockets join the full channel, one after another: time from the
//!    `phx_join` to a `presence_state` listing every member → median and max.
//!
//! Usage: `realtime-bench presence [members=1000 rate=10 seconds=10 joins=5]`. The last line is
//! `result presence diff_p50_ms=... diff_p99_ms=... join_state_median_ms=... ...`.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::broadcast;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const TOPIC: &str = "realtime:presence-bench";
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

struct Options {
    members: u64,
    rate: u64,
    seconds: u64,
    joins: u64,
}

fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Options> {
    let mut o = Options {
        members: 1_000,
        rate: 10,
        seconds: 10,
        joins: 5,
    };
    for arg in args {
        let (key, value) = arg
            .split_once('=')
            .with_context(|| format!("expected key=value, got {arg:?}"))?;
        let n: u64 = value.parse().with_context(|| format!("{key}= needs a number"))?;
        match key {
            "members" => o.members = n.clamp(1, 9_000),
            "rate" => o.rate = n.max(1),
            "seconds" => o.seconds = n.max(1),
            "joins" => o.joins = n.max(1),
            _ => bail!("unknown option {key:?} (members rate seconds joins)"),
        }
    }
    Ok(o)
}

pub fn main() -> anyhow::Result<()> {
    let o = parse(std::env::args().skip(2))?;
    let server_rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let secret = broadcast::random_secret()?;
    let mut config = broadcast::bench_config(&secret);
    // Supabase allows 5 presence calls per channel per 30 s; the benchmark measures delivery.
    config.server.limits.max_client_presence_events_per_window = u32::MAX;
    let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    server_rt.spawn(realtime::run(Arc::new(config), listener, shutdown.clone()));
    let url = format!(
        "ws://{addr}/socket/websocket?apikey={}&vsn=2.0.0",
        broadcast::token(&secret)?
    );
    // The members get their own threads so the server's are its own.
    let clients_rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome = clients_rt.block_on(run(&o, &url));
    shutdown.cancel();
    drop(clients_rt);
    server_rt.shutdown_timeout(Duration::from_secs(10));
    let line = outcome?;
    println!("{line}");
    Ok(())
}

/// Shared by the members' readers.
struct Tally {
    /// When tick `v` was tracked (index `v`; 0 is the setup).
    sent: Vec<OnceLock<Instant>>,
    latencies_us: Mutex<Vec<u64>>,
    /// Joins seen during the setup, by all members together.
    setup_joins: std::sync::atomic::AtomicU64,
}

async fn run(o: &Options, url: &str) -> anyhow::Result<String> {
    let ticks = o.rate * o.seconds;
    let tally = Arc::new(Tally {
        sent: (0..=ticks).map(|_| OnceLock::new()).collect(),
        latencies_us: Mutex::new(Vec::with_capacity((ticks * o.members) as usize)),
        setup_joins: Default::default(),
    });
    println!("presence benchmark: {} members on one topic", o.members);

    // 1. Setup: join and track, 100 in flight.
    let started = Instant::now();
    let mut writers = Vec::with_capacity(o.members as usize);
    let mut pending = futures::stream::iter(0..o.members)
        .map(|i| async move { member(url, i).await })
        .buffer_unordered(100);
    while let Some(ws) = pending.next().await {
        let (mut sink, stream) = ws?.split();
        sink.send(track_frame(writers.len() as u64, 0)).await?;
        tokio::spawn(read_diffs(stream, tally.clone()));
        writers.push(sink);
    }
    drop(pending);
    // A member sees the joins tracked after its own join (earlier ones come in its state), its
    // own included: the setup is over once the count of join diffs stops moving.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = tally.setup_joins.load(std::sync::atomic::Ordering::SeqCst);
        if now >= o.members && now == seen {
            break;
        }
        if Instant::now() > deadline {
            bail!("setup: join diffs still arriving after 120 s ({now})");
        }
        seen = now;
    }
    println!(
        "setup: {} members joined and tracked in {:.2} s ({seen} join diffs delivered)",
        o.members,
        started.elapsed().as_secs_f64()
    );

    // 2. Updates at `rate` per second, one member each.
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / o.rate as f64));
    for tick in 1..=ticks {
        interval.tick().await;
        let who = ((tick - 1) % o.members) as usize;
        let _ = tally.sent[tick as usize].set(Instant::now());
        writers[who].send(track_frame(who as u64, tick)).await?;
    }
    let expected = ticks * o.members;
    let deadline = Instant::now() + Duration::from_secs(30);
    while (lock(&tally.latencies_us).len() as u64) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut latencies = std::mem::take(&mut *lock(&tally.latencies_us));
    let delivered = latencies.len() as u64;
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1);
        latencies.get(i).copied().unwrap_or(0) as f64 / 1e3
    };
    let (p50, p99, max) = (pct(0.5), pct(0.99), pct(1.0));
    println!(
        "diffs: {ticks} updates at {}/s, {delivered}/{expected} deliveries; latency p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
        o.rate
    );
    if delivered < expected {
        bail!("only {delivered} of {expected} presence diffs arrived");
    }

    // 3. New members into the full state.
    let mut waits = Vec::new();
    for _ in 0..o.joins {
        let mut ws = connect(url).await?;
        let start = Instant::now();
        ws.send(join_frame("newcomer")).await?;
        let state_keys = tokio::time::timeout(REPLY_TIMEOUT, await_state(&mut ws))
            .await
            .context("no presence_state in time")??;
        let waited = start.elapsed();
        if state_keys < o.members as usize {
            bail!("presence_state listed {state_keys} of {} members", o.members);
        }
        waits.push(waited.as_secs_f64() * 1e3);
        drop(ws);
    }
    waits.sort_by(f64::total_cmp);
    let (median, worst) = (waits[waits.len() / 2], waits[waits.len() - 1]);
    println!(
        "join: {} new members waited {median:.2} ms (median), {worst:.2} ms (max) for a {}-member presence_state",
        o.joins, o.members
    );
    Ok(format!(
        "result presence diff_p50_ms={p50:.2} diff_p99_ms={p99:.2} diff_max_ms={max:.2} \
         join_state_median_ms={median:.2} join_state_max_ms={worst:.2} members={} updates_per_s={} seconds={} deliveries={delivered}",
        o.members, o.rate, o.seconds
    ))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn connect(url: &str) -> anyhow::Result<Ws> {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .context("WebSocket handshake")?;
    Ok(ws)
}

/// A member: joined with presence under key `m<i>`, its join reply read.
async fn member(url: &str, i: u64) -> anyhow::Result<Ws> {
    let mut ws = connect(url).await?;
    ws.send(join_frame(&format!("m{i}"))).await?;
    tokio::time::timeout(REPLY_TIMEOUT, async {
        while let Some(message) = ws.next().await {
            if let Message::Text(text) = message? {
                let v: serde_json::Value = serde_json::from_str(&text)?;
                if v[3] == "phx_reply" && v[1] == "1" {
                    if v[4]["status"] == "ok" {
                        return Ok(());
                    }
                    bail!("join refused: {}", v[4]);
                }
            }
        }
        bail!("socket closed before the join reply")
    })
    .await
    .context("no join reply in time")??;
    Ok(ws)
}

fn join_frame(key: &str) -> Message {
    let payload = serde_json::json!({
        "config": {
            "broadcast": {"ack": false, "self": false},
            "presence": {"key": key, "enabled": true},
            "postgres_changes": [],
            "private": false
        }
    });
    Message::text(serde_json::json!(["1", "1", TOPIC, "phx_join", payload]).to_string())
}

fn track_frame(n: u64, v: u64) -> Message {
    let payload = serde_json::json!({"type": "presence", "event": "track", "payload": {"n": n, "v": v}});
    Message::text(serde_json::json!(["1", format!("t{v}"), TOPIC, "presence", payload]).to_string())
}

/// The number of keys in the first `presence_state` push.
async fn await_state(ws: &mut Ws) -> anyhow::Result<usize> {
    while let Some(message) = ws.next().await {
        if let Message::Text(text) = message? {
            let v: serde_json::Value = serde_json::from_str(&text)?;
            if v[3] == "presence_state" {
                return Ok(v[4].as_object().map_or(0, serde_json::Map::len));
            }
        }
    }
    bail!("socket closed before presence_state")
}

/// Records, for every `presence_diff` join, the latency of its tick (or counts a setup join).
async fn read_diffs(mut stream: futures::stream::SplitStream<Ws>, tally: Arc<Tally>) {
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else { continue };
        let received = Instant::now();
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if v[3] != "presence_diff" {
            continue;
        }
        let Some(joins) = v[4]["joins"].as_object() else {
            continue;
        };
        for entry in joins.values() {
            for meta in entry["metas"].as_array().into_iter().flatten() {
                match meta["v"].as_u64() {
                    Some(0) => {
                        tally
                            .setup_joins
                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Some(tick) => {
                        if let Some(sent) = tally.sent.get(tick as usize).and_then(OnceLock::get) {
                            let us = received.saturating_duration_since(*sent).as_micros() as u64;
                            lock(&tally.latencies_us).push(us);
                        }
                    }
                    None => {}
                }
            }
        }
    }
}
