//! The `broadcast` benchmark: WebSocket fan-out throughput, memory per idle connection and
//! connect rate of the realtime server, on loopback.
//!
//! The server runs in this process (`realtime::server::run` on 127.0.0.1 port 0), so its memory
//! is this process's RSS; the load generator runs in child processes of the same binary
//! (`realtime-bench broadcast-clients ...`, see [`clients`]) so that the clients' memory and file
//! descriptors stay out of the figures and each process stays under the descriptor limit.
//!
//! Phases, each bounded in time and count:
//! 1. warm-up: 200 sockets open, join and close (first-use allocations of the server);
//! 2. idle: `idle` sockets (default 10,000) open and join one of `topics` topics with at most
//!    `concurrency` handshakes in flight → connects per second (open + join), then server RSS
//!    growth ÷ sockets → bytes per idle connection;
//! 3. fan-out: `subscribers` (default 2,000) join one topic; a publisher sends `messages`
//!    broadcasts of `payload` bytes per round, `rounds` times; each round lasts until every
//!    subscriber has every message → deliveries per second (median round).
//!
//! Usage: `realtime-bench broadcast [key=value ...]` with keys `subscribers messages rounds payload
//! idle concurrency topics vsn settle` (vsn 2.0.0 or 1.0.0; settle = seconds the server holds
//! still before each memory reading, default 20, 0 reads at once). The last line printed is
//! `result broadcast deliveries_per_s=... bytes_per_idle_conn=... connects_per_s=... ...`.

mod clients;
pub mod scale;
mod wire;

use std::io::Read;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_util::sync::CancellationToken;

use realtime::config::server::{AuthConfig, ServerConfig};
use realtime::config::{Config, Secret};

use super::Line;
use clients::Vsn;
pub use clients::main as clients_main;
use realtime_tests::proc_stats;

/// The workload, shared with the `peers` benchmark.
#[derive(Debug)]
pub(super) struct Options {
    pub(super) subscribers: u64,
    pub(super) messages: u64,
    pub(super) rounds: u64,
    pub(super) payload: u64,
    pub(super) idle: u64,
    pub(super) concurrency: u64,
    pub(super) topics: u64,
    pub(super) vsn: Vsn,
    /// Run the idle phase (connect rate, memory) and the fan-out phase.
    pub(super) idle_phase: bool,
    pub(super) fanout_phase: bool,
    /// Join each idle socket to a topic (`join=0` measures bare sockets, for diagnosis).
    idle_join: bool,
    /// How long the server holds still before each reading of its resident size
    /// (`settle=<seconds>`; 0 reads at once, for quick runs and tests; see [`settled_rss`]).
    settle: Duration,
}

impl Options {
    pub(super) fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Options> {
        let mut o = Options {
            subscribers: 2_000,
            messages: 500,
            rounds: 3,
            payload: 100,
            idle: 10_000,
            concurrency: 100,
            topics: 100,
            vsn: Vsn::V2,
            idle_phase: true,
            fanout_phase: true,
            idle_join: true,
            settle: Duration::from_secs(20),
        };
        for arg in args {
            let (key, value) = arg
                .split_once('=')
                .with_context(|| format!("expected key=value, got {arg:?}"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .with_context(|| format!("{key}= needs a number"))
            };
            match key {
                "subscribers" => o.subscribers = number()?,
                "messages" => o.messages = number()?,
                "rounds" => o.rounds = number()?.max(1),
                "payload" => o.payload = number()?,
                "idle" => o.idle = number()?,
                "concurrency" => o.concurrency = number()?.max(1),
                "topics" => o.topics = number()?.max(1),
                "vsn" => o.vsn = Vsn::parse(value)?,
                "phases" => {
                    o.idle_phase = value.split(',').any(|p| p == "idle");
                    o.fanout_phase = value.split(',').any(|p| p == "fanout");
                }
                "join" => o.idle_join = number()? != 0,
                "settle" => o.settle = Duration::from_secs(number()?),
                _ => bail!("unknown option {key:?}"),
            }
        }
        // One process holds the server's sockets: stay under the 20,000 descriptor limit.
        if o.idle + 1000 > 19_000 || o.subscribers > 18_000 {
            bail!("idle and subscribers must stay below ~18,000 sockets (one process holds them all)");
        }
        Ok(o)
    }
}

pub fn main() -> anyhow::Result<()> {
    let options = Options::parse(std::env::args().skip(2))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(options))
}

/// A server configuration for load: the secret set, Supabase's per-tenant rate limits lifted
/// (they would cap the benchmark at 100 events/s), and a long idle timeout because the load
/// generator sends no heartbeats.
pub(super) fn bench_config(secret: &str) -> Config {
    Config {
        server: ServerConfig {
            port: 0,
            auth: AuthConfig {
                jwt_secret: Some(Secret::new(secret)),
                ..AuthConfig::default()
            },
            limits: super::unpoliced_limits(),
            ..ServerConfig::default()
        },
        ..Config::default()
    }
}

