//! Golden bytes for the `data` object and the push payload.

use std::sync::Arc;

use super::*;
use crate::change::{Epoch, Position, RowChange, Table};
use crate::changes::testing::{V, row, table};
use crate::lsn::Lsn;
use crate::policy::{OldImage, Visibility};

const COLUMNS: &str = r#""columns":[{"name":"id","type":"int4"},{"name":"title","type":"text"},{"name":"meta","type":"jsonb"},{"name":"at","type":"timestamptz"},{"name":"tags","type":"_int4"}]"#;
const WHEN: &str = r#""commit_timestamp":"2025-11-19T00:22:40.877Z""#;
const TAIL: &str = r#""schema":"public","table":"todos""#;

fn todos(keyed: bool) -> Arc<Table> {
    let mut t = table(&[
        ("id", "int4", 23),
        ("title", "text", 25),
        ("meta", "jsonb", 3802),
        ("at", "timestamptz", 1184),
        ("tags", "_int4", 1007),
    ]);
    t.name = "todos".into();
    if !keyed {
        let mut columns = t.columns.to_vec();
        columns[0].key = false;
        t.columns = columns.into();
    }
    Arc::new(t)
}

fn change(t: &Arc<Table>, kind: ChangeKind, new: &[V<'_>], old: &[V<'_>]) -> RowChange {
    RowChange {
        position: Position {
            epoch: Epoch(1),
            commit_lsn: Lsn(0x10),
            index: 0,
        },
        commit_timestamp: 1_763_511_760_877_123,
        table: t.clone(),
        kind,
        new: (!new.is_empty()).then(|| row(t, new)),
        old: (!old.is_empty()).then(|| row(t, old)),
    }
}

