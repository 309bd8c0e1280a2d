//! A socket's bounded outbound queue: every frame for one client (replies, pushes and fan-out)
//! passes through it, so the client sees them in the order they were queued.
//!
//! Items are encoded WebSocket frames (`transport::ws::frame`), shared between receivers.
//!
//! Producers (the registry's dispatcher, the socket's own session) never wait: a push into a full
//! queue marks the socket as a slow consumer, drops what is queued and wakes the session, which
//! closes the socket with [`SLOW_CONSUMER_CLOSE`] (the queue is bounded in frames and in bytes).
//! One slow client therefore never delays the fan-out to the others. The queue holds no
//! allocation while empty.

use crate::locks::lock;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;

use bytes::Bytes;
use futures::task::AtomicWaker;

/// WebSocket close code for a client that does not read its frames fast enough: its queue
/// went over its bound in frames or in bytes.
pub const SLOW_CONSUMER_CLOSE: u16 = 4008;
/// WebSocket close code for a client whose socket took no bytes for `write_stall_timeout`.
pub const WRITE_STALLED_CLOSE: u16 = 4009;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("the client is too slow: its outbound queue is full")]
    Overflow,
    #[error("the socket is closed")]
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    Overflowed,
    Closed,
    /// The node is shutting down (see [`OpenQueues`]).
    ShutDown,
}

#[derive(Debug)]
struct Inner {
    frames: VecDeque<Bytes>,
    /// Bytes of `frames`.
    bytes: usize,
    state: State,
}

#[derive(Debug)]
pub struct Outbound {
    inner: Mutex<Inner>,
    /// The one consumer (the socket's session) and whether it has been woken since it last
    /// looked. Not a `Notify`: its wait future holds a waiter node, and every idle socket's
    /// task carries that future; this wait is a pointer.
    consumer: AtomicWaker,
    woken: AtomicBool,
    capacity: usize,
    max_bytes: usize,
}

/// What [`Outbound::take`] found.
#[derive(Debug)]
pub enum Taken {
    Frames(VecDeque<Bytes>),
    /// The queue overflowed: the socket must be closed as a slow consumer.
    Overflowed,
    Closed,
    /// The node is shutting down: the socket is closed with 1001.
    ShutDown,
}

impl Outbound {
    /// A queue bounded in frames only.
    pub fn new(capacity: usize) -> Self {
        Self::bounded(capacity, usize::MAX)
    }

