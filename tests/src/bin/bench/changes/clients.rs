//! `realtime-bench changes-clients key=value...`: the subscribers of the changes benchmark, run
//! as a child process so that their CPU, memory and descriptors stay out of the server's process
//! figures.
//!
//! Socket `i` belongs to claim group `grp = i % groups` and carries the claims
//! `{"role":"authenticated","sub":"user-<i>","grp":<grp>,"band":<grp % 5>}`. Every socket joins
//! the same topic with one `postgres_changes` binding (INSERT on `public.items`) and counts the
//! pushes it receives, checks each row against its own claims (`band` or `grp` must match) and
//! records two latencies per push: receive time − the row's `sent_us` column (the inserting
//! statement's `clock_timestamp()`, µs) and receive time − `commit_timestamp` (ms precision).
//!
//! Line protocol with the parent (stdout only carries these lines):
//! - `subscribed n=... elapsed_us=...` once every socket is subscribed;
//! - `progress delivered=N` every 10 ms while the count changes (N counts since start);
//! - stdin `reset` → per-socket counts and latencies cleared → `reset`;
//! - stdin `report` → `report total=.. wrong=.. closed=.. samples=.. row_p50_us=.. row_p99_us=..
//!   row_max_us=.. commit_p50_us=.. commit_p99_us=.. counts=c0,c1,...` (one count per socket);
//! - stdin `close` or end of input → exit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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

const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Phoenix closes sockets without a heartbeat for 60 s; realtime-js beats every 25 s.
const HEARTBEAT: Duration = Duration::from_secs(20);
pub const TOPIC: &str = "realtime:bench-items";

/// The claims group of socket `i`, and the band it derives.
pub fn group_of(i: u64, groups: u64) -> (u64, u64) {
    let grp = i % groups.max(1);
    (grp, grp % 5)
}

/// What one socket saw since the last `reset`.
#[derive(Default)]
struct Seen {
    count: u64,
    wrong: u64,
    row_latency_us: Vec<i64>,
    commit_latency_us: Vec<i64>,
}

struct Shared {
    delivered: AtomicU64,
    closed: AtomicU64,
    sockets: Vec<Mutex<Seen>>,
}

struct Args(HashMap<String, String>);

impl Args {
    fn str(&self, key: &str) -> anyhow::Result<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("missing {key}="))
    }

    fn num(&self, key: &str) -> anyhow::Result<u64> {
        self.str(key)?
            .parse()
            .with_context(|| format!("{key}= is not a number"))
    }
}

pub fn main() -> anyhow::Result<()> {
    let mut map = HashMap::new();
    for item in std::env::args().skip(2) {
        let (k, v) = item
            .split_once('=')
            .with_context(|| format!("expected key=value, got {item:?}"))?;
        map.insert(k.to_owned(), v.to_owned());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(&Args(map)))
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let (url, secret) = (args.str("url")?, args.str("secret")?);
    let (subscribers, groups) = (args.num("subscribers")?, args.num("groups")?);
    let concurrency = args.num("concurrency")?.max(1);
    let shared = Arc::new(Shared {
        delivered: AtomicU64::new(0),
        closed: AtomicU64::new(0),
        sockets: (0..subscribers).map(|_| Mutex::new(Seen::default())).collect(),
    });

    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(concurrency as usize));
    let mut joins = JoinSet::new();
    for i in 0..subscribers {
        let permit = permits.clone().acquire_owned().await?;
        let (url, token) = (url.to_owned(), token(secret, i, groups)?);
        joins.spawn(async move {
            let result = open_subscribed(&url, &token).await;
            drop(permit);
            (i, result)
        });
    }
    let mut sockets = Vec::with_capacity(subscribers as usize);
    while let Some(joined) = joins.join_next().await {
        let (i, result) = joined?;
        let ws = result.with_context(|| format!("subscriber {i}"))?;
        sockets.push((i, ws));
    }
    println!(
        "subscribed n={} elapsed_us={}",
        sockets.len(),
        started.elapsed().as_micros()
    );
    for (i, ws) in sockets {
        let (grp, band) = group_of(i, groups);
        tokio::spawn(read_pushes(
            ws,
            i as usize,
            grp as i64,
            band as i64,
            shared.clone(),
        ));
    }
    tokio::spawn(print_progress(shared.clone()));

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match line.trim() {
            "reset" => {
                for seen in &shared.sockets {
                    *lock(seen) = Seen::default();
                }
                println!("reset");
            }
            "report" => println!("{}", report(&shared)),
            "close" => break,
            other => bail!("unknown command {other:?}"),
        }
    }
    Ok(())
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn report(shared: &Shared) -> String {
    let (mut total, mut wrong) = (0, 0);
    let (mut rows, mut commits) = (Vec::new(), Vec::new());
    let mut counts = Vec::with_capacity(shared.sockets.len());
    for seen in &shared.sockets {
        let seen = lock(seen);
        total += seen.count;
        wrong += seen.wrong;
        counts.push(seen.count.to_string());
        rows.extend_from_slice(&seen.row_latency_us);
        commits.extend_from_slice(&seen.commit_latency_us);
    }
    rows.sort_unstable();
    commits.sort_unstable();
    format!(
        "report total={total} wrong={wrong} closed={} samples={} row_p50_us={} row_p99_us={} row_max_us={} \
         commit_p50_us={} commit_p99_us={} counts={}",
        shared.closed.load(Ordering::SeqCst),
        rows.len(),
        percentile(&rows, 0.50),
        percentile(&rows, 0.99),
        rows.last().copied().unwrap_or(0),
        percentile(&commits, 0.50),
        percentile(&commits, 0.99),
        counts.join(",")
    )
}

