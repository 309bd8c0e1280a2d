//! Differential test: `realtime::replication::values::write_json` against the server's own
//! `to_jsonb()`, for every type the stream converts.
//!
//! For each type, property-generated input literals (plus fixed edge cases) are cast to the type
//! in one batched query in a session pinned like the walsender (`DateStyle=ISO`, `TimeZone=UTC`,
//! `IntervalStyle=postgres`, `bytea_output=hex`, `extra_float_digits=1`). The query returns each
//! value's output-function text (`concat(v)`, which is what pgoutput sends; `v::text` is not:
//! `true::text` is `true`, `inet::text` adds `/32`, `bpchar::text` drops padding). We convert
//! that text and Postgres judges: our JSON, as `jsonb`, must print exactly like `to_jsonb(v)`
//! (canonical text, so numeric scale counts too). Every mismatch fails with the value shown.

#[path = "values_to_jsonb/literals.rs"]
mod literals;

use std::collections::HashMap;
use std::sync::Arc;

use proptest::strategy::{BoxedStrategy, Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};
use realtime::embedded::{EmbeddedPostgres, Options};
use realtime::replication::values::{self, Field, ValueKind};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use literals::*;

/// Generated values per type (in one query each), unless `PROPTEST_CASES` asks for more.
fn cases_per_type() -> usize {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64)
}

/// The session settings the walsender is started with.
const PINNED: &str = "SET DateStyle = ISO; SET TimeZone = 'UTC'; SET IntervalStyle = postgres; \
    SET bytea_output = hex; SET extra_float_digits = 1";

const USER_TYPES: &str = "
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy 😀', 'with \"quote\", comma', 'NULL', '');
    CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
    CREATE TYPE inner_row AS (x bool, y int8[]);
    CREATE TYPE pair AS (a int4, b text, gone int4, c numeric[], d jsonb, e timestamptz, f mood,
        g inner_row, h float8);
    ALTER TYPE pair DROP ATTRIBUTE gone;
";

/// One type under test: how to write it in SQL, how the stream would convert it, and values.
struct Case {
    sql_type: String,
    kind: ValueKind,
    literals: Vec<String>,
}

struct Mismatch {
    sql_type: String,
    literal: String,
    text: String,
    ours: String,
    theirs: String,
}

#[tokio::test]
async fn write_json_matches_to_jsonb_for_every_type() -> anyhow::Result<()> {
    let pg = EmbeddedPostgres::start(Options::default())?;
    let mut conn = PgConnection::connect(&pg.url("postgres")).await?;
    sqlx::raw_sql(PINNED).execute(&mut conn).await?;
    sqlx::raw_sql(USER_TYPES).execute(&mut conn).await?;

    let mut runner = TestRunner::new(Config::default());
    let mut cases = Vec::new();
    for (sql_type, strategy, fixed) in builtin_types() {
        let kind = builtin_kind(&mut conn, sql_type).await?;
        let array_kind = builtin_kind(&mut conn, &format!("{sql_type}[]")).await?;
        let delimiter = match &array_kind {
            ValueKind::Array { delimiter, .. } => char::from(*delimiter),
            other => anyhow::bail!("{sql_type}[] converts as {other:?}"),
        };
        let arrays = array_literal(strategy.clone(), delimiter);
        cases.push(case(sql_type.to_owned(), kind, &strategy, fixed, &mut runner));
        cases.push(case(
            format!("{sql_type}[]"),
            array_kind,
            &arrays,
            Vec::new(),
            &mut runner,
        ));
    }
    cases.extend(user_type_cases(&mut conn, &mut runner).await?);
    cases.push(fixed_case(&mut conn, "int4[]", ARRAY_EDGES).await?);
    cases.push(fixed_case(&mut conn, "text[]", TEXT_ARRAY_EDGES).await?);
    cases.push(fixed_case(&mut conn, "box[]", &["{(1,1),(0,0);(3,3),(2,2)}", "{}"]).await?);

    let mut mismatches = Vec::new();
    let mut checked = 0;
    for case in &cases {
        checked += case.literals.len();
        mismatches.extend(check(&mut conn, case).await?);
    }
    conn.close().await?;
    eprintln!("checked {checked} values of {} types", cases.len());
    if !mismatches.is_empty() {
        let mut report = format!("{} of {checked} values differ from to_jsonb:\n", mismatches.len());
        for m in mismatches.iter().take(40) {
            report.push_str(&format!(
                "  {} literal {:?}\n    text    {:?}\n    ours    {}\n    to_jsonb {}\n",
                m.sql_type, m.literal, m.text, m.ours, m.theirs
            ));
        }
        panic!("{report}");
    }
    Ok(())
}

fn case(
    sql_type: String,
    kind: ValueKind,
    strategy: &BoxedStrategy<String>,
    fixed: Vec<&str>,
    runner: &mut TestRunner,
) -> Case {
    let mut literals: Vec<String> = fixed.into_iter().map(str::to_owned).collect();
    literals.extend(sample(strategy, runner, cases_per_type()));
    Case {
        sql_type,
        kind,
        literals,
    }
}

fn sample(strategy: &BoxedStrategy<String>, runner: &mut TestRunner, n: usize) -> Vec<String> {
    (0..n)
        .filter_map(|_| strategy.new_tree(runner).ok().map(|tree| tree.current()))
        .collect()
}

async fn fixed_case(conn: &mut PgConnection, sql_type: &str, literals: &[&str]) -> anyhow::Result<Case> {
    Ok(Case {
        sql_type: sql_type.to_owned(),
        kind: builtin_kind(conn, sql_type).await?,
        literals: literals.iter().map(|s| (*s).to_owned()).collect(),
    })
}

