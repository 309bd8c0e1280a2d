//! Who sees what when grants, policies and roles change while clients are subscribed, against a
//! real cluster and `realtime serve` as a child process:
//! - every statement that narrows access (ENABLE and FORCE ROW LEVEL SECURITY, CREATE POLICY,
//!   REVOKE on a table or a column, role membership and attributes) holds for a change
//!   committed one second later, and a subscription that lost its table is told so;
//! - a DELETE under RLS and `REPLICA IDENTITY FULL` shows the key only and its filters read
//!   the key only (no filter oracle);
//! - a resume replay is refetched where it cannot be authorized as of the commit;
//! - partitions and inheritance children are routed to, and authorized by, their root.

use std::time::Duration;

use realtime::embedded::Options;
use realtime_tests::auth::token;
use realtime_tests::service::{Service, Subscriber};
use realtime_tests::{exec, pool, start_postgres};
use serde_json::{Value, json};

/// How long a push that should come may take.
const ARRIVES: Duration = Duration::from_secs(20);
/// The bound the service promises: a change committed this long after the statement is
/// decided under it.
const TAKES_EFFECT: Duration = Duration::from_secs(1);

/// Pushes until a `postgres_changes` push for `table` whose record has `id`, returned with
/// everything before it. Panics after [`ARRIVES`].
async fn until_change(subscriber: &mut Subscriber, table: &str, id: i64) -> (Value, Vec<(String, Value)>) {
    let mut before = Vec::new();
    loop {
        let Some((event, payload)) = subscriber.next_push(ARRIVES).await else {
            panic!("no change {table}/{id} within {ARRIVES:?}; before it: {before:?}");
        };
        let data = &payload["data"];
        if event == "postgres_changes" && data["table"] == table && data["record"]["id"] == id {
            return (payload, before);
        }
        before.push((event, payload));
    }
}

/// The changes of `table` among `pushes`.
fn changes_of<'p>(pushes: &'p [(String, Value)], table: &str) -> Vec<&'p Value> {
    pushes
        .iter()
        .filter(|(event, p)| event == "postgres_changes" && p["data"]["table"] == table)
        .map(|(_, p)| p)
        .collect()
}

