//! The expression language: parsing, type checking, SQL evaluation semantics, robustness.

use proptest::prelude::*;
use serde_json::{Map, json};

use super::*;

struct Ctx {
    claims: Option<Map<String, serde_json::Value>>,
    vars: Vec<(&'static str, Value)>,
}

impl Context for Ctx {
    fn claims(&self) -> Option<&Map<String, serde_json::Value>> {
        self.claims.as_ref()
    }
    fn var(&self, name: &str) -> Value {
        self.vars
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(Value::Null, |(_, v)| v.clone())
    }
    fn topic(&self) -> Option<&str> {
        Some("room:42")
    }
}

fn ctx() -> Ctx {
    let claims = json!({
        "sub": "0b6c1c4e-9d1f-4d8e-a0d4-5c6b7a8e9f00",
        "role": "authenticated",
        "email": "ann@example.com",
        "level": 3,
        "app_metadata": {"org": "acme", "teams": ["red", "blue"], "admin": true},
        "nothing": null
    });
    let claims = match claims {
        serde_json::Value::Object(m) => m,
        _ => Map::new(),
    };
    Ctx {
        claims: Some(claims),
        vars: vec![
            ("room_id", Value::Text("42".into())),
            ("org", Value::Text("acme".into())),
        ],
    }
}

fn eval(text: &str) -> Value {
    Expr::parse(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .eval(&ctx())
}

fn text_vars(name: &str) -> Option<Type> {
    ["room_id", "org"].contains(&name).then_some(Type::Text)
}

fn check(text: &str) -> Result<(), ExprError> {
    Expr::parse(text)?.check(&text_vars)
}

#[test]
fn claims_functions_and_variables() {
    assert_eq!(
        eval("auth.uid()"),
        Value::Text("0b6c1c4e-9d1f-4d8e-a0d4-5c6b7a8e9f00".into())
    );
    assert_eq!(eval("auth.role() = 'authenticated'"), Value::Bool(true));
    assert_eq!(eval("AUTH.ROLE() = 'anon'"), Value::Bool(false));
    assert_eq!(eval("auth.email()"), Value::Text("ann@example.com".into()));
    assert_eq!(eval("auth.jwt() ->> 'email' = auth.email()"), Value::Bool(true));
    assert_eq!(
        eval("auth.jwt() -> 'app_metadata' ->> 'org' = org"),
        Value::Bool(true)
    );
    assert_eq!(
        eval("auth.jwt() -> 'app_metadata' -> 'teams' ->> 1"),
        Value::Text("blue".into())
    );
    assert_eq!(
        eval("auth.jwt() -> 'app_metadata' -> 'teams' ->> -1"),
        Value::Text("blue".into())
    );
    assert_eq!(
        eval("auth.jwt() -> 'app_metadata' ->> 'admin'"),
        Value::Text("true".into())
    );
    assert_eq!(eval("(auth.jwt() ->> 'level')::int >= 3"), Value::Bool(true));
    assert_eq!(
        eval("(auth.jwt() -> 'app_metadata' ->> 'admin')::bool"),
        Value::Bool(true)
    );
    assert_eq!(eval("room_id = '42'"), Value::Bool(true));
    assert_eq!(eval("room_id::int = 42"), Value::Bool(true));
    assert_eq!(eval("realtime.topic() = 'room:42'"), Value::Bool(true));
    assert_eq!(
        eval("(select auth.uid()) = '0B6C1C4E-9D1F-4D8E-A0D4-5C6B7A8E9F00'::uuid"),
        Value::Bool(true)
    );
    assert_eq!(
        eval("auth.uid()::uuid = '0b6c1c4e9d1f4d8ea0d45c6b7a8e9f00'::uuid"),
        Value::Bool(true)
    );
}

#[test]
fn sql_three_valued_logic() {
    assert_eq!(eval("auth.jwt() ->> 'missing' = 'x'"), Value::Null);
    assert_eq!(eval("auth.jwt() ->> 'nothing' IS NULL"), Value::Bool(true));
    assert_eq!(
        eval("auth.jwt() -> 'nothing' IS NULL"),
        Value::Bool(false),
        "JSON null is not SQL NULL"
    );
    assert_eq!(eval("NULL = NULL"), Value::Null);
    assert_eq!(eval("NULL AND false"), Value::Bool(false));
    assert_eq!(eval("NULL AND true"), Value::Null);
    assert_eq!(eval("NULL OR true"), Value::Bool(true));
    assert_eq!(eval("NOT (NULL = 1)"), Value::Null);
    assert_eq!(eval("room_id IN ('1', '42')"), Value::Bool(true));
    assert_eq!(eval("room_id NOT IN ('1', '42')"), Value::Bool(false));
    assert_eq!(eval("room_id IN ('1', NULL)"), Value::Null);
    assert_eq!(eval("room_id NOT IN ('1', NULL)"), Value::Null);
    assert_eq!(
        eval("room_id IS NOT NULL AND org <> 'evil' AND org != 'other'"),
        Value::Bool(true)
    );
    assert_eq!(
        eval("'abc' < 'abd' AND 2 <= 2.0 AND 3 > -1 AND 1.5 >= 1"),
        Value::Bool(true)
    );
    assert_eq!(eval("'x'::int = 1"), Value::Null, "a failed cast is NULL");
    // Precedence: AND binds tighter than OR; NOT tighter than AND.
    assert_eq!(eval("true OR false AND false"), Value::Bool(true));
    assert_eq!(eval("NOT false AND false"), Value::Bool(false));
    assert!(
        Expr::parse("auth.role() = 'authenticated'")
            .unwrap()
            .is_true(&ctx())
    );
    assert!(
        !Expr::parse("auth.jwt() ->> 'missing' = 'x'")
            .unwrap()
            .is_true(&ctx())
    );
}

#[test]
fn no_claims_means_null() {
    let anonymous = Ctx {
        claims: None,
        vars: vec![],
    };
    let e = Expr::parse("auth.uid() IS NULL AND auth.jwt() ->> 'x' IS NULL").unwrap();
    assert!(e.is_true(&anonymous));
}

#[test]
fn types_are_checked_at_load() {
    assert!(check("room_id = '1' AND auth.role() = 'x'").is_ok());
    assert!(check("(auth.jwt() ->> 'level')::int > 2").is_ok());
    let e = check("auth.jwt() ->> 'level' > 2").unwrap_err();
    assert!(
        e.message.contains("cannot compare") && e.message.contains("::int"),
        "{e}"
    );
    assert!(check("room_id = 5").is_err());
    assert!(check("auth.jwt() = 'x'").unwrap_err().message.contains("->>"));
    assert!(check("auth.jwt() -> 'a' < auth.jwt() -> 'b'").is_err());
    assert!(
        check("room_id -> 'x' IS NULL")
            .unwrap_err()
            .message
            .contains("JSON value on its left")
    );
    assert!(
        check("unknown_name = 'x'")
            .unwrap_err()
            .message
            .contains("unknown name `unknown_name`")
    );
    assert!(
        check("room_id")
            .unwrap_err()
            .message
            .contains("must be true or false")
    );
    assert!(check("room_id AND true").is_err());
    assert!(check("room_id IN ('a', 1)").is_err());
    assert!(check("NULL IS NULL").is_ok());
}

#[test]
fn parse_errors_point_at_the_problem() {
    let cases = [
        ("", 0),
        ("room_id =", 9),
        ("room_id = 'a' extra", 14),
        ("auth.nope()", 0),
        ("room_id IS 5", 11),
        ("room_id NOT 5", 12),
        ("(room_id = 'a'", 14),
        ("x::nosuchtype", 3),
        ("- 'a'", 0),
        ("auth.uid(1)", 9),
    ];
    for (text, offset) in cases {
        let e = Expr::parse(text).unwrap_err();
        assert_eq!(e.offset, Some(offset), "{text:?}: {e}");
    }
}

#[test]
fn nesting_is_bounded() {
    let ok = format!("{}true{}", "(".repeat(MAX_DEPTH - 1), ")".repeat(MAX_DEPTH - 1));
    assert!(Expr::parse(&ok).is_ok());
    let deep = format!("{}true{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
    assert!(Expr::parse(&deep).unwrap_err().message.contains("nests deeper"));
    let nots = format!("{}true", "NOT ".repeat(10_000));
    assert!(Expr::parse(&nots).is_err());
    let arrows = format!("auth.jwt(){}", " -> 'a'".repeat(1000));
    assert!(Expr::parse(&arrows).is_err());
    // Long flat chains are fine: they stay one level deep.
    let chain = vec!["room_id = 'a'"; 2000].join(" OR ");
    let e = Expr::parse(&chain).unwrap();
    assert_eq!(e.eval(&ctx()), Value::Bool(false));
    assert!(Expr::parse(&"x".repeat(MAX_LEN + 1)).is_err());
}

#[test]
fn display_round_trips() {
    for text in [
        "auth.uid() = 'a' AND (room_id IN ('1', '2') OR NOT org IS NULL)",
        "(auth.jwt() -> 'app_metadata' ->> 'org')::text <> 'it''s' OR -1.5 < 2",
        "room_id NOT IN ('x') AND auth.jwt() ->> 0 IS NOT NULL",
    ] {
        let e = Expr::parse(text).unwrap();
        let again = Expr::parse(&e.to_string()).unwrap_or_else(|err| panic!("{e}: {err}"));
        assert_eq!(e, again, "{text}");
    }
}

#[test]
fn variables_and_claim_use_are_reported() {
    let e = Expr::parse("room_id = org AND room_id <> 'x' AND realtime.topic() IS NOT NULL").unwrap();
    assert_eq!(e.variables(), ["room_id", "org"]);
    assert!(!e.reads_claims());
    assert!(Expr::parse("auth.role() = 'a'").unwrap().reads_claims());
}

#[test]
fn timestamps_compare_as_instants() {
    assert_eq!(
        eval("'2024-01-02T00:30:00+01:00'::timestamptz < '2024-01-02'"),
        Value::Bool(true)
    );
    assert_eq!(
        eval("'2024-01-02'::timestamptz = '2024-01-02 00:00:00Z'"),
        Value::Bool(true)
    );
    assert_eq!(eval("'infinity'::timestamptz > '9999-12-31'"), Value::Bool(true));
    assert_eq!(eval("'not a time'::timestamptz IS NULL"), Value::Bool(true));
    assert_eq!(
        eval("'2024-01-02'::timestamptz::text"),
        Value::Text("2024-01-02T00:00:00+00:00".into())
    );
    let ts = |name: &str| (name == "at").then_some(Type::Timestamp);
    assert!(Expr::parse("at >= '2024-01-01'").unwrap().check(&ts).is_ok());
    assert!(Expr::parse("at > 5").unwrap().check(&ts).is_err());
    assert!(
        Expr::parse("at > (auth.jwt() ->> 'since')::timestamptz")
            .unwrap()
            .check(&ts)
            .is_ok()
    );
}

#[test]
fn columns_resolve_to_indexes_and_claim_reads_are_listed() {
    let e = Expr::parse("owner = auth.uid() AND done AND auth.jwt() -> 'app' ->> 'org' = team").unwrap();
    let resolved = e.resolve_columns(&|name| ["owner", "done", "team"].iter().position(|n| *n == name));
    assert_eq!(resolved.columns(), [0, 1, 2]);
    assert!(resolved.variables().is_empty());
    assert_eq!(
        resolved.to_string(),
        e.to_string(),
        "columns print as their names"
    );
    let read = e.claims_read();
    assert!(!read.all);
    assert_eq!(read.names, ["sub", "app"]);
    assert!(Expr::parse("auth.jwt() = auth.jwt()").unwrap().claims_read().all);
    assert!(
        Expr::parse("auth.jwt() ->> owner = 'x'")
            .unwrap()
            .claims_read()
            .all
    );
    struct Cols;
    impl Context for Cols {
        fn claims(&self) -> Option<&Map<String, serde_json::Value>> {
            None
        }
        fn var(&self, _: &str) -> Value {
            Value::Null
        }
        fn column(&self, index: usize) -> Value {
            Value::Int(index as i64 * 10)
        }
    }
    let e = Expr::parse("a = 0 AND b = 10").unwrap();
    let resolved = e.resolve_columns(&|name| ["a", "b"].iter().position(|n| *n == name));
    assert!(resolved.is_true(&Cols));
    assert!(!e.is_true(&Cols), "unresolved names are read through var()");
}

/// Fragments that make random text look like expressions, so the generator reaches deep parser
/// paths and not only the tokenizer.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("auth.uid()".to_owned()),
        Just("auth.jwt()".to_owned()),
        Just("auth.role()".to_owned()),
        Just("realtime.topic()".to_owned()),
        Just("room_id".to_owned()),
        Just("'x'".to_owned()),
        Just("42".to_owned()),
        Just("-1.5e3".to_owned()),
        Just("NULL".to_owned()),
        Just("true".to_owned()),
        Just(" AND ".to_owned()),
        Just(" OR ".to_owned()),
        Just(" NOT ".to_owned()),
        Just(" IN (".to_owned()),
        Just(" IS NOT NULL".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just(",".to_owned()),
        Just(" = ".to_owned()),
        Just(" <> ".to_owned()),
        Just(" <= ".to_owned()),
        Just(" -> ".to_owned()),
        Just(" ->> ".to_owned()),
        Just("::int".to_owned()),
        Just("::uuid".to_owned()),
        Just("::jsonb".to_owned()),
        Just("::timestamptz".to_owned()),
        Just("'2024-01-02T03:04:05+01:00'".to_owned()),
        "[ -~]{0,3}",
    ]
}

proptest! {
    #[test]
    fn parsing_arbitrary_text_never_panics(text in "\\PC{0,200}") {
        if let Ok(e) = Expr::parse(&text) {
            let _ = e.check(&text_vars);
            let _ = e.eval(&ctx());
        }
    }

    #[test]
    fn parsing_expression_like_text_never_panics(parts in prop::collection::vec(fragment(), 0..60)) {
        let text = parts.concat();
        if let Ok(e) = Expr::parse(&text) {
            let _ = e.check(&text_vars);
            let _ = e.eval(&ctx());
            // What prints must parse back to the same tree.
            let again = Expr::parse(&e.to_string());
            prop_assert_eq!(again.as_ref().ok(), Some(&e), "{}", e);
        }
    }
}
