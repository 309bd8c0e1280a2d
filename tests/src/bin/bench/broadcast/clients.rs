//! `realtime-bench broadcast-clients <mode> key=value...`: the load generator of the broadcast
//! benchmark, run as a child process so that its memory and file descriptors stay out of the
//! server's process.
//!
//! It talks to the parent over a line protocol: one `key=value ...` line on stdout per step
//! (nothing else goes to stdout), commands on stdin. Modes:
//! - `idle`: opens and joins `count` sockets with `concurrency` in flight, prints
//!   `connected ...`, holds them until stdin says `close` (or closes), prints `closed`.
//! - `fanout`: joins `subscribers` sockets and one publisher to one topic, then for each round
//!   prints `publishing`, sends `messages` broadcasts of `payload` bytes and prints `round ...`
//!   once every subscriber has every message (or the round timed out). With
//!   `spread=<url>,<url>...` the subscribers are spread evenly over `url` and those (the nodes
//!   of a cluster); the publisher stays on `url`.
//! - `hold`: opens and joins `count` sockets to `topic`, prints `connected ...`, then reads on
//!   every socket and prints `received total=<k × count> last_us=<µs since the Unix epoch>`
//!   each time every socket has received `k` broadcasts (the `scale` benchmark sends one at a
//!   time), until stdin says `close`.
//!
//! `wire=` picks the protocol (see [`super::wire`]): realtime's own (`phoenix`, the default, with
//! `vsn=`) or a peer server's, for the `peers` benchmark.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::wire::{Deliveries, Wire};
use realtime_tests::proc_stats;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const JOIN_TIMEOUT: Duration = Duration::from_secs(20);
// Long enough for the slowest peer of the `peers` benchmark (ws, Socket.IO: tens of thousands of
// deliveries per second, a million per round).
const ROUND_TIMEOUT: Duration = Duration::from_secs(300);

/// The two Phoenix serializers: text JSON objects, or JSON arrays plus binary broadcast frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vsn {
    V1,
    V2,
}

