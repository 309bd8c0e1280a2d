use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::change::{Column, ReplicaIdentity};

fn parse(v: Value) -> Result<Binding, BindingError> {
    Binding::parse(&v)
}

fn message(v: Value) -> String {
    parse(v).expect_err("refused").to_string()
}

#[test]
fn reads_event_schema_table_filter_and_select() {
    let b = parse(json!({"event": "insert", "schema": "public", "table": "todos",
        "filter": "id=eq.1", "select": ["id", "title", 5]}))
    .expect("parses");
    assert_eq!(b.event, EventFilter::Insert);
    assert_eq!(b.schema, "public");
    assert_eq!(b.table.as_deref(), Some("todos"));
    assert_eq!(b.filter.as_ref().map(|f| f.conditions.len()), Some(1));
    // Non-string items are dropped, as Supabase drops them.
    assert_eq!(b.select, Some(vec!["id".to_owned(), "title".to_owned()]));

    for (event, expected) in [
        (json!("*"), EventFilter::All),
        (json!("UPDATE"), EventFilter::Update),
        (json!("Delete"), EventFilter::Delete),
        (json!("truncate"), EventFilter::All),
        (json!(5), EventFilter::All),
    ] {
        let b = parse(json!({"event": event, "schema": "public"})).expect("parses");
        assert_eq!(b.event, expected, "{event}");
    }
    assert_eq!(
        parse(json!({"schema": "public"})).expect("parses").event,
        EventFilter::All
    );
}

#[test]
fn missing_schema_or_table_defaults_as_supabase_does() {
    let only_table = parse(json!({"table": "todos"})).expect("parses");
    assert_eq!(
        (only_table.schema.as_str(), only_table.table.as_deref()),
        ("public", Some("todos"))
    );
    let only_schema = parse(json!({"schema": "private"})).expect("parses");
    assert_eq!(
        (only_schema.schema.as_str(), only_schema.table),
        ("private", None)
    );
    let wildcard = parse(json!({"schema": "*", "table": "*"})).expect("parses");
    assert_eq!(wildcard.table, None);
    let blank_filter = parse(json!({"schema": "public", "table": "t", "filter": "  "})).expect("parses");
    assert_eq!(blank_filter.filter, None);
}

