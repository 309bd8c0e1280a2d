//! Filters end to end on hand-built rows: every operator and its `not.` form on each column
//! class, SQL NULL semantics, errors, and a never-panics property.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::change::{ChangeKind, Epoch, Position, Row, RowChange, Table};
use crate::changes::ColumnSet;
use crate::changes::testing::{V, row, table};
use crate::lsn::Lsn;

/// The type name and OID of each class used below.
const TYPES: &[(&str, u32)] = &[
    ("int2", 21),
    ("int4", 23),
    ("int8", 20),
    ("numeric", 1700),
    ("float4", 700),
    ("float8", 701),
    ("text", 25),
    ("varchar", 1043),
    ("bpchar", 1042),
    ("bool", 16),
    ("timestamptz", 1184),
    ("timestamp", 1114),
    ("date", 1082),
    ("uuid", 2950),
    ("jsonb", 3802),
    ("mood", 16_600),
    ("citext", 16_700),
];

fn one_column(type_name: &str) -> Table {
    let oid = TYPES
        .iter()
        .find(|(name, _)| *name == type_name)
        .map_or(0, |(_, oid)| *oid);
    table(&[("id", "int4", 23), ("v", type_name, oid)])
}

/// Evaluates `v=<filter>` on a row whose `v` is `value`.
fn eval(type_name: &str, value: V<'_>, filter: &str) -> bool {
    let table = one_column(type_name);
    let bound = Filter::parse(&format!("v={filter}"))
        .expect("parses")
        .expect("a filter")
        .bind(&table)
        .unwrap_or_else(|e| panic!("v={filter} on {type_name}: {e}"));
    bound.matches(&row(&table, &[V::J("1"), value]))
}

/// Asserts `filter` is `expected` on a non-null value and `not.filter` is its negation.
#[track_caller]
fn check(type_name: &str, json: &str, filter: &str, expected: bool) {
    assert_eq!(
        eval(type_name, V::J(json), filter),
        expected,
        "{json} {filter} ({type_name})"
    );
    assert_eq!(
        eval(type_name, V::J(json), &format!("not.{filter}")),
        !expected,
        "{json} not.{filter} ({type_name})"
    );
}

fn bind_error(type_name: &str, filter: &str) -> String {
    let table = one_column(type_name);
    Filter::parse(&format!("v={filter}"))
        .expect("parses")
        .expect("a filter")
        .bind(&table)
        .expect_err(filter)
        .to_string()
}

#[test]
fn integers_compare_exactly_at_every_width() {
    for ty in ["int2", "int4", "int8"] {
        check(ty, "5", "eq.5", true);
        check(ty, "5", "eq.6", false);
        check(ty, "5", "eq. +5 ", true);
        check(ty, "5", "neq.5", false);
        check(ty, "5", "neq.-5", true);
        check(ty, "5", "lt.5", false);
        check(ty, "5", "lt.6", true);
        check(ty, "5", "lte.5", true);
        check(ty, "5", "lte.4", false);
        check(ty, "-5", "gt.-6", true);
        check(ty, "5", "gt.5", false);
        check(ty, "5", "gte.5", true);
        check(ty, "5", "gte.6", false);
        check(ty, "5", "in.(1,5,9)", true);
        check(ty, "5", "in.(1,9)", false);
        check(ty, "5", "in.()", false);
        check(ty, "5", "isdistinct.5", false);
        check(ty, "5", "isdistinct.4", true);
        check(ty, "5", "is.null", false);
    }
    // Beyond 2^53, where doubles can no longer tell neighbours apart.
    check("int8", "9007199254740993", "eq.9007199254740992", false);
    check("int8", "9007199254740993", "gt.9007199254740992", true);
    check("int8", "9223372036854775807", "eq.9223372036854775807", true);
    check("int8", "-9223372036854775808", "lt.-9223372036854775807", true);
    check(
        "int8",
        "9007199254740993",
        "in.(9007199254740992,9007199254740994)",
        false,
    );
}

