//! The `cluster` benchmark: broadcast fan-out with one publisher and `subscribers` (default
//! 2,000) spread evenly over three nodes on one `nats-server`, against the same workload on one
//! node, in one run. The servers run in this process (as in the `broadcast` benchmark), the load
//! generator in a child process; every node shares the machine's cores, so the ratio shows what
//! the NATS hop costs, not what more machines would add.
//!
//! Usage: `realtime-bench cluster [key=value ...]` with the `broadcast` benchmark's fan-out keys
//! (`subscribers messages rounds payload concurrency vsn`). The last line printed is
//! `result cluster fanout_ratio=<3 nodes ÷ 1 node> deliveries_per_s_1=... deliveries_per_s_3=...`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use realtime::config::{CdcRole, ClusterConfig, NatsAuth};
use realtime_tests::nats::NatsServer;

use super::broadcast::{Options, bench_config, fanout_phase, random_secret, realtime_clients_base};

pub fn main() -> anyhow::Result<()> {
    let mut options = Options::parse(std::env::args().skip(2))?;
    options.idle_phase = false;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(options))
}

/// Starts a node in this process (one of cluster `nats` when given); returns its address.
async fn start_node(
    secret: &str,
    nats: Option<(&str, usize)>,
    shutdown: &CancellationToken,
) -> anyhow::Result<(
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<(), realtime::RunError>>,
)> {
    let mut config = bench_config(secret);
    config.cluster = nats.map(|(url, i)| ClusterConfig {
        nats_url: url.to_owned(),
        auth: NatsAuth::None,
        name: "bench".to_owned(),
        node_id: format!("bench{i}"),
        cdc: CdcRole::Never,
        heartbeat: Duration::from_millis(1_000),
        node_down_after: Duration::from_millis(5_000),
        leader_bus_grace: Duration::from_millis(10_000),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(realtime::run(Arc::new(config), listener, shutdown.clone()));
    Ok((addr, task))
}

async fn stop(
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<Result<(), realtime::RunError>>>,
) {
    shutdown.cancel();
    for task in tasks {
        if tokio::time::timeout(Duration::from_secs(30), task).await.is_err() {
            eprintln!("a node did not stop within 30 s of shutdown");
        }
    }
}

async fn run(o: Options) -> anyhow::Result<()> {
    let secret = random_secret()?;
    let nats = NatsServer::start();
    println!(
        "cluster benchmark: {} subscribers, {} messages × {} rounds of {} bytes; nats-server on {}",
        o.subscribers,
        o.messages,
        o.rounds,
        o.payload,
        nats.url()
    );

    let shutdown = CancellationToken::new();
    let (addr, task) = start_node(&secret, None, &shutdown).await?;
    println!("one node on {addr}:");
    let base = realtime_clients_base(&o, addr, &secret)?;
    let (single, single_ns) = fanout_phase(&o, &base, "self").await.context("one node")?;
    stop(shutdown, vec![task]).await;

    let shutdown = CancellationToken::new();
    let mut addrs = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..3 {
        let (addr, task) = start_node(&secret, Some((&nats.url(), i)), &shutdown).await?;
        addrs.push(addr);
        tasks.push(task);
    }
    // Let the nodes hear each other's heartbeats before the first join.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    println!("three nodes on {addrs:?} (publisher on the first):");
    let mut base = realtime_clients_base(&o, addrs[0], &secret)?;
    let spread: Vec<String> = addrs[1..]
        .iter()
        .map(|a| format!("ws://{a}/socket/websocket"))
        .collect();
    base.push(format!("spread={}", spread.join(",")));
    let (clustered, clustered_ns) = fanout_phase(&o, &base, "self").await.context("three nodes")?;
    stop(shutdown, tasks).await;

    println!(
        "result cluster fanout_ratio={:.2} deliveries_per_s_1={single:.0} deliveries_per_s_3={clustered:.0} \
         cpu_ns_per_delivery_1={single_ns:.0} cpu_ns_per_delivery_3={clustered_ns:.0} subscribers={} \
         messages_per_round={} rounds={} payload_bytes={}",
        clustered / single,
        o.subscribers,
        o.messages,
        o.rounds,
        o.payload
    );
    Ok(())
}
