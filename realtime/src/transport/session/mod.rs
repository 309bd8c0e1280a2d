//! One client socket: reads its frames, runs the channel protocol, writes its outbound queue.
//!
//! A session is one task that owns everything about its socket: the joined channels (with their
//! tokens and access), the timers (delayed error replies, token expiry, idle timeout) and the
//! client's rate counters. Other tasks reach the client only through its [`Outbound`] queue.
//! Each client event is handled in its own file; the loop here routes frames to them.
//!
//! Close codes (documented in `docs/protocol.md`): 1001 when the server shuts down, after the
//! join rate limit and after 60 s without any frame; 4008 when the client does not read fast
//! enough and its queue overflowed (in frames or in bytes); 4009 when a write to the client
//! made no progress for `write_stall_timeout`.

mod access_token;
mod broadcast;
mod channel;
mod heartbeat;
mod join;
mod leave;
mod postgres_changes;
mod presence;
mod snapshot;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::Instrument;

use self::channel::Channel;
use super::ws::{Connection, Message, WsError};
use crate::limits::{OwnedConnectionSlot, SecondCounter, WindowCounter};
use crate::node::Node;
use crate::protocol::outbound::{Outbound, SLOW_CONSUMER_CLOSE, Taken, WRITE_STALLED_CLOSE};
use crate::protocol::phoenix::{self, Inbound, Status, Vsn};
use crate::protocol::ws_frame::{self, OpCode};
use crate::telemetry::TARGET;

/// How long a closing socket may take to send its close frame. A slow consumer's frame waits
/// behind the bytes it has not read yet: a client that stalled for a few seconds still learns
/// why it was closed (4008); one that never reads costs this task at most this long.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a session ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Close {
    /// The node is shutting down.
    Shutdown,
    /// The outbound queue overflowed.
    SlowConsumer,
    /// A write made no progress for `write_stall_timeout`.
    WriteStalled,
    /// No frame arrived within the idle timeout.
    Idle,
    /// The node's join rate limit was hit (Supabase disconnects too).
    JoinRate,
    /// The client sent a close frame: it is answered.
    ClientClosed,
    /// The client broke the WebSocket protocol (close code 1002, or 1009 for a message over
    /// the frame size limit).
    Protocol(u16),
    /// The connection failed or the client vanished.
    Gone,
}

impl Close {
    /// The close frame sent to the client, if any.
    pub(crate) fn frame(self) -> Option<(u16, &'static str)> {
        match self {
            Close::Shutdown => Some((1001, "server shutting down")),
            Close::SlowConsumer => Some((SLOW_CONSUMER_CLOSE, "slow consumer")),
            Close::WriteStalled => Some((WRITE_STALLED_CLOSE, "write stalled")),
            Close::Idle => Some((1001, "idle timeout")),
            Close::JoinRate => Some((1001, "too many joins per second")),
            Close::ClientClosed => Some((1000, "")),
            Close::Protocol(1009) => Some((1009, "message too large")),
            Close::Protocol(code) => Some((code, "protocol error")),
            Close::Gone => None,
        }
    }

    /// The reason's name in traces.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Close::Shutdown => "shutdown",
            Close::SlowConsumer => "slow_consumer",
            Close::WriteStalled => "write_stalled",
            Close::Idle => "idle",
            Close::JoinRate => "join_rate",
            Close::ClientClosed => "client_closed",
            Close::Protocol(_) => "protocol_error",
            Close::Gone => "gone",
        }
    }
}

/// A frame held back until `at` (a join error waiting out the channel error backoff), then
/// maybe a close of the socket.
#[derive(Debug)]
struct Delayed {
    at: Instant,
    frame: String,
    then: Option<Close>,
}

