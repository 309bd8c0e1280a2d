//! Policy files and their expression language never panic: any text either fails to load with
//! errors, or loads into rules that bind to a table (or refuse to) and then decide channel
//! access and row visibility for several callers. The first byte picks the input's shape:
//! even, the rest is a whole policy file; odd, it is one expression, which is parsed, type
//! checked, evaluated, printed and parsed back (to the same tree), and also loaded as the
//! `when` of a channel rule and the `rows` of a table rule.

#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use realtime::auth::Claims;
use realtime::change::{Cell, ChangeKind, Column, Epoch, Position, ReplicaIdentity, Row, RowChange, Table};
use realtime::lsn::Lsn;
use realtime::policy::PolicySet;
use realtime::policy::expr::{Context, Expr, Type, Value};
use serde_json::{Map, Value as Json, json};

/// (column, type name, a value's JSON text); `id` is the key.
const COLUMNS: &[(&str, &str, &str)] = &[
    ("id", "int8", "42"),
    ("owner", "text", "\"user-1\""),
    ("title", "text", "\"it's \\\"quoted\\\"\""),
    ("n", "int4", "-7"),
    ("done", "bool", "true"),
    ("meta", "jsonb", "{\"org\": \"acme\", \"tags\": [1, \"x\", null]}"),
    ("at", "timestamptz", "\"2024-01-01T23:04:05.123456+00:00\""),
    ("price", "numeric", "12345678901234567890.0001"),
];

const TOPICS: &[&str] = &[
    "room:1",
    "org:acme:room:red",
    "",
    "a:b:c",
    "dm-ann-bob",
    "ünï:çødé",
];

struct Fixture {
    claims: Vec<Claims>,
    columns: Arc<[Column]>,
    values: Row,
    nulls: Row,
}

fn claims(value: Json) -> Claims {
    let all = match value {
        Json::Object(m) => m,
        _ => Map::new(),
    };
    Claims {
        role: all.get("role").and_then(Json::as_str).unwrap_or("").to_owned(),
        exp: all.get("exp").and_then(Json::as_i64).unwrap_or(0),
        sub: all.get("sub").and_then(Json::as_str).map(str::to_owned),
        all,
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut json = String::from("{");
        let mut cells = Vec::new();
        for (i, (name, _, value)) in COLUMNS.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&format!("\"{name}\":"));
            let start = json.len() as u32;
            json.push_str(value);
            cells.push(Cell::Value {
                start,
                end: json.len() as u32,
            });
        }
        json.push('}');
        Fixture {
            claims: vec![
                claims(json!({"role": "authenticated", "sub": "user-1", "exp": 1,
                    "email": "a@b.c", "app_metadata": {"org": "acme", "level": 3, "rooms": ["1", "red"]}})),
                claims(json!({"role": "anon", "exp": 1})),
                claims(json!({"role": "service_role", "exp": 1})),
                claims(
                    json!({"role": "authenticated", "sub": 7, "exp": 1, "app_metadata": [1, {"org": null}]}),
                ),
            ],
            columns: COLUMNS
                .iter()
                .map(|(name, type_name, _)| Column {
                    name: (*name).into(),
                    type_name: (*type_name).into(),
                    type_oid: 0,
                    key: *name == "id",
                })
                .collect(),
            values: Row {
                json: json.into(),
                cells: cells.into(),
            },
            // NULLs, with one unchanged TOASTed column and one absent one.
            nulls: Row {
                json: "{}".into(),
                cells: (0..COLUMNS.len())
                    .map(|i| match i {
                        2 => Cell::Unchanged,
                        5 => Cell::Absent,
                        _ => Cell::Null,
                    })
                    .collect(),
            },
        }
    })
}

/// Loads a policy file and asks it every question the server asks.
fn exercise_file(text: &str) {
    let Ok(set) = PolicySet::from_toml(Path::new("fuzz.toml"), text) else {
        return;
    };
    let f = fixture();
    for topic in TOPICS {
        for claims in &f.claims {
            let _ = set.channel_access(topic, claims);
        }
    }
    for rules in set.tables() {
        for identity in [ReplicaIdentity::Default, ReplicaIdentity::Full] {
            let table = Arc::new(Table {
                oid: 1,
                schema: rules.table.schema.as_str().into(),
                name: rules.table.name.as_str().into(),
                replica_identity: identity,
                json: Default::default(),
                columns: f.columns.clone(),
            });
            let Ok(bound) = rules.bind_with_primary_key(&table, &["id"]) else {
                continue;
            };
            let change = |kind, new: Option<&Row>, old: Option<&Row>| RowChange {
                position: Position {
                    epoch: Epoch(1),
                    commit_lsn: Lsn(1),
                    index: 0,
                },
                commit_timestamp: 0,
                table: table.clone(),
                kind,
                new: new.cloned(),
                old: old.cloned(),
            };
            for change in [
                change(ChangeKind::Insert, Some(&f.values), None),
                change(ChangeKind::Update, Some(&f.nulls), Some(&f.values)),
                change(ChangeKind::Delete, None, Some(&f.nulls)),
            ] {
                let prepared = bound.prepare(&change);
                for claims in &f.claims {
                    let _ = prepared.decide(claims);
                    let _ = bound.filterable_columns(&claims.role);
                    let _ = bound.claims_key(claims);
                }
            }
        }
    }
}

/// Topic parameters `room` and `org`, the first claims, the fixture row's columns by name.
struct Ctx;

impl Context for Ctx {
    fn claims(&self) -> Option<&Map<String, Json>> {
        Some(&fixture().claims[0].all)
    }

    fn var(&self, name: &str) -> Value {
        match name {
            "room" => Value::Text("1".to_owned()),
            "org" => Value::Text("acme".to_owned()),
            _ => Value::Null,
        }
    }

    fn topic(&self) -> Option<&str> {
        Some("org:acme:room:1")
    }
}

fn var_type(name: &str) -> Option<Type> {
    matches!(name, "room" | "org").then_some(Type::Text)
}

/// A TOML basic string holding `text`.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn exercise_expression(text: &str) {
    if let Ok(expr) = Expr::parse(text) {
        let _ = expr.check(&var_type);
        let _ = expr.type_of(&var_type);
        let _ = expr.eval(&Ctx);
        let _ = expr.claims_read();
        let _ = expr.variables();
        let printed = expr.to_string();
        match Expr::parse(&printed) {
            Ok(again) => assert_eq!(again, expr, "{printed}"),
            // Printing adds parentheses, so a tree near the depth limit may print deeper.
            Err(e) => assert!(e.message.contains("nests deeper"), "{printed}: {e}"),
        }
    }
    let quoted = toml_string(text);
    exercise_file(&format!(
        "[[channel]]\ntopic = \"org:{{org}}:room:{{room}}\"\nactions = [\"broadcast\"]\nwhen = {quoted}\n\n\
         [[table]]\ntable = \"public.todos\"\nrows = {quoted}\ncolumns = [\"id\", \"title\"]\n"
    ));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if mode & 1 == 0 {
        exercise_file(text);
    } else {
        exercise_expression(text);
    }
});
