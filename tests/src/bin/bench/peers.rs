//! The `peers` benchmark: the `broadcast` workload (fan-out rounds, idle sockets, connect rate)
//! driven by the same load generator against the realtime server and against minimal pub/sub
//! servers people would pick instead, one after another in the same run on the same machine.
//!
//! Peers (started by the benchmark, see [`servers`]): uWebSockets.js, ws and Socket.IO (rooms)
//! on Node from `tests/bench-peers/` (installed with `npm ci` on first use), and NATS's
//! WebSocket listener (`nats-server` from the system, with a generated configuration). Each
//! answers in its own protocol (see `broadcast/wire.rs`); the workload is the same: `subscribers`
//! on one topic, `messages` of `payload` bytes per round from one publisher, `rounds` rounds;
//! `idle` sockets subscribed to one of `topics` topics. Server CPU and memory come from the
//! server process's `/proc` entry (ours runs inside this process, as in `broadcast`).
//!
//! Usage: `realtime-bench peers [key=value ...]` with the keys of `broadcast` plus
//! `peers=uws,ws,socketio,nats` (which peers; ours always runs) and `out=<dir>` (where the CSV
//! and PNG charts go; default `docs/bench`, `out=none` writes nothing). The last line printed is
//! `result peers ratio_vs_uws=... mem_ratio_vs_uws=... ...`: ours ÷ peer for deliveries/s
//! (`ratio`), bytes per idle connection (`mem_ratio`), server CPU per delivery (`cpu_ratio`) and
//! connects/s (`connect_ratio`); a peer that failed reports `failed`.

mod servers;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::broadcast::{self, Options};
use super::chart;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Ours,
    Uws,
    Ws,
    SocketIo,
    Nats,
}

impl Peer {
    const OTHERS: [Peer; 4] = [Peer::Uws, Peer::Ws, Peer::SocketIo, Peer::Nats];

    /// The short name used in options, the CSV and the result line.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Ours => "ours",
            Peer::Uws => "uws",
            Peer::Ws => "ws",
            Peer::SocketIo => "socketio",
            Peer::Nats => "nats",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Peer::Ours => "realtime (ours)",
            Peer::Uws => "uWebSockets.js",
            Peer::Ws => "ws",
            Peer::SocketIo => "Socket.IO",
            Peer::Nats => "NATS (WebSocket)",
        }
    }
}

/// One server's figures; `None` where its phase did not run or failed.
#[derive(Debug, Default)]
struct Measured {
    deliveries_per_s: Option<f64>,
    cpu_ns_per_delivery: Option<f64>,
    bytes_per_conn: Option<f64>,
    connects_per_s: Option<f64>,
    error: Option<String>,
}

struct PeerOptions {
    workload: Options,
    peers: Vec<Peer>,
    out: Option<PathBuf>,
}

fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<PeerOptions> {
    let mut peers = Peer::OTHERS.to_vec();
    let mut out = Some(PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/bench"
    )));
    let mut rest = Vec::new();
    for arg in args {
        match arg.split_once('=') {
            Some(("peers", list)) => {
                peers = list
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(|n| {
                        Peer::OTHERS
                            .into_iter()
                            .find(|p| p.name() == n)
                            .with_context(|| format!("unknown peer {n:?} (uws, ws, socketio, nats)"))
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            Some(("out", "none")) => out = None,
            Some(("out", dir)) => out = Some(PathBuf::from(dir)),
            _ => rest.push(arg),
        }
    }
    Ok(PeerOptions {
        workload: Options::parse(rest.into_iter())?,
        peers,
        out,
    })
}

pub fn main() -> anyhow::Result<()> {
    let options = parse(std::env::args().skip(2))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(options))
}

async fn run(o: PeerOptions) -> anyhow::Result<()> {
    let machine = machine();
    let w = &o.workload;
    println!(
        "peers benchmark on {machine}: {} subscribers x {} messages of {} B x {} rounds; {} idle sockets",
        w.subscribers, w.messages, w.payload, w.rounds, w.idle
    );
    let mut results = vec![(Peer::Ours, measure_ours(w).await)];
    for &peer in &o.peers {
        println!("--- {}", peer.label());
        results.push((peer, measure_peer(w, peer).await));
    }

    let table = table(&results);
    print!("{table}");
    if let Some(dir) = &o.out {
        write_outputs(dir, &machine, &table, &results)?;
        println!("wrote {}/peers.csv and peers-*.png", dir.display());
    }
    println!("{}", result_line(&results));
    Ok(())
}

/// Runs the phases against the realtime server inside this process.
async fn measure_ours(w: &Options) -> Measured {
    println!("--- {}", Peer::Ours.label());
    let outcome = async {
        let secret = broadcast::random_secret()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(realtime::run(
            Arc::new(broadcast::bench_config(&secret)),
            listener,
            shutdown.clone(),
        ));
        let base = broadcast::realtime_clients_base(w, addr, &secret)?;
        let measured = phases(w, &base, "self").await;
        shutdown.cancel();
        if tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .is_err()
        {
            eprintln!("server did not stop within 30 s of shutdown");
        }
        measured
    };
    outcome.await.unwrap_or_else(failed)
}

/// Starts `peer`, runs the phases against it and stops it.
async fn measure_peer(w: &Options, peer: Peer) -> Measured {
    let outcome = async {
        let server = servers::start(peer).await?;
        let base = vec![
            format!("url={}", server.url),
            format!("wire={}", server.wire),
            "vsn=2.0.0".to_owned(),
            format!("concurrency={}", w.concurrency),
        ];
        let measured = phases(w, &base, &server.pid.to_string()).await;
        server.stop().await;
        measured
    };
    outcome.await.unwrap_or_else(failed)
}

fn failed(e: anyhow::Error) -> Measured {
    eprintln!("failed: {e:#}");
    Measured {
        error: Some(format!("{e:#}")),
        ..Measured::default()
    }
}

/// Warm-up, idle, fan-out against a running server whose process is `server`.
async fn phases(w: &Options, base: &[String], server: &str) -> anyhow::Result<Measured> {
    let mut m = Measured::default();
    broadcast::warm_up(w, base).await?;
    if w.idle_phase {
        let idle = broadcast::idle_phase(w, base, server).await?;
        m.bytes_per_conn = Some(idle.bytes_per_conn);
        m.connects_per_s = Some(idle.connects_per_s);
    }
    if w.fanout_phase {
        let (rate, cpu_ns) = broadcast::fanout_phase(w, base, server).await?;
        m.deliveries_per_s = Some(rate);
        m.cpu_ns_per_delivery = Some(cpu_ns);
    }
    Ok(m)
}

fn cell(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
}

fn table(results: &[(Peer, Measured)]) -> String {
    let mut t = format!(
        "{:<18} {:>14} {:>16} {:>14} {:>12}\n",
        "server", "deliveries/s", "CPU ns/delivery", "B/idle conn", "connects/s"
    );
    for (peer, m) in results {
        let _ = writeln!(
            t,
            "{:<18} {:>14} {:>16} {:>14} {:>12}{}",
            peer.label(),
            cell(m.deliveries_per_s),
            cell(m.cpu_ns_per_delivery),
            cell(m.bytes_per_conn),
            cell(m.connects_per_s),
            m.error
                .as_ref()
                .map_or(String::new(), |_| "  (failed)".to_owned())
        );
    }
    t
}

/// `result peers ratio_vs_<peer>=... mem_ratio_vs_<peer>=... cpu_ratio_vs_<peer>=...
/// connect_ratio_vs_<peer>=...` (ours ÷ peer) then our own figures.
fn result_line(results: &[(Peer, Measured)]) -> String {
    let Some((_, ours)) = results.iter().find(|(p, _)| *p == Peer::Ours) else {
        return "result peers failed=ours".to_owned();
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}", a / b),
        _ => "failed".to_owned(),
    };
    let mut line = String::from("result peers");
    for (peer, m) in results.iter().filter(|(p, _)| *p != Peer::Ours) {
        let n = peer.name();
        let _ = write!(
            line,
            " ratio_vs_{n}={} mem_ratio_vs_{n}={} cpu_ratio_vs_{n}={} connect_ratio_vs_{n}={}",
            ratio(ours.deliveries_per_s, m.deliveries_per_s),
            ratio(ours.bytes_per_conn, m.bytes_per_conn),
            ratio(ours.cpu_ns_per_delivery, m.cpu_ns_per_delivery),
            ratio(ours.connects_per_s, m.connects_per_s),
        );
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, m)| m.error.is_some())
        .map(|(p, _)| p.name())
        .collect();
    let _ = write!(
        line,
        " deliveries_per_s={} bytes_per_idle_conn={} failed={}",
        cell(ours.deliveries_per_s),
        cell(ours.bytes_per_conn),
        if failed.is_empty() {
            "none".to_owned()
        } else {
            failed.join(",")
        }
    );
    line
}

