use proptest::prelude::*;
use serde_json::json;

use super::*;

fn request(entry: serde_json::Value) -> Result<Option<SnapshotRequest>, String> {
    SnapshotRequest::parse(entry.as_object().unwrap_or(&Map::new()))
}

#[test]
fn a_binding_asks_for_a_snapshot_with_true_or_options() {
    assert_eq!(request(json!({"event": "*"})), Ok(None));
    assert_eq!(request(json!({"snapshot": false})), Ok(None));
    assert_eq!(
        request(json!({"snapshot": true})),
        Ok(Some(SnapshotRequest::default()))
    );
    assert_eq!(
        request(json!({"snapshot": {"limit": 10, "order": "inserted_at.desc"}})),
        Ok(Some(SnapshotRequest {
            limit: Some(10),
            order: Some(Order {
                column: "inserted_at".to_owned(),
                descending: true
            }),
        }))
    );
    let order = request(json!({"snapshot": {"order": "a.b"}}))
        .ok()
        .flatten()
        .and_then(|r| r.order);
    assert_eq!(
        order.map(|o| (o.column, o.descending)),
        Some(("a.b".to_owned(), false))
    );
}

#[test]
fn bad_snapshot_options_are_refused_with_what_is_wrong() {
    let refused = |v| request(v).err().unwrap_or_default();
    assert!(refused(json!({"snapshot": "yes"})).contains("true or an object"));
    assert!(refused(json!({"snapshot": {"limit": 0}})).contains("from 1 to"));
    assert!(refused(json!({"snapshot": {"limit": MAX_ROWS + 1}})).contains("from 1 to"));
    assert!(refused(json!({"snapshot": {"limit": "5"}})).contains("integer"));
    assert!(refused(json!({"snapshot": {"order": ".desc"}})).contains("no column"));
    assert!(refused(json!({"snapshot": {"order": 3}})).contains("string"));
    assert!(refused(json!({"snapshot": {"rows": 3}})).contains("unknown option `rows`"));
}

#[test]
fn the_snapshot_rule_is_postgres_visibility() {
    let s = XidSnapshot::parse("100:105:100,103").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.xip, vec![100, 103]);
    // Finished before the snapshot: below xmin, or below xmax and not in progress.
    assert!(s.visible(99));
    assert!(s.visible(101) && s.visible(102) && s.visible(104));
    // In progress, or started after.
    assert!(!s.visible(100) && !s.visible(103) && !s.visible(105) && !s.visible(4000));
    assert!(XidSnapshot::parse("7:7:").is_ok_and(|s| s.visible(6) && !s.visible(7)));
}

#[test]
fn the_32_bit_xids_of_pgoutput_are_read_next_to_the_snapshot_across_wraparound() {
    // Epoch 1: xmax is 2^32 + 10; pgoutput reports 32-bit xids.
    let base = 1u64 << 32;
    let s = XidSnapshot {
        xmin: base - 5,
        xmax: base + 10,
        xip: vec![base - 2, base + 3],
    };
    assert!(s.visible(u32::MAX - 10)); // below xmin, epoch 0
    assert!(s.visible(u32::MAX)); // 2^32 - 1: finished
    assert!(!s.visible(u32::MAX - 1)); // 2^32 - 2: in progress
    assert!(s.visible(2) && !s.visible(3) && !s.visible(10) && !s.visible(11));
}

#[test]
fn malformed_snapshots_are_refused() {
    for bad in ["", "1:2", "1:2:3:4", "a:2:", "5:2:", "1:5:7", "1:5:0", "1:5:2,x"] {
        assert!(XidSnapshot::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_seam_closes_at_its_lsn() {
    let seam = Seam {
        snapshot: XidSnapshot::parse("1:1:").unwrap_or_else(|e| panic!("{e}")),
        lsn: Lsn(0x100),
        rows: 0,
    };
    assert!(seam.open_at(Lsn(0xff)));
    assert!(!seam.open_at(Lsn(0x100)));
}

#[test]
fn the_end_and_refusal_messages_have_their_documented_shape() {
    let v: serde_json::Value = serde_json::from_str(&complete_payload("room", 3, None)).unwrap_or_default();
    assert_eq!(
        (v["snapshot"].as_str(), v["status"].as_str(), v["rows"].as_u64()),
        (Some("complete"), Some("ok"), Some(3))
    );
    assert!(v["position"].is_null());
    let v: serde_json::Value =
        serde_json::from_str(&failed_payload("room", "too big", 5)).unwrap_or_default();
    assert_eq!(
        (v["snapshot"].as_str(), v["refetch"].as_bool()),
        (Some("refused"), Some(true))
    );
    let v: serde_json::Value = serde_json::from_str(&failed_payload("room", "busy", 0)).unwrap_or_default();
    assert!(v.get("refetch").is_none());
}

proptest! {
    #[test]
    fn snapshot_text_never_panics(text in ".{0,40}") {
        let _ = XidSnapshot::parse(&text);
    }

    #[test]
    fn visibility_matches_the_definition(xmin in 0u64..1 << 40, span in 0u64..64, xid_offset in -80i64..80, picks in proptest::collection::vec(0u64..64, 0..8)) {
        let xmax = xmin + span;
        let mut xip: Vec<u64> = picks.into_iter().filter(|p| *p < span).map(|p| xmin + p).collect();
        xip.sort_unstable();
        xip.dedup();
        let s = XidSnapshot { xmin, xmax, xip: xip.clone() };
        let full = xmin as i64 + xid_offset;
        prop_assume!(full >= 0);
        let full = full as u64;
        let expected = full < xmin || (full < xmax && !xip.contains(&full));
        prop_assert_eq!(s.visible(full as u32), expected);
    }
}