/// The nearest-rank percentile of sorted values (0 when empty).
pub fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
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

/// An HS256 token with socket `i`'s claims, valid for an hour.
fn token(secret: &str, i: u64, groups: u64) -> anyhow::Result<String> {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
    let (grp, band) = group_of(i, groups);
    let claims = serde_json::json!({
        "role": "authenticated", "sub": format!("user-{i}"), "grp": grp, "band": band, "exp": exp
    });
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )?)
}

/// Opens a vsn 1.0.0 socket, joins [`TOPIC`] with an INSERT binding on `public.items`, and
/// waits for the "Subscribed to PostgreSQL" system push.
async fn open_subscribed(url: &str, token: &str) -> anyhow::Result<Ws> {
    let url = format!("{url}?apikey={token}&vsn=1.0.0");
    // tungstenite zeroes its whole read buffer chunk per read: the 128 KiB default made the
    // subscribers, not the server, the bottleneck.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(&url, Some(config), true)
        .await
        .context("WebSocket handshake")?;
    let join = serde_json::json!({
        "topic": TOPIC, "event": "phx_join", "ref": "1", "join_ref": "1",
        "payload": {
            "config": {
                "broadcast": {"ack": false, "self": false},
                "presence": {"key": "", "enabled": false},
                "postgres_changes": [{"event": "INSERT", "schema": "public", "table": "items"}],
                "private": false
            },
            "access_token": token
        }
    });
    ws.send(Message::text(join.to_string())).await?;
    tokio::time::timeout(JOIN_TIMEOUT, await_subscribed(&mut ws))
        .await
        .context("not subscribed in time")??;
    Ok(ws)
}

async fn await_subscribed(ws: &mut Ws) -> anyhow::Result<()> {
    while let Some(message) = ws.next().await {
        let Message::Text(text) = message? else { continue };
        let value: serde_json::Value = serde_json::from_str(&text)?;
        let payload = &value["payload"];
        match value["event"].as_str() {
            Some("phx_reply") if value["ref"] == "1" && payload["status"] != "ok" => {
                bail!("join refused: {payload}")
            }
            Some("system") if payload["extension"] == "postgres_changes" => {
                if payload["status"] == "ok" && payload["message"] == "Subscribed to PostgreSQL" {
                    return Ok(());
                }
                bail!("subscription failed: {payload}");
            }
            _ => {}
        }
    }
    bail!("socket closed before the subscription was confirmed")
}

