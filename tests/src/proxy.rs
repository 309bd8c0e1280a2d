//! A TCP proxy for fault tests: it sits between the service and Postgres, and the test can cut
//! every connection through it (both ends see the connection drop) or pause it (nothing is
//! read or written in either direction, as on a stalled network).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct TcpProxy {
    pub port: u16,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

#[derive(Debug)]
struct Shared {
    /// One token per live connection: cancelling it drops both sockets.
    connections: Mutex<Vec<CancellationToken>>,
    paused: watch::Sender<bool>,
    accepted: AtomicU64,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream_port`.
    pub async fn start(upstream_port: u16) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            connections: Mutex::new(Vec::new()),
            paused: watch::channel(false).0,
            accepted: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, upstream_port, shared.clone(), stop.clone()));
        TcpProxy { port, shared, stop }
    }

    /// Drops every connection open now; new ones are forwarded as before.
    pub fn cut(&self) {
        for token in self.lock().drain(..) {
            token.cancel();
        }
    }

    /// Stops moving bytes on every connection, open or new, until [`TcpProxy::resume`].
    pub fn pause(&self) {
        self.shared.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.shared.paused.send_replace(false);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<CancellationToken>> {
        self.shared.connections.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}

async fn accept(listener: TcpListener, upstream_port: u16, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let client = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
            continue;
        };
        let token = stop.child_token();
        {
            let mut connections = shared.connections.lock().unwrap_or_else(|p| p.into_inner());
            connections.retain(|t| !t.is_cancelled());
            connections.push(token.clone());
        }
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let paused = shared.paused.subscribe();
        let (a, b) = (token.clone(), token.clone());
        let pause_a = paused.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = a.cancelled() => {}
                _ = pipe(client_read, server_write, pause_a) => {}
            }
            // One direction ended: end the other too.
            a.cancel();
        });
        tokio::spawn(async move {
            tokio::select! {
                _ = b.cancelled() => {}
                _ = pipe(server_read, client_write, paused) => {}
            }
            b.cancel();
        });
    }
}

/// Copies bytes until either side closes, holding still while paused.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if paused.wait_for(|p| !*p).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if paused.wait_for(|p| !*p).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