impl Vsn {
    pub fn parse(text: &str) -> anyhow::Result<Vsn> {
        match text {
            "1.0.0" => Ok(Vsn::V1),
            "2.0.0" => Ok(Vsn::V2),
            other => bail!("vsn must be 1.0.0 or 2.0.0, got {other:?}"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Vsn::V1 => "1.0.0",
            Vsn::V2 => "2.0.0",
        }
    }
}

/// `key=value` arguments.
struct Args(HashMap<String, String>);

impl Args {
    fn parse(items: &[String]) -> anyhow::Result<Args> {
        let mut map = HashMap::new();
        for item in items {
            let (k, v) = item
                .split_once('=')
                .with_context(|| format!("expected key=value, got {item:?}"))?;
            map.insert(k.to_owned(), v.to_owned());
        }
        Ok(Args(map))
    }

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
    let argv: Vec<String> = std::env::args().skip(2).collect();
    let (mode, rest) = argv
        .split_first()
        .context("usage: broadcast-clients <idle|fanout> key=value...")?;
    let args = Args::parse(rest)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match mode.as_str() {
        "idle" => runtime.block_on(idle(&args)),
        "fanout" => runtime.block_on(fanout(&args)),
        "hold" => runtime.block_on(hold(&args)),
        other => bail!("unknown broadcast-clients mode {other:?}"),
    }
}

/// The wire protocol and the socket URL: for realtime with the token and serializer version, as
/// realtime-js builds it; a peer's as given.
fn wire_and_url(args: &Args) -> anyhow::Result<(Wire, String)> {
    let vsn = Vsn::parse(args.str("vsn")?)?;
    let wire = Wire::parse(args.str("wire").unwrap_or("phoenix"), vsn)?;
    let url = match wire {
        Wire::Phoenix(_) => format!(
            "{}?apikey={}&vsn={}",
            args.str("url")?,
            args.str("token")?,
            vsn.as_str()
        ),
        _ => args.str("url")?.to_owned(),
    };
    Ok((wire, url))
}

/// Opens a socket and subscribes to `topic`; fails unless the subscription is acknowledged.
pub(super) async fn open_joined(url: &str, wire: Wire, topic: &str) -> anyhow::Result<Ws> {
    open(url, wire, Some(topic)).await
}

/// Opens a socket and, given a topic, subscribes to it; fails unless the subscription is
/// acknowledged (for realtime: the join reply is ok).
async fn open(url: &str, wire: Wire, topic: Option<&str>) -> anyhow::Result<Ws> {
    // Small buffers: the client side should not dominate the machine's memory.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .context("WebSocket handshake")?;
    if let Some(greeting) = wire.greeting() {
        ws.send(greeting).await?;
        tokio::time::timeout(JOIN_TIMEOUT, await_frame(&mut ws, |m| Ok(wire.ends_greeting(m))))
            .await
            .context("no greeting in time")??;
    }
    if let Some(topic) = topic {
        ws.send(wire.subscribe(topic)).await?;
        tokio::time::timeout(JOIN_TIMEOUT, await_frame(&mut ws, |m| wire.acknowledges(m)))
            .await
            .context("no join reply in time")??;
    }
    Ok(ws)
}

/// Reads frames until `done` holds for one (or fails).
async fn await_frame(ws: &mut Ws, done: impl Fn(&Message) -> anyhow::Result<bool>) -> anyhow::Result<()> {
    while let Some(message) = ws.next().await {
        if done(&message?)? {
            return Ok(());
        }
    }
    bail!("socket closed before the reply")
}

/// realtime-js's `phx_join` of `topic` for a broadcast-only channel.
pub fn join_frame(vsn: Vsn, topic: &str) -> String {
    let payload = serde_json::json!({
        "config": {
            "broadcast": {"ack": false, "self": false},
            "presence": {"key": "", "enabled": false},
            "postgres_changes": [],
            "private": false
        },
        "version": "realtime-bench"
    });
    let topic = format!("realtime:{topic}");
    match vsn {
        Vsn::V1 => serde_json::json!({
            "topic": topic, "event": "phx_join", "payload": payload, "ref": "1", "join_ref": "1"
        })
        .to_string(),
        Vsn::V2 => serde_json::json!(["1", "1", topic, "phx_join", payload]).to_string(),
    }
}

/// Opens `count` joined sockets with at most `concurrency` handshakes in flight. Returns the
/// sockets, the failures and the first failure's text.
async fn open_many(
    url: &str,
    wire: Wire,
    count: u64,
    concurrency: u64,
    topic_of: impl Fn(u64) -> Option<String>,
) -> (Vec<Ws>, u64, Option<String>) {
    let permits = Arc::new(Semaphore::new(concurrency.max(1) as usize));
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let url = url.to_owned();
        let topic = topic_of(i);
        tasks.spawn(async move {
            let result = open(&url, wire, topic.as_deref()).await;
            drop(permit);
            result
        });
    }
    let mut sockets = Vec::with_capacity(count as usize);
    let (mut failed, mut first_error) = (0, None);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(ws)) => sockets.push(ws),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    (sockets, failed, first_error)
}

fn report_failure(failed: u64, first_error: &Option<String>) {
    if let Some(e) = first_error {
        eprintln!("broadcast-clients: {failed} sockets failed; first: {e}");
    }
}

async fn idle(args: &Args) -> anyhow::Result<()> {
    let (wire, url) = wire_and_url(args)?;
    let (count, concurrency, topics) = (
        args.num("count")?,
        args.num("concurrency")?,
        args.num("topics")?.max(1),
    );
    // `join=0`: bare sockets, to tell the cost of a connection from the cost of a join.
    let join = args.0.get("join").is_none_or(|v| v != "0");
    let started = Instant::now();
    let (sockets, failed, first_error) = open_many(&url, wire, count, concurrency, |i| {
        join.then(|| format!("idle-{}", i % topics))
    })
    .await;
    let elapsed = started.elapsed();
    report_failure(failed, &first_error);
    println!(
        "connected ok={} failed={failed} elapsed_us={} client_rss={}",
        sockets.len(),
        elapsed.as_micros(),
        proc_stats::rss_bytes().unwrap_or(0)
    );
    // Hold the sockets until told otherwise; the parent measures the server meanwhile.
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim() == "close" {
            break;
        }
    }
    drop(sockets);
    println!("closed");
    Ok(())
}

