//! Golden-frame tests over the shared fixtures in `tests/fixtures/protocol/` (also read by the
//! TypeScript SDK), plus a property test that no input makes the decoder panic.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::Value;

use super::*;

fn fixture(name: &str) -> Value {
    let path = format!("{}/../tests/fixtures/protocol/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn vsn_of(case: &Value) -> Vsn {
    Vsn::parse(case["vsn"].as_str()).expect("fixture vsn")
}

fn opt(v: &Value) -> Option<&str> {
    v.as_str()
}

#[test]
fn decodes_every_client_fixture() {
    let cases = fixture("client_frames.json");
    let frames = cases["frames"].as_array().expect("frames");
    assert!(frames.len() >= 10);
    for case in frames {
        let name = case["name"].as_str().unwrap_or("?");
        let vsn = vsn_of(case);
        let result = match (case.get("text"), case.get("binary_hex")) {
            (Some(text), _) => decode_text(vsn, text.as_str().expect("text")),
            (_, Some(h)) => decode_binary_frame(vsn, Bytes::from(hex(h.as_str().expect("hex")))),
            _ => panic!("{name}: no frame"),
        };
        if case["error"] == Value::Bool(true) {
            assert!(result.is_err(), "{name}: expected an error, got {result:?}");
            continue;
        }
        let inbound = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = &case["decoded"];
        assert_eq!(
            inbound.join_ref.as_deref(),
            opt(&want["join_ref"]),
            "{name}: join_ref"
        );
        assert_eq!(inbound.msg_ref.as_deref(), opt(&want["ref"]), "{name}: ref");
        assert_eq!(
            inbound.topic,
            want["topic"].as_str().expect("topic"),
            "{name}: topic"
        );
        assert_eq!(
            inbound.event,
            want["event"].as_str().expect("event"),
            "{name}: event"
        );
        match &inbound.payload {
            Payload::Json(raw) => {
                let got: Value = serde_json::from_str(raw.get()).expect("payload json");
                assert_eq!(got, want["payload"], "{name}: payload");
            }
            Payload::UserBroadcast { event, data, .. } => {
                assert_eq!(event, want["user_event"].as_str().expect("user_event"), "{name}");
                match data {
                    UserData::Json(raw) => {
                        assert_eq!(want["encoding"], "json", "{name}");
                        let got: Value = serde_json::from_str(raw.get()).expect("json");
                        assert_eq!(got, want["payload"], "{name}: payload");
                    }
                    UserData::Binary(bytes) => {
                        assert_eq!(want["encoding"], "binary", "{name}");
                        assert_eq!(bytes.to_vec(), hex(want["payload_hex"].as_str().expect("hex")));
                    }
                }
            }
            Payload::Binary(bytes) => {
                assert_eq!(
                    bytes.to_vec(),
                    hex(want["payload_hex"].as_str().expect("hex")),
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn encodes_every_server_fixture_byte_for_byte() {
    let cases = fixture("server_frames.json");
    let frames = cases["frames"].as_array().expect("frames");
    assert!(frames.len() >= 10);
    for case in frames {
        let name = case["name"].as_str().unwrap_or("?");
        let vsn = vsn_of(case);
        let topic = case["topic"].as_str().expect("topic");
        match case["kind"].as_str().expect("kind") {
            "reply" => {
                let status = match case["status"].as_str() {
                    Some("ok") => Status::Ok,
                    _ => Status::Error,
                };
                let text = encode_reply(
                    vsn,
                    opt(&case["join_ref"]),
                    opt(&case["ref"]),
                    topic,
                    status,
                    case["response_json"].as_str().expect("response_json"),
                );
                assert_eq!(text, case["text"].as_str().expect("text"), "{name}");
                serde_json::from_str::<Value>(&text).expect("reply is valid JSON");
            }
            "push" => {
                let text = encode_text(
                    vsn,
                    opt(&case["join_ref"]),
                    opt(&case["ref"]),
                    topic,
                    case["event"].as_str().expect("event"),
                    case["payload_json"].as_str().expect("payload_json"),
                );
                assert_eq!(text, case["text"].as_str().expect("text"), "{name}");
                serde_json::from_str::<Value>(&text).expect("push is valid JSON");
            }
            "user_broadcast" => {
                let data = match case["encoding"].as_str() {
                    Some("json") => UserData::Json(
                        RawValue::from_string(case["payload_json"].as_str().expect("json").to_owned())
                            .expect("valid json"),
                    ),
                    _ => UserData::Binary(Bytes::from(hex(case["payload_hex"].as_str().expect("hex")))),
                };
                let meta = case["meta"].as_str().expect("meta");
                let frame = encode_user_broadcast(topic, case["event"].as_str().expect("event"), meta, &data)
                    .expect("fits in a kind 4 frame");
                assert_eq!(
                    frame.to_vec(),
                    hex(case["binary_hex"].as_str().expect("hex")),
                    "{name}"
                );
            }
            other => panic!("{name}: unknown kind {other}"),
        }
    }
}

#[test]
fn supabase_kind3_test_vector() {
    // 03 02 03 05 0A 00 01 "12" "123" "topic" "user_event" '{"a":"b"}'
    let mut frame = vec![0x03, 0x02, 0x03, 0x05, 0x0A, 0x00, 0x01];
    frame.extend_from_slice(b"12123topicuser_event{\"a\":\"b\"}");
    let inbound = decode_binary_frame(Vsn::V2, Bytes::from(frame)).expect("decodes");
    assert_eq!(inbound.join_ref.as_deref(), Some("12"));
    assert_eq!(inbound.msg_ref.as_deref(), Some("123"));
    assert_eq!(inbound.topic, "topic");
    assert_eq!(inbound.event, "broadcast");
    let Payload::UserBroadcast {
        event,
        data: UserData::Json(raw),
        persist: false,
    } = inbound.payload
    else {
        panic!("expected a JSON user broadcast");
    };
    assert_eq!(event, "user_event");
    assert_eq!(raw.get(), "{\"a\":\"b\"}");
}

#[test]
fn kind3_metadata_asking_to_persist_is_recognised() {
    for (meta, persist) in [
        (&b"{\"persist\":true}"[..], true),
        (b"{\"persist\":{\"ttl\":60}}", true),
        (b"{\"persist\":false}", false),
        (b"{\"other\":1}", false),
        (b"not json", false),
    ] {
        let mut frame = vec![0x03, 0x00, 0x00, 0x01, 0x01, meta.len() as u8, 0x01];
        frame.extend_from_slice(b"te");
        frame.extend_from_slice(meta);
        frame.extend_from_slice(b"{}");
        let inbound = decode_binary_frame(Vsn::V2, Bytes::from(frame)).expect("decodes");
        let Payload::UserBroadcast { persist: got, .. } = inbound.payload else {
            panic!("a user broadcast");
        };
        assert_eq!(got, persist, "{}", String::from_utf8_lossy(meta));
    }
}

#[test]
fn kind4_refuses_fields_over_255_bytes() {
    let data = UserData::Binary(Bytes::from_static(b"x"));
    let long = "e".repeat(256);
    assert!(encode_user_broadcast("realtime:t", &long, "", &data).is_none());
    assert!(encode_user_broadcast(&long, "e", "", &data).is_none());
    assert!(encode_user_broadcast("realtime:t", &"e".repeat(255), "", &data).is_some());
}

#[test]
fn vsn_defaults_to_1_and_accepts_patch_versions() {
    assert_eq!(Vsn::parse(None), Some(Vsn::V1));
    assert_eq!(Vsn::parse(Some("1.0.0")), Some(Vsn::V1));
    assert_eq!(Vsn::parse(Some("2.0.0")), Some(Vsn::V2));
    assert_eq!(Vsn::parse(Some("2.0.1")), Some(Vsn::V2));
    assert_eq!(Vsn::parse(Some("3.0.0")), None);
    assert_eq!(Vsn::parse(Some("")), None);
}

proptest! {
    #[test]
    fn text_decoder_never_panics(text in ".{0,200}") {
        let _ = decode_text(Vsn::V1, &text);
        let _ = decode_text(Vsn::V2, &text);
    }

    #[test]
    fn json_shaped_text_never_panics(
        items in proptest::collection::vec(
            prop_oneof![
                Just("null".to_owned()),
                "[0-9]{1,3}".prop_map(|s| s),
                "\"[a-z:]{0,8}\"".prop_map(|s| s),
                Just("{}".to_owned()),
                Just("[]".to_owned()),
            ],
            0..8,
        )
    ) {
        let text = format!("[{}]", items.join(","));
        let _ = decode_text(Vsn::V2, &text);
    }

    #[test]
    fn binary_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_binary_frame(Vsn::V2, Bytes::from(bytes.clone()));
        let _ = decode_binary_frame(Vsn::V1, Bytes::from(bytes));
    }

    #[test]
    fn kind3_headers_with_any_lengths_never_panic(
        header in proptest::collection::vec(any::<u8>(), 6),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut frame = vec![3u8];
        frame.extend_from_slice(&header);
        frame.extend_from_slice(&body);
        let _ = decode_binary_frame(Vsn::V2, Bytes::from(frame));
    }

    #[test]
    fn kind4_roundtrips_through_a_kind3_reader(
        topic in "[a-z:]{1,40}",
        event in "[a-z_-]{1,40}",
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let data = UserData::Binary(Bytes::from(payload.clone()));
        let out = encode_user_broadcast(&topic, &event, "", &data).expect("fits");
        // Re-shape the kind 4 frame into a kind 3 one with empty refs and read it back.
        let mut frame = vec![3u8, 0, 0];
        frame.extend_from_slice(&out[1..5]);
        frame.extend_from_slice(&out[5..]);
        let inbound = decode_binary_frame(Vsn::V2, Bytes::from(frame)).expect("decodes");
        prop_assert_eq!(inbound.topic, topic);
        let Payload::UserBroadcast { event: got, data, .. } = inbound.payload else {
            return Err(TestCaseError::fail("not a user broadcast"));
        };
        prop_assert_eq!(got, event);
        prop_assert_eq!(data.as_bytes(), &payload[..]);
    }
}
