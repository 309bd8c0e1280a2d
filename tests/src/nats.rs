//! A throwaway `nats-server` on loopback (core NATS, no JetStream), for the cluster tests.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// A `nats-server` child process; killed when dropped.
pub struct NatsServer {
    pub port: u16,
    child: Option<Child>,
    args: Vec<String>,
}

impl NatsServer {
    /// Starts a server on a free port and waits until it accepts connections.
    pub fn start() -> NatsServer {
        NatsServer::start_with(&[])
    }

    /// Starts a server with extra command-line flags (`--user`, `--auth`, …).
    pub fn start_with(extra: &[&str]) -> NatsServer {
        let mut server = NatsServer {
            port: free_port(),
            child: None,
            args: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        server.launch();
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, after [`NatsServer::kill`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart() needs a killed server");
        self.launch();
    }

    fn launch(&mut self) {
        let bin = which("nats-server").expect("nats-server is not installed (.ci/setup installs it)");
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The path of `name` on `PATH` or in `/usr/sbin` (where Debian's package puts `nats-server`,
/// which is not on every user's `PATH`).
fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/usr/bin"])
        .map(|dir| std::path::Path::new(dir).join(name))
        .find(|p| p.is_file())
}