#[test]
fn numerics_compare_as_exact_decimals_with_postgres_nan() {
    let big = "12345678901234567890.000100";
    check("numeric", big, "eq.12345678901234567890.0001", true);
    check("numeric", big, "lt.12345678901234567890.00011", true);
    check("numeric", big, "gt.12345678901234567890", true);
    check("numeric", "1.50", "eq.1.5", true);
    check("numeric", "1.50", "in.(1.5e0,2)", true);
    check("numeric", "-0.0000001", "lt.0", true);
    check("numeric", "\"NaN\"", "eq.NaN", true);
    check("numeric", "\"NaN\"", "gt.Infinity", true);
    check("numeric", "\"Infinity\"", "gt.1e1000", true);
    check("numeric", "\"-Infinity\"", "lt.-1e1000", true);
    check("numeric", "3", "isdistinct.3.000", false);
    check("numeric", "0.1", "neq.0.10000000000000000001", true);
}

#[test]
fn floats_use_postgres_ordering() {
    check("float8", "0.1", "eq.0.1", true);
    check("float8", "0.1", "lt.0.30000000000000004", true);
    check("float8", "-0", "eq.0", true);
    check("float8", "\"NaN\"", "eq.NaN", true);
    check("float8", "\"NaN\"", "gt.Infinity", true);
    check("float8", "\"Infinity\"", "lt.NaN", true);
    check("float8", "1e+308", "gte.1e308", true);
    check("float8", "\"-Infinity\"", "in.(-Infinity)", true);
    check("float8", "1.5", "isdistinct.1.5", false);
    // float4 reads the filter value as a float4, as Postgres casts it.
    check("float4", "0.1", "eq.0.100000001", true);
    check("float8", "0.1", "eq.0.100000001", false);
}