/// One narrowing statement: a role and table of its own, the statement, and what a row inserted
/// one second later must look like to the subscriber (`None`: not sent at all).
struct Case {
    name: &'static str,
    setup: &'static str,
    statement: &'static str,
    /// Columns the later row may carry (only checked when it is sent).
    later_columns: Option<&'static [&'static str]>,
    /// A subscription that lost its table hears so.
    told: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "enable_rls",
        setup: "CREATE TABLE enable_rls (id int8 PRIMARY KEY, body text);
                GRANT SELECT ON enable_rls TO enable_rls_r;",
        // No policy: RLS then hides every row.
        statement: "ALTER TABLE enable_rls ENABLE ROW LEVEL SECURITY",
        later_columns: None,
        told: false,
    },
    Case {
        name: "create_policy",
        setup: "CREATE TABLE create_policy (id int8 PRIMARY KEY, secret bool NOT NULL);
                GRANT SELECT ON create_policy TO create_policy_r;
                ALTER TABLE create_policy ENABLE ROW LEVEL SECURITY;
                CREATE POLICY everything ON create_policy FOR SELECT USING (true);",
        statement: "CREATE POLICY no_secrets ON create_policy AS RESTRICTIVE FOR SELECT USING (NOT secret)",
        later_columns: None,
        told: false,
    },
    Case {
        name: "revoke_table",
        setup: "CREATE TABLE revoke_table (id int8 PRIMARY KEY, body text);
                GRANT SELECT ON revoke_table TO revoke_table_r;",
        statement: "REVOKE SELECT ON revoke_table FROM revoke_table_r",
        later_columns: None,
        told: true,
    },
    Case {
        name: "revoke_column",
        setup: "CREATE TABLE revoke_column (id int8 PRIMARY KEY, body text, secret bool);
                GRANT SELECT (id, body, secret) ON revoke_column TO revoke_column_r;",
        statement: "REVOKE SELECT (secret) ON revoke_column FROM revoke_column_r",
        later_columns: Some(&["body", "id"]),
        told: false,
    },
    Case {
        name: "force_rls",
        // The role owns the table: RLS (without a policy) does not apply to it until forced.
        setup: "CREATE TABLE force_rls (id int8 PRIMARY KEY, body text);
                ALTER TABLE force_rls ENABLE ROW LEVEL SECURITY;
                ALTER TABLE force_rls OWNER TO force_rls_r;",
        statement: "ALTER TABLE force_rls FORCE ROW LEVEL SECURITY",
        later_columns: None,
        told: false,
    },
    Case {
        name: "membership",
        // No event trigger fires for role membership: the periodic re-check sees it.
        setup: "CREATE TABLE membership (id int8 PRIMARY KEY, body text);
                CREATE ROLE membership_group NOLOGIN;
                GRANT SELECT ON membership TO membership_group;
                GRANT membership_group TO membership_r;",
        statement: "REVOKE membership_group FROM membership_r",
        later_columns: None,
        told: true,
    },
    Case {
        name: "attribute",
        // A role attribute (no event trigger either): without INHERIT the role no longer has
        // its group's privileges. (A BYPASSRLS role other than service_role cannot subscribe
        // at all: the role allow-list refuses it at connect.)
        setup: "CREATE TABLE attribute (id int8 PRIMARY KEY, body text);
                CREATE ROLE attribute_group NOLOGIN;
                GRANT SELECT ON attribute TO attribute_group;
                GRANT attribute_group TO attribute_r;",
        statement: "ALTER ROLE attribute_r NOINHERIT",
        later_columns: None,
        told: true,
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_narrowing_statement_holds_for_changes_committed_a_second_later() {
    let pg = start_postgres(Options::default());
    let db = pool(&pg).await;
    exec(&db, "CREATE TABLE ctl (id int8 PRIMARY KEY)").await;
    for case in CASES {
        exec(
            &db,
            &format!(
                "CREATE ROLE {0}_r NOLOGIN; GRANT SELECT ON ctl TO {0}_r; {1}",
                case.name, case.setup
            ),
        )
        .await;
    }
    let tables: Vec<&str> = CASES.iter().map(|c| c.name).collect();
    exec(
        &db,
        &format!("CREATE PUBLICATION pub FOR TABLE ctl, {}", tables.join(", ")),
    )
    .await;
    // Each case's role is a token role, so it must be allowed (ALLOWED_ROLES).
    let roles: Vec<String> = CASES.iter().map(|c| format!("{}_r", c.name)).collect();
    let allowed = format!("anon,authenticated,service_role,{}", roles.join(","));
    let service = Service::start(
        &pg.url("postgres"),
        "s_narrow",
        "pub",
        &[("ALLOWED_ROLES", allowed)],
    );

    for (n, case) in CASES.iter().enumerate() {
        let token = token(&format!("{}_r", case.name));
        let bindings = json!([
            {"event": "*", "schema": "public", "table": case.name},
            {"event": "INSERT", "schema": "public", "table": "ctl"},
        ]);
        let mut subscriber = Subscriber::join(&service, &token, case.name, bindings, None).await;
        let row = |id: i64| match case.name {
            "create_policy" => format!("INSERT INTO create_policy VALUES ({id}, true)"),
            "revoke_column" => format!("INSERT INTO {} VALUES ({id}, 'b', true)", case.name),
            _ => format!("INSERT INTO {} VALUES ({id}, 'b')", case.name),
        };
        // Before the statement the subscriber sees the table's rows, secret column included.
        exec(&db, &row(1)).await;
        let (first, _) = until_change(&mut subscriber, case.name, 1).await;
        if case.name == "revoke_column" {
            assert_eq!(first["data"]["record"]["secret"], true, "{}", case.name);
        }

        exec(&db, case.statement).await;
        tokio::time::sleep(TAKES_EFFECT).await;
        exec(&db, &row(2)).await;
        // The control row, committed after, bounds the wait: everything before it has been
        // decided by then.
        let control = 100 + n as i64;
        exec(&db, &format!("INSERT INTO ctl VALUES ({control})")).await;
        let (_, before) = until_change(&mut subscriber, "ctl", control).await;
        let later = changes_of(&before, case.name);
        match case.later_columns {
            None => assert!(
                later.is_empty(),
                "{}: a change committed {TAKES_EFFECT:?} after `{}` reached the subscriber: {later:?}",
                case.name,
                case.statement
            ),
            Some(columns) => {
                assert_eq!(later.len(), 1, "{}: {before:?}", case.name);
                let record = later[0]["data"]["record"].as_object().unwrap();
                let mut got: Vec<&str> = record.keys().map(String::as_str).collect();
                got.sort_unstable();
                assert_eq!(got, columns, "{}: only the columns still granted", case.name);
            }
        }
        if case.told {
            let mut pushes = before.clone();
            while !pushes
                .iter()
                .any(|(e, p)| e == "system" && p["reason"] == "access_revoked")
            {
                match subscriber.next_push(ARRIVES).await {
                    Some(push) => pushes.push(push),
                    None => panic!(
                        "{}: the subscription was not told it lost its table: {pushes:?}",
                        case.name
                    ),
                }
            }
            let (_, told) = pushes
                .iter()
                .find(|(e, p)| e == "system" && p["reason"] == "access_revoked")
                .unwrap();
            assert_eq!(told["status"], "error");
            assert_eq!(told["channel"], case.name);
            let message = told["message"].as_str().unwrap();
            assert!(
                message.contains(&format!("table: {}", case.name)) && message.contains("permission denied"),
                "{message}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_under_row_security_show_the_key_only_and_filter_on_it_only() {
    let pg = start_postgres(Options::default());
    let db = pool(&pg).await;
    exec(
        &db,
        "CREATE ROLE reader NOLOGIN;
         CREATE TABLE notes (id int8 PRIMARY KEY, owner text NOT NULL, secret text);
         ALTER TABLE notes REPLICA IDENTITY FULL;
         ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
         CREATE POLICY own ON notes FOR SELECT USING (owner = current_user);
         GRANT SELECT ON notes TO reader;
         CREATE TABLE ctl (id int8 PRIMARY KEY);
         GRANT SELECT ON ctl TO reader;
         CREATE PUBLICATION pub FOR TABLE notes, ctl;",
    )
    .await;
    let service = Service::start(&pg.url("postgres"), "s_oracle", "pub", &[]);
    let token = token("reader");
    let ctl = json!({"event": "INSERT", "schema": "public", "table": "ctl"});
    let join = |channel: &'static str, binding: Value| {
        let (service, token, ctl) = (&service, &token, ctl.clone());
        async move { Subscriber::join(service, token, channel, json!([binding, ctl]), None).await }
    };
    // Guessing the hidden row's secret, its owner, or taking every delete.
    let mut guess_right = join(
        "right",
        json!({"event": "DELETE", "schema": "public", "table": "notes", "filter": "secret=eq.launch-codes"}),
    )
    .await;
    let mut guess_owner = join(
        "owner",
        json!({"event": "DELETE", "schema": "public", "table": "notes", "filter": "owner=eq.admin"}),
    )
    .await;
    let mut by_key = join(
        "key",
        json!({"event": "*", "schema": "public", "table": "notes", "filter": "id=eq.7"}),
    )
    .await;

    exec(
        &db,
        "INSERT INTO notes VALUES (7, 'admin', 'launch-codes'), (8, 'reader', 'mine');
         DELETE FROM notes WHERE id = 7;
         UPDATE notes SET secret = 'still mine' WHERE id = 8;
         INSERT INTO ctl VALUES (1);",
    )
    .await;
    for (name, subscriber) in [("right", &mut guess_right), ("owner", &mut guess_owner)] {
        let (_, before) = until_change(subscriber, "ctl", 1).await;
        assert!(
            changes_of(&before, "notes").is_empty(),
            "{name}: a filter on a column of a row the role may not see matched its DELETE: {before:?}"
        );
    }
    // As Supabase: the DELETE reaches a binding on the key, with the key alone.
    let mut pushes = Vec::new();
    let (_, before) = until_change(&mut by_key, "ctl", 1).await;
    pushes.extend(before);
    let notes = changes_of(&pushes, "notes");
    assert_eq!(
        notes.len(),
        1,
        "the insert of a hidden row is not sent, its delete is: {notes:?}"
    );
    assert_eq!(notes[0]["data"]["type"], "DELETE");
    assert_eq!(notes[0]["data"]["old_record"], json!({"id": 7}));
    assert!(!notes[0].to_string().contains("launch-codes"));

    // An UPDATE of a visible row under RLS: the old image is the key only.
    let mut all = join(
        "all",
        json!({"event": "UPDATE", "schema": "public", "table": "notes"}),
    )
    .await;
    exec(
        &db,
        "UPDATE notes SET secret = 'newer' WHERE id = 8; INSERT INTO ctl VALUES (2);",
    )
    .await;
    let (_, before) = until_change(&mut all, "ctl", 2).await;
    let updates = changes_of(&before, "notes");
    assert_eq!(updates.len(), 1, "{before:?}");
    assert_eq!(updates[0]["data"]["old_record"], json!({"id": 8}));
    assert_eq!(updates[0]["data"]["record"]["secret"], "newer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_refetched_where_it_cannot_be_authorized_as_of_the_commit() {
    let pg = start_postgres(Options::default());
    let db = pool(&pg).await;
    exec(
        &db,
        "CREATE ROLE reader NOLOGIN;
         CREATE TABLE open (id int8 PRIMARY KEY, body text);
         GRANT SELECT ON open TO reader;
         CREATE TABLE drafts (id int8 PRIMARY KEY, published bool NOT NULL);
         ALTER TABLE drafts ENABLE ROW LEVEL SECURITY;
         CREATE POLICY published ON drafts FOR SELECT USING (published);
         GRANT SELECT ON drafts TO reader;
         CREATE PUBLICATION pub FOR TABLE open, drafts;",
    )
    .await;
    let service = Service::start(&pg.url("postgres"), "s_replay", "pub", &[]);
    let token = token("reader");
    let open = json!([{"event": "*", "schema": "public", "table": "open"}]);
    let drafts = json!([{"event": "*", "schema": "public", "table": "drafts"}]);
    let resume = |channel: &'static str, bindings: &Value, since: &str| {
        let (service, token, bindings) = (&service, &token, bindings.clone());
        let options = json!({"since": since});
        async move { Subscriber::join_with(service, token, channel, bindings, None, options).await }
    };

    // A table without RLS, no access change since: the replay sends the rows.
    let mut first = Subscriber::join(&service, &token, "open", open.clone(), None).await;
    exec(&db, "INSERT INTO open VALUES (1, 'a')").await;
    let (seen, _) = until_change(&mut first, "open", 1).await;
    let since = seen["position"].as_str().unwrap().to_owned();
    exec(&db, "INSERT INTO open VALUES (2, 'b')").await;
    let (second, _) = until_change(&mut first, "open", 2).await;
    let after_second = second["position"].as_str().unwrap().to_owned();
    let mut resumed = resume("open", &open, &since).await;
    let (replayed, _) = until_change(&mut resumed, "open", 2).await;
    assert_eq!(replayed["data"]["record"]["body"], "b");

    // A draft committed unpublished, published later: replaying it would show a row version
    // the role could not see at commit (Postgres checks the row as it is now).
    let mut watcher = Subscriber::join(&service, &token, "drafts", drafts.clone(), None).await;
    exec(&db, "INSERT INTO drafts VALUES (1, true)").await;
    let (seen, _) = until_change(&mut watcher, "drafts", 1).await;
    let since = seen["position"].as_str().unwrap().to_owned();
    exec(
        &db,
        "INSERT INTO drafts VALUES (2, false); UPDATE drafts SET published = true WHERE id = 2;",
    )
    .await;
    // In the window once the live subscriber has it (live delivery asks Postgres now, as
    // Supabase does, so it sees the published row).
    let mut seen_update = false;
    while !seen_update {
        let (_, payload) = watcher.next_push(ARRIVES).await.expect("the update, live");
        seen_update = payload["data"]["type"] == "UPDATE";
    }
    let mut resumed = resume("drafts", &drafts, &since).await;
    let push = resumed.next_push(ARRIVES).await.expect("a push");
    assert_eq!(push.0, "system", "no row is replayed: {push:?}");
    assert_eq!(
        (push.1["refetch"].clone(), push.1["reason"].clone()),
        (json!(true), json!("row_security"))
    );
    // Live from there.
    exec(&db, "INSERT INTO drafts VALUES (3, true)").await;
    let (_, before) = until_change(&mut resumed, "drafts", 3).await;
    assert!(changes_of(&before, "drafts").is_empty(), "{before:?}");

    // A grant between the position and now: the replay across it is refetched.
    exec(&db, "GRANT SELECT ON open TO PUBLIC").await;
    exec(&db, "INSERT INTO open VALUES (3, 'c')").await;
    until_change(&mut first, "open", 3).await;
    let mut resumed = resume("open2", &open, &after_second).await;
    let push = resumed.next_push(ARRIVES).await.expect("a push");
    assert_eq!(push.0, "system", "no row is replayed: {push:?}");
    assert_eq!(push.1["reason"], "access_changed", "{push:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_and_inheritance_children_are_authorized_by_their_root() {
    let pg = start_postgres(Options::default());
    let db = pool(&pg).await;
    exec(
        &db,
        "CREATE ROLE reader NOLOGIN;
         CREATE TABLE events (id int8, owner text NOT NULL, body text, PRIMARY KEY (id))
           PARTITION BY RANGE (id);
         CREATE TABLE events_low PARTITION OF events FOR VALUES FROM (0) TO (100);
         CREATE TABLE events_high PARTITION OF events FOR VALUES FROM (100) TO (200);
         ALTER TABLE events ENABLE ROW LEVEL SECURITY;
         CREATE POLICY own ON events FOR SELECT USING (owner = current_user);
         GRANT SELECT ON events TO reader;
         -- The leaves have neither grants nor RLS of their own: only the root's count.
         CREATE TABLE base (id int8 PRIMARY KEY, owner text NOT NULL);
         CREATE TABLE derived (extra text) INHERITS (base);
         ALTER TABLE derived ADD PRIMARY KEY (id);
         ALTER TABLE base ENABLE ROW LEVEL SECURITY;
         CREATE POLICY own ON base FOR SELECT USING (owner = current_user);
         GRANT SELECT ON base TO reader;
         CREATE TABLE ctl (id int8 PRIMARY KEY);
         GRANT SELECT ON ctl TO reader;
         CREATE PUBLICATION pub FOR TABLE events, base, ctl;",
    )
    .await;
    let service = Service::start(&pg.url("postgres"), "s_parts", "pub", &[]);
    let token = token("reader");
    let bindings = json!([
        {"event": "*", "schema": "public", "table": "events"},
        {"event": "*", "schema": "public", "table": "base"},
        {"event": "INSERT", "schema": "public", "table": "ctl"},
    ]);
    let mut subscriber = Subscriber::join(&service, &token, "parts", bindings, None).await;
    exec(
        &db,
        "INSERT INTO events VALUES (1, 'reader', 'low'), (2, 'other', 'low'), (150, 'reader', 'high'), (151, 'other', 'high');
         INSERT INTO derived VALUES (10, 'reader', 'x'), (11, 'other', 'y');
         INSERT INTO ctl VALUES (1);",
    )
    .await;
    let (_, before) = until_change(&mut subscriber, "ctl", 1).await;
    let ids = |table: &str| -> Vec<i64> {
        changes_of(&before, table)
            .iter()
            .map(|p| p["data"]["record"]["id"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        ids("events"),
        [1, 150],
        "the parent's policy decides, per partition: {before:?}"
    );
    assert_eq!(
        ids("base"),
        [10],
        "the parent's policy decides for a child: {before:?}"
    );
    assert!(ids("events_low").is_empty() && ids("events_high").is_empty() && ids("derived").is_empty());
    for p in changes_of(&before, "events") {
        assert_eq!(p["data"]["schema"], "public");
    }
}
