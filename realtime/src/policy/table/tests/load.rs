//! Table rules: load-time and bind-time errors with file and line, table names, column values
//! read by type, and the example policy file.

use super::*;

#[test]
fn rows_read_typed_column_values() {
    let table = Arc::new(Table {
        oid: 1,
        schema: "app".into(),
        name: "events".into(),
        replica_identity: ReplicaIdentity::Default,
        json: Default::default(),
        columns: [
            ("id", "uuid", true),
            ("at", "timestamptz", false),
            ("score", "numeric", false),
            ("tags", "_text", false),
            ("meta", "jsonb", false),
            ("level", "int2", false),
            ("kind", "mood", false),
        ]
        .iter()
        .map(|(n, t, k)| Column {
            name: (*n).into(),
            type_name: (*t).into(),
            type_oid: 0,
            key: *k,
        })
        .collect::<Vec<_>>()
        .into(),
    });
    let text = r#"
[[table]]
table = "app.events"
rows = """
  at >= '2024-01-01' AND at < '2024-02-01T00:00:00+01:00'
  AND score > 1.5 AND tags ->> 0 = 'red' AND (meta -> 'a' ->> 'b')::int = 2
  AND level IN (1, 2) AND kind = 'happy' AND id = 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid
"""
"#;
    let set = PolicySet::from_toml(Path::new("events.toml"), text).unwrap();
    let b = set.table_rules("app", "events").unwrap().bind(&table).unwrap();
    let new = row(
        &table,
        &[
            C::V("\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\""),
            C::V("\"2024-01-31T22:30:00+00:00\""),
            C::V("2.25"),
            C::V("[\"red\",\"blue\"]"),
            C::V("{\"a\":{\"b\":2}}"),
            C::V("2"),
            C::V("\"happy\""),
        ],
    );
    let insert = change(&table, ChangeKind::Insert, Some(new), None);
    assert!(b.decide(&insert, &user("x")).is_visible());
    // 2024-02-01T00:00+00:30 is 23:30 UTC, past 2024-02-01T00:00+01:00 (23:00 UTC).
    let late = row(
        &table,
        &[
            C::V("\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\""),
            C::V("\"2024-02-01T00:00:00+00:30\""),
            C::V("2.25"),
            C::V("[\"red\"]"),
            C::V("{\"a\":{\"b\":2}}"),
            C::V("2"),
            C::V("\"happy\""),
        ],
    );
    let insert = change(&table, ChangeKind::Insert, Some(late), None);
    assert_eq!(b.decide(&insert, &user("x")), Visibility::Hidden);
}

#[test]
fn json_text_converts_by_column_type() {
    assert_eq!(from_json("42", column_type("int8")), Value::Int(42));
    assert_eq!(
        from_json("4294967295", column_type("oid")),
        Value::Int(4_294_967_295)
    );
    assert_eq!(from_json("1.5", column_type("numeric")), Value::Float(1.5));
    assert_eq!(from_json("\"NaN\"", column_type("float8")), Value::Null);
    assert_eq!(
        from_json("\"Infinity\"", column_type("float8")),
        Value::Float(f64::INFINITY)
    );
    assert_eq!(from_json("true", column_type("bool")), Value::Bool(true));
    assert_eq!(
        from_json("\"a\\\"b\"", column_type("text")),
        Value::Text("a\"b".into())
    );
    assert_eq!(
        from_json("\"x\"", column_type("varchar")),
        Value::Text("x".into())
    );
    assert_eq!(
        from_json("{\"k\":1}", column_type("jsonb")),
        Value::Json(json!({"k": 1}))
    );
    assert_eq!(
        from_json("[1,2]", column_type("_int4")),
        Value::Json(json!([1, 2]))
    );
    assert_eq!(
        from_json("\"2024-01-02\"", column_type("date")),
        Value::Timestamp(time::parse("2024-01-02T00:00:00Z").unwrap())
    );
    // BC dates are dates (Postgres orders them before year 1), not NULL.
    assert!(matches!(
        from_json("\"0044-03-15 BC\"", column_type("date")),
        Value::Timestamp(t) if t < time::parse("0001-01-01").unwrap()
    ));
    assert_eq!(
        from_json("12.5", column_type("money")),
        Value::Text("12.5".into())
    );
    for garbage in ["", "\"", "{", "nan", "\u{0}"] {
        for ty in ["int4", "numeric", "bool", "text", "jsonb", "timestamptz", "uuid"] {
            let _ = from_json(garbage, column_type(ty));
        }
    }
    let t = todos(ReplicaIdentity::Default);
    let r = row(
        &t,
        &[
            C::V("1"),
            C::Null,
            C::Unchanged,
            C::Absent,
            C::V("true"),
            C::V("\"b\""),
        ],
    );
    let read = values::read(&t.columns, &[ID, OWNER, TITLE, SALARY, DONE], &r, None);
    assert_eq!(
        read,
        [
            Known::Value(Value::Int(1)),
            Known::Value(Value::Null),
            Known::Missing,
            Known::Missing,
            Known::Value(Value::Bool(true)),
            Known::Missing, // not asked for
        ]
    );
    let _ = BODY;
    let _ = SALARY;
}