#[test]
fn text_compares_exactly_and_by_code_point() {
    for ty in ["text", "varchar"] {
        check(ty, r#""hello""#, "eq.hello", true);
        check(ty, r#""hello""#, "eq.Hello", false);
        check(ty, r#""hello""#, r#"neq."hello ""#, true);
        check(ty, r#""B""#, "lt.a", true);
        check(ty, r#""é""#, "gt.z", true);
        check(ty, r#""b""#, "lte.b", true);
        check(ty, r#""b""#, "gte.c", false);
        check(ty, r#""a,b""#, r#"eq."a,b""#, true);
        check(ty, r#""say \"hi\"""#, r#"eq."say \"hi\"""#, true);
        check(ty, r#""tab\there""#, "eq.tab\there", true);
        check(ty, r#""x""#, r#"in.(a,"x",y)"#, true);
        check(ty, r#""NULL""#, r#"in.("NULL")"#, true);
        check(ty, r#""b c""#, "in.( a , b c )", true);
        check(ty, r#""hello""#, "like.h%o", true);
        check(ty, r#""hello""#, "like.H%", false);
        check(ty, r#""hello""#, "ilike.H%L_O", true);
        check(ty, r#""ÉCOLE""#, "ilike.éc%", true);
        check(ty, r#""100%""#, r"like.100\%", true);
        check(ty, r#""1000""#, r"like.100\%", false);
        check(ty, r#""hello""#, "match.^h.l+o$", true);
        check(ty, r#""hello""#, "match.^H", false);
        check(ty, r#""hello""#, "imatch.^H", true);
        check(ty, r#""line1\nline2""#, "match.1.line", true);
        check(ty, r#""x""#, "isdistinct.y", true);
    }
    check("bpchar", r#""ab   ""#, "eq.ab", true);
    check("bpchar", r#""ab   ""#, "eq.ab ", true);
    check("citext", r#""Hello""#, "eq.hELLO", true);
    check("citext", r#""Hello""#, "like.he%", true);
    check("citext", r#""Hello""#, "match.^HE", true);
}

#[test]
fn booleans_read_postgres_spellings() {
    check("bool", "true", "eq.true", true);
    check("bool", "true", "eq.t", true);
    check("bool", "false", "eq.yes", false);
    check("bool", "false", "lt.true", true);
    check("bool", "true", "gt.false", true);
    check("bool", "true", "is.true", true);
    check("bool", "true", "is.false", false);
    check("bool", "false", "is.false", true);
    check("bool", "false", "is.unknown", false);
    check("bool", "false", "in.(f)", true);
    check("bool", "false", "isdistinct.off", false);
}

#[test]
fn timestamps_and_dates_compare_as_instants() {
    let ours = r#""2024-01-01T23:04:05.123456+00:00""#;
    check("timestamptz", ours, "eq.2024-01-02 01:04:05.123456+02", true);
    check("timestamptz", ours, "eq.2024-01-01T23:04:05.123456Z", true);
    check("timestamptz", ours, "lt.2024-01-01 23:04:05.123457+00", true);
    check("timestamptz", ours, "gt.2024-01-01", true);
    check("timestamptz", ours, "lte.infinity", true);
    check("timestamptz", ours, "gte.-infinity", true);
    check(
        "timestamptz",
        ours,
        r#"in.("2024-01-02 01:04:05.123456+02",epoch)"#,
        true,
    );
    check(
        "timestamptz",
        r#""infinity""#,
        "gt.294276-12-31 00:00:00+00",
        true,
    );
    check("timestamptz", r#""-infinity""#, "eq.-infinity", true);
    check(
        "timestamptz",
        r#""0044-03-15T00:00:00+00:00 BC""#,
        "lt.0001-01-01",
        true,
    );
    check(
        "timestamptz",
        r#""0044-03-15T00:00:00+00:00 BC""#,
        "eq.0044-03-15 BC",
        true,
    );
    check(
        "timestamp",
        r#""2024-02-29T23:59:59.5""#,
        "eq.2024-02-29 23:59:59.5",
        true,
    );
    check(
        "timestamp",
        r#""2024-02-29T23:59:59.5""#,
        "eq.2024-02-29 23:59:59.5+05",
        true,
    );
    check("timestamp", r#""2024-02-29T23:59:59.5""#, "lt.2024-03-01", true);
    check("date", r#""2024-02-29""#, "gt.2024-02-28", true);
    check("date", r#""2024-02-29""#, "eq.2024-02-29", true);
    check("date", r#""2024-02-29""#, "isdistinct.2024-03-01", true);
    check("date", r#""0044-03-15 BC""#, "lt.0001-01-01", true);
    check("date", r#""infinity""#, "gt.5874897-12-31", true);
}

#[test]
fn uuids_compare_case_insensitively() {
    let id = r#""a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11""#;
    check("uuid", id, "eq.A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", true);
    check("uuid", id, "eq.{a0eebc999c0b4ef8bb6d6bb9bd380a11}", true);
    check("uuid", id, "neq.a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12", true);
    check("uuid", id, "lt.b0000000-0000-0000-0000-000000000000", true);
    check("uuid", id, "gt.00000000-0000-0000-0000-000000000000", true);
    check(
        "uuid",
        id,
        "in.(00000000-0000-0000-0000-000000000000,A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11)",
        true,
    );
}

#[test]
fn user_types_compare_by_text_for_equality() {
    check("mood", r#""happy""#, "eq.happy", true);
    check("mood", r#""happy""#, "in.(sad,ok)", false);
    check("mood", r#""happy""#, "isdistinct.sad", true);
    assert_eq!(
        bind_error("mood", "lt.happy"),
        "operator lt is not supported for filters on columns of type mood"
    );
}

#[test]
fn null_columns_match_only_is_null_and_distinctness() {
    for (ty, value) in [
        ("int4", "1"),
        ("text", "a"),
        ("numeric", "1"),
        ("uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ] {
        for op in ["eq", "neq", "lt", "lte", "gt", "gte"] {
            assert!(!eval(ty, V::Null, &format!("{op}.{value}")), "{ty} null {op}");
            assert!(
                !eval(ty, V::Null, &format!("not.{op}.{value}")),
                "{ty} null not.{op}"
            );
        }
        assert!(!eval(ty, V::Null, &format!("in.({value})")));
        assert!(!eval(ty, V::Null, &format!("not.in.({value})")));
        assert!(eval(ty, V::Null, "is.null"));
        assert!(!eval(ty, V::Null, "not.is.null"));
        assert!(eval(ty, V::Null, &format!("isdistinct.{value}")));
        assert!(!eval(ty, V::Null, &format!("not.isdistinct.{value}")));
    }
    assert!(!eval("text", V::Null, "like.%"));
    assert!(!eval("text", V::Null, "not.like.%"));
    assert!(!eval("text", V::Null, "match.x"));
    assert!(!eval("text", V::Null, "not.imatch.x"));
    // IS TRUE / IS FALSE are false on NULL, so their negations hold.
    assert!(!eval("bool", V::Null, "is.true"));
    assert!(eval("bool", V::Null, "not.is.true"));
    assert!(!eval("bool", V::Null, "is.false"));
    assert!(eval("bool", V::Null, "not.is.false"));
    assert!(eval("bool", V::Null, "is.unknown"));
    assert!(!eval("bool", V::Null, "not.is.unknown"));
}

#[test]
fn null_in_list_elements_make_a_miss_unknown() {
    check("int4", "1", "in.(1,null)", true);
    assert!(!eval("int4", V::J("2"), "in.(1,null)"));
    assert!(!eval("int4", V::J("2"), "not.in.(1,NULL)"));
    check("int4", "2", "in.(1,3)", false);
    // `NULL = ANY('{}')` is false rather than unknown, so its negation holds.
    assert!(!eval("int4", V::Null, "in.()"));
    assert!(eval("int4", V::Null, "not.in.()"));
    assert!(!eval("int4", V::Null, "not.in.(null)"));
}

#[test]
fn columns_the_image_lacks_never_match() {
    for value in [V::Unchanged, V::Absent] {
        for filter in [
            "eq.1",
            "not.eq.1",
            "is.null",
            "not.is.null",
            "isdistinct.1",
            "not.in.(1)",
        ] {
            assert!(!eval("int4", value, filter), "{filter}");
        }
        assert!(!eval("bool", value, "not.is.true"));
        assert!(!eval("text", value, "not.like.x"));
    }
}

#[test]
fn conditions_combine_with_and() {
    let t = table(&[("id", "int4", 23), ("status", "text", 25), ("n", "int8", 20)]);
    let filter = Filter::parse("id=gt.0,id=lt.100,status=in.(open,draft)")
        .expect("parses")
        .expect("a filter")
        .bind(&t)
        .expect("binds");
    assert!(filter.matches(&row(&t, &[V::J("5"), V::J(r#""open""#), V::Null])));
    assert!(!filter.matches(&row(&t, &[V::J("500"), V::J(r#""open""#), V::Null])));
    assert!(!filter.matches(&row(&t, &[V::J("5"), V::J(r#""closed""#), V::Null])));
    assert_eq!(filter.columns().collect::<Vec<_>>(), [0, 0, 1]);
}

#[test]
fn changes_are_read_from_the_image_supabase_reads() {
    let t = Arc::new(table(&[("id", "int4", 23), ("v", "text", 25)]));
    let filter = Filter::parse("v=eq.a")
        .expect("ok")
        .expect("f")
        .bind(&t)
        .expect("binds");
    let change = |kind, new: Option<Row>, old: Option<Row>| RowChange {
        position: Position {
            epoch: Epoch(1),
            commit_lsn: Lsn(1),
            index: 0,
        },
        commit_timestamp: 0,
        table: t.clone(),
        kind,
        new,
        old,
    };
    let a = || Some(row(&t, &[V::J("1"), V::J(r#""a""#)]));
    let b = || Some(row(&t, &[V::J("1"), V::J(r#""b""#)]));
    let key_only = || Some(row(&t, &[V::J("1"), V::Absent]));
    assert!(filter.matches_change(&change(ChangeKind::Insert, a(), None)));
    assert!(!filter.matches_change(&change(ChangeKind::Insert, b(), None)));
    // UPDATE reads the new row only: moving out of the filter is not delivered.
    assert!(filter.matches_change(&change(ChangeKind::Update, a(), b())));
    assert!(!filter.matches_change(&change(ChangeKind::Update, b(), a())));
    // DELETE reads the old row: with a key-only identity, a non-key filter cannot match.
    assert!(filter.matches_change(&change(ChangeKind::Delete, None, a())));
    assert!(!filter.matches_change(&change(ChangeKind::Delete, None, key_only())));
    assert!(!filter.matches_change(&change(ChangeKind::Truncate, None, None)));
}

#[test]
fn binding_errors_carry_supabase_and_postgres_texts() {
    let t = one_column("int4");
    let err = |text: &str| {
        Filter::parse(text)
            .expect("parses")
            .expect("a filter")
            .bind(&t)
            .expect_err(text)
            .to_string()
    };
    assert_eq!(err("nope=eq.1"), "invalid column for filter nope");
    assert_eq!(err("V=eq.1"), "invalid column for filter V");
    assert_eq!(err("v=eq.abc"), r#"invalid input syntax for type integer: "abc""#);
    assert_eq!(err("v=eq.1.5"), r#"invalid input syntax for type integer: "1.5""#);
    assert_eq!(
        err("v=eq.3000000000"),
        r#"value "3000000000" is out of range for type integer"#
    );
    assert_eq!(err("v=in.(1,x)"), r#"invalid input syntax for type integer: "x""#);
    assert_eq!(err("v=in.(1,,2)"), r#"malformed array literal: "{1,,2}""#);
    assert_eq!(
        err("v=is.NULL"),
        "invalid value for is filter: must be null, true, false, or unknown"
    );
    assert_eq!(
        err("v=is.true"),
        "is true filter requires a boolean column, got integer"
    );
    assert_eq!(
        err("v=like.1%"),
        "operator like requires a text-compatible column type, got integer"
    );
    assert_eq!(
        err("v=not.imatch.1"),
        "operator imatch requires a text-compatible column type, got integer"
    );
    let hundred: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    assert!(
        Filter::parse(&format!("v=in.({})", hundred.join(",")))
            .expect("ok")
            .expect("f")
            .bind(&t)
            .is_ok()
    );
    assert_eq!(
        err(&format!("v=in.({},100)", hundred.join(","))),
        "too many values for `in` filter. Maximum 100"
    );

    assert_eq!(
        bind_error("text", "match.(unclosed"),
        "invalid regular expression for match filter: unclosed group"
    );
    assert_eq!(
        bind_error("text", r"like.abc\"),
        "LIKE pattern must not end with escape character"
    );
    assert_eq!(
        bind_error("text", "eq.a\0b"),
        "invalid byte sequence for encoding \"UTF8\": 0x00"
    );
    assert_eq!(
        bind_error("bool", "eq.maybe"),
        r#"invalid input syntax for type boolean: "maybe""#
    );
    assert_eq!(
        bind_error("uuid", "eq.xyz"),
        r#"invalid input syntax for type uuid: "xyz""#
    );
    assert_eq!(
        bind_error("timestamptz", "gt.yesterday"),
        r#"invalid input syntax for type timestamp with time zone: "yesterday""#
    );
    assert_eq!(
        bind_error("numeric", "eq.1x"),
        r#"invalid input syntax for type numeric: "1x""#
    );
    assert_eq!(
        bind_error("jsonb", "eq.{}"),
        "operator eq is not supported for filters on columns of type jsonb"
    );
    assert!(eval("jsonb", V::Null, "is.null"));

    // Columns the subscriber may not read are reported as invalid.
    let filter = Filter::parse("v=eq.1").expect("ok").expect("f");
    let only_id = ColumnSet::from_indexes(2, [0]);
    assert_eq!(
        filter
            .bind_visible(&t, Some(&only_id))
            .expect_err("hidden")
            .to_string(),
        "invalid column for filter v"
    );
}

/// A table with one column of every class, and a row of typical values.
fn wide() -> (Table, Row) {
    let columns: Vec<(String, &str, u32)> = TYPES
        .iter()
        .map(|(name, oid)| (format!("c_{name}"), *name, *oid))
        .collect();
    let columns: Vec<(&str, &str, u32)> = columns.iter().map(|(n, t, o)| (n.as_str(), *t, *o)).collect();
    let t = table(&columns);
    let values = [
        V::J("1"),
        V::J("-2"),
        V::J("9007199254740993"),
        V::J("1.50"),
        V::J("\"NaN\""),
        V::J("0.1"),
        V::J(r#""a\"b""#),
        V::Null,
        V::J(r#""x  ""#),
        V::J("true"),
        V::J(r#""2024-01-01T23:04:05.123456+00:00""#),
        V::J(r#""infinity""#),
        V::J(r#""0044-03-15 BC""#),
        V::J(r#""a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11""#),
        V::J(r#"{"k": [1]}"#),
        V::Unchanged,
        V::J(r#""Hi""#),
    ];
    let r = row(&t, &values);
    (t, r)
}

proptest! {
    #[test]
    fn parsing_never_panics(text in ".*") {
        let _ = Filter::parse(&text);
    }

    #[test]
    fn structured_filters_never_panic_through_bind_and_match(
        column in proptest::sample::select(TYPES.iter().map(|(n, _)| format!("c_{n}")).collect::<Vec<_>>()),
        negate in any::<bool>(),
        op in proptest::sample::select(Op::ALL.to_vec()),
        value in r#"[-+0-9a-zA-Z .:,"()\\%_{}*^$]{0,24}"#,
    ) {
        let (t, r) = wide();
        let text = format!("{column}={}{}.{}", if negate { "not." } else { "" }, op.as_str(), value);
        if let Ok(Some(filter)) = Filter::parse(&text)
            && let Ok(bound) = filter.bind(&t)
        {
            let _ = bound.matches(&r);
        }
    }
}
