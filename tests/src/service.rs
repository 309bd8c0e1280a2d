//! `realtime serve` as a child process against a test cluster, scraped through `/metrics` and
//! `/proc`, with WebSocket clients that subscribe to Postgres Changes (vsn 1.0.0 frames).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::auth::SECRET;
use crate::phoenix::socket_url;
use crate::server::http;
use crate::{Process, free_port};

/// A `realtime serve` process.
pub struct Service {
    pub process: Process,
    pub port: u16,
}

impl Service {
    /// Starts `realtime serve` on `url` with slot `slot` and publication `publication`, plus
    /// `extra` environment, and waits until it streams changes.
    pub fn start(url: &str, slot: &str, publication: &str, extra: &[(&str, String)]) -> Service {
        let service = Service::spawn(url, slot, publication, extra);
        service
            .process
            .wait_stderr("streaming changes", Duration::from_secs(60));
        service.process.wait_stderr("listening", Duration::from_secs(10));
        service
    }

    /// Starts `realtime serve` as [`Service::start`] does, but waits only until it listens: a
    /// node of a cluster that follows the leader never streams from the slot itself.
    pub fn start_node(url: &str, slot: &str, publication: &str, extra: &[(&str, String)]) -> Service {
        let service = Service::spawn(url, slot, publication, extra);
        service.process.wait_stderr("listening", Duration::from_secs(30));
        service
    }

    /// `realtime serve` with the tests' settings on a free port, not yet waited for.
    fn spawn(url: &str, slot: &str, publication: &str, extra: &[(&str, String)]) -> Service {
        let port = free_port();
        let mut env = vec![
            ("DATABASE_URL", url.to_owned()),
            ("SLOT_NAME", slot.to_owned()),
            ("PUBLICATIONS", publication.to_owned()),
            ("PORT", port.to_string()),
            ("API_JWT_SECRET", SECRET.to_owned()),
            ("CHANNEL_ERROR_BACKOFF_MS", "0".to_owned()),
            ("CONNECT_ERROR_BACKOFF_MS", "0".to_owned()),
            // The tests' own role (see `reader_role_sql`) besides Supabase's.
            (
                "ALLOWED_ROLES",
                "anon,authenticated,service_role,reader".to_owned(),
            ),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        let process = Process::spawn(&["serve"], &env);
        Service { process, port }
    }

    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// The body of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        http_get(self.port, "/metrics").await
    }

    /// One sample of `/metrics` as a number (`NaN` when unknown).
    pub async fn metric(&self, name: &str) -> f64 {
        metric(&self.metrics().await, name)
    }

    /// The service's peak resident memory (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        proc_status_kb(self.pid(), "VmHWM") * 1024
    }

    pub fn rss(&self) -> u64 {
        proc_status_kb(self.pid(), "VmRSS") * 1024
    }

    pub fn url(&self, token: &str) -> String {
        socket_url(self.port, token, "1.0.0")
    }
}

/// The value of sample `name` in Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            (n == name).then(|| v.parse::<f64>().unwrap_or(f64::NAN))
        })
        .unwrap_or_else(|| panic!("{name} is not in /metrics:\n{text}"))
}

fn proc_status_kb(pid: u32, field: &str) -> u64 {
    crate::proc_stats::status_kib(&pid.to_string(), field)
        .unwrap_or_else(|| panic!("{field} missing in /proc/{pid}/status"))
}

/// The body of `GET path` on loopback `port`, which must answer 200.
pub async fn http_get(port: u16, path: &str) -> String {
    let (status, body) = http(("127.0.0.1", port), "GET", path, &[], b"").await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A `postgres_changes` push: its `data`.
    Change(Value),
    /// A `system` push: its payload.
    System(Value),
    /// The server closed the socket (with its close code, if a close frame arrived).
    Closed(Option<u16>),
}

/// A vsn 1.0.0 socket with one channel subscribed to Postgres Changes.
///
/// Its own client rather than [`crate::phoenix::Client`]: it sets the socket's kernel receive
/// buffer before connecting (a subscriber that stops reading must fill the server's queue
/// quickly), and its fault tests want a close or a dropped connection as a value to assert on,
/// where the shared client panics.
pub struct Subscriber {
    ws: Ws,
    pub topic: String,
}

