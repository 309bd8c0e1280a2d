//! Server side of a WebSocket connection, over an upgraded HTTP connection.
//!
//! Owns the stream and the bytes of a frame being read. It exists to keep idle sockets cheap
//! and fan-out copy-free: an idle connection holds no read buffer (reads wait with a buffer on
//! the stack and keep only what they received), and writes take already-encoded frames
//! ([`crate::protocol::ws_frame::text`], [`crate::protocol::ws_frame::binary`]) so one encoding of a broadcast is written to every
//! receiver as is, several frames per system call.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::Poll;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::protocol::ws_frame::{self, OpCode, ProtocolError};

/// Bytes read per system call while no frame is in progress.
const IDLE_READ: usize = 2048;
/// Frames written per system call at most.
const WRITE_BATCH: usize = 64;

/// A complete message from the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Message {
    /// A text message; its UTF-8 is checked by whoever reads it.
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    /// The client closes, with its close code if it gave one.
    Close(Option<u16>),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum WsError {
    #[error("connection failed")]
    Io(#[from] std::io::Error),
    #[error("protocol error")]
    Protocol(#[from] ProtocolError),
    #[error("the client went away without a close frame")]
    Eof,
}

#[derive(Debug)]
pub(crate) struct Connection<S> {
    io: S,
    /// Bytes of an incomplete frame; empty (no allocation) between frames.
    read: BytesMut,
    /// A fragmented message being assembled (boxed: rare, and every idle socket holds this).
    partial: Option<Box<(OpCode, BytesMut)>>,
    max_message: usize,
    /// The last write stopped inside a frame (see [`Connection::keep_unfinished`]).
    mid_frame: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub(crate) fn new(io: S, max_message: usize) -> Self {
        Self::with_read(io, Bytes::new(), max_message)
    }

    /// A connection whose first bytes, `read`, were already read from `io` (by the HTTP server,
    /// behind the handshake). They are copied: `read` may be a view into the server's whole
    /// read buffer, which must not stay allocated for the life of the socket.
    pub(crate) fn with_read(io: S, read: Bytes, max_message: usize) -> Self {
        Connection {
            io,
            read: match read.is_empty() {
                true => BytesMut::new(),
                false => BytesMut::from(&read[..]),
            },
            partial: None,
            max_message,
            mid_frame: false,
        }
    }

    /// The next message. Cancel-safe: bytes read are kept for the next call.
    pub(crate) async fn recv(&mut self) -> Result<Message, WsError> {
        loop {
            if let Some(message) = self.next_buffered()? {
                return Ok(message);
            }
            self.fill().await?;
        }
    }

    /// A message from bytes already read, if they hold one.
    fn next_buffered(&mut self) -> Result<Option<Message>, WsError> {
        loop {
            let Some(header) = ws_frame::parse_header(&self.read, self.max_message)? else {
                return Ok(None);
            };
            if self.read.len() < header.frame_len() {
                return Ok(None);
            }
            let mut data = self.read.split_to(header.frame_len());
            data.advance(header.header_len);
            ws_frame::unmask(&mut data, header.mask);
            if self.read.is_empty() {
                // Let go of the read allocation between frames.
                self.read = BytesMut::new();
            }
            match header.opcode {
                OpCode::Ping => return Ok(Some(Message::Ping(data.freeze()))),
                OpCode::Pong => {}
                OpCode::Close => return Ok(Some(Message::Close(ws_frame::close_code(&data)?))),
                OpCode::Text | OpCode::Binary => {
                    if self.partial.is_some() {
                        return Err(ProtocolError::Interleaved.into());
                    }
                    if header.fin {
                        return Ok(Some(data_message(header.opcode, data.freeze())));
                    }
                    self.partial = Some(Box::new((header.opcode, data)));
                }
                OpCode::Continuation => {
                    let Some((opcode, mut message)) = self.partial.take().map(|p| *p) else {
                        return Err(ProtocolError::StrayContinuation.into());
                    };
                    let total = message.len() + data.len();
                    if total > self.max_message {
                        return Err(ProtocolError::TooLarge(total as u64).into());
                    }
                    message.extend_from_slice(&data);
                    if header.fin {
                        return Ok(Some(data_message(opcode, message.freeze())));
                    }
                    self.partial = Some(Box::new((opcode, message)));
                }
            }
        }
    }

    /// Reads more bytes. Cancel-safe: nothing is read unless the read completes.
    async fn fill(&mut self) -> Result<(), WsError> {
        let read = if self.read.is_empty() {
            // Between frames: wait with a stack buffer (it exists only inside one poll), keep
            // only what arrived.
            let (io, buffer) = (&mut self.io, &mut self.read);
            poll_fn(|cx| {
                let mut stack = [0u8; IDLE_READ];
                let mut chunk = ReadBuf::new(&mut stack);
                match Pin::new(&mut *io).poll_read(cx, &mut chunk) {
                    Poll::Ready(Ok(())) => {
                        buffer.extend_from_slice(chunk.filled());
                        Poll::Ready(Ok(chunk.filled().len()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await?
        } else {
            // Inside a frame: read straight into the buffer, sized for the rest of the frame.
            let wanted = match ws_frame::parse_header(&self.read, self.max_message)? {
                Some(header) => header.frame_len().saturating_sub(self.read.len()),
                None => 14,
            };
            self.read.reserve(wanted.max(IDLE_READ));
            self.io.read_buf(&mut self.read).await?
        };
        if read == 0 {
            return Err(WsError::Eof);
        }
        crate::metrics::events().bytes_received.inc_by(read as u64);
        Ok(())
    }

    /// Writes encoded frames, several per system call, and flushes. Not cancel-safe: a frame may
    /// be cut short, after which the connection is only good for dropping.
    pub(crate) async fn send_all(&mut self, frames: &mut VecDeque<Bytes>) -> std::io::Result<()> {
        self.send_all_within(frames, None).await
    }

    /// [`Connection::send_all`], failing with `TimedOut` when one write (or the flush) makes no
    /// progress for `stall`: a client that stops reading holds this task for that long at most.
    pub(crate) async fn send_all_within(
        &mut self,
        frames: &mut VecDeque<Bytes>,
        stall: impl Into<Option<std::time::Duration>>,
    ) -> std::io::Result<()> {
        let stall = stall.into();
        let stalled = || std::io::Error::from(std::io::ErrorKind::TimedOut);
        while !frames.is_empty() {
            let written = {
                let mut slices = [IoSlice::new(&[]); WRITE_BATCH];
                let count = frames.len().min(WRITE_BATCH);
                for (slot, frame) in slices.iter_mut().zip(frames.iter()) {
                    *slot = IoSlice::new(frame);
                }
                let write = self.io.write_vectored(&slices[..count]);
                match stall {
                    Some(stall) => tokio::time::timeout(stall, write)
                        .await
                        .map_err(|_| stalled())??,
                    None => write.await?,
                }
            };
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            crate::metrics::events().bytes_sent.inc_by(written as u64);
            self.mid_frame = advance(frames, written);
        }
        match stall {
            Some(stall) => tokio::time::timeout(stall, self.io.flush())
                .await
                .map_err(|_| stalled())?,
            None => self.io.flush().await,
        }
    }

    /// After an interrupted [`Connection::send_all`], keeps of `frames` only the frame that was
    /// cut short, if any: it must be finished before anything else (a close frame) is sent.
    pub(crate) fn keep_unfinished(&self, frames: &mut VecDeque<Bytes>) {
        frames.truncate(usize::from(self.mid_frame));
    }
}

fn data_message(opcode: OpCode, data: Bytes) -> Message {
    match opcode {
        OpCode::Text => Message::Text(data),
        _ => Message::Binary(data),
    }
}

/// Drops the first `n` written bytes from the front of `frames`; returns whether the write
/// ended inside a frame.
fn advance(frames: &mut VecDeque<Bytes>, mut n: usize) -> bool {
    while n > 0 {
        let Some(front) = frames.front_mut() else {
            return false;
        };
        if n >= front.len() {
            n -= front.len();
            frames.pop_front();
        } else {
            front.advance(n);
            return true;
        }
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
        ws_frame::client_frame(b0, payload, [0xA1, 0xB2, 0xC3, 0xD4])
    }

    #[tokio::test]
    async fn reads_messages_split_across_reads_and_fragments() {
        let (mut client, server) = duplex(64);
        let mut conn = Connection::new(server, 1000);
        let mut bytes = masked(0x01, b"hel"); // text, not final
        bytes.extend(masked(0x89, b"p")); // a ping between fragments
        bytes.extend(masked(0x80, b"lo")); // final continuation
        bytes.extend(masked(0x82, &[1, 2]));
        bytes.extend(masked(0x88, &[0x03, 0xE8]));
        let writer = tokio::spawn(async move {
            for b in bytes {
                client.write_all(&[b]).await.unwrap(); // one byte at a time
            }
            client
        });
        assert_eq!(
            conn.recv().await.unwrap(),
            Message::Ping(Bytes::from_static(b"p"))
        );
        assert_eq!(
            conn.recv().await.unwrap(),
            Message::Text(Bytes::from_static(b"hello"))
        );
        assert_eq!(
            conn.recv().await.unwrap(),
            Message::Binary(Bytes::from_static(&[1, 2]))
        );
        assert_eq!(conn.recv().await.unwrap(), Message::Close(Some(1000)));
        drop(writer.await.unwrap());
        assert!(matches!(conn.recv().await, Err(WsError::Eof)));
        assert_eq!(conn.read.capacity(), 0, "no buffer kept between frames");
    }

    #[tokio::test]
    async fn refuses_oversized_and_stray_frames() {
        let (mut client, server) = duplex(1024);
        let mut conn = Connection::new(server, 4);
        client.write_all(&masked(0x82, b"12345")).await.unwrap();
        assert!(matches!(
            conn.recv().await,
            Err(WsError::Protocol(ProtocolError::TooLarge(5)))
        ));

        let (mut client, server) = duplex(1024);
        let mut conn = Connection::new(server, 100);
        client.write_all(&masked(0x80, b"x")).await.unwrap();
        assert!(matches!(
            conn.recv().await,
            Err(WsError::Protocol(ProtocolError::StrayContinuation))
        ));

        let (mut client, server) = duplex(1024);
        let mut conn = Connection::new(server, 4);
        let mut bytes = masked(0x02, b"123");
        bytes.extend(masked(0x80, b"45"));
        client.write_all(&bytes).await.unwrap();
        assert!(matches!(
            conn.recv().await,
            Err(WsError::Protocol(ProtocolError::TooLarge(5)))
        ));
    }

    #[tokio::test]
    async fn writes_frames_in_order_through_partial_writes() {
        let (mut client, server) = duplex(7);
        let mut conn = Connection::new(server, 100);
        let mut frames: VecDeque<Bytes> = (0..100).map(|i| ws_frame::text(&format!("m{i}"))).collect();
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; expected.len()];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(got, expected);
        });
        conn.send_all(&mut frames).await.unwrap();
        assert!(frames.is_empty());
        reader.await.unwrap();
    }

    #[test]
    fn advance_pops_and_trims() {
        let mut frames: VecDeque<Bytes> = [&b"abc"[..], b"de", b"f"]
            .iter()
            .map(|s| Bytes::copy_from_slice(s))
            .collect();
        assert!(advance(&mut frames, 4), "stopped inside \"de\"");
        assert_eq!(frames, [Bytes::from_static(b"e"), Bytes::from_static(b"f")]);
        assert!(!advance(&mut frames, 2));
        assert!(frames.is_empty());
    }
}
