//! The `scale` benchmark: one server process at its descriptor limit.
//!
//! `sockets` (default 19,000) WebSocket clients open and join one topic. They live in
//! `processes` child processes (default 2; each process may hold at most 20,000 descriptors, and
//! so may the server's, which is this one). The joined sockets are then held for `hold` seconds
//! (default 60) while a publisher in this process sends one broadcast every `every` ms (default
//! 1,000) and waits until every socket has it: the *delivery time to the last socket* is the
//! latest receive time reported by the children − the send time (the clocks are the same
//! machine's). Memory is the server process's RSS growth ÷ sockets, after the joins and again
//! at the end of the hold (kernel socket memory, about 4 KB per socket here, is not in it).
//!
//! Usage: `realtime-bench scale [sockets=19000 processes=2 hold=60 every=1000 payload=100
//! concurrency=100]`. Last line: `result scale sockets=… bytes_per_conn=… last_delivery_p50_ms=…
//! last_delivery_max_ms=… …`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::SinkExt;
use tokio_util::sync::CancellationToken;

use super::clients::{Vsn, open_joined};
use super::wire::Wire;
use super::{Clients, bench_config, mib, random_secret, token};
use realtime_tests::proc_stats;

const TOPIC: &str = "scale";

struct Options {
    sockets: u64,
    processes: u64,
    hold: u64,
    every_ms: u64,
    payload: u64,
    concurrency: u64,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Options> {
        let mut o = Options {
            sockets: 19_000,
            processes: 2,
            hold: 60,
            every_ms: 1_000,
            payload: 100,
            concurrency: 100,
        };
        for arg in args {
            let (key, value) = arg
                .split_once('=')
                .with_context(|| format!("expected key=value, got {arg:?}"))?;
            let n: u64 = value.parse().with_context(|| format!("{key}= needs a number"))?;
            match key {
                "sockets" => o.sockets = n.max(1),
                "processes" => o.processes = n.max(1),
                "hold" => o.hold = n,
                "every" => o.every_ms = n.max(1),
                "payload" => o.payload = n,
                "concurrency" => o.concurrency = n.max(1),
                _ => bail!("unknown option {key:?}"),
            }
        }
        // This process holds every server-side socket, plus its listener, the publisher and
        // the runtime's own descriptors.
        if o.sockets > 19_500 {
            bail!("sockets must stay at or below 19,500 (the server process's 20,000 descriptors)");
        }
        if o.sockets.div_ceil(o.processes) > 19_000 {
            bail!("more processes= needed: each client process holds under 19,000 sockets");
        }
        Ok(o)
    }
}