pub(super) fn random_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub(super) fn token(secret: &str) -> anyhow::Result<String> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let claims = serde_json::json!({"role": "anon", "sub": "bench", "exp": exp});
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )?)
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
    let base = realtime_clients_base(&o, addr, &secret)?;
    println!(
        "broadcast benchmark: server on {addr}, clients in child processes, vsn {}",
        o.vsn.as_str()
    );
    let mut result = String::from("result broadcast");
    let mut details = format!("vsn={}", o.vsn.as_str());

    warm_up(&o, &base).await?;
    // Idle first, on a server that has not yet carried any fan-out traffic.
    let idle = match o.idle_phase {
        true => Some(idle_phase(&o, &base, "self").await?),
        false => None,
    };
    let fanout = match o.fanout_phase {
        true => Some(fanout_phase(&o, &base, "self").await?),
        false => None,
    };
    if let Some((rate, cpu_ns)) = fanout {
        result += &format!(" deliveries_per_s={rate:.0}");
        details += &format!(
            " subscribers={} messages_per_round={} rounds={} payload_bytes={} server_cpu_ns_per_delivery={cpu_ns:.0}",
            o.subscribers, o.messages, o.rounds, o.payload
        );
    }
    if let Some(idle) = idle {
        result += &format!(
            " bytes_per_idle_conn={:.0} connects_per_s={:.0}",
            idle.bytes_per_conn, idle.connects_per_s
        );
        details += &format!(
            " idle_conns={} idle_joined={} connect_concurrency={}",
            idle.sockets, o.idle_join, o.concurrency
        );
    }

    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(30), server).await {
        Ok(joined) => joined.context("server task panicked")??,
        Err(_) => eprintln!("server did not stop within 30 s of shutdown"),
    }
    println!("{result} {details}");
    Ok(())
}

/// The load generator's arguments for realtime's own server at `addr`.
pub(super) fn realtime_clients_base(
    o: &Options,
    addr: std::net::SocketAddr,
    secret: &str,
) -> anyhow::Result<Vec<String>> {
    Ok(vec![
        format!("url=ws://{addr}/socket/websocket"),
        format!("token={}", token(secret)?),
        format!("vsn={}", o.vsn.as_str()),
        format!("concurrency={}", o.concurrency),
    ])
}

/// 200 sockets open, join and close: the server's first-use allocations (runtime, registry,
/// thread-local state of worker threads) stay out of the measured phases.
pub(super) async fn warm_up(o: &Options, base: &[String]) -> anyhow::Result<()> {
    let mut warm = Clients::spawn(
        "idle",
        base,
        &["count=200".into(), format!("topics={}", o.topics)],
    )?;
    let line = warm.expect("connected", Duration::from_secs(60)).await?;
    if line.num("failed")? > 0 {
        bail!("warm-up sockets failed to join: {line:?}");
    }
    warm.close().await
}

pub(super) struct IdleResult {
    sockets: u64,
    pub(super) connects_per_s: f64,
    pub(super) bytes_per_conn: f64,
}

/// Opens `idle` sockets (joined unless `join=0`): connect rate, then the RSS growth per socket of
/// the server process `server` (`self` or a pid).
pub(super) async fn idle_phase(o: &Options, base: &[String], server: &str) -> anyhow::Result<IdleResult> {
    let (rss_before, settle_before) = settled_rss(server, o.settle).await?;
    let mut idle = Clients::spawn(
        "idle",
        base,
        &[
            format!("count={}", o.idle),
            format!("topics={}", o.topics),
            format!("join={}", u8::from(o.idle_join)),
        ],
    )?;
    let line = idle.expect("connected", Duration::from_secs(300)).await?;
    let (rss_after, settle_after) = settled_rss(server, o.settle).await?;
    let (sockets, failed) = (line.num("ok")?, line.num("failed")?);
    let connect_secs = line.num("elapsed_us")? as f64 / 1e6;
    idle.close().await?;
    if failed > 0 || sockets == 0 {
        bail!("{failed} of {} idle sockets failed to open or join", o.idle);
    }
    let connects_per_s = sockets as f64 / connect_secs;
    let bytes_per_conn = rss_after.saturating_sub(rss_before) as f64 / sockets as f64;
    println!(
        "idle: {sockets} sockets opened{} in {connect_secs:.2} s ({connects_per_s:.0}/s, concurrency {}); \
         server RSS {:.1} MiB -> {:.1} MiB (settled in {:.0} s and {:.0} s) = {bytes_per_conn:.0} B per connection; \
         client RSS {:.1} MiB",
        if o.idle_join {
            " and joined"
        } else {
            " (not joined)"
        },
        o.concurrency,
        mib(rss_before),
        mib(rss_after),
        settle_before.as_secs_f64(),
        settle_after.as_secs_f64(),
        mib(line.num("client_rss")?)
    );
    Ok(IdleResult {
        sockets,
        connects_per_s,
        bytes_per_conn,
    })
}