/// The kind `builtin()` gives for this built-in type's OID; its name must be the catalog's.
async fn builtin_kind(conn: &mut PgConnection, sql_type: &str) -> anyhow::Result<ValueKind> {
    let (oid, typname): (i64, String) =
        sqlx::query_as("SELECT t.oid::int8, t.typname::text FROM pg_type t WHERE t.oid = $1::regtype")
            .bind(sql_type)
            .fetch_one(&mut *conn)
            .await?;
    let ty = values::builtin(u32::try_from(oid)?)
        .ok_or_else(|| anyhow::anyhow!("{sql_type} (oid {oid}) is missing from builtin()"))?;
    anyhow::ensure!(
        *ty.name == typname,
        "{sql_type}: builtin name {} != {typname}",
        ty.name
    );
    Ok(ty.kind)
}

/// Enum, domain and composite types: kinds as the stream would know them.
async fn user_type_cases(conn: &mut PgConnection, runner: &mut TestRunner) -> anyhow::Result<Vec<Case>> {
    // pgoutput names a domain by its base type, with pg_catalog written as "".
    let domain = values::from_type_message("", "int4").kind;
    let mood = values::from_type_message("public", "mood").kind;
    let moods = values::from_type_message("public", "_mood").kind;
    let inner = composite_kind(conn, "inner_row", &HashMap::new()).await?;
    let known = HashMap::from([("mood", mood.clone()), ("inner_row", inner)]);
    let pair = composite_kind(conn, "pair", &known).await?;
    let pairs = ValueKind::Array {
        element: Box::new(pair.clone()),
        delimiter: b',',
    };

    let pair_strategy = pair_literal();
    Ok(vec![
        case(
            "posint".into(),
            domain,
            &int(1, i64::from(i32::MAX)),
            vec!["1"],
            runner,
        ),
        case("mood".into(), mood, &mood_literal(), MOOD_LABELS.to_vec(), runner),
        case(
            "mood[]".into(),
            moods,
            &array_literal(mood_literal(), ','),
            Vec::new(),
            runner,
        ),
        case(
            "pair".into(),
            pair,
            &pair_strategy,
            vec!["(,,,,,,,)", "(1,\"\",{},\"{}\",,\"\",\"(,)\",)"],
            runner,
        ),
        case(
            "pair[]".into(),
            pairs,
            &array_literal(pair_strategy.clone(), ','),
            Vec::new(),
            runner,
        ),
    ])
}

/// A composite kind from the catalog, as a relation cache would build it: live attributes in
/// order, each converted by its built-in kind or a known user kind.
async fn composite_kind(
    conn: &mut PgConnection,
    sql_type: &str,
    known: &HashMap<&str, ValueKind>,
) -> anyhow::Result<ValueKind> {
    let attributes: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT a.attname::text, a.atttypid::int8, a.atttypid::regtype::text
         FROM pg_attribute a JOIN pg_type t ON t.typrelid = a.attrelid
         WHERE t.oid = $1::regtype AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
    )
    .bind(sql_type)
    .fetch_all(&mut *conn)
    .await?;
    let mut fields = Vec::new();
    for (name, oid, type_name) in attributes {
        let kind = match values::builtin(u32::try_from(oid)?) {
            Some(ty) => ty.kind,
            None => known
                .get(type_name.as_str())
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no kind for {type_name}"))?,
        };
        fields.push(Field {
            name: Arc::from(name),
            kind,
        });
    }
    Ok(ValueKind::Composite {
        fields: fields.into(),
    })
}

/// Converts every literal of the case and lets Postgres compare with `to_jsonb`.
async fn check(conn: &mut PgConnection, case: &Case) -> anyhow::Result<Vec<Mismatch>> {
    let ty = &case.sql_type;
    let rows: Vec<(String, String)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT concat(v), to_jsonb(v)::text
         FROM unnest($1::text[]) WITH ORDINALITY AS u(literal, i), LATERAL (SELECT literal::{ty} AS v) AS c
         ORDER BY i"
    )))
    .bind(&case.literals)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{ty}: casting the literals failed: {e}\n{:?}",
            &case.literals[..8.min(case.literals.len())]
        )
    })?;

    let mut mismatches = Vec::new();
    let mut ours = Vec::with_capacity(rows.len());
    for (literal, (text, theirs)) in case.literals.iter().zip(&rows) {
        let mut json = String::new();
        values::write_json(&case.kind, text.as_bytes(), &mut json);
        if serde_json::from_str::<serde::de::IgnoredAny>(&json).is_err() {
            mismatches.push(mismatch(case, literal, text, &json, theirs));
            json = "null".to_owned();
        }
        ours.push(json);
    }
    let differing: Vec<(i64,)> = sqlx::query_as(
        "SELECT i FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(ours, theirs, i)
         WHERE ours::jsonb::text IS DISTINCT FROM theirs::jsonb::text OR NOT ours::jsonb = theirs::jsonb",
    )
    .bind(&ours)
    .bind(rows.iter().map(|(_, theirs)| theirs.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| anyhow::anyhow!("{ty}: comparing failed: {e}"))?;
    for (i,) in differing {
        let index = usize::try_from(i - 1)?;
        let (text, theirs) = &rows[index];
        mismatches.push(mismatch(case, &case.literals[index], text, &ours[index], theirs));
    }
    Ok(mismatches)
}

fn mismatch(case: &Case, literal: &str, text: &str, ours: &str, theirs: &str) -> Mismatch {
    Mismatch {
        sql_type: case.sql_type.clone(),
        literal: literal.to_owned(),
        text: text.to_owned(),
        ours: ours.to_owned(),
        theirs: theirs.to_owned(),
    }
}
