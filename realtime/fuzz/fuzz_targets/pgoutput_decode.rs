//! `decode` must return a value, never panic, on any bytes a replication connection could carry.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use realtime::replication::pgoutput::decode;

fuzz_target!(|data: &[u8]| {
    let _ = decode(&Bytes::copy_from_slice(data));
});