impl Subscriber {
    /// Connects, joins `realtime:<channel>` with `bindings` and waits for
    /// "Subscribed to PostgreSQL". With `receive_buffer`, the socket's kernel receive buffer is
    /// set that small (for a client that will stop reading).
    pub async fn join(
        service: &Service,
        token: &str,
        channel: &str,
        bindings: Value,
        receive_buffer: Option<u32>,
    ) -> Subscriber {
        Self::join_with(service, token, channel, bindings, receive_buffer, json!(null)).await
    }

    /// [`Subscriber::join`] with `postgres_changes_options` in the join's config (e.g.
    /// `{"since": position}` to resume).
    pub async fn join_with(
        service: &Service,
        token: &str,
        channel: &str,
        bindings: Value,
        receive_buffer: Option<u32>,
        postgres_changes_options: Value,
    ) -> Subscriber {
        let url = service.url(token);
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(size) = receive_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let stream = socket
            .connect(([127, 0, 0, 1], service.port).into())
            .await
            .expect("connect to the service");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("WebSocket handshake");
        let mut subscriber = Subscriber {
            ws,
            topic: format!("realtime:{channel}"),
        };
        let join = json!({
            "topic": subscriber.topic, "event": "phx_join", "ref": "1", "join_ref": "1",
            "payload": {
                "config": {
                    "broadcast": {"ack": false, "self": false},
                    "presence": {"key": "", "enabled": false},
                    "postgres_changes": bindings,
                    "postgres_changes_options": postgres_changes_options,
                    "private": false
                },
                "access_token": token
            }
        });
        subscriber
            .ws
            .send(Message::text(join.to_string()))
            .await
            .expect("send the join");
        match subscriber.next(Duration::from_secs(30)).await {
            Some(Incoming::System(p)) if p["message"] == "Subscribed to PostgreSQL" => subscriber,
            Some(Incoming::System(p)) => panic!("subscription refused: {p}"),
            Some(other) => panic!("before the subscription: {other:?}"),
            None => panic!("not subscribed within 30 s"),
        }
    }

    /// The next push or close, skipping replies; `None` after `timeout` without one.
    pub async fn next(&mut self, timeout: Duration) -> Option<Incoming> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()?;
            let text = match message {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => {
                    return Some(Incoming::Closed(frame.map(|f| u16::from(f.code))));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Some(Incoming::Closed(None)),
            };
            let value: Value = serde_json::from_str(&text).expect("a JSON frame");
            match value["event"].as_str() {
                Some("postgres_changes") => {
                    return Some(Incoming::Change(value["payload"]["data"].clone()));
                }
                Some("system") => return Some(Incoming::System(value["payload"].clone())),
                _ => continue,
            }
        }
    }

    /// The next push (`postgres_changes` or `system`) as `(event, payload)`, whole (with `ids`
    /// and `position`), or `None` on a close or after `timeout`.
    pub async fn next_push(&mut self, timeout: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()?;
            let Some(Ok(Message::Text(text))) = message else {
                match message {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                    _ => continue,
                }
            };
            let value: Value = serde_json::from_str(&text).expect("a JSON frame");
            if let Some(event @ ("postgres_changes" | "system")) = value["event"].as_str() {
                return Some((event.to_owned(), value["payload"].clone()));
            }
        }
    }

    /// The next change, panicking on anything else or on `timeout`.
    pub async fn change(&mut self, timeout: Duration) -> Value {
        match self.next(timeout).await {
            Some(Incoming::Change(data)) => data,
            other => panic!("expected a change, got {other:?}"),
        }
    }

    /// Sends a heartbeat (keeps the socket from the idle timeout).
    pub async fn heartbeat(&mut self) {
        let frame = json!({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "hb"});
        let _ = self.ws.send(Message::text(frame.to_string())).await;
    }
}

/// Supabase's `anon`-like reader role used by these tests: may read `tables`, no RLS bypass.
pub fn reader_role_sql(tables: &[&str]) -> String {
    let mut sql = "CREATE ROLE reader NOLOGIN;".to_owned();
    for t in tables {
        sql.push_str(&format!(" GRANT SELECT ON {t} TO reader;"));
    }
    sql
}