pub(crate) struct Session {
    node: Arc<Node>,
    vsn: Vsn,
    outbound: Arc<Outbound>,
    /// The token the socket connected with: the default token of its channels.
    api_key: Arc<str>,
    /// Joined channels (a short list: lookups scan it). Each channel's token expiry is a
    /// deadline of the session's one timer, like the idle timeout and delayed frames.
    channels: Vec<Channel>,
    delayed: Vec<Delayed>,
    last_activity: Instant,
    client_events: WindowCounter,
    /// Joins and `access_token` messages of this second (per-socket limits).
    joins: SecondCounter,
    access_tokens: SecondCounter,
    /// The client's address (behind trusted proxies, the one they name).
    ip: std::net::IpAddr,
    pending_close: Option<Close>,
    /// The connection slot, with the budgets of the API key's subject and of the address.
    slot: OwnedConnectionSlot,
}

impl Session {
    pub(crate) fn new(
        node: Arc<Node>,
        vsn: Vsn,
        api_key: Arc<str>,
        ip: std::net::IpAddr,
        slot: OwnedConnectionSlot,
    ) -> Self {
        let limits = &node.config.server.limits;
        Session {
            outbound: Arc::new(Outbound::bounded(
                limits.outbound_queue_frames,
                limits.outbound_queue_bytes,
            )),
            client_events: WindowCounter::per_second(limits.max_events_per_second),
            joins: SecondCounter::default(),
            access_tokens: SecondCounter::default(),
            ip,
            vsn,
            api_key,
            channels: Vec::new(),
            delayed: Vec::new(),
            last_activity: Instant::now(),
            pending_close: None,
            slot,
            node,
        }
    }

    /// Runs the socket until it closes.
    ///
    /// Not an `async fn`: one stores its arguments twice in its future (once as arguments, once
    /// as the body's locals), and this future is what every idle socket holds. The block below
    /// works on the captured `self` and `socket` in place.
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn run<S: AsyncRead + AsyncWrite + Unpin>(
        mut self,
        mut socket: Connection<S>,
    ) -> impl Future<Output = ()> {
        async move {
            if !self.node.sockets.add(&self.outbound) {
                return Box::pin(self.finish(socket, Close::Shutdown, VecDeque::new())).await;
            }
            let mut armed = self.next_deadline();
            let sleep = tokio::time::sleep_until(armed);
            tokio::pin!(sleep);
            let (close, unfinished) = loop {
                // Replies and fan-out wait in one queue: write it out before reading more.
                if let Err(closing) = self.flush(&mut socket).await {
                    break closing;
                }
                if let Some(close) = self.pending_close.take() {
                    break (close, VecDeque::new());
                }
                // A socket that will be closed once a delayed reply is out reads nothing more: a
                // flood would only pile up work for a client that is leaving.
                let reading = !self.delayed.iter().any(|d| d.then.is_some());
                let outbound = &self.outbound;
                let event = tokio::select! {
                    biased;
                    // The client's queue first (it also carries shutdown), then its frames, then
                    // timers.
                    _ = outbound.wait() => continue,
                    frame = socket.recv(), if reading => Ok(frame),
                    _ = &mut sleep => Err(Instant::now()),
                };
                match event {
                    Ok(frame) => match frame {
                        Ok(Message::Close(_)) => break (Close::ClientClosed, VecDeque::new()),
                        Ok(message) => {
                            self.last_activity = Instant::now();
                            Box::pin(self.on_frame(message)).await;
                        }
                        Err(WsError::Protocol(error)) => {
                            break (Close::Protocol(error.close_code()), VecDeque::new());
                        }
                        Err(WsError::Io(_) | WsError::Eof) => break (Close::Gone, VecDeque::new()),
                    },
                    Err(now) => {
                        if let Some(close) = self.on_timers(now) {
                            break (close, VecDeque::new());
                        }
                        armed = self.next_deadline();
                        sleep.as_mut().reset(armed);
                    }
                }
                let next = self.next_deadline();
                if next < armed {
                    armed = next;
                    sleep.as_mut().reset(armed);
                }
            };
            // Boxed: closing is rare, and its write would otherwise size every idle socket's task.
            Box::pin(self.finish(socket, close, unfinished)).await;
        }
    }

