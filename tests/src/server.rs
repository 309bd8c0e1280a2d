//! The channel server without a database, two ways: [`TestServer`] runs `realtime::run` in this
//! process on port 0; [`ServerProcess`] runs the `realtime serve` binary as a child, for tests
//! that need what an in-process server cannot give: its own memory (RSS) and file descriptors,
//! read from `/proc`, and its log (stderr and stdout), captured so a test can check what it does
//! not contain. [`http`] is a raw HTTP/1.1 client for either.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use realtime::config::{Config, Secret};

use crate::auth::{SECRET, user_token};
use crate::phoenix::Client;
use crate::{Process, free_port};

/// `realtime serve` as a child [`Process`] on a free port, in a folder of its own.
pub struct ServerProcess {
    pub addr: SocketAddr,
    process: Process,
    /// The stdout lines read so far: [`ServerProcess::log`] keeps all of them.
    stdout: Mutex<String>,
    dir: PathBuf,
}

impl ServerProcess {
    /// Starts `realtime serve` (no database) with the test secret, no error backoffs, debug
    /// logging and `env` on top, and waits until `/healthz` answers.
    pub async fn start(env: &[(&str, &str)]) -> ServerProcess {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("realtime-test-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut vars = vec![
            ("PORT", port.to_string()),
            ("API_JWT_SECRET", SECRET.to_owned()),
            ("CONNECT_ERROR_BACKOFF_MS", "0".to_owned()),
            ("CHANNEL_ERROR_BACKOFF_MS", "0".to_owned()),
            ("RUST_LOG", "debug".to_owned()),
        ];
        vars.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
        // No ./policies folder in `dir`: private channels are default deny.
        let process = Process::spawn_in(&dir, &["serve"], &vars);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let server = ServerProcess {
            addr,
            process,
            stdout: Mutex::new(String::new()),
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
        self.process.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.process.child.try_wait(), Ok(None))
    }

    /// Resident memory in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        crate::proc_stats::status_kib(&self.pid().to_string(), "VmRSS").expect("VmRSS")
    }

    /// Open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("fd dir")
            .count()
    }

    /// Everything the server printed so far, stdout then stderr.
    pub fn log(&self) -> String {
        let mut stdout = self.stdout.lock().unwrap();
        for line in self.process.stdout.try_iter() {
            stdout.push_str(&line);
            stdout.push('\n');
        }
        format!("{stdout}{}", self.process.stderr())
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
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Result<(), realtime::RunError>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::default();
        config.server.auth.jwt_secret = Some(Secret::new(SECRET));
        config.server.limits.channel_error_backoff = Duration::ZERO;
        config.server.limits.connect_error_backoff = Duration::ZERO;
        config.server.shutdown_grace = Duration::from_secs(5);
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(realtime::run(Arc::new(config), listener, shutdown.clone()));
        TestServer {
            addr,
            shutdown,
            handle,
        }
    }

    pub fn url(&self, vsn: &str) -> String {
        format!(
            "ws://{}/socket/websocket?apikey={}&vsn={vsn}",
            self.addr,
            user_token(3600)
        )
    }

    pub async fn client(&self, vsn: &str) -> Client {
        Client::connect(&self.url(vsn), vsn).await
    }
}

/// A raw HTTP/1.1 request to `addr` (a `SocketAddr` or `("127.0.0.1", port)`), closed after
/// the answer; returns its status and body. Panics without an answer within 10 s.
pub async fn http(
    addr: impl ToSocketAddrs,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write body");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