/// Shared by the readers of the hold mode.
struct Arrivals {
    received: AtomicU64,
    /// The latest receive time (µs since the Unix epoch) of any socket.
    last_us: AtomicU64,
    sockets: u64,
    rounds: tokio::sync::mpsc::UnboundedSender<(u64, u64)>,
}

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn hold(args: &Args) -> anyhow::Result<()> {
    let (wire, url) = wire_and_url(args)?;
    let (count, concurrency) = (args.num("count")?, args.num("concurrency")?);
    let topic = args.str("topic")?.to_owned();
    let started = Instant::now();
    let (sockets, failed, first_error) =
        open_many(&url, wire, count, concurrency, |_| Some(topic.clone())).await;
    report_failure(failed, &first_error);
    println!(
        "connected ok={} failed={failed} elapsed_us={} client_rss={}",
        sockets.len(),
        started.elapsed().as_micros(),
        proc_stats::rss_bytes().unwrap_or(0)
    );
    let (rounds, mut completed) = tokio::sync::mpsc::unbounded_channel();
    let arrivals = Arc::new(Arrivals {
        received: AtomicU64::new(0),
        last_us: AtomicU64::new(0),
        sockets: sockets.len() as u64,
        rounds,
    });
    let mut readers = JoinSet::new();
    for mut ws in sockets {
        let arrivals = arrivals.clone();
        readers.spawn(async move {
            let mut deliveries = Deliveries::new(wire);
            while let Some(Ok(message)) = ws.next().await {
                let Ok(received) = deliveries.receive(&message) else {
                    break;
                };
                if received.deliveries == 0 {
                    continue;
                }
                // The time is stored before the count moves, so the socket completing a round
                // sees every earlier arrival's time.
                arrivals.last_us.fetch_max(unix_us(), Ordering::SeqCst);
                let total =
                    arrivals.received.fetch_add(received.deliveries, Ordering::SeqCst) + received.deliveries;
                if total.is_multiple_of(arrivals.sockets) {
                    let _ = arrivals
                        .rounds
                        .send((total, arrivals.last_us.load(Ordering::SeqCst)));
                }
            }
        });
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                Some(line) if line.trim() != "close" => {}
                _ => break,
            },
            Some((total, last_us)) = completed.recv() => println!("received total={total} last_us={last_us}"),
        }
    }
    readers.abort_all();
    println!("closed");
    Ok(())
}

/// Shared by the subscriber readers of the fanout mode.
struct Tally {
    delivered: AtomicU64,
    closed: AtomicU64,
    /// The delivery count at which the current round is complete.
    target: AtomicU64,
    done: Notify,
}

async fn fanout(args: &Args) -> anyhow::Result<()> {
    let (wire, url) = wire_and_url(args)?;
    let subscribers = args.num("subscribers")?;
    let (messages, rounds, payload_len) = (args.num("messages")?, args.num("rounds")?, args.num("payload")?);
    let concurrency = args.num("concurrency")?;
    let topic = "fanout";

    let started = Instant::now();
    let mut urls = vec![url.clone()];
    if let Ok(spread) = args.str("spread") {
        let query = url.split_once('?').map_or("", |(_, q)| q);
        urls.extend(spread.split(',').map(|base| format!("{base}?{query}")));
    }
    let (mut sockets, mut failed, mut first_error) = (Vec::new(), 0, None);
    for (i, url) in urls.iter().enumerate() {
        let n = urls.len() as u64;
        let count = subscribers / n + u64::from((i as u64) < subscribers % n);
        let (opened, fails, error) =
            open_many(url, wire, count, concurrency, |_| Some(topic.to_owned())).await;
        sockets.extend(opened);
        failed += fails;
        first_error = first_error.or(error);
    }
    report_failure(failed, &first_error);
    if failed > 0 {
        bail!("{failed} of {subscribers} subscribers could not join");
    }
    let mut publisher = open_joined(&url, wire, topic).await.context("publisher")?;
    println!(
        "subscribed n={} elapsed_us={}",
        sockets.len(),
        started.elapsed().as_micros()
    );

    let tally = Arc::new(Tally {
        delivered: AtomicU64::new(0),
        closed: AtomicU64::new(0),
        target: AtomicU64::new(u64::MAX),
        done: Notify::new(),
    });
    for ws in sockets {
        tokio::spawn(read_deliveries(ws, wire, tally.clone()));
    }

    let mut reference = 1u64;
    for round in 1..=rounds {
        // Encoded before the clock starts: client-side encoding is not the server's time.
        let frames: Vec<Message> = (0..messages)
            .map(|seq| {
                reference += 1;
                wire.publish(topic, &reference.to_string(), seq, payload_len as usize)
            })
            .collect();
        let before = tally.delivered.load(Ordering::Relaxed);
        let expected = subscribers * messages;
        tally.target.store(before + expected, Ordering::SeqCst);
        let cpu_before = proc_stats::cpu_time();
        println!("publishing round={round}");
        let start = Instant::now();
        for frame in frames {
            publisher.feed(frame).await?;
        }
        publisher.flush().await?;
        let sent = start.elapsed();
        let complete = tokio::time::timeout(ROUND_TIMEOUT, tally.done.notified())
            .await
            .is_ok();
        let elapsed = start.elapsed();
        let delivered = tally.delivered.load(Ordering::SeqCst) - before;
        let client_cpu = proc_stats::cpu_time().saturating_sub(cpu_before);
        println!(
            "round n={round} delivered={delivered} expected={expected} complete={complete} elapsed_us={} \
             send_us={} closed={} client_cpu_us={}",
            elapsed.as_micros(),
            sent.as_micros(),
            tally.closed.load(Ordering::SeqCst),
            client_cpu.as_micros()
        );
        if !complete {
            break;
        }
    }
    println!("done");
    Ok(())
}