/// Counts and checks the pushes of one socket until it closes; heartbeats meanwhile.
async fn read_pushes(mut ws: Ws, index: usize, grp: i64, band: i64, shared: Arc<Shared>) {
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.tick().await;
    let mut beat = 0u64;
    loop {
        let message = tokio::select! {
            m = ws.next() => m,
            _ = heartbeat.tick() => {
                beat += 1;
                let frame = format!(r#"{{"topic":"phoenix","event":"heartbeat","payload":{{}},"ref":"hb{beat}"}}"#);
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
        let Some(push) = parse_push(&text) else { continue };
        let received_us = now_us();
        let mut seen = lock(&shared.sockets[index]);
        seen.count += 1;
        if push.band != band && push.grp != grp {
            seen.wrong += 1;
        }
        seen.row_latency_us.push(received_us - push.sent_us);
        seen.commit_latency_us.push(received_us - push.commit_us);
        drop(seen);
        shared.delivered.fetch_add(1, Ordering::Relaxed);
    }
    shared.closed.fetch_add(1, Ordering::SeqCst);
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The fields of a `postgres_changes` push the benchmark checks.
#[derive(Debug, PartialEq, Eq)]
pub struct Push {
    pub grp: i64,
    pub band: i64,
    pub sent_us: i64,
    pub commit_us: i64,
}

/// The keys a push is scanned for, with their searchers built once: building a substring
/// searcher per push cost the subscribers more than reading the frames.
struct Keys {
    event: Finder<'static>,
    record: Finder<'static>,
    grp: Finder<'static>,
    band: Finder<'static>,
    sent_us: Finder<'static>,
    commit: Finder<'static>,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        event: Finder::new(r#""event":"postgres_changes""#),
        record: Finder::new(r#""record":{"#),
        grp: Finder::new(r#""grp":"#),
        band: Finder::new(r#""band":"#),
        sent_us: Finder::new(r#""sent_us":"#),
        commit: Finder::new(r#""commit_timestamp":""#),
    })
}

/// Reads a vsn 1.0.0 `postgres_changes` push by scanning for its keys (cheap: the client must
/// not be the bottleneck). `None` for any other frame.
pub fn parse_push(text: &str) -> Option<Push> {
    let k = keys();
    k.event.find(text.as_bytes())?;
    let record = after(text, &k.record)?;
    Some(Push {
        grp: int_at(after(record, &k.grp)?)?,
        band: int_at(after(record, &k.band)?)?,
        sent_us: int_at(after(record, &k.sent_us)?)?,
        commit_us: timestamp_us(string_at(after(text, &k.commit)?)?)?,
    })
}

/// The text right after the first occurrence of `key` (keys are ASCII, so the cut is on a
/// character boundary).
fn after<'a>(text: &'a str, key: &Finder<'_>) -> Option<&'a str> {
    let at = key.find(text.as_bytes())? + key.needle().len();
    text.get(at..)
}

/// The integer at the start of `text`, quoted or not (int8 may come as a JSON string).
fn int_at(text: &str) -> Option<i64> {
    let rest = text.trim_start_matches('"');
    let end = rest
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(rest.len(), |(i, _)| i);
    rest[..end].parse().ok()
}

/// The string at the start of `text`, up to its closing quote.
fn string_at(text: &str) -> Option<&str> {
    Some(&text[..text.find('"')?])
}

/// `YYYY-MM-DDTHH:MM:SS[.fff...]Z` (UTC) → µs since the epoch.
pub fn timestamp_us(text: &str) -> Option<i64> {
    let (date, time) = text.trim_end_matches('Z').split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    let digits = fraction.get(..fraction.len().min(6))?;
    let micros = match digits.len() {
        0 => 0,
        n => digits.parse::<i64>().ok()? * 10i64.pow(6 - n as u32),
    };
    let days = days_from_civil(y, m, day);
    Some(((days * 24 + h) * 60 + min) * 60_000_000 + s * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_epoch_microseconds() {
        assert_eq!(timestamp_us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(timestamp_us("1970-01-02T00:00:01.5Z"), Some(86_401_500_000));
        // date -d 2024-02-29T12:34:56Z +%s = 1709210096
        assert_eq!(
            timestamp_us("2024-02-29T12:34:56.123Z"),
            Some(1_709_210_096_123_000)
        );
        assert_eq!(timestamp_us("garbage"), None);
    }

    #[test]
    fn pushes_are_read_and_other_frames_ignored() {
        let push = r#"{"event":"postgres_changes","payload":{"data":{"columns":[{"name":"grp","type":"int4"}],"commit_timestamp":"1970-01-01T00:00:01.000Z","errors":null,"record":{"id":7,"grp":-1,"band":3,"sent_us":"1000500","body":"x"},"schema":"public","table":"items","type":"INSERT"},"ids":[1]},"ref":null,"topic":"realtime:t"}"#;
        assert_eq!(
            parse_push(push),
            Some(Push {
                grp: -1,
                band: 3,
                sent_us: 1_000_500,
                commit_us: 1_000_000
            })
        );
        assert_eq!(parse_push(r#"{"event":"phx_reply","payload":{}}"#), None);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.5), 50);
        assert_eq!(percentile(&values, 0.99), 99);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
