//! The `realtime serve` binary as a child process, for tests that need what an in-process server
//! cannot give: its own memory (RSS) and file descriptors, read from `/proc`, and its log
//! (stderr and stdout), captured so a test can check what it does not contain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use super::{SECRET, http};

pub struct ServerProcess {
    pub addr: SocketAddr,
    child: Child,
    log: Arc<Mutex<Vec<u8>>>,
    dir: PathBuf,
}

impl ServerProcess {
    /// Starts `realtime serve` (no database) with the test secret, no error backoffs, debug
    /// logging and `env` on top, and waits until `/healthz` answers.
    pub async fn start(env: &[(&str, &str)]) -> ServerProcess {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("realtime-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_realtime"));
        command
            .arg("serve")
            // No ./policies folder here: private channels are default deny.
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for key in [
            "DATABASE_URL",
            "DB_HOST",
            "REALTIME_CONFIG",
            "JWT_SECRET",
            "JWT_JWKS",
            "JWT_CLAIM_VALIDATORS",
            "LOG_FORMAT",
        ] {
            command.env_remove(key);
        }
        command
            .env("PORT", port.to_string())
            .env("API_JWT_SECRET", SECRET)
            .env("CONNECT_ERROR_BACKOFF_MS", "0")
            .env("CHANNEL_ERROR_BACKOFF_MS", "0")
            .env("RUST_LOG", "debug");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn realtime");
        let log = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(collect(child.stdout.take().expect("stdout"), log.clone()));
        tokio::spawn(collect(child.stderr.take().expect("stderr"), log.clone()));
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let server = ServerProcess {
            addr,
            child,
            log,
            dir,
        };
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok()
                && http(self.addr, "GET", "/healthz", &[], b"").await.0 == 200
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "realtime did not answer /healthz within 20 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident memory in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("fd dir")
            .count()
    }

    /// Everything the server printed so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    pub fn url(&self, key: &str, vsn: &str) -> String {
        format!("ws://{}/socket/websocket?apikey={key}&vsn={vsn}", self.addr)
    }

    /// Waits until `done` holds for the server, checking every 100 ms, at most `within`.
    pub async fn wait_for(&self, within: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if done(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        done(self)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn collect(mut from: impl AsyncRead + Unpin, into: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            return;
        }
        into.lock().unwrap().extend_from_slice(&buf[..n]);
    }
}

/// A free port below the kernel's ephemeral range: a port inside it could be handed to one of
/// our own connections while the server starts, which then connects to itself.
pub fn free_port() -> u16 {
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768);
    for _ in 0..200 {
        let port = 10_000 + rand::random::<u16>() % low.saturating_sub(10_000).max(1);
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}