/// Counts deliveries on one subscriber socket until it closes, answering keep-alive pings.
async fn read_deliveries(mut ws: Ws, wire: Wire, tally: Arc<Tally>) {
    let mut deliveries = Deliveries::new(wire);
    while let Some(Ok(message)) = ws.next().await {
        let received = match deliveries.receive(&message) {
            Ok(received) => received,
            Err(e) => {
                eprintln!("broadcast-clients: subscriber stops: {e:#}");
                break;
            }
        };
        if let Some(reply) = received.reply
            && ws.send(reply).await.is_err()
        {
            break;
        }
        if received.deliveries > 0 {
            // One frame may carry several deliveries (NATS): notify when the count crosses.
            let before = tally.delivered.fetch_add(received.deliveries, Ordering::SeqCst);
            let target = tally.target.load(Ordering::SeqCst);
            if before < target && before + received.deliveries >= target {
                tally.done.notify_one();
            }
        }
    }
    tally.closed.fetch_add(1, Ordering::SeqCst);
}

/// A JSON user payload of exactly `len` bytes (at least the fixed part): `{"seq":N,"pad":"xx…"}`.
pub fn user_payload(seq: u64, len: usize) -> String {
    let head = format!("{{\"seq\":{seq},\"pad\":\"");
    let pad = len.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// One broadcast push as realtime-js sends it: vsn 2.0.0 binary kind 3 (JSON-encoded user
/// payload), vsn 1.0.0 a JSON text frame.
pub fn broadcast_frame(vsn: Vsn, topic: &str, reference: &str, seq: u64, len: usize) -> Message {
    let topic = format!("realtime:{topic}");
    let event = "bench";
    let payload = user_payload(seq, len);
    match vsn {
        Vsn::V2 => {
            let join_ref = "1";
            let mut frame =
                Vec::with_capacity(7 + join_ref.len() + reference.len() + topic.len() + payload.len());
            // kind 3, join_ref, ref, topic, event, metadata lengths, encoding 1 (JSON).
            frame.push(3);
            for len in [join_ref.len(), reference.len(), topic.len(), event.len()] {
                frame.push(u8::try_from(len).unwrap_or(u8::MAX));
            }
            frame.extend_from_slice(&[0, 1]);
            for part in [join_ref, reference, topic.as_str(), event, payload.as_str()] {
                frame.extend_from_slice(part.as_bytes());
            }
            Message::Binary(Bytes::from(frame))
        }
        Vsn::V1 => {
            let payload: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
            Message::text(
                serde_json::json!({
                    "topic": topic, "event": "broadcast", "ref": reference, "join_ref": "1",
                    "payload": {"type": "broadcast", "event": event, "payload": payload}
                })
                .to_string(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_requested_length_and_is_json() {
        for seq in [0, 7, 123_456] {
            let p = user_payload(seq, 100);
            assert_eq!(p.len(), 100);
            let v: serde_json::Value = serde_json::from_str(&p).expect("valid JSON");
            assert_eq!(v["seq"], seq);
        }
    }

    #[test]
    fn kind_3_frame_matches_the_documented_layout() {
        let Message::Binary(frame) = broadcast_frame(Vsn::V2, "t", "12", 5, 30) else {
            panic!("expected a binary frame")
        };
        let topic = b"realtime:t";
        assert_eq!(&frame[..7], &[3, 1, 2, topic.len() as u8, 5, 0, 1]);
        let mut rest = &frame[7..];
        for part in [&b"1"[..], b"12", topic, b"bench"] {
            assert_eq!(&rest[..part.len()], part);
            rest = &rest[part.len()..];
        }
        assert_eq!(rest, user_payload(5, 30).as_bytes());
    }
}
