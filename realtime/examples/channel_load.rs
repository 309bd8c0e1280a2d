//! Load driver for the channel server: connect rate, memory per idle connection and broadcast
//! fan-out throughput, measured against a server in a child process (so its memory is its own).
//!
//! ```text
//! cargo run --release -p realtime --example channel_load -- [idle=5000] [subscribers=2000] [messages=200]
//! ```
//! The child is this same binary started with `server`; it prints its port and serves with
//! limits raised for the load.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "load-test-secret-with-enough-length";

fn token() -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"role": "anon", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("server") {
        return run_server();
    }
    let arg = |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (idle, subscribers, messages) = (arg(1, 5000), arg(2, 2000), arg(3, 200));

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("server")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let pid = child.id();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = format!("ws://127.0.0.1:{port}/socket/websocket?apikey={}&vsn=2.0.0", token());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let base = rss_kb(pid);

        // Connect rate and idle memory: `idle` sockets, each joined to one channel.
        let started = Instant::now();
        let sockets = connect_many(&url, idle, 64).await;
        let connect_secs = started.elapsed().as_secs_f64();
        let mut sockets = join_all(sockets, |i| format!("realtime:idle-{}", i % 100)).await;
        let at_once_kb = rss_kb(pid);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle_kb = rss_kb(pid);
        println!(
            "idle memory right after the last join: {:.0} bytes per connection",
            (at_once_kb - base) as f64 * 1024.0 / idle as f64
        );
        println!(
            "connect: {idle} sockets in {connect_secs:.2} s = {:.0} connects/s (each with a WebSocket handshake and JWT check)",
            idle as f64 / connect_secs
        );
        println!(
            "idle memory: {} KB for {idle} joined sockets = {:.0} bytes per connection (server RSS delta)",
            idle_kb - base,
            (idle_kb - base) as f64 * 1024.0 / idle as f64
        );
        for ws in &mut sockets {
            let _ = ws.close(None).await;
        }
        drop(sockets);
        tokio::time::sleep(Duration::from_millis(500)).await;

        // Fan-out: `subscribers` sockets on one channel, one sender, `messages` of ~100 bytes.
        let subs = connect_many(&url, subscribers, 64).await;
        let subs = join_all(subs, |_| "realtime:fanout".to_owned()).await;
        let (mut sender, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        sender
            .send(Message::Text(r#"["s","s","realtime:fanout","phx_join",{"config":{}}]"#.into()))
            .await
            .unwrap();
        sender.next().await.unwrap().unwrap();

        let expected = subscribers * messages;
        let received = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(Notify::new());
        for mut ws in subs {
            let (received, done) = (received.clone(), done.clone());
            tokio::spawn(async move {
                let mut mine = 0;
                while mine < messages {
                    match ws.next().await {
                        Some(Ok(Message::Binary(_))) => {
                            mine += 1;
                            if received.fetch_add(1, Ordering::Relaxed) + 1 == expected {
                                done.notify_one();
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
                ws
            });
        }
        let payload = format!(r#"{{"text":"{}"}}"#, "x".repeat(88));
        let cpu_before = cpu_ticks(pid);
        let started = Instant::now();
        for i in 0..messages {
            let mut frame = vec![3u8, 1, 1, 15, 3, 0, 1];
            frame.extend_from_slice(b"ssrealtime:fanoutmsg");
            frame.extend_from_slice(payload.as_bytes());
            let _ = i;
            sender.send(Message::Binary(frame.into())).await.unwrap();
        }
        let finished = tokio::time::timeout(Duration::from_secs(60), done.notified()).await.is_ok();
        let secs = started.elapsed().as_secs_f64();
        let got = received.load(Ordering::Relaxed);
        let cpu = (cpu_ticks(pid) - cpu_before) as f64 / 100.0;
        println!(
            "fan-out: {got}/{expected} deliveries of {}-byte payloads to {subscribers} subscribers in {secs:.3} s = {:.0} deliveries/s{} (server CPU {cpu:.2} s = {:.2} µs per delivery)",
            payload.len(),
            got as f64 / secs,
            if finished { "" } else { " (TIMED OUT)" },
            cpu * 1e6 / got.max(1) as f64,
        );
    });
    let _ = child.kill();
    let _ = child.wait();
}

async fn connect_many(
    url: &str,
    n: usize,
    parallel: usize,
) -> Vec<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let (url, next) = (url.to_owned(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let (ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
                mine.push(ws);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

async fn join_all<S>(sockets: Vec<S>, topic: impl Fn(usize) -> String) -> Vec<S>
where
    S: futures::Sink<Message>
        + futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
    <S as futures::Sink<Message>>::Error: std::fmt::Debug,
{
    let mut out = Vec::new();
    for (i, mut ws) in sockets.into_iter().enumerate() {
        let join = format!(r#"["1","1","{}","phx_join",{{"config":{{}}}}]"#, topic(i));
        ws.send(Message::Text(join.into())).await.unwrap();
        out.push(ws);
    }
    for ws in &mut out {
        loop {
            if let Some(Ok(Message::Text(t))) = ws.next().await
                && t.contains("phx_reply")
            {
                break;
            }
        }
    }
    out
}

fn rss_kb(pid: u32) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn cpu_ticks(pid: u32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    fields[11].parse::<i64>().unwrap() + fields[12].parse::<i64>().unwrap()
}

fn run_server() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut config = realtime::config::Config::default();
        config.server.auth.jwt_secret = Some(realtime::config::Secret::new(SECRET));
        let limits = &mut config.server.limits;
        limits.max_connections = 50_000;
        limits.max_joins_per_second = 1_000_000;
        limits.max_events_per_second = 1_000_000;
        limits.max_channels_per_client = 100;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        let shutdown = tokio_util::sync::CancellationToken::new();
        realtime::run_service(
            Arc::new(config),
            listener,
            None,
            realtime::bus::LocalBus::new(65536),
            shutdown,
        )
        .await
        .unwrap();
    });
}