#[test]
fn refusals_carry_supabase_messages() {
    assert_eq!(
        message(json!({})),
        "No subscription params provided. Please provide at least a `schema` or `table` to subscribe to: %{}"
    );
    assert_eq!(
        message(json!({"event": "*", "table": {"actually a": "map"}, "schema": "public"})),
        r#"No subscription params provided. Please provide at least a `schema` or `table` to subscribe to: %{"event" => "*", "schema" => "public", "table" => %{"actually a" => "map"}}"#
    );
    // A filter needs both schema and table.
    assert!(
        message(json!({"table": "t", "filter": "id=eq.1"})).starts_with("No subscription params provided")
    );
    assert!(
        message(json!({"schema": "public", "table": "t", "filter": [1]}))
            .starts_with("No subscription params")
    );
    assert!(message(json!("todos")).ends_with(r#"to subscribe to: "todos""#));
    assert_eq!(
        message(json!({"user_token": "secret"})),
        "No subscription params provided. Please provide at least a `schema` or `table` to subscribe to: <redacted>"
    );
    assert_eq!(
        message(json!({"schema": "public", "table": "messages", "filter": "subject=foo.hey"})),
        r#"Error parsing `filter` params: ["foo", "hey"]"#
    );
    assert_eq!(
        message(json!({"schema": "public", "table": "t", "filter": "id=eq.1,,id=eq.2"})),
        "Error parsing `filter` params: filter must not contain empty segments (check for extra commas)"
    );
    assert_eq!(
        message(json!({"schema": "public", "table": "t", "select": "a"})),
        r#"Error parsing `select` params: expected a list of column name strings, e.g. select: ["col1", "col2"]"#
    );
    for wildcard in [
        json!({"schema": "public", "select": ["a"]}),
        json!({"schema": "public", "table": "*", "select": []}),
    ] {
        assert_eq!(
            message(wildcard),
            "Column selection is not supported for wildcard subscriptions. Provide an explicit schema and table name."
        );
    }
}

#[test]
fn ids_are_stable_per_distinct_params() {
    let a = parse(json!({"event": "*", "schema": "public", "table": "t"})).expect("a");
    let same = parse(json!({"table": "t", "schema": "public", "event": "*"})).expect("same");
    let other = parse(json!({"event": "INSERT", "schema": "public", "table": "t"})).expect("other");
    let other_case = parse(json!({"event": "insert", "schema": "public", "table": "t"})).expect("case");
    assert_eq!(a.id, same.id);
    assert_ne!(a.id, other.id);
    // The echo differs, so the id does too, although both mean INSERT.
    assert_ne!(other.id, other_case.id);
    // Fixed across runs and builds (a pinned value, so a hash change is noticed).
    assert_eq!(a.id, 49_972_713);
    let ids: std::collections::HashSet<u32> = (0..2000)
        .map(|i| {
            parse(json!({"schema": "public", "table": format!("t{i}")}))
                .expect("ok")
                .id
        })
        .collect();
    assert_eq!(ids.len(), 2000, "no collisions among 2000 tables");
    assert!(ids.iter().all(|id| *id < (1 << 31)));
}

#[test]
fn reply_entries_echo_the_client_object_with_an_integer_id() {
    let sent =
        json!({"event": "INSERT", "schema": "public", "table": "t", "filter": "id=eq.1", "extra": [1]});
    let b = parse(sent.clone()).expect("parses");
    let reply = b.reply_entry();
    let mut expected = sent;
    expected["id"] = json!(b.id);
    assert_eq!(reply, expected);
    assert!(reply["id"].is_u64());
}

fn todos() -> Table {
    let column = |name: &str, type_name: &str, oid: u32, key: bool| Column {
        name: name.into(),
        type_name: type_name.into(),
        type_oid: oid,
        key,
    };
    Table {
        oid: 16_400,
        schema: "public".into(),
        name: "todos".into(),
        replica_identity: ReplicaIdentity::Default,
        json: Default::default(),
        columns: Arc::from(vec![
            column("id", "int8", 20, true),
            column("title", "text", 25, false),
            column("done", "bool", 16, false),
            column("secret", "text", 25, false),
        ]),
    }
}

#[test]
fn binding_to_a_table_resolves_filter_and_columns() {
    let t = todos();
    let all = parse(json!({"schema": "public", "table": "todos"}))
        .expect("ok")
        .bind(&t, None)
        .expect("binds");
    assert!(all.filter.is_none());
    assert_eq!(all.columns.iter().collect::<Vec<_>>(), [0, 1, 2, 3]);

    let selected =
        parse(json!({"schema": "public", "table": "todos", "select": ["done"], "filter": "done=is.true"}))
            .expect("ok")
            .bind(&t, None)
            .expect("binds");
    assert_eq!(
        selected.columns.iter().collect::<Vec<_>>(),
        [0, 2],
        "select plus the key"
    );
    assert!(selected.filter.is_some());

    let keys_only = parse(json!({"schema": "public", "table": "todos", "select": []})).expect("ok");
    assert_eq!(
        keys_only
            .bind(&t, None)
            .expect("binds")
            .columns
            .iter()
            .collect::<Vec<_>>(),
        [0]
    );

    // Limited by what the subscriber may read.
    let visible = ColumnSet::from_indexes(4, [0, 1, 2]);
    let all_visible = parse(json!({"schema": "public", "table": "todos"})).expect("ok");
    assert_eq!(
        all_visible
            .bind(&t, Some(&visible))
            .expect("binds")
            .columns
            .iter()
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let hidden = parse(json!({"schema": "public", "table": "todos", "select": ["secret"]})).expect("ok");
    assert_eq!(
        hidden.bind(&t, Some(&visible)).expect_err("hidden").to_string(),
        "invalid column for select secret"
    );
    let hidden_filter =
        parse(json!({"schema": "public", "table": "todos", "filter": "secret=eq.x"})).expect("ok");
    assert_eq!(
        hidden_filter
            .bind(&t, Some(&visible))
            .expect_err("hidden")
            .to_string(),
        "invalid column for filter secret"
    );
    let missing = parse(json!({"schema": "public", "table": "todos", "select": ["nope"]})).expect("ok");
    assert_eq!(
        missing.bind(&t, None).expect_err("missing").to_string(),
        "invalid column for select nope"
    );
}

#[test]
fn tables_match_as_publication_lookups_do() {
    let b = |schema: &str, table: Option<&str>| {
        let mut v = json!({"schema": schema});
        if let Some(table) = table {
            v["table"] = json!(table);
        }
        parse(v).expect("parses")
    };
    assert!(b("public", Some("todos")).matches_table("public", "todos"));
    assert!(!b("public", Some("todos")).matches_table("public", "todo"));
    assert!(!b("public", Some("todos")).matches_table("private", "todos"));
    assert!(b("public", None).matches_table("public", "anything"));
    assert!(b("*", None).matches_table("x", "y"));
    assert!(b("*", Some("todos")).matches_table("x", "todos"));
    // Names are LIKE patterns without an escape character.
    assert!(b("public", Some("todo%")).matches_table("public", "todo_items"));
    assert!(b("public", Some("user_events")).matches_table("public", "userXevents"));
    assert!(b("public", Some(r"a\b")).matches_table("public", r"a\b"));
    assert!(EventFilter::All.matches(ChangeKind::Delete));
    assert!(!EventFilter::All.matches(ChangeKind::Truncate));
    assert!(!EventFilter::Insert.matches(ChangeKind::Update));
}
