//! `realtime-bench db-broadcast-clients key=value...`: the subscribers of the db-broadcast
//! benchmark, in a child process so their CPU stays out of the server's.
//!
//! Socket `i` carries the claims `{"role":"authenticated","sub":"<uuid of i>"}` and joins two
//! private channels (vsn 1.0.0): [`ALL`] and `room:<i % rooms>`; the server authorizes each join
//! with the RLS policy on `realtime.messages` (room membership). Every `broadcast` push is counted
//! and its latency recorded: receive time − the payload's `sent_us` (the sending statement's
//! `clock_timestamp()`, µs).
//!
//! Line protocol with the parent (stdout only carries these lines):
//! - `subscribed n=<sockets> joins=<channels> handshakes_us=.. joins_us=.. elapsed_us=..` once every
//!   channel is joined: all sockets are opened first (`concurrency` handshakes at a time), then
//!   joined (`concurrency` sockets' joins at a time), each phase timed;
//! - `progress delivered=N` every 10 ms while the count changes;
//! - stdin `reset` → latencies cleared → `reset`;
//! - stdin `report` → `report samples=.. p50_us=.. p99_us=.. max_us=..`;
//! - stdin `close` or end of input → exit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use memchr::memmem::Finder;
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The room every subscriber is a member of (the throughput phase's topic).
pub const ALL: &str = "room:all";
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
const HEARTBEAT: Duration = Duration::from_secs(20);

/// Subscriber `i`'s user id (a uuid: `auth.uid()` returns uuid).
pub fn user_id(i: u64) -> String {
    format!("00000000-0000-0000-0000-{i:012}")
}

/// The room of subscriber `i` besides [`ALL`].
pub fn room_of(i: u64, rooms: u64) -> String {
    format!("room:{}", i % rooms.max(1))
}

struct Shared {
    delivered: AtomicU64,
    latencies_us: Mutex<Vec<i64>>,
}

pub fn main() -> anyhow::Result<()> {
    let mut args = HashMap::new();
    for item in std::env::args().skip(2) {
        let (k, v) = item
            .split_once('=')
            .with_context(|| format!("expected key=value, got {item:?}"))?;
        args.insert(k.to_owned(), v.to_owned());
    }
    let arg = |k: &str| args.get(k).cloned().with_context(|| format!("missing {k}="));
    let url = arg("url")?;
    let secret = arg("secret")?;
    let subscribers: u64 = arg("subscribers")?.parse()?;
    let rooms: u64 = arg("rooms")?.parse()?;
    let concurrency: usize = arg("concurrency")?.parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(&url, &secret, subscribers, rooms, concurrency.max(1)))
}

async fn run(
    url: &str,
    secret: &str,
    subscribers: u64,
    rooms: u64,
    concurrency: usize,
) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        delivered: AtomicU64::new(0),
        latencies_us: Mutex::new(Vec::new()),
    });
    // Handshakes first, then the joins on the open sockets: each phase is timed on its own.
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut opening = JoinSet::new();
    for i in 0..subscribers {
        let permit = permits.clone().acquire_owned().await?;
        let (url, token) = (url.to_owned(), token(secret, i)?);
        opening.spawn(async move {
            let result = open(&url, &token).await;
            drop(permit);
            (i, token, result)
        });
    }
    let mut open_sockets = Vec::with_capacity(subscribers as usize);
    while let Some(opened) = opening.join_next().await {
        let (i, token, result) = opened?;
        open_sockets.push((i, token, result.with_context(|| format!("subscriber {i}"))?));
    }
    let handshakes = started.elapsed();
    let joining_started = Instant::now();
    let mut joins = JoinSet::new();
    for (i, token, mut ws) in open_sockets {
        let permit = permits.clone().acquire_owned().await?;
        let room = room_of(i, rooms);
        joins.spawn(async move {
            let result = join(&mut ws, &token, &[ALL, &room]).await;
            drop(permit);
            (i, result.map(|()| ws))
        });
    }
    let mut sockets = Vec::with_capacity(subscribers as usize);
    while let Some(joined) = joins.join_next().await {
        let (i, result) = joined?;
        sockets.push(result.with_context(|| format!("subscriber {i}"))?);
    }
    println!(
        "subscribed n={} joins={} handshakes_us={} joins_us={} elapsed_us={}",
        sockets.len(),
        sockets.len() * 2,
        handshakes.as_micros(),
        joining_started.elapsed().as_micros(),
        started.elapsed().as_micros()
    );
    for ws in sockets {
        tokio::spawn(read_pushes(ws, shared.clone()));
    }
    tokio::spawn(print_progress(shared.clone()));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match line.trim() {
            "reset" => {
                lock(&shared.latencies_us).clear();
                println!("reset");
            }
            "report" => {
                let mut l = std::mem::take(&mut *lock(&shared.latencies_us));
                l.sort_unstable();
                println!(
                    "report samples={} p50_us={} p99_us={} max_us={}",
                    l.len(),
                    percentile(&l, 0.50),
                    percentile(&l, 0.99),
                    l.last().copied().unwrap_or(0).max(0)
                );
            }
            "close" => break,
            other => bail!("unknown command {other:?}"),
        }
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The nearest-rank percentile of sorted values (0 when empty); negative (clock) values as 0.
fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].max(0)
}