fn load_errors(text: &str) -> Vec<String> {
    match PolicySet::from_toml(Path::new("t.toml"), text) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn load_reports_table_rule_problems_with_their_lines() {
    let text = r#"[[table]]
table = "a.b.c"
rows = "true"

[[table]]
table = "todos"
rows = "owner = "

[[table]]
table = "todos"
rows = "realtime.topic() = 'x'"

[[table]]
table = "todos"
rows = "title"
roles = []
columns = ["id", "id"]

[[table]]
table = "todos"
rows = "auth.jwt() ->> 'level' > 2"

[[table]]
table = "todos"
rows = "true"
colums = ["id"]
"#;
    let errors = load_errors(text);
    let expect = [
        "t.toml:2: table \"a.b.c\": expected schema.table or table",
        "t.toml:7: rows: expected a value, found the end",
        "t.toml:11: rows: realtime.topic() is only available in channel rules",
        "t.toml:16: roles is empty",
        "t.toml:17: columns: \"id\" is listed twice",
        "t.toml:21: rows: cannot compare",
    ];
    // An unknown key stops the whole file at the TOML level.
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("t.toml:26") && errors[0].contains("colums"),
        "{errors:?}"
    );
    let without_typo = text.replace("colums = [\"id\"]\n", "");
    let errors = load_errors(&without_typo);
    assert_eq!(errors.len(), expect.len(), "{errors:?}");
    for (got, want) in errors.iter().zip(expect) {
        assert!(got.starts_with(want), "{got:?} should start with {want:?}");
    }
    // A lone column is a fine condition when the column turns out to be boolean.
    assert!(load_errors("[[table]]\ntable = \"todos\"\nrows = \"done\"\n").is_empty());
    assert!(load_errors("[[table]]\ntable = '\"My.Schema\".\"T\"'\nrows = \"true\"\n").is_empty());
}

