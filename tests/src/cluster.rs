//! Nodes of a cluster for tests: `realtime serve` processes on one `nats-server`, each reaching
//! it through its own [`TcpProxy`] (so a test can cut or pause one node's link), and a one-channel
//! view of the Phoenix client for broadcast and presence.

use std::time::Duration;

use serde_json::{Value, json};

use crate::Process;
use crate::auth::{SECRET, token};
use crate::free_port;
use crate::phoenix::{self, Frame};
use crate::proxy::TcpProxy;
use crate::server::http;

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
        phoenix::socket_url(self.port, &token("anon"), "1.0.0")
    }
}

/// A vsn 1.0.0 socket with one channel, whose frames are read whole, as the JSON objects the
/// server sent (the cluster tests compare refs and payloads across nodes).
pub struct Client {
    client: phoenix::Client,
    pub topic: String,
    join_ref: String,
}

impl Client {
    /// Connects to `port` and joins `realtime:<channel>` with `broadcast` settings
    /// (`{"self":…, "ack":…}`) and presence enabled under `presence_key`; waits for the reply.
    pub async fn join(port: u16, channel: &str, broadcast: Value, presence_key: &str) -> Client {
        let url = phoenix::socket_url(port, &token("anon"), "1.0.0");
        let mut client = phoenix::Client::connect(&url, "1.0.0").await;
        client.patience = Duration::from_secs(10);
        let topic = format!("realtime:{channel}");
        let payload = json!({
            "config": {
                "broadcast": broadcast,
                "presence": {"key": presence_key, "enabled": true},
                "postgres_changes": [],
                "private": false
            },
            "access_token": token("anon")
        });
        let join_ref = client.join_raw(&topic, payload).await;
        let reply = client.reply_to(&join_ref).await;
        assert_eq!(reply["status"], "ok", "{reply}");
        Client {
            client,
            topic,
            join_ref,
        }
    }

    /// Sends a broadcast `event` with `payload`; returns its ref.
    pub async fn broadcast(&mut self, event: &str, payload: Value) -> String {
        let payload = json!({"type": "broadcast", "event": event, "payload": payload});
        self.client
            .send(Some(&self.join_ref), &self.topic, "broadcast", payload)
            .await
    }

    /// Tracks `meta` on the channel.
    pub async fn track(&mut self, meta: Value) {
        let payload = json!({"type": "presence", "event": "track", "payload": meta});
        self.client
            .send(Some(&self.join_ref), &self.topic, "presence", payload)
            .await;
    }

    /// The next frame before `deadline`, whole (`{"topic", "event", "payload", "ref"}`); `None`
    /// on timeout or a closed socket.
    pub async fn frame(&mut self, deadline: tokio::time::Instant) -> Option<Value> {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match self.client.try_recv(left).await? {
            Frame::Msg {
                msg_ref,
                topic,
                event,
                payload,
                ..
            } => Some(json!({"topic": topic, "event": event, "payload": payload, "ref": msg_ref})),
            Frame::UserBroadcast { .. } => panic!("a vsn 1.0.0 socket got a binary frame"),
            Frame::Close(..) => None,
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
    let body = json!({"messages": [{"topic": channel, "event": event, "payload": payload}]}).to_string();
    let key = token("service_role");
    let headers = [("apikey", key.as_str()), ("content-type", "application/json")];
    http(
        ("127.0.0.1", port),
        "POST",
        "/api/broadcast",
        &headers,
        body.as_bytes(),
    )
    .await
    .0
}