async fn print_progress(shared: Arc<Shared>) {
    let mut last = u64::MAX;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tick.tick().await;
        let now = shared.delivered.load(Ordering::SeqCst);
        if now != last {
            println!("progress delivered={now}");
            last = now;
        }
    }
}

fn token(secret: &str, i: u64) -> anyhow::Result<String> {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
    let claims = serde_json::json!({ "role": "authenticated", "sub": user_id(i), "exp": exp });
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )?)
}

/// Opens a vsn 1.0.0 socket carrying `token`.
async fn open(url: &str, token: &str) -> anyhow::Result<Ws> {
    let url = format!("{url}?apikey={token}&vsn=1.0.0");
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(&url, Some(config), true)
        .await
        .context("WebSocket handshake")?;
    Ok(ws)
}

/// Joins each of `topics` as a private channel on `ws`; returns once every join was answered ok.
async fn join(ws: &mut Ws, token: &str, topics: &[&str]) -> anyhow::Result<()> {
    for (n, topic) in topics.iter().enumerate() {
        let join = serde_json::json!({
            "topic": format!("realtime:{topic}"), "event": "phx_join", "ref": n.to_string(),
            "join_ref": n.to_string(),
            "payload": {
                "config": {"broadcast": {"ack": false, "self": false},
                           "presence": {"key": "", "enabled": false}, "private": true},
                "access_token": token
            }
        });
        ws.send(Message::text(join.to_string())).await?;
    }
    let mut answered = 0;
    tokio::time::timeout(JOIN_TIMEOUT, async {
        while answered < topics.len() {
            let Some(message) = ws.next().await else {
                bail!("socket closed before the joins were answered");
            };
            let Message::Text(text) = message? else { continue };
            let value: serde_json::Value = serde_json::from_str(&text)?;
            if value["event"] == "phx_reply" {
                if value["payload"]["status"] != "ok" {
                    bail!("join refused: {}", value["payload"]);
                }
                answered += 1;
            }
        }
        Ok(())
    })
    .await
    .context("joins not answered in time")??;
    Ok(())
}

async fn read_pushes(mut ws: Ws, shared: Arc<Shared>) {
    let sent_us = Finder::new(b"\"sent_us\":");
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    loop {
        let message = tokio::select! {
            m = ws.next() => m,
            _ = heartbeat.tick() => {
                let frame = r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"hb"}"#;
                if ws.send(Message::text(frame)).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        };
        // Only the benchmark's broadcasts carry `sent_us` (replies and heartbeats do not).
        let Some(at) = sent_us.find(text.as_bytes()) else {
            continue;
        };
        let received = now_us();
        let digits: String = text[at + 10..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(sent) = digits.parse::<i64>() {
            lock(&shared.latencies_us).push(received - sent);
        }
        shared.delivered.fetch_add(1, Ordering::Relaxed);
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_uuids_and_rooms_spread_subscribers() {
        assert_eq!(user_id(42), "00000000-0000-0000-0000-000000000042");
        assert_eq!(room_of(1234, 100), "room:34");
        assert_eq!(percentile(&[1, 2, 3, 4], 0.5), 2);
        assert_eq!(percentile(&[], 0.99), 0);
    }
}
