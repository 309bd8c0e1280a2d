//! Starting and stopping the peer servers of the `peers` benchmark, each in its own process on a
//! free loopback port: the Node servers of `tests/bench-peers/` (their packages installed with
//! `npm ci` from the committed lock file on first use) and `nats-server` with a generated
//! configuration that opens its WebSocket listener without TLS.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::Peer;

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running peer server.
pub struct PeerServer {
    child: Child,
    pub pid: u32,
    /// The WebSocket URL clients connect to.
    pub url: String,
    /// The load generator's `wire=` for it.
    pub wire: &'static str,
    config: Option<PathBuf>,
}

impl PeerServer {
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        if let Some(config) = self.config.take() {
            let _ = std::fs::remove_file(config);
        }
    }
}

fn peers_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/bench-peers"))
}

pub async fn start(peer: Peer) -> anyhow::Result<PeerServer> {
    match peer {
        Peer::Uws => start_node("uws.mjs", "plain", "/").await,
        Peer::Ws => start_node("ws.mjs", "plain", "/").await,
        Peer::SocketIo => {
            start_node(
                "socketio.mjs",
                "socketio",
                "/socket.io/?EIO=4&transport=websocket",
            )
            .await
        }
        Peer::Nats => start_nats().await,
        Peer::Ours => bail!("our server runs inside the benchmark"),
    }
}

/// Installs the Node peers' packages from the lock file unless they are there.
async fn ensure_node_modules() -> anyhow::Result<()> {
    let dir = peers_dir();
    let installed = ["ws", "socket.io", "@trufflesuite/uws-js-unofficial"]
        .iter()
        .all(|p| dir.join("node_modules").join(p).join("package.json").exists());
    if installed {
        return Ok(());
    }
    println!("installing the Node peers (npm ci in {})", dir.display());
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .status()
        .await
        .context("cannot run npm (is Node.js installed?)")?;
    if !status.success() {
        bail!("npm ci in {} failed: {status}", dir.display());
    }
    Ok(())
}

/// Starts `node <script>`, which prints `listening <port>` once bound.
async fn start_node(script: &str, wire: &'static str, path: &str) -> anyhow::Result<PeerServer> {
    ensure_node_modules().await?;
    let mut child = Command::new("node")
        .arg(peers_dir().join(script))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start node")?;
    let pid = child.id().context("node exited at once")?;
    let stdout = child.stdout.take().context("node stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
        .await
        .with_context(|| format!("{script} did not start within {START_TIMEOUT:?}"))??
        .with_context(|| format!("{script} exited before listening"))?;
    let port: u16 = line
        .strip_prefix("listening ")
        .and_then(|p| p.trim().parse().ok())
        .with_context(|| format!("{script}: expected `listening <port>`, got {line:?}"))?;
    // Keep draining its stdout so a chatty server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(PeerServer {
        child,
        pid,
        url: format!("ws://127.0.0.1:{port}{path}"),
        wire,
        config: None,
    })
}

/// A port that was free a moment ago (nats-server takes its WebSocket port from its config).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The configuration: clients' port picked by the server, WebSocket listener on `ws_port`
/// without TLS or compression, queues and deadlines large enough for the benchmark's bursts.
fn nats_config(ws_port: u16) -> String {
    format!(
        "host: 127.0.0.1\nport: -1\nmax_connections: 100000\nmax_pending: 256MB\n\
         write_deadline: \"60s\"\nwebsocket {{\n  host: 127.0.0.1\n  port: {ws_port}\n  \
         no_tls: true\n  compression: false\n}}\n"
    )
}

async fn start_nats() -> anyhow::Result<PeerServer> {
    let program = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".to_owned());
    let ws_port = free_port()?;
    let config = std::env::temp_dir().join(format!("realtime-bench-nats-{}.conf", std::process::id()));
    std::fs::write(&config, nats_config(ws_port))?;
    let mut child = Command::new(&program)
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {program} (apt-get install nats-server)"))?;
    let pid = child.id().context("nats-server exited at once")?;
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", ws_port))
        .await
        .is_err()
    {
        if let Some(status) = child.try_wait()? {
            bail!(
                "nats-server exited: {status} (configuration {})",
                config.display()
            );
        }
        if started.elapsed() > START_TIMEOUT {
            bail!("nats-server did not listen on {ws_port} within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(PeerServer {
        child,
        pid,
        url: format!("ws://127.0.0.1:{ws_port}/"),
        wire: "nats",
        config: Some(config),
    })
}
