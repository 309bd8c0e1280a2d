//! Nodes of a cluster for tests: `realtime serve` processes on one `nats-server`, each reaching
//! it through its own [`TcpProxy`] (so a test can cut or pause one node's link), and a small
//! vsn 1.0.0 WebSocket client for broadcast and presence.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::Process;
use crate::auth::{SECRET, token};
use crate::free_port;
use crate::proxy::TcpProxy;

/// Heartbeat and down-after of the nodes these helpers start (short, so tests are quick).
pub const HEARTBEAT_MS: u64 = 250;
pub const DOWN_AFTER_MS: u64 = 4_000;

/// Settings that lift the broadcast rate limits (a test or benchmark sends fast on purpose).
pub fn unlimited_broadcasts() -> Vec<(&'static str, String)> {
    [
        "TENANT_MAX_EVENTS_PER_SECOND",
        "MAX_BROADCASTS_PER_SECOND",
        "MAX_BROADCASTS_PER_SECOND_PER_SUBJECT",
        "MAX_BROADCASTS_PER_SECOND_PER_IP",
    ]
    .into_iter()
    .map(|name| (name, "1000000".to_owned()))
    .collect()
}

/// One `realtime serve` of a cluster (no database: broadcast and presence only).
pub struct ClusterNode {
    pub process: Process,
    pub port: u16,
    pub proxy: TcpProxy,
    pub node_id: String,
    env: Vec<(&'static str, String)>,
}

impl ClusterNode {
    /// Starts node `node_id` on NATS at `nats_port` (through a proxy of its own) and waits until
    /// it listens.
    pub async fn start(nats_port: u16, node_id: &str, extra: &[(&'static str, String)]) -> ClusterNode {
        let proxy = TcpProxy::start(nats_port).await;
        let port = free_port();
        let mut env = vec![
            ("PORT", port.to_string()),
            ("API_JWT_SECRET", SECRET.to_owned()),
            ("NATS_URL", format!("nats://127.0.0.1:{}", proxy.port)),
            ("NODE_ID", node_id.to_owned()),
            ("CLUSTER_NAME", "test".to_owned()),
            ("CLUSTER_HEARTBEAT_MS", HEARTBEAT_MS.to_string()),
            ("CLUSTER_NODE_DOWN_AFTER_MS", DOWN_AFTER_MS.to_string()),
            ("CHANNEL_ERROR_BACKOFF_MS", "0".to_owned()),
            ("CONNECT_ERROR_BACKOFF_MS", "0".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ];
        env.extend(extra.iter().cloned());
        let process = Process::spawn(&["serve"], &env);
        process.wait_stderr("listening", Duration::from_secs(20));
        ClusterNode {
            process,
            port,
            proxy,
            node_id: node_id.to_owned(),
            env,
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the process again (same port, node id and proxy) after [`ClusterNode::kill`].
    pub fn restart(&mut self) {
        self.process = Process::spawn(&["serve"], &self.env);
        self.process.wait_stderr("listening", Duration::from_secs(20));
    }

    pub fn url(&self) -> String {
        format!(
            "ws://127.0.0.1:{}/socket/websocket?apikey={}&vsn=1.0.0",
            self.port,
            token("anon")
        )
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A vsn 1.0.0 socket with one channel.
pub struct Client {
    ws: Ws,
    pub topic: String,
    next_ref: u64,
}

impl Client {
    /// Connects to `port` and joins `realtime:<channel>` with `broadcast` settings
    /// (`{"self":…, "ack":…}`) and presence enabled under `presence_key`; waits for the reply.
    pub async fn join(port: u16, channel: &str, broadcast: Value, presence_key: &str) -> Client {
        let url = format!(
            "ws://127.0.0.1:{port}/socket/websocket?apikey={}&vsn=1.0.0",
            token("anon")
        );
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the node");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("WebSocket handshake");
        let mut client = Client {
            ws,
            topic: format!("realtime:{channel}"),
            next_ref: 1,
        };
        let join = json!({
            "topic": client.topic, "event": "phx_join", "ref": "join", "join_ref": "1",
            "payload": {
                "config": {
                    "broadcast": broadcast,
                    "presence": {"key": presence_key, "enabled": true},
                    "postgres_changes": [],
                    "private": false
                },
                "access_token": token("anon")
            }
        });
        client.send(join).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let frame = client.frame(deadline).await.expect("a join reply within 10 s");
            if frame["event"] == "phx_reply" && frame["ref"] == "join" {
                assert_eq!(frame["payload"]["status"], "ok", "{frame}");
                return client;
            }
        }
    }

    async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .expect("send a frame");
    }

    /// Sends a broadcast `event` with `payload`; returns its ref.
    pub async fn broadcast(&mut self, event: &str, payload: Value) -> String {
        let r = self.next_ref.to_string();
        self.next_ref += 1;
        let frame = json!({
            "topic": self.topic, "event": "broadcast", "ref": r, "join_ref": "1",
            "payload": {"type": "broadcast", "event": event, "payload": payload}
        });
        self.send(frame).await;
        r
    }

    /// Tracks `meta` on the channel.
    pub async fn track(&mut self, meta: Value) {
        let r = format!("t{}", self.next_ref);
        self.next_ref += 1;
        let frame = json!({
            "topic": self.topic, "event": "presence", "ref": r, "join_ref": "1",
            "payload": {"type": "presence", "event": "track", "payload": meta}
        });
        self.send(frame).await;
    }

    /// The next frame before `deadline`, whole; `None` on timeout or a closed socket.
    pub async fn frame(&mut self, deadline: tokio::time::Instant) -> Option<Value> {
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()??;
            match message {
                Ok(Message::Text(text)) => return serde_json::from_str(&text).ok(),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// The next frame with event `event` within `timeout` (others are skipped, answering
    /// nothing but keeping the socket alive with heartbeats is not needed in short tests).
    pub async fn next_event(&mut self, event: &str, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = self.frame(deadline).await?;
            if frame["event"] == event {
                return Some(frame);
            }
        }
    }

    /// Every frame arriving within `window`.
    pub async fn drain(&mut self, window: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + window;
        let mut frames = Vec::new();
        while let Some(frame) = self.frame(deadline).await {
            frames.push(frame);
        }
        frames
    }
}

/// Sends `POST /api/broadcast` with one message to `port`; returns the status.
pub async fn rest_broadcast(port: u16, channel: &str, event: &str, payload: Value) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = json!({"messages": [{"topic": channel, "event": event, "payload": payload}]}).to_string();
    let request = format!(
        "POST /api/broadcast HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\napikey: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        token("service_role"),
        body.len()
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text}"))
}