/// After the hold, how long and within how much the resident size must stay put to count as
/// settled (at most `SETTLE_LIMIT` in all).
const STILL_FOR: Duration = Duration::from_secs(3);
const STILL_BYTES: u64 = 64 * 1024;
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// The resident size of process `server` once it has settled after a `hold`, and how long that
/// took; with no hold, the size at once.
/// Allocators hand freed pages back to the system some seconds after the free (jemalloc's
/// decay, V8's garbage collector), in steps: read at once, the figure counts the handshakes'
/// buffers by an amount that varies from run to run. Read after a hold, it is the size a
/// server keeps while its sockets sit idle. Every server is read the same way.
async fn settled_rss(server: &str, hold: Duration) -> anyhow::Result<(u64, Duration)> {
    let start = tokio::time::Instant::now();
    let read = || proc_stats::rss_bytes_of(server).context("VmRSS");
    if hold.is_zero() {
        return Ok((read()?, Duration::ZERO));
    }
    tokio::time::sleep(hold).await;
    let (mut still_at, mut still_since) = (read()?, tokio::time::Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = read()?;
        if now.abs_diff(still_at) >= STILL_BYTES {
            (still_at, still_since) = (now, tokio::time::Instant::now());
        } else if still_since.elapsed() >= STILL_FOR || start.elapsed() >= SETTLE_LIMIT {
            return Ok((now, start.elapsed()));
        }
    }
}

/// Fan-out rounds: returns the median deliveries per second and the CPU ns per delivery of the
/// server process `server` (`self` or a pid).
pub(super) async fn fanout_phase(o: &Options, base: &[String], server: &str) -> anyhow::Result<(f64, f64)> {
    let mut fan = Clients::spawn(
        "fanout",
        base,
        &[
            format!("subscribers={}", o.subscribers),
            format!("messages={}", o.messages),
            format!("rounds={}", o.rounds),
            format!("payload={}", o.payload),
        ],
    )?;
    fan.expect("subscribed", Duration::from_secs(300)).await?;
    let mut rates = Vec::new();
    let mut server_ns_per_delivery = Vec::new();
    for _ in 0..o.rounds {
        fan.expect("publishing", Duration::from_secs(30)).await?;
        let cpu_before = proc_stats::cpu_time_of(server);
        let round = fan.expect("round", Duration::from_secs(330)).await?;
        let server_cpu = proc_stats::cpu_time_of(server).saturating_sub(cpu_before);
        let (delivered, expected) = (round.num("delivered")?, round.num("expected")?);
        let secs = round.num("elapsed_us")? as f64 / 1e6;
        let rate = delivered as f64 / secs;
        let ns = server_cpu.as_nanos() as f64 / delivered.max(1) as f64;
        println!(
            "fan-out round: {delivered}/{expected} deliveries in {secs:.3} s = {rate:.0}/s; server CPU {:.0} ms \
             ({ns:.0} ns/delivery), client CPU {:.0} ms, subscribers closed {}",
            server_cpu.as_secs_f64() * 1e3,
            round.num("client_cpu_us")? as f64 / 1e3,
            round.num("closed")?
        );
        if delivered != expected {
            bail!("round incomplete: {delivered} of {expected} deliveries arrived within the timeout");
        }
        rates.push(rate);
        server_ns_per_delivery.push(ns);
    }
    fan.expect("done", Duration::from_secs(30)).await?;
    fan.close().await?;
    Ok((median(&mut rates), median(&mut server_ns_per_delivery)))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// A load-generator child process and its line protocol.
struct Clients {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Clients {
    fn spawn(mode: &str, base: &[String], extra: &[String]) -> anyhow::Result<Clients> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            // A profiler preloaded into the server process (heaptrack) stays out of the clients.
            .env_remove("LD_PRELOAD")
            .arg("broadcast-clients")
            .arg(mode)
            .args(base)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the load generator")?;
        let stdout = child.stdout.take().context("child stdout")?;
        Ok(Clients {
            stdin: child.stdin.take(),
            lines: BufReader::new(stdout).lines(),
            child,
        })
    }

    /// The next line, which must start with `word`.
    async fn expect(&mut self, word: &str, within: Duration) -> anyhow::Result<Line> {
        let line = tokio::time::timeout(within, self.lines.next_line())
            .await
            .with_context(|| format!("load generator: no `{word}` line within {within:?}"))??
            .with_context(|| format!("load generator exited before `{word}`"))?;
        Line::parse(&line, word, "load generator")
    }

    /// Tells the child to close its sockets and waits for it to exit.
    async fn close(mut self) -> anyhow::Result<()> {
        if let Some(mut stdin) = self.stdin.take() {
            // The child may already be gone (fan-out mode exits by itself).
            let _ = stdin.write_all(b"close\n").await;
        }
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .context("load generator did not exit")??;
        if !status.success() {
            bail!("load generator failed: {status}");
        }
        Ok(())
    }
}
