//! WebSocket frames (RFC 6455 §5): the pure parser for client frames and the encoders for
//! server frames. No I/O; nothing panics on any input.
//!
//! Server frames are encoded whole (header and payload in one buffer) so that one encoding of
//! a broadcast can be written to every receiver without copying.

use bytes::{BufMut, Bytes, BytesMut};

/// Frame opcodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A client frame that breaks the protocol; the connection is closed with [`Self::close_code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    #[error("unknown opcode {0:#x}")]
    OpCode(u8),
    #[error("client frames must be masked")]
    Unmasked,
    #[error("control frames must be final and at most 125 bytes")]
    Control,
    #[error("message of {0} bytes is larger than the limit")]
    TooLarge(u64),
    #[error("continuation frame without a message to continue")]
    StrayContinuation,
    #[error("new message before the previous fragmented one ended")]
    Interleaved,
    #[error("close frame payload is malformed")]
    Close,
}

impl ProtocolError {
    /// Close code of RFC 6455 §7.4.1: 1009 for too large, 1002 for the rest.
    pub fn close_code(self) -> u16 {
        match self {
            ProtocolError::TooLarge(_) => 1009,
            _ => 1002,
        }
    }
}

/// The header of a client frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: OpCode,
    pub mask: [u8; 4],
    pub header_len: usize,
    pub payload_len: usize,
}

impl Header {
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Parses the header at the start of `buf`: `Ok(None)` when more bytes are needed. Payloads
/// over `max_payload` are refused before they are read.
pub fn parse_header(buf: &[u8], max_payload: usize) -> Result<Option<Header>, ProtocolError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(ProtocolError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(ProtocolError::OpCode(b0 & 0x0F))?;
    if b1 & 0x80 == 0 {
        return Err(ProtocolError::Unmasked);
    }
    let (len, at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(b);
                (u64::from_be_bytes(n), 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode.is_control() && (!fin || len > 125) {
        return Err(ProtocolError::Control);
    }
    // The most significant bit of a 64-bit length must be 0 (RFC 6455 §5.2).
    let payload_len = usize::try_from(len)
        .ok()
        .filter(|l| *l <= max_payload && len >> 63 == 0)
        .ok_or(ProtocolError::TooLarge(len))?;
    let Some(m) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask: [m[0], m[1], m[2], m[3]],
        header_len: at + 4,
        payload_len,
    }))
}

/// Removes (or applies) the client's mask.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Encodes an unmasked, final server frame.
pub fn encode(opcode: OpCode, payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut out = BytesMut::with_capacity(len + 10);
    out.put_u8(0x80 | opcode.bits());
    if len < 126 {
        out.put_u8(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.put_u8(126);
        out.put_u16(short);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
    out.put_slice(payload);
    out.freeze()
}

pub fn text(payload: &str) -> Bytes {
    encode(OpCode::Text, payload.as_bytes())
}

pub fn binary(payload: &[u8]) -> Bytes {
    encode(OpCode::Binary, payload)
}

/// A close frame with `code` and `reason` (reasons are cut to fit 123 bytes).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    encode(OpCode::Close, &payload)
}

/// Splits an encoded (unmasked) server frame into its opcode and payload; `None` when it is
/// not one complete frame. For tests and tools that inspect what the server sends.
pub fn decode_server(frame: &[u8]) -> Option<(OpCode, &[u8])> {
    let (&b0, &b1) = (frame.first()?, frame.get(1)?);
    let opcode = OpCode::from_bits(b0 & 0x0F)?;
    let (len, at) = match b1 & 0x7F {
        126 => (
            usize::from(u16::from_be_bytes([*frame.get(2)?, *frame.get(3)?])),
            4,
        ),
        127 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(frame.get(2..10)?);
            (usize::try_from(u64::from_be_bytes(n)).ok()?, 10)
        }
        n => (usize::from(n), 2),
    };
    let payload = frame.get(at..)?;
    (payload.len() == len).then_some((opcode, payload))
}

/// Reads a close frame's payload: the code, if any.
pub fn close_code(payload: &[u8]) -> Result<Option<u16>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::Close),
        [a, b, reason @ ..] => {
            std::str::from_utf8(reason).map_err(|_| ProtocolError::Close)?;
            Ok(Some(u16::from_be_bytes([*a, *b])))
        }
    }
}