const FULL_ROW: [V<'static>; 5] = [
    V::J("1"),
    V::J(r#""hi \"there\"""#),
    V::J(r#"{"a": [1, 2.50]}"#),
    V::J(r#""2024-01-01T23:04:05.123456+00:00""#),
    V::J("[1,2,null]"),
];
const RECORD: &str = r#"{"id":1,"title":"hi \"there\"","meta":{"a": [1, 2.50]},"at":"2024-01-01T23:04:05.123456+00:00","tags":[1,2,null]}"#;

fn view<'a>(columns: &'a ColumnSet, old: &'a OldImage, change: &RowChange) -> View<'a> {
    View {
        columns,
        old,
        has_primary_key: has_key_columns(&change.table),
        limits: PayloadLimits::default(),
    }
}

fn encode(change: &RowChange, visible: &ColumnSet) -> String {
    encode_data(change, &view(visible, &OldImage::Full, change))
        .expect("delivered")
        .to_string()
}

#[test]
fn insert_update_and_delete_encode_to_supabase_bytes() {
    let t = todos(true);
    let all = ColumnSet::all(5);

    let insert = change(&t, ChangeKind::Insert, &FULL_ROW, &[]);
    assert_eq!(
        encode(&insert, &all),
        format!(r#"{{{COLUMNS},{WHEN},"errors":null,"record":{RECORD},{TAIL},"type":"INSERT"}}"#)
    );

    // Key-only old row; the unchanged TOASTed `meta` is left out of the record.
    let update = change(
        &t,
        ChangeKind::Update,
        &[V::J("1"), V::J(r#""bye""#), V::Unchanged, V::Null, V::J("[]")],
        &[V::J("1"), V::Absent, V::Absent, V::Absent, V::Absent],
    );
    assert_eq!(
        encode(&update, &all),
        format!(
            r#"{{{COLUMNS},{WHEN},"errors":null,"old_record":{{"id":1}},"record":{{"id":1,"title":"bye","at":null,"tags":[]}},{TAIL},"type":"UPDATE"}}"#
        )
    );

    // REPLICA IDENTITY FULL: the whole old row.
    let delete = change(&t, ChangeKind::Delete, &[], &FULL_ROW);
    assert_eq!(
        encode(&delete, &all),
        format!(r#"{{{COLUMNS},{WHEN},"errors":null,"old_record":{RECORD},{TAIL},"type":"DELETE"}}"#)
    );

    for data in [
        encode(&insert, &all),
        encode(&update, &all),
        encode(&delete, &all),
    ] {
        let parsed: serde_json::Value = serde_json::from_str(&data).expect("valid JSON");
        assert!(parsed.is_object());
    }
}

#[test]
fn columns_and_records_follow_the_visible_set() {
    let t = todos(true);
    let id_and_at = ColumnSet::from_indexes(5, [0, 3]);
    let update = change(&t, ChangeKind::Update, &FULL_ROW, &FULL_ROW);
    assert_eq!(
        encode(&update, &id_and_at),
        format!(
            r#"{{"columns":[{{"name":"id","type":"int4"}},{{"name":"at","type":"timestamptz"}}],{WHEN},"errors":null,"old_record":{{"id":1,"at":"2024-01-01T23:04:05.123456+00:00"}},"record":{{"id":1,"at":"2024-01-01T23:04:05.123456+00:00"}},{TAIL},"type":"UPDATE"}}"#
        )
    );
    let nothing = encode(&update, &ColumnSet::none(5));
    assert!(
        nothing.starts_with(r#"{"columns":[],"commit_timestamp":"#),
        "{nothing}"
    );
    assert!(nothing.contains(r#""old_record":{},"record":{},"#), "{nothing}");
}

#[test]
fn old_records_show_only_what_the_old_image_decision_allows() {
    let t = todos(true);
    let all = ColumnSet::all(5);
    let update = change(&t, ChangeKind::Update, &FULL_ROW, &FULL_ROW);
    let delete = change(&t, ChangeKind::Delete, &[], &FULL_ROW);
    let key_only = OldImage::KeyOnly(ColumnSet::from_indexes(5, [0]));
    for c in [&update, &delete] {
        let data = encode_data(c, &view(&all, &key_only, c)).expect("delivered");
        assert!(data.contains(r#""old_record":{"id":1}"#), "{data}");
        let data = encode_data(c, &view(&all, &OldImage::None, c)).expect("delivered");
        assert!(data.contains(r#""old_record":{}"#), "{data}");
    }
    // The record is untouched by the old image decision.
    let data = encode_data(&update, &view(&all, &OldImage::None, &update)).expect("delivered");
    assert!(data.contains(&format!(r#""record":{RECORD}"#)), "{data}");
    // A key hidden from the group stays hidden in the old record too.
    let no_id = ColumnSet::from_indexes(5, [1]);
    let data = encode_data(&delete, &view(&no_id, &key_only, &delete)).expect("delivered");
    assert!(data.contains(r#""old_record":{}"#), "{data}");
    // A visibility decision converts into a view.
    let visible = Visibility::Visible {
        columns: all.clone(),
        old: OldImage::Full,
    };
    let v = View::of(&visible, true, PayloadLimits::default()).expect("visible");
    assert_eq!(
        encode_data(&update, &v),
        encode_data(&update, &view(&all, &OldImage::Full, &update))
    );
    assert!(View::of(&Visibility::Hidden, true, PayloadLimits::default()).is_none());
}

#[test]
fn tables_without_a_key_get_the_400_form_except_for_deletes() {
    let t = todos(false);
    let all = ColumnSet::all(5);
    let error = r#""errors":["Error 400: Bad Request, no primary key"]"#;
    assert_eq!(
        encode(&change(&t, ChangeKind::Insert, &FULL_ROW, &[]), &all),
        format!(r#"{{"columns":[],"commit_timestamp":null,{error},"record":{{}},{TAIL},"type":"INSERT"}}"#)
    );
    assert_eq!(
        encode(&change(&t, ChangeKind::Update, &FULL_ROW, &FULL_ROW), &all),
        format!(
            r#"{{"columns":[],"commit_timestamp":null,{error},"old_record":{{}},"record":{{}},{TAIL},"type":"UPDATE"}}"#
        )
    );
    assert_eq!(
        encode(&change(&t, ChangeKind::Delete, &[], &FULL_ROW), &all),
        format!(r#"{{{COLUMNS},{WHEN},"errors":null,"old_record":{RECORD},{TAIL},"type":"DELETE"}}"#)
    );
}

#[test]
fn oversized_changes_keep_only_small_values() {
    let t = todos(true);
    let all = ColumnSet::all(5);
    let long_title = format!(r#""{}""#, "x".repeat(63)); // 65 bytes of JSON: dropped
    let edge_title = format!(r#""{}""#, "y".repeat(62)); // 64 bytes: kept
    let big = [
        V::J("7"),
        V::J(&long_title),
        V::J(r#"{"k": 1}"#),
        V::Null,
        V::J("[1]"),
    ];
    let insert = change(&t, ChangeKind::Insert, &big, &[]);
    let limits = PayloadLimits {
        max_record_bytes: 100,
        ..PayloadLimits::default()
    };
    let small = |change: &RowChange| {
        let mut v = view(&all, &OldImage::Full, change);
        v.limits = limits;
        encode_data(change, &v).expect("delivered")
    };
    let data = small(&insert);
    assert_eq!(
        &*data,
        format!(
            r#"{{{COLUMNS},{WHEN},"errors":["Error 413: Payload Too Large"],"record":{{"id":7,"meta":{{"k": 1}},"at":null,"tags":[1]}},{TAIL},"type":"INSERT"}}"#
        )
    );
    let edge = [V::J("7"), V::J(&edge_title), V::J("null"), V::Null, V::J("[1]")];
    let data = small(&change(&t, ChangeKind::Update, &edge, &edge));
    assert!(
        data.contains(&format!(r#""record":{{"id":7,"title":{edge_title},"#)),
        "{data}"
    );
    assert!(data.contains(r#""old_record":{"id":7,"title":"#), "{data}");
    // At the default limit the same change is not oversized.
    assert!(encode(&insert, &all).contains(r#""errors":null"#));
    let at_limit = PayloadLimits {
        max_record_bytes: insert.new.as_ref().map_or(0, |r| r.json.len()),
        ..PayloadLimits::default()
    };
    let mut v = view(&all, &OldImage::Full, &insert);
    v.limits = at_limit;
    assert!(
        encode_data(&insert, &v)
            .expect("delivered")
            .contains(r#""errors":null"#)
    );
}

#[test]
fn truncate_is_not_delivered() {
    let t = todos(true);
    let truncate = change(&t, ChangeKind::Truncate, &[], &[]);
    let all = ColumnSet::all(5);
    assert_eq!(
        encode_data(&truncate, &view(&all, &OldImage::Full, &truncate)),
        None
    );
}

#[test]
fn push_payloads_splice_ids_and_the_position_around_the_shared_data() {
    let t = todos(true);
    let data = encode(
        &change(&t, ChangeKind::Insert, &FULL_ROW, &[]),
        &ColumnSet::all(5),
    );
    let position = Position {
        epoch: Epoch(0x1f),
        commit_lsn: Lsn(0x16B_3748),
        index: 3,
    };
    let payload = push_payload(&[38_606_455, 7], &position, &data);
    assert_eq!(
        payload,
        format!(
            r#"{{"ids":[38606455,7],"position":"000000000000001f-00000000016B3748-00000003","data":{data}}}"#
        )
    );
    let parsed: serde_json::Value = serde_json::from_str(&payload).expect("valid JSON");
    assert_eq!(parsed["ids"], serde_json::json!([38_606_455, 7]));
    assert_eq!(parsed["position"].as_str().map(str::parse), Some(Ok(position)));
    assert_eq!(parsed["data"]["record"]["title"], "hi \"there\"");
    assert_eq!(
        push_payload(&[], &position, "{}"),
        r#"{"ids":[],"position":"000000000000001f-00000000016B3748-00000003","data":{}}"#
    );
}