    /// A queue of at most `capacity` frames and `max_bytes` bytes (one frame larger than that
    /// still fits in an empty queue: the frame size limit bounds it).
    pub fn bounded(capacity: usize, max_bytes: usize) -> Self {
        Outbound {
            inner: Mutex::new(Inner {
                frames: VecDeque::new(),
                bytes: 0,
                state: State::Open,
            }),
            consumer: AtomicWaker::new(),
            woken: AtomicBool::new(false),
            capacity: capacity.max(1),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the queue inconsistent (every critical
        // section is a single push or swap), so poisoning is ignored.
        lock(&self.inner)
    }

    /// Queues a frame without waiting.
    pub fn push(&self, frame: Bytes) -> Result<(), PushError> {
        let mut inner = self.lock();
        match inner.state {
            State::Open => {}
            State::Overflowed => return Err(PushError::Overflow),
            State::Closed | State::ShutDown => return Err(PushError::Closed),
        }
        let bytes = inner.bytes.saturating_add(frame.len());
        if inner.frames.len() >= self.capacity || (bytes > self.max_bytes && !inner.frames.is_empty()) {
            inner.state = State::Overflowed;
            inner.frames = VecDeque::new();
            inner.bytes = 0;
            drop(inner);
            self.wake();
            return Err(PushError::Overflow);
        }
        inner.frames.push_back(frame);
        inner.bytes = bytes;
        let first = inner.frames.len() == 1;
        drop(inner);
        // Only the empty → non-empty transition needs a wake-up: the session drains everything
        // queued each time it wakes, and re-checks before it sleeps again.
        if first {
            self.wake();
        }
        Ok(())
    }

    /// Takes every queued frame.
    pub fn take(&self) -> Taken {
        let mut inner = self.lock();
        match inner.state {
            State::Open => {
                inner.bytes = 0;
                Taken::Frames(std::mem::take(&mut inner.frames))
            }
            State::Overflowed => Taken::Overflowed,
            State::Closed => Taken::Closed,
            State::ShutDown => Taken::ShutDown,
        }
    }

    pub fn is_overflowed(&self) -> bool {
        self.lock().state == State::Overflowed
    }

    /// Refuses further frames and drops queued ones (the socket is going away).
    pub fn close(&self) {
        let mut inner = self.lock();
        if inner.state == State::Open {
            inner.state = State::Closed;
        }
        inner.frames = VecDeque::new();
        inner.bytes = 0;
    }

    /// Closes the queue and wakes the session, which then ends its socket (an operator's
    /// disconnect from `/admin`).
    pub fn disconnect(&self) {
        self.close();
        self.wake();
    }

    /// Tells the session that the node is shutting down (a closed queue stays closed).
    fn shut_down(&self) {
        let mut inner = self.lock();
        if inner.state == State::Open {
            inner.state = State::ShutDown;
        }
        inner.frames = VecDeque::new();
        inner.bytes = 0;
        drop(inner);
        self.wake();
    }

    pub fn len(&self) -> usize {
        self.lock().frames.len()
    }

    /// How many more frames fit before the queue overflows (none once it overflowed or was
    /// closed). A producer that can wait, such as the replay of a resuming subscription, sends
    /// no more than this and comes back later, so it never makes a client a slow consumer.
    pub fn room(&self) -> usize {
        let inner = self.lock();
        match inner.state {
            State::Open => self.capacity.saturating_sub(inner.frames.len()),
            State::Overflowed | State::Closed | State::ShutDown => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes the consumer; a wake-up while it is not waiting is kept for its next wait.
    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.consumer.wake();
    }

    /// Waits until a frame was queued (or the queue overflowed or was disconnected) since the
    /// last wake-up. One consumer at a time: a second concurrent waiter would take the first's
    /// place.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            if self.woken.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            self.consumer.register(cx.waker());
            // A wake between the check and the registration would otherwise be missed.
            if self.woken.swap(false, Ordering::AcqRel) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

/// The queues of a node's open sockets, so that shutdown reaches every session through its
/// queue: an idle session then waits on its queue, its socket and one timer, and its task
/// carries no shutdown waiter of its own.
#[derive(Debug, Default)]
pub struct OpenQueues {
    inner: Mutex<OpenInner>,
}

#[derive(Debug, Default)]
struct OpenInner {
    /// Keyed by the queue's address, which is unique while the queue is registered: its
    /// session holds it until after it has removed it.
    queues: HashMap<usize, Weak<Outbound>>,
    shut_down: bool,
}

impl OpenQueues {
    /// Registers a socket's queue; `false` once the node is shutting down (the session must
    /// close its socket).
    pub fn add(&self, queue: &Arc<Outbound>) -> bool {
        let mut inner = lock(&self.inner);
        if inner.shut_down {
            return false;
        }
        inner.queues.insert(key(queue), Arc::downgrade(queue));
        true
    }

    pub fn remove(&self, queue: &Arc<Outbound>) {
        lock(&self.inner).queues.remove(&key(queue));
    }

    /// Tells every registered session to close its socket, and refuses new ones.
    pub fn shut_down(&self) {
        let queues: Vec<Arc<Outbound>> = {
            let mut inner = lock(&self.inner);
            inner.shut_down = true;
            inner.queues.drain().filter_map(|(_, q)| q.upgrade()).collect()
        };
        for queue in queues {
            queue.shut_down();
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.inner).queues.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn key(queue: &Arc<Outbound>) -> usize {
    Arc::as_ptr(queue) as usize
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn text(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn frames(taken: Taken) -> Vec<String> {
        match taken {
            Taken::Frames(f) => f
                .into_iter()
                .map(|m| String::from_utf8(m.to_vec()).unwrap())
                .collect(),
            other => panic!("expected frames, got {other:?}"),
        }
    }

    #[test]
    fn keeps_order_and_empties_on_take() {
        let q = Outbound::new(4);
        q.push(text("a")).unwrap();
        q.push(text("b")).unwrap();
        assert_eq!(frames(q.take()), ["a", "b"]);
        assert!(q.is_empty());
        q.push(text("c")).unwrap();
        assert_eq!(frames(q.take()), ["c"]);
    }

    #[test]
    fn overflow_marks_the_consumer_slow_and_refuses_more() {
        let q = Outbound::new(2);
        q.push(text("a")).unwrap();
        q.push(text("b")).unwrap();
        assert_eq!(q.push(text("c")), Err(PushError::Overflow));
        assert!(q.is_overflowed());
        assert!(matches!(q.take(), Taken::Overflowed));
        assert_eq!(q.push(text("d")), Err(PushError::Overflow));
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_too() {
        let q = Outbound::bounded(100, 10);
        q.push(text("0123456")).unwrap();
        q.push(text("789")).unwrap();
        assert_eq!(q.push(text("x")), Err(PushError::Overflow), "11 bytes > 10");
        assert!(q.is_overflowed());

        // Taking the frames frees their bytes; one frame larger than the bound fits alone.
        let q = Outbound::bounded(100, 10);
        q.push(text("0123456789")).unwrap();
        let _ = q.take();
        q.push(text("0123456789")).unwrap();
        let _ = q.take();
        q.push(text("a frame of more than ten bytes")).unwrap();
        assert_eq!(q.push(text("y")), Err(PushError::Overflow));
    }

    #[test]
    fn room_counts_what_still_fits() {
        let q = Outbound::new(3);
        assert_eq!(q.room(), 3);
        q.push(text("a")).unwrap();
        assert_eq!(q.room(), 2);
        let _ = q.take();
        assert_eq!(q.room(), 3);
        q.close();
        assert_eq!(q.room(), 0);
    }

    #[tokio::test]
    async fn disconnect_wakes_the_session_to_a_closed_queue() {
        let q = Outbound::new(2);
        q.disconnect();
        tokio::time::timeout(Duration::from_secs(5), q.wait())
            .await
            .expect("the waiting session is woken");
        assert!(matches!(q.take(), Taken::Closed));
    }

    #[test]
    fn closed_queue_refuses_frames() {
        let q = Outbound::new(2);
        q.push(text("a")).unwrap();
        q.close();
        assert_eq!(q.push(text("b")), Err(PushError::Closed));
        assert!(matches!(q.take(), Taken::Closed));
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_consumer_and_overflow_wakes_it_too() {
        let q = std::sync::Arc::new(Outbound::new(1));
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.wait().await })
        };
        tokio::task::yield_now().await;
        q.push(text("a")).unwrap();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        let _ = q.take();

        // A wake-up stored while nobody waits is not lost.
        q.push(text("b")).unwrap();
        tokio::time::timeout(Duration::from_secs(1), q.wait())
            .await
            .unwrap();

        // Overflow (queue already holds "b") also wakes the consumer.
        assert_eq!(q.push(text("c")), Err(PushError::Overflow));
        tokio::time::timeout(Duration::from_secs(1), q.wait())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn shutdown_reaches_every_registered_queue_and_refuses_later_ones() {
        let open = OpenQueues::default();
        let (a, b, gone) = (
            Arc::new(Outbound::new(4)),
            Arc::new(Outbound::new(4)),
            Arc::new(Outbound::new(4)),
        );
        assert!(open.add(&a) && open.add(&b) && open.add(&gone));
        open.remove(&gone);
        assert_eq!(open.len(), 2);
        a.push(text("dropped at shutdown")).unwrap();
        b.close();

        open.shut_down();
        tokio::time::timeout(Duration::from_secs(1), a.wait())
            .await
            .unwrap();
        assert!(matches!(a.take(), Taken::ShutDown));
        assert_eq!(a.push(text("x")), Err(PushError::Closed));
        assert!(matches!(b.take(), Taken::Closed), "a closed queue stays closed");
        assert!(
            matches!(gone.take(), Taken::Frames(f) if f.is_empty()),
            "a removed queue is not told"
        );
        assert!(open.is_empty());

        let late = Arc::new(Outbound::new(4));
        assert!(!open.add(&late), "a socket opened during shutdown is refused");
    }
}