#[test]
fn bind_reports_column_problems_with_file_and_line() {
    let t = todos(ReplicaIdentity::Default);
    let bind = |text: &str| rules(text).bind(&t).map(|_| ()).map_err(|e| e.to_string());
    let head = "[[table]]\ntable = \"todos\"\n";
    assert_eq!(
        bind(&format!("{head}rows = \"ownr = auth.uid()\"\n")).unwrap_err(),
        "todos.toml:3: rows: unknown column `ownr` in public.todos (columns: id, owner, title, salary, done, body)"
    );
    let e = bind(&format!("{head}rows = \"owner = 5\"\n")).unwrap_err();
    assert!(
        e.starts_with("todos.toml:3: rows: cannot compare owner (text) with 5 (integer)"),
        "{e}"
    );
    let e = bind(&format!("{head}rows = \"title\"\n")).unwrap_err();
    assert!(e.contains("must be true or false"), "{e}");
    assert!(bind(&format!("{head}rows = \"done\"\n")).is_ok());
    let e = bind(&format!("{head}rows = \"true\"\ncolumns = [\"id\", \"nope\"]\n")).unwrap_err();
    assert!(
        e.starts_with("todos.toml:4: columns: unknown column `nope`"),
        "{e}"
    );
    let e = bind(&format!("{head}rows = \"true\"\ncolumns = [\"title\"]\n")).unwrap_err();
    assert_eq!(
        e,
        "todos.toml:4: columns must include the key column `id` of public.todos"
    );

    // Under REPLICA IDENTITY FULL the key comes from the catalog's primary key.
    let full = todos(ReplicaIdentity::Full);
    let r = rules(&format!("{head}rows = \"true\"\ncolumns = [\"id\", \"title\"]\n"));
    let b = r.bind_with_primary_key(&full, &["id"]).unwrap();
    assert_eq!(b.key_columns(), &cols(&full, &[ID]));
    let delete = change(
        &full,
        ChangeKind::Delete,
        None,
        Some(todo(&full, "1", "\"a\"", "true")),
    );
    assert_eq!(
        b.decide(&delete, &user("x")),
        visible(cols(&full, &[ID, TITLE]), OldImage::KeyOnly(cols(&full, &[ID])))
    );
    // Without it, every visible column of a row that passed counts as key (documented).
    let b = r.bind(&full).unwrap();
    assert_eq!(
        b.decide(&delete, &user("x")),
        visible(
            cols(&full, &[ID, TITLE]),
            OldImage::KeyOnly(cols(&full, &[ID, TITLE]))
        )
    );
}

#[test]
fn table_names_parse() {
    let name = |s: &str| TableName::parse(s).map(|t| (t.schema, t.name));
    assert_eq!(name("todos"), Ok(("public".into(), "todos".into())));
    assert_eq!(name("app.Todos"), Ok(("app".into(), "Todos".into())));
    assert_eq!(name("\"a.b\".\"c\"\"d\""), Ok(("a.b".into(), "c\"d".into())));
    for bad in ["", ".", "a.", ".b", "a.b.c", "\"a", "\"a\"b"] {
        assert!(TableName::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn the_example_file_binds_to_its_table() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples");
    let set = PolicySet::load(&dir).unwrap_or_else(|e| panic!("{e:?}"));
    let rules = set
        .table_rules("public", "todos")
        .expect("policies/examples/todos.toml has table rules");
    let table = Arc::new(Table {
        oid: 7,
        schema: "public".into(),
        name: "todos".into(),
        replica_identity: ReplicaIdentity::Full,
        json: Default::default(),
        columns: [
            ("id", "int8"),
            ("user_id", "uuid"),
            ("team", "text"),
            ("title", "text"),
            ("is_public", "bool"),
            ("notes", "text"),
            ("inserted_at", "timestamptz"),
        ]
        .iter()
        .map(|(n, t)| Column {
            name: (*n).into(),
            type_name: (*t).into(),
            type_oid: 0,
            key: true,
        })
        .collect::<Vec<_>>()
        .into(),
    });
    let b = rules.bind_with_primary_key(&table, &["id"]).unwrap();
    let ann = "0b6c1c4e-9d1f-4d8e-a0d4-5c6b7a8e9f00";
    let new = row(
        &table,
        &[
            C::V("1"),
            C::V("\"0b6c1c4e-9d1f-4d8e-a0d4-5c6b7a8e9f00\""),
            C::V("\"red\""),
            C::V("\"t\""),
            C::V("true"),
            C::V("\"private\""),
            C::V("\"2024-03-01T10:00:00+00:00\""),
        ],
    );
    let insert = change(&table, ChangeKind::Insert, Some(new), None);
    let width = table.columns.len();
    let set = |ix: &[usize]| ColumnSet::from_indexes(width, ix.iter().copied());
    let decide = |c: &Claims| match b.decide(&insert, c) {
        Visibility::Visible { columns, .. } => Some(columns),
        Visibility::Hidden => None,
    };
    assert_eq!(decide(&user(ann)), Some(ColumnSet::all(width)));
    let teammate = claims(json!({"role": "authenticated", "sub": "x", "app_metadata": {"team": "red"}}));
    assert_eq!(decide(&teammate), Some(set(&[0, 1, 2, 3, 4, 6])));
    assert_eq!(decide(&anon()), Some(set(&[0, 3, 6])));
    assert_eq!(decide(&claims(json!({"role": "other"}))), None);
}