/// One figure of a server's measurements.
type Figure = fn(&Measured) -> Option<f64>;

/// `peers.csv`, `peers.txt` (machine, command, table) and one PNG chart per figure in `dir`.
fn write_outputs(
    dir: &std::path::Path,
    machine: &str,
    table: &str,
    results: &[(Peer, Measured)],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut csv = String::from(
        "server,deliveries_per_s,server_cpu_ns_per_delivery,bytes_per_idle_conn,connects_per_s\n",
    );
    let opt = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v:.0}"));
    for (peer, m) in results {
        let _ = writeln!(
            csv,
            "{},{},{},{},{}",
            peer.name(),
            opt(m.deliveries_per_s),
            opt(m.cpu_ns_per_delivery),
            opt(m.bytes_per_conn),
            opt(m.connects_per_s)
        );
    }
    std::fs::write(dir.join("peers.csv"), csv)?;
    let command: Vec<String> = std::env::args().skip(1).collect();
    std::fs::write(
        dir.join("peers.txt"),
        format!(
            "machine: {machine}\ncommand: cargo run --release --bin realtime-bench -- {}\n\n{table}",
            command.join(" ")
        ),
    )?;
    // (file, title, unit, the figure)
    let charts: [(&str, &str, &str, Figure); 4] = [
        ("deliveries", "Broadcast fan-out", "deliveries per second", |m| {
            m.deliveries_per_s
        }),
        ("cpu", "Server CPU per delivery", "ns", |m| m.cpu_ns_per_delivery),
        (
            "memory",
            "Server memory per idle connection",
            "bytes (RSS)",
            |m| m.bytes_per_conn,
        ),
        (
            "connects",
            "Connect + subscribe rate",
            "sockets per second",
            |m| m.connects_per_s,
        ),
    ];
    for (file, title, unit, figure) in charts {
        let bars: Vec<(String, f64)> = results
            .iter()
            .filter_map(|(p, m)| figure(m).map(|v| (p.label().to_owned(), v)))
            .collect();
        if !bars.is_empty() {
            chart::bars(&dir.join(format!("peers-{file}.png")), title, unit, &bars)?;
        }
    }
    Ok(())
}

/// CPU model, core count, memory and kernel, for the record beside the numbers.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / (1024 * 1024));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cores} cores, {memory} GiB, Linux {}", kernel.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rate: f64, bytes: f64) -> Measured {
        Measured {
            deliveries_per_s: Some(rate),
            cpu_ns_per_delivery: Some(1000.0),
            bytes_per_conn: Some(bytes),
            connects_per_s: Some(5000.0),
            error: None,
        }
    }

    #[test]
    fn result_line_divides_ours_by_each_peer_and_names_failures() {
        let results = vec![
            (Peer::Ours, m(400_000.0, 2_000.0)),
            (Peer::Uws, m(200_000.0, 1_600.0)),
            (Peer::Ws, failed(anyhow::anyhow!("no node"))),
        ];
        let line = result_line(&results);
        assert!(
            line.starts_with("result peers ratio_vs_uws=2.00 mem_ratio_vs_uws=1.25 "),
            "{line}"
        );
        assert!(line.contains(" ratio_vs_ws=failed "), "{line}");
        assert!(line.ends_with(" failed=ws"), "{line}");
    }

    #[test]
    fn options_split_peer_keys_from_the_workload() {
        let args = ["peers=nats,uws", "out=none", "subscribers=50", "idle=200"];
        let o = parse(args.into_iter().map(String::from)).expect("valid");
        assert_eq!(o.peers, vec![Peer::Nats, Peer::Uws]);
        assert!(o.out.is_none());
        assert_eq!((o.workload.subscribers, o.workload.idle), (50, 200));
        assert!(parse(["peers=redis".to_owned()].into_iter()).is_err());
    }
}