pub fn main() -> anyhow::Result<()> {
    let options = Options::parse(std::env::args().skip(2))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(options))
}

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn run(o: Options) -> anyhow::Result<()> {
    let secret = random_secret()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(realtime::run(
        Arc::new(bench_config(&secret)),
        listener,
        shutdown.clone(),
    ));
    let vsn = Vsn::V2;
    let base = vec![
        format!("url=ws://{addr}/socket/websocket"),
        format!("token={}", token(&secret)?),
        format!("vsn={}", vsn.as_str()),
        format!("concurrency={}", o.concurrency),
    ];
    println!(
        "scale: server on {addr}; {} sockets in {} client processes, one topic, vsn {}",
        o.sockets,
        o.processes,
        vsn.as_str()
    );
    let publisher_url = format!(
        "ws://{addr}/socket/websocket?apikey={}&vsn={}",
        token(&secret)?,
        vsn.as_str()
    );
    // The publisher first: its socket and first-use allocations stay out of the memory figure.
    let mut publisher = open_joined(&publisher_url, Wire::Phoenix(vsn), TOPIC)
        .await
        .context("publisher")?;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let rss_before = proc_stats::rss_bytes().context("VmRSS")?;
    let started = Instant::now();
    let mut children = Vec::new();
    let mut left = o.sockets;
    for p in 0..o.processes {
        let count = left.div_ceil(o.processes - p);
        left -= count;
        children.push(Clients::spawn(
            "hold",
            &base,
            &[format!("count={count}"), format!("topic={TOPIC}")],
        )?);
    }
    let mut joined = 0;
    let mut client_rss = 0;
    for child in &mut children {
        let line = child.expect("connected", Duration::from_secs(600)).await?;
        if line.num("failed")? > 0 {
            bail!("{} sockets failed to open or join", line.num("failed")?);
        }
        joined += line.num("ok")?;
        client_rss += line.num("client_rss")?;
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let rss_joined = proc_stats::rss_bytes().context("VmRSS")?;
    let bytes_per_conn = rss_joined.saturating_sub(rss_before) as f64 / joined as f64;
    println!(
        "joined: {joined} sockets in {connect_secs:.1} s ({:.0}/s); server RSS {:.1} MiB -> {:.1} MiB = {bytes_per_conn:.0} B per connection; \
         clients' RSS {:.1} MiB",
        joined as f64 / connect_secs,
        mib(rss_before),
        mib(rss_joined),
        mib(client_rss)
    );

    // The hold: one broadcast at a time, each until every socket has it.
    let cpu_before = proc_stats::cpu_time();
    let hold_started = Instant::now();
    let mut to_last_us: Vec<u64> = Vec::new();
    let mut seq = 0u64;
    while seq == 0 || hold_started.elapsed() < Duration::from_secs(o.hold) {
        seq += 1;
        let frame = Wire::Phoenix(vsn).publish(TOPIC, &(seq + 1).to_string(), seq, o.payload as usize);
        let sent_us = unix_us();
        publisher.send(frame).await.context("publish")?;
        let mut last_us = 0;
        for child in &mut children {
            let line = child
                .expect("received", Duration::from_secs(60))
                .await
                .with_context(|| format!("broadcast {seq} did not reach every socket within 60 s"))?;
            last_us = last_us.max(line.num("last_us")?);
        }
        to_last_us.push(last_us.saturating_sub(sent_us));
        let next = hold_started + Duration::from_millis(o.every_ms * seq);
        tokio::time::sleep_until(next.into()).await;
    }
    let held = hold_started.elapsed().as_secs_f64();
    let hold_cpu = proc_stats::cpu_time().saturating_sub(cpu_before);
    let rss_end = proc_stats::rss_bytes().context("VmRSS")?;
    let bytes_per_conn_end = rss_end.saturating_sub(rss_before) as f64 / joined as f64;
    let broadcasts = to_last_us.len();
    to_last_us.sort_unstable();
    let at = |q: f64| to_last_us[((broadcasts - 1) as f64 * q).round() as usize] as f64 / 1e3;
    let (p50, p99, max) = (at(0.5), at(0.99), at(1.0));
    let cpu_ns = hold_cpu.as_nanos() as f64 / (broadcasts as u64 * joined) as f64;
    println!(
        "hold: {held:.1} s, {broadcasts} broadcasts each to all {joined} sockets; time to the last socket p50 {p50:.1} ms, \
         p99 {p99:.1} ms, max {max:.1} ms; server CPU {:.2} s ({cpu_ns:.0} ns/delivery, idle sockets included); \
         server RSS {:.1} MiB = {bytes_per_conn_end:.0} B per connection at the end",
        hold_cpu.as_secs_f64(),
        mib(rss_end)
    );

    for child in children {
        child.close().await?;
    }
    drop(publisher);
    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(30), server).await {
        Ok(joined) => joined.context("server task panicked")??,
        Err(_) => eprintln!("server did not stop within 30 s of shutdown"),
    }
    println!(
        "result scale sockets={joined} bytes_per_conn={bytes_per_conn:.0} bytes_per_conn_end={bytes_per_conn_end:.0} \
         last_delivery_p50_ms={p50:.2} last_delivery_p99_ms={p99:.2} last_delivery_max_ms={max:.2} \
         hold_s={held:.0} broadcasts={broadcasts} connects_per_s={:.0} server_cpu_ns_per_delivery={cpu_ns:.0} processes={}",
        joined as f64 / connect_secs,
        o.processes
    );
    Ok(())
}