#[cfg(test)]
/// A masked client frame, as a browser would send it (for the tests of the frame reader and
/// of sessions).
pub(crate) fn client_frame(b0: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![b0];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let mut body = payload.to_vec();
    unmask(&mut body, mask);
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_rfc_6455_masked_hello() {
        // RFC 6455 §5.7: a single-frame masked text message containing "Hello".
        let frame = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let h = parse_header(&frame, 100).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.header_len, h.payload_len),
            (true, OpCode::Text, 6, 5)
        );
        let mut payload = frame[6..].to_vec();
        unmask(&mut payload, h.mask);
        assert_eq!(payload, b"Hello");
    }

    #[test]
    fn encodes_rfc_6455_unmasked_frames() {
        assert_eq!(text("Hello").to_vec(), [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        let f = binary(&[0u8; 256]);
        assert_eq!(&f[..4], &[0x82, 0x7E, 0x01, 0x00]);
        let f = binary(&vec![0u8; 65536]);
        assert_eq!(&f[..10], &[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(
            close(1001, "bye").to_vec(),
            [0x88, 5, 0x03, 0xE9, b'b', b'y', b'e']
        );
        for len in [0, 125, 126, 65535, 65536] {
            let f = binary(&vec![7u8; len]);
            assert_eq!(decode_server(&f), Some((OpCode::Binary, &vec![7u8; len][..])));
            assert_eq!(
                decode_server(&f[..f.len() - usize::from(len > 0)]).is_none(),
                len > 0
            );
        }
    }

    #[test]
    fn waits_for_complete_headers() {
        let frame = client_frame(0x82, &[7u8; 300], [1, 2, 3, 4]);
        for cut in 0..8 {
            assert_eq!(parse_header(&frame[..cut], 1000), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse_header(&frame, 1000).unwrap().unwrap().payload_len, 300);
    }

    #[test]
    fn refuses_protocol_violations() {
        let mask = [9, 9, 9, 9];
        assert_eq!(parse_header(&[0x81, 0x05], 100), Err(ProtocolError::Unmasked));
        assert_eq!(
            parse_header(&client_frame(0xC1, b"x", mask), 100),
            Err(ProtocolError::ReservedBits)
        );
        assert_eq!(
            parse_header(&client_frame(0x83, b"x", mask), 100),
            Err(ProtocolError::OpCode(3))
        );
        assert_eq!(
            parse_header(&client_frame(0x09, b"x", mask), 100),
            Err(ProtocolError::Control)
        );
        assert_eq!(
            parse_header(&client_frame(0x89, &[0; 126], mask), 1000),
            Err(ProtocolError::Control)
        );
        assert_eq!(
            parse_header(&client_frame(0x82, &[0; 101], mask), 100),
            Err(ProtocolError::TooLarge(101))
        );
        let huge = [0x82, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(matches!(
            parse_header(&huge, usize::MAX),
            Err(ProtocolError::TooLarge(_))
        ));
        assert_eq!(ProtocolError::TooLarge(1).close_code(), 1009);
    }

    #[test]
    fn close_payloads() {
        assert_eq!(close_code(&[]), Ok(None));
        assert_eq!(close_code(&[0x03, 0xE8]), Ok(Some(1000)));
        assert_eq!(close_code(&[0x03]), Err(ProtocolError::Close));
        assert_eq!(close_code(&[0x03, 0xE8, 0xFF]), Err(ProtocolError::Close));
        let long = "é".repeat(100);
        let f = close(1000, &long);
        assert!(f.len() <= 2 + 125);
        assert!(close_code(&f[2..]).is_ok());
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), max in 0usize..1000) {
            let _ = parse_header(&bytes, max);
        }

        #[test]
        fn client_frames_roundtrip(payload in proptest::collection::vec(any::<u8>(), 0..70_000), mask in any::<[u8; 4]>()) {
            let frame = client_frame(0x82, &payload, mask);
            let h = parse_header(&frame, usize::MAX).unwrap().unwrap();
            prop_assert_eq!(h.frame_len(), frame.len());
            let mut body = frame[h.header_len..].to_vec();
            unmask(&mut body, h.mask);
            prop_assert_eq!(body, payload);
        }
    }
}