    /// Writes every queued frame; returns why the socket must close if it must, with the
    /// frames of a write cut short (they are not kept in the session: an idle socket holds
    /// none).
    async fn flush<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        socket: &mut Connection<S>,
    ) -> Result<(), (Close, VecDeque<Bytes>)> {
        loop {
            let mut writing = match self.outbound.take() {
                Taken::Frames(frames) if frames.is_empty() => return Ok(()),
                Taken::Frames(frames) => frames,
                Taken::Overflowed => return Err((Close::SlowConsumer, VecDeque::new())),
                Taken::Closed => return Err((Close::Gone, VecDeque::new())),
                Taken::ShutDown => return Err((Close::Shutdown, VecDeque::new())),
            };
            // Boxed, like frame handling below: the write future is only alive while writing,
            // so an idle socket's task does not carry its size.
            if let Err(close) = Box::pin(self.write(socket, &mut writing)).await {
                return Err((close, writing));
            }
        }
    }

    async fn write<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        socket: &mut Connection<S>,
        writing: &mut VecDeque<Bytes>,
    ) -> Result<(), Close> {
        let (outbound, node) = (&self.outbound, &self.node);
        let stall = node.config.server.limits.write_stall_timeout;
        // A client that stops reading blocks this write; keep watching for the queue
        // overflowing behind it and for shutdown, so neither waits on the client.
        let overflow = async {
            loop {
                outbound.wait().await;
                if outbound.is_overflowed() {
                    return;
                }
            }
        };
        tokio::select! {
            biased;
            _ = node.shutdown.cancelled() => Err(Close::Shutdown),
            _ = overflow => Err(Close::SlowConsumer),
            written = socket.send_all_within(writing, stall) => written.map_err(|e| match e.kind() {
                std::io::ErrorKind::TimedOut => Close::WriteStalled,
                _ => Close::Gone,
            }),
        }
    }

    async fn on_frame(&mut self, frame: Message) {
        let decoded = match frame {
            Message::Text(text) => match std::str::from_utf8(&text) {
                Ok(text) => phoenix::decode_text(self.vsn, text),
                Err(_) => return tracing::debug!("dropped a text frame that is not UTF-8"),
            },
            Message::Binary(data) => phoenix::decode_binary_frame(self.vsn, data),
            Message::Ping(data) => {
                let _ = self.outbound.push(ws_frame::encode(OpCode::Pong, &data));
                return;
            }
            Message::Close(_) => return,
        };
        match decoded {
            Ok(msg) => self.on_message(msg).await,
            // Malformed frames are dropped and the connection kept, as Phoenix does.
            Err(error) => tracing::debug!(%error, "dropped a malformed client frame"),
        }
    }

    async fn on_message(&mut self, msg: Inbound) {
        if msg.topic == "phoenix" && msg.event == "heartbeat" {
            return self.heartbeat(&msg);
        }
        if msg.event == "phx_join" {
            let span = tracing::info_span!(
                target: TARGET,
                "join",
                "channel.topic" = %msg.topic,
                outcome = tracing::field::Empty,
                reason = tracing::field::Empty,
            );
            return self.join(msg).instrument(span).await;
        }
        let joined = self
            .channel(&msg.topic)
            .is_some_and(|ch| msg.join_ref.is_none() || msg.join_ref.as_deref() == ch.join_ref.as_deref());
        if !joined {
            return self.reply(&msg, Status::Error, r#"{"reason":"unmatched topic"}"#);
        }
        match msg.event.as_str() {
            "phx_leave" => self.leave(&msg),
            "access_token" => self.access_token(&msg).await,
            "broadcast" => {
                if self.count_client_event(&msg.topic) {
                    self.broadcast(msg);
                }
            }
            "presence" => {
                if self.count_client_event(&msg.topic) {
                    self.presence(&msg);
                }
            }
            // Unknown events on a joined channel are ignored but count toward the rate.
            _ => {
                self.count_client_event(&msg.topic);
            }
        }
    }

    /// Counts a client event; over `max_events_per_second` the channel is shut down.
    fn count_client_event(&mut self, topic: &str) -> bool {
        if self.client_events.hit(Instant::now()) {
            return true;
        }
        self.shutdown_channel(topic, crate::limits::TOO_MANY_MESSAGES);
        false
    }

    fn on_timers(&mut self, now: Instant) -> Option<Close> {
        if self.delayed.iter().any(|d| d.at <= now) {
            let (due, later): (Vec<Delayed>, Vec<Delayed>) = std::mem::take(&mut self.delayed)
                .into_iter()
                .partition(|d| d.at <= now);
            self.delayed = later;
            for Delayed { frame, then, .. } in due {
                self.send_text(frame);
                if then.is_some() {
                    self.pending_close = then;
                }
            }
        }
        let expired: Vec<String> = self
            .channels
            .iter()
            .filter(|ch| ch.expires_at <= now)
            .map(|ch| ch.key.wire_topic())
            .collect();
        for topic in expired {
            self.token_expired(&topic);
        }
        if now >= self.last_activity + self.node.config.server.limits.idle_timeout {
            return Some(Close::Idle);
        }
        None
    }

    /// The earliest of: idle timeout, a delayed frame, a channel's token expiry.
    fn next_deadline(&self) -> Instant {
        let idle = self.last_activity + self.node.config.server.limits.idle_timeout;
        let delayed = self.delayed.iter().map(|d| d.at);
        let expiries = self.channels.iter().map(|ch| ch.expires_at);
        delayed.chain(expiries).fold(idle, Instant::min)
    }

    /// Sends `frame` after the channel error backoff (at once when it is zero).
    fn send_delayed(&mut self, frame: String, then: Option<Close>) {
        let backoff = self.node.config.server.limits.channel_error_backoff;
        if backoff.is_zero() {
            self.send_text(frame);
            if then.is_some() {
                self.pending_close = then;
            }
        } else {
            self.delayed.push(Delayed {
                at: Instant::now() + backoff,
                frame,
                then,
            });
        }
    }

    fn send_text(&self, frame: String) {
        // A full queue marks the client as slow; the loop then closes the socket.
        let _ = self.outbound.push(ws_frame::text(&frame));
    }

    /// Replies to `msg` with `{"status":…,"response":<response>}`.
    fn reply(&self, msg: &Inbound, status: Status, response: &str) {
        self.send_text(self.reply_frame(msg, status, response));
    }

    fn reply_frame(&self, msg: &Inbound, status: Status, response: &str) -> String {
        phoenix::encode_reply(
            self.vsn,
            msg.join_ref.as_deref(),
            msg.msg_ref.as_deref(),
            &msg.topic,
            status,
            response,
        )
    }

    /// A channel push (join_ref set, no ref), e.g. `presence_state` or `system`.
    fn push(&self, join_ref: Option<&str>, topic: &str, event: &str, payload: &str) {
        self.send_text(phoenix::encode_text(
            self.vsn, join_ref, None, topic, event, payload,
        ));
    }

    /// Leaves every channel; safe to call twice.
    fn cleanup(&mut self) {
        for ch in std::mem::take(&mut self.channels) {
            self.forget(&ch);
        }
        self.node.sockets.remove(&self.outbound);
        self.outbound.close();
    }

    /// Closes the socket: `unfinished` holds the frames of a write cut short, if any.
    async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
        mut self,
        mut socket: Connection<S>,
        close: Close,
        mut unfinished: VecDeque<Bytes>,
    ) {
        // The `connection` span (see `websocket.rs`) ends with the task.
        let span = tracing::Span::current();
        span.record("close.reason", close.name());
        if let Some((code, _)) = close.frame() {
            span.record("close.code", code);
        }
        self.cleanup();
        if matches!(close, Close::SlowConsumer | Close::WriteStalled) {
            self.node
                .slow_consumer_closes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let Some((code, reason)) = close.frame() else {
            return;
        };
        // A write cut short must be completed before the close frame, or the client would read
        // the close frame's bytes as the rest of that frame.
        socket.keep_unfinished(&mut unfinished);
        unfinished.push_back(ws_frame::close(code, reason));
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send_all(&mut unfinished)).await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Also runs when the task is aborted or panics: no registry entry or presence outlives
        // its socket.
        self.cleanup();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::bus::LocalBus;
    use crate::config::Config;
    use crate::policy::PolicySet;

    fn node() -> Arc<Node> {
        Arc::new(Node::new(
            Arc::new(Config::default()),
            PolicySet::empty(),
            LocalBus::new(8),
            None,
            CancellationToken::new(),
        ))
    }

    fn session(node: Arc<Node>) -> Session {
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let subject = crate::limits::Subject::Role(Arc::from("anon"), ip);
        let slot = node.limits.acquire_connection(&subject, ip).unwrap();
        Session::new(node, Vsn::V2, Arc::from("key"), ip, slot)
    }

    /// A masked text frame, as a browser sends it.
    fn client_text(payload: &str) -> Vec<u8> {
        ws_frame::client_frame(0x81, payload.as_bytes(), [0x37, 0xfa, 0x21, 0x3d])
    }

    /// Reads the next server frame (payloads under 126 bytes, which is all this test needs).
    async fn server_frame(client: &mut DuplexStream) -> (OpCode, Vec<u8>) {
        let mut head = [0u8; 2];
        client.read_exact(&mut head).await.unwrap();
        let len = usize::from(head[1]);
        assert!(len < 126, "unmasked, short frames only");
        let mut payload = vec![0u8; len];
        client.read_exact(&mut payload).await.unwrap();
        let mut frame = head.to_vec();
        frame.extend_from_slice(&payload);
        let (opcode, payload) = ws_frame::decode_server(&frame).unwrap();
        (opcode, payload.to_vec())
    }

    /// The idle timeout reads Tokio's clock, so paused time shows it without waiting: a frame
    /// starts the wait again, and a socket then silent for `idle_timeout` is closed with 1001.
    #[tokio::test(start_paused = true)]
    async fn a_silent_socket_is_closed_after_the_idle_timeout() {
        let node = node();
        let idle = node.config.server.limits.idle_timeout;
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let run = tokio::spawn(session(node).run(Connection::new(server, 1024)));

        tokio::time::advance(idle / 2).await;
        client
            .write_all(&client_text(r#"[null,"1","phoenix","heartbeat",{}]"#))
            .await
            .unwrap();
        let (opcode, reply) = server_frame(&mut client).await;
        assert_eq!(opcode, OpCode::Text);
        assert!(String::from_utf8(reply).unwrap().contains(r#""status":"ok""#));
        let heard = Instant::now();

        // Nothing more is sent: the runtime goes idle and paused time jumps to the next timer.
        let (opcode, close) = server_frame(&mut client).await;
        let silent = heard.elapsed();
        assert_eq!(opcode, OpCode::Close);
        assert_eq!(ws_frame::close_code(&close).unwrap(), Some(1001));
        assert_eq!(&close[2..], b"idle timeout");
        // Timers fire on millisecond ticks: at the deadline, or within the tick after it.
        assert!(
            silent >= idle && silent <= idle + Duration::from_millis(1),
            "closed after {silent:?} of silence"
        );
        drop(client);
        run.await.unwrap();
    }

    /// Every idle socket is one task holding this future, and one [`Channel`] per joined
    /// channel: keep them small (the goal is at most 1.25x uWebSockets.js's bytes per idle
    /// connection, about 1.6 KB all included; see `docs/benchmarks.md`). Rarely-live work (frame
    /// handling, writes, closing) is boxed so that it does not count here, and so is rarely-used
    /// state. The bounds are those of this (debug) build; release futures are smaller.
    #[tokio::test]
    async fn the_idle_session_future_stays_small() {
        let session = session(node());
        // The server's sockets are TCP streams, held inline (see `websocket.rs`).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let future = session.run(Connection::new(server, 1024));
        let size = std::mem::size_of_val(&future);
        // 520 bytes when written. The bound was 768 while the session also waited on the
        // shutdown signal and on a `Notify` of its queue, each with a waiter node of its own, and
        // 1,280 while it stored the session and its socket twice (as `async fn` arguments and
        // as locals). Tokio aligns each task to 128 bytes: in a release build, this future and
        // its task header now take 640 bytes (896 before).
        assert!(size <= 560, "the session future is {size} bytes");
        // 144 bytes when written (232 before presence and Postgres Changes state were boxed).
        let channel = std::mem::size_of::<Channel>();
        assert!(channel <= 160, "a joined channel is {channel} bytes");
    }
}
