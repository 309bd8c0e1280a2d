//! Unit tests for value conversion. Expected outputs are what `to_jsonb` prints for the same
//! values on PostgreSQL 15 (the `values_to_jsonb` differential test checks the general case).

use std::sync::Arc;

use proptest::prelude::*;

use super::*;

fn json(kind: &ValueKind, text: &str) -> String {
    let mut out = String::new();
    write_json(kind, text.as_bytes(), &mut out);
    out
}

fn array(element: ValueKind) -> ValueKind {
    ValueKind::Array {
        element: Box::new(element),
        delimiter: b',',
    }
}

fn kind_of(oid: u32) -> ValueKind {
    builtin(oid).expect("built-in type").kind
}

#[test]
fn scalars_convert_like_to_jsonb() {
    use ValueKind::*;
    let cases: &[(ValueKind, &str, &str)] = &[
        (Bool, "t", "true"),
        (Bool, "f", "false"),
        (Integer, "-9223372036854775808", "-9223372036854775808"),
        (Float, "1e+100", "1e+100"),
        (Float, "-0", "-0"),
        (Float, "NaN", r#""NaN""#),
        (Float, "-Infinity", r#""-Infinity""#),
        (
            Numeric,
            "12345678901234567890.000100",
            "12345678901234567890.000100",
        ),
        (Numeric, "Infinity", r#""Infinity""#),
        (Json, r#"{"a": [1, "é"]}"#, r#"{"a": [1, "é"]}"#),
        (Json, "not json", r#""not json""#),
        (Date, "0044-03-15 BC", r#""0044-03-15 BC""#),
        (Date, "infinity", r#""infinity""#),
        (Timestamp, "2024-02-29 23:59:59.5", r#""2024-02-29T23:59:59.5""#),
        (Timestamp, "0044-03-15 10:00:00 BC", r#""0044-03-15T10:00:00 BC""#),
        (Timestamp, "-infinity", r#""-infinity""#),
        (
            Timestamptz,
            "2024-01-02 01:04:05.123456+00",
            r#""2024-01-02T01:04:05.123456+00:00""#,
        ),
        (
            Timestamptz,
            "2020-01-01 00:00:00+05:30",
            r#""2020-01-01T00:00:00+05:30""#,
        ),
        (
            Timestamptz,
            "1900-01-01 00:00:00+00:19:32",
            r#""1900-01-01T00:00:00+00:19:32""#,
        ),
        (
            Timestamptz,
            "2020-01-01 00:00:00-08",
            r#""2020-01-01T00:00:00-08:00""#,
        ),
        (
            Timestamptz,
            "0044-03-15 10:00:00.5+00 BC",
            r#""0044-03-15T10:00:00.5+00:00 BC""#,
        ),
        (Timestamptz, "infinity", r#""infinity""#),
        (Text, "a \"q\" \\ \n", r#""a \"q\" \\ \n""#),
        (Text, r"\xdeadbeef", r#""\\xdeadbeef""#),
    ];
    for (kind, text, expected) in cases {
        assert_eq!(json(kind, text), *expected, "{kind:?} {text:?}");
    }
}

#[test]
fn builtin_table_names_and_kinds() {
    let expect = |oid: u32, name: &str, kind: ValueKind| {
        let ty = builtin(oid).unwrap_or_else(|| panic!("{oid} missing"));
        assert_eq!((&*ty.name, ty.kind), (name, kind), "{oid}");
    };
    expect(16, "bool", ValueKind::Bool);
    expect(20, "int8", ValueKind::Integer);
    expect(26, "oid", ValueKind::Text);
    expect(1700, "numeric", ValueKind::Numeric);
    expect(3802, "jsonb", ValueKind::Json);
    expect(1043, "varchar", ValueKind::Text);
    expect(18, "char", ValueKind::Text);
    expect(1042, "bpchar", ValueKind::Text);
    expect(1007, "_int4", array(ValueKind::Integer));
    expect(1185, "_timestamptz", array(ValueKind::Timestamptz));
    expect(
        1020,
        "_box",
        ValueKind::Array {
            element: Box::new(ValueKind::Text),
            delimiter: b';',
        },
    );
    expect(
        22,
        "int2vector",
        ValueKind::Vector {
            element: Box::new(ValueKind::Integer),
        },
    );
    expect(
        1006,
        "_int2vector",
        array(ValueKind::Vector {
            element: Box::new(ValueKind::Integer),
        }),
    );
    expect(3904, "int4range", ValueKind::Text);
    assert_eq!(builtin(2276), None, "pseudo-type any");
    assert_eq!(builtin(16384), None);
}

#[test]
fn type_messages_resolve_builtin_names_in_pg_catalog_only() {
    // A domain over int4 arrives under its base type's name.
    assert_eq!(from_type_message("", "int4").kind, ValueKind::Integer);
    assert_eq!(
        from_type_message("pg_catalog", "_numeric").kind,
        array(ValueKind::Numeric)
    );
    assert_eq!(from_type_message("public", "int4").kind, ValueKind::Text);
    assert_eq!(from_type_message("public", "mood").kind, ValueKind::Text);
    assert_eq!(from_type_message("public", "_mood").kind, array(ValueKind::Text));
    assert_eq!(&*from_type_message("public", "_mood").name, "_mood");
}

#[test]
fn arrays_convert_elements_by_kind() {
    let ints = array(ValueKind::Integer);
    let text = array(ValueKind::Text);
    let cases: &[(&ValueKind, &str, &str)] = &[
        (&ints, "{1,NULL,3}", "[1,null,3]"),
        (&ints, "{}", "[]"),
        (&ints, "{{1,2},{3,4}}", "[[1,2],[3,4]]"),
        (&ints, "[0:1]={1,2}", "[1,2]"),
        (&ints, "[-2:-1][1:1]={{1},{2}}", "[[1],[2]]"),
        (&ints, " { 1 , 2 } ", "[1,2]"),
        (
            &text,
            r#"{"a b","c\"d",NULL,"NULL",""}"#,
            r#"["a b","c\"d",null,"NULL",""]"#,
        ),
        (&text, r#"{null,Null,"\\"}"#, r#"[null,null,"\\"]"#),
        (&text, r"{a\,b,\NULL,x\ }", r#"["a,b","NULL","x "]"#),
        (&text, "{\"é\\😀\"}", "[\"é😀\"]"),
        (
            &array(ValueKind::Float),
            "{NaN,1.5,-Infinity}",
            r#"["NaN",1.5,"-Infinity"]"#,
        ),
        (&array(ValueKind::Bool), "{t,f,NULL}", "[true,false,null]"),
        (
            &array(ValueKind::Json),
            r#"{"{\"a\": [1]}",NULL,"\"s\""}"#,
            r#"[{"a": [1]},null,"s"]"#,
        ),
        (
            &array(ValueKind::Timestamptz),
            r#"{"2024-01-02 01:04:05+00",infinity}"#,
            r#"["2024-01-02T01:04:05+00:00","infinity"]"#,
        ),
        (
            &kind_of(1020),
            "{(1,1),(0,0);(3,3),(2,2)}",
            r#"["(1,1),(0,0)","(3,3),(2,2)"]"#,
        ),
        (&kind_of(1006), r#"{"1 2",3,""}"#, "[[1,2],[3],[]]"),
    ];
    for (kind, text, expected) in cases {
        assert_eq!(json(kind, text), *expected, "{text}");
    }
}

#[test]
fn malformed_arrays_become_strings() {
    let ints = array(ValueKind::Integer);
    for text in [
        "",
        "{",
        "{1",
        "{1,}",
        "{,1}",
        "{1}}",
        "{1}x",
        "1,2",
        "{{1},2}",
        "{1,{2}}",
        "[0:1]{1}",
        "[x]={1}",
        "{\"a}",
        "{a\"b}",
        "{{{{{{{1}}}}}}}",
        "{1\\",
        "{\"\\",
    ] {
        let out = json(&ints, text);
        let parsed: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(parsed, serde_json::Value::String(text.to_owned()), "{text}");
    }
    assert_eq!(json(&ints, "{{{{{{1}}}}}}"), "[[[[[[1]]]]]]");
}

#[test]
fn composites_become_objects_keyed_by_field() {
    let field = |name: &str, kind: ValueKind| Field {
        name: name.into(),
        kind,
    };
    let inner = ValueKind::Composite {
        fields: Arc::from([field("x", ValueKind::Bool)]),
    };
    let row = ValueKind::Composite {
        fields: Arc::from([
            field("a", ValueKind::Integer),
            field("b", ValueKind::Text),
            field("c", array(ValueKind::Numeric)),
            field("d", inner),
            field("e", ValueKind::Text),
        ]),
    };
    assert_eq!(
        json(&row, r#"(1,"x,""y\\","{1.50,NULL}","(t)",)"#),
        r#"{"a":1,"b":"x,\"y\\","c":[1.50,null],"d":{"x":true},"e":null}"#
    );
    assert_eq!(
        json(&row, r#"(,"",,"(f)","")"#),
        r#"{"a":null,"b":"","c":null,"d":{"x":false},"e":""}"#
    );
    // Too few or too many fields, or no parentheses: the text as a string.
    for text in [
        "(1,x)",
        "(1,x,,(t),,)",
        "1,x,,(t),",
        "(1,x,,(t),",
        "(1,x,,(t),) y",
    ] {
        assert_eq!(
            json(&row, text),
            serde_json::to_string(text).expect("string"),
            "{text}"
        );
    }
    let empty = ValueKind::Composite {
        fields: Arc::from([]),
    };
    assert_eq!(json(&empty, "()"), "{}");
}

#[test]
fn invalid_utf8_is_replaced() {
    assert_eq!(json(&ValueKind::Text, "a\u{fffd}b"), "\"a\u{fffd}b\"");
    let mut out = String::new();
    write_json(&ValueKind::Text, b"a\xffb", &mut out);
    assert_eq!(out, "\"a\u{fffd}b\"");
    out.clear();
    write_json(&ValueKind::Json, b"\"\xff\"", &mut out);
    assert_eq!(out, "\"\u{fffd}\"");
    out.clear();
    write_json(&array(ValueKind::Text), b"{\xfe,b}", &mut out);
    assert_eq!(out, "[\"\u{fffd}\",\"b\"]");
}

fn every_kind() -> Vec<ValueKind> {
    let mut kinds: Vec<ValueKind> = (0..10_000).filter_map(builtin).map(|ty| ty.kind).collect();
    kinds.dedup();
    let field = |name: &str, kind: ValueKind| Field {
        name: name.into(),
        kind,
    };
    let row = ValueKind::Composite {
        fields: Arc::from([field("a", ValueKind::Integer), field("b", array(ValueKind::Json))]),
    };
    kinds.push(array(row.clone()));
    kinds.push(row);
    kinds
}

/// Bytes biased towards the characters that structure values.
fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    let structural = prop::sample::select(b"{}[]()\",;\\ :=-+.0123456789eENnULtf\xff\xc3".to_vec());
    prop::collection::vec(prop_oneof![structural, any::<u8>()], 0..48)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_give_valid_json_for_every_kind(bytes in value_bytes()) {
        for kind in every_kind() {
            let mut out = String::from("[");
            write_json(&kind, &bytes, &mut out);
            out.push(']');
            prop_assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(&out).is_ok(),
                "{kind:?} {bytes:?} -> {out}"
            );
        }
    }

    #[test]
    fn any_string_round_trips_through_the_escaper(s in any::<String>()) {
        let mut out = String::new();
        write_string(&s, &mut out);
        prop_assert_eq!(serde_json::from_str::<String>(&out).ok(), Some(s));
    }
}
