//! Differential test: Postgres Changes filters evaluated by `realtime` against Postgres itself.
//!
//! Rows of every supported column class (integers beyond 2^53, exact numerics, floats with NaN
//! and infinities, text with quotes and wildcards, `character(n)`, `citext`, booleans, timestamps with offsets and BC
//! years, dates, uuids, NULLs) are inserted and streamed through the real replication path, so
//! the filters read exactly the row images production reads. For each generated filter
//! (`col=[not.]op.value`), our `matches` must equal Postgres's
//! `coalesce(col <op> value::type, false)` on every row, and a value must be refused by us
//! exactly when Postgres refuses to cast it.
//!
//! Table policies share the filters' value rules: a rule `rows = "col <op> <literal>"` must
//! decide every row as Postgres evaluates the same condition (the literal coerced to the
//! column's type: exact numerics, `bpchar` padding, uuids and times as values), and be refused
//! exactly when Postgres refuses the literal.

use std::collections::BTreeMap;

use realtime::auth::Claims;
use realtime::change::Row;
use realtime::changes::Filter;
use realtime::embedded::Options;
use realtime::policy::{PolicySet, Visibility};
use realtime_tests::{Stream, database, exec, pool, replication_config, start_postgres};

struct Spec {
    column: &'static str,
    /// The column's declared type.
    sql_type: &'static str,
    /// The type filter values are cast to (`character(5)` columns compare as `bpchar`).
    cast: &'static str,
    /// Values stored in rows (`None` = NULL), as Postgres input text.
    rows: &'static [Option<&'static str>],
    /// Extra filter values beyond the stored ones (other spellings, invalid input).
    extra: &'static [&'static str],
    /// Text-only: LIKE patterns and regexes.
    patterns: &'static [&'static str],
    regexes: &'static [&'static str],
}

const SPECS: &[Spec] = &[
    Spec {
        column: "c_int4",
        sql_type: "int4",
        cast: "int4",
        rows: &[
            Some("0"),
            Some("1"),
            Some("-1"),
            Some("42"),
            Some("2147483647"),
            Some("-2147483648"),
            None,
        ],
        extra: &["+5", " 7 ", "2147483648", "1.5", "abc", ""],
        patterns: &[],
        regexes: &[],
    },
    Spec {
        column: "c_int8",
        sql_type: "int8",
        cast: "int8",
        rows: &[
            Some("0"),
            Some("9007199254740992"),
            Some("9007199254740993"),
            Some("-9223372036854775808"),
            Some("9223372036854775807"),
            Some("5"),
            None,
        ],
        extra: &["9223372036854775808", "-9007199254740993", "1e3"],
        patterns: &[],
        regexes: &[],
    },
    Spec {
        column: "c_numeric",
        sql_type: "numeric",
        cast: "numeric",
        rows: &[
            Some("0"),
            Some("1.5"),
            Some("1.50"),
            Some("-0.0000001"),
            Some("12345678901234567890.000100"),
            Some("NaN"),
            Some("Infinity"),
            Some("-Infinity"),
            Some("1e20"),
            None,
        ],
        extra: &[
            "1.500",
            "15e-1",
            "nan",
            "inf",
            "-inf",
            " 2 ",
            "12345678901234567890.0001",
            "abc",
            "1e",
        ],
        patterns: &[],
        regexes: &[],
    },
    Spec {
        column: "c_float8",
        sql_type: "float8",
        cast: "float8",
        rows: &[
            Some("0"),
            Some("-0"),
            Some("0.1"),
            Some("1.5"),
            Some("1e308"),
            Some("NaN"),
            Some("Infinity"),
            Some("-Infinity"),
            Some("-2.5e-300"),
            None,
        ],
        extra: &["0.10000000000000001", "inf", "-inf", "nan", "1e400", "1.5e0", "x"],
        patterns: &[],
        regexes: &[],
    },
    Spec {
        column: "c_float4",
        sql_type: "float4",
        cast: "float4",
        rows: &[
            Some("0.1"),
            Some("1.5"),
            Some("NaN"),
            Some("-Infinity"),
            Some("3.4e38"),
            None,
        ],
        extra: &["0.100000001", "0.10000001", "1e39"],
        patterns: &[],
        regexes: &[],
    },
    Spec {
        column: "c_text",
        sql_type: "text",
        cast: "text",
        rows: &[
            Some(""),
            Some("a"),
            Some("B"),
            Some("abc"),
            Some("a,b"),
            Some("say \"hi\""),
            Some("50%"),
            Some("x_y"),
            Some("é"),
            Some("line\nbreak"),
            Some("NULL"),
            Some("  pad"),
            Some("back\\slash"),
            None,
        ],
        extra: &["A", "b", "zz"],
        patterns: &["a%", "%b%", "_", "%\\%", "A%", "x\\_y", "%", "", "__", "%a%b%"],
        regexes: &["^a", "b$", ".", "^$", "a|B", "e.b", "\\d", "^[a-c]+$", "\\\\"],
    },
    Spec {
        column: "c_bool",
        sql_type: "bool",
        cast: "bool",
        rows: &[Some("true"), Some("false"), None],
        extra: &["t", "f", "yes", "no", "on", "off", "1", "0", "TRUE", "maybe"],
        patterns: &[],
        regexes: &[],
    },
    Spec {
        column: "c_timestamptz",
        sql_type: "timestamptz",
        cast: "timestamptz",
        rows: &[
            Some("2024-01-02 01:04:05.123456+02"),
            Some("2024-01-01 23:04:05.123457+00"),
            Some("1970-01-01 00:00:00+00"),
            Some("infinity"),
            Some("-infinity"),
            Some("0044-03-15 00:00:00+00 BC"),
            Some("2000-02-29 12:00:00+05:30"),
            None,
        ],
        extra: &[
            "2024-01-02T01:04:05.123456+02:00",
            "2024-01-01 23:04:05.123456Z",
            "2024-01-01",
            "epoch",
            "2024-01-01 23:04:05.123456",
            "2000-02-29 06:30:00 UTC",
            "2024-02-30",
            "not a time",
        ],
        patterns: &[],
        regexes: &[],
    },
    Spec {
        column: "c_date",
        sql_type: "date",
        cast: "date",
        rows: &[
            Some("2024-02-29"),
            Some("1970-01-01"),
            Some("0044-03-15 BC"),
            Some("infinity"),
            Some("-infinity"),
            None,
        ],
        extra: &[
            "2024-02-29 10:00",
            "2024-02-28",
            "epoch",
            "2024-02-30",
            "2023-02-29",
        ],
        patterns: &[],
        regexes: &[],
    },
    Spec {
        column: "c_uuid",
        sql_type: "uuid",
        cast: "uuid",
        rows: &[
            Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            Some("00000000-0000-0000-0000-000000000000"),
            Some("ffffffff-ffff-ffff-ffff-ffffffffffff"),
            None,
        ],
        extra: &[
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "xyz",
        ],
        patterns: &[],
        regexes: &[],
    },
    Spec {
        column: "c_int2",
        sql_type: "int2",
        cast: "int2",
        rows: &[Some("0"), Some("32767"), Some("-32768"), Some("7"), None],
        extra: &["32768", "7.0", "-0"],
        patterns: &[],
        regexes: &[],
    },
    Spec {
        column: "c_char",
        sql_type: "character(5)",
        cast: "bpchar",
        rows: &[Some("ab"), Some("ab   "), Some("abc"), Some(""), Some("b"), None],
        extra: &["ab ", " ab", "abcdefg"],
        patterns: &[],
        regexes: &[],
    },
    Spec {
        column: "c_citext",
        sql_type: "citext",
        cast: "citext",
        rows: &[Some("Abc"), Some("abc"), Some("ABC "), Some("b"), Some(""), None],
        extra: &["aBc", "B", "a", "abc "],
        patterns: &[],
        regexes: &[],
    },
    Spec {
        column: "c_timestamp",
        sql_type: "timestamp",
        cast: "timestamp",
        rows: &[
            Some("2024-02-29 23:59:59.5"),
            Some("1999-12-31 23:59:59"),
            Some("infinity"),
            Some("0001-01-01 00:00:00 BC"),
            None,
        ],
        extra: &[
            "2024-02-29T23:59:59.500",
            "2024-02-29 23:59:59.5+05",
            "2024-03-01",
            "1999-12-31 24:00:00",
        ],
        patterns: &[],
        regexes: &[],
    },
];

const ROWS: usize = 48;

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize
    }
}

/// A filter value as the client would write it: PostgREST-quoted when it holds characters the
/// grammar treats specially or edge whitespace.
fn filter_literal(v: &str) -> String {
    let special = v.is_empty()
        || v.starts_with(char::is_whitespace)
        || v.ends_with(char::is_whitespace)
        || v.contains([',', '"', '\\', '(', ')']);
    if !special {
        return v.to_owned();
    }
    let mut out = String::from("\"");
    for c in v.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// One element of an array literal (`in` list).
fn array_element(v: Option<&str>) -> String {
    let Some(v) = v else {
        return "NULL".to_owned();
    };
    let plain = !v.is_empty()
        && !v.eq_ignore_ascii_case("null")
        && !v.contains([',', '"', '\\', '{', '}'])
        && !v.contains(char::is_whitespace);
    if plain {
        return v.to_owned();
    }
    let mut out = String::from("\"");
    for c in v.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// One generated filter and the SQL that evaluates it.
struct Case {
    filter: String,
    expr: String,
    param: Option<String>,
}

fn cases(spec: &Spec) -> Vec<Case> {
    let col = spec.column;
    let ty = spec.cast;
    let mut values: Vec<&str> = spec.rows.iter().flatten().copied().collect();
    values.extend(spec.extra);
    let mut out = Vec::new();
    for negate in [false, true] {
        let not = if negate { "not." } else { "" };
        let wrap = |expr: String| if negate { format!("NOT ({expr})") } else { expr };
        for value in &values {
            for (op, sql_op) in [
                ("eq", "="),
                ("neq", "<>"),
                ("lt", "<"),
                ("lte", "<="),
                ("gt", ">"),
                ("gte", ">="),
            ] {
                let collate = if ty == "text" { " COLLATE \"C\"" } else { "" };
                out.push(Case {
                    filter: format!("{col}={not}{op}.{}", filter_literal(value)),
                    expr: wrap(format!("{col}{collate} {sql_op} $1::text::{ty}")),
                    param: Some((*value).to_owned()),
                });
            }
            out.push(Case {
                filter: format!("{col}={not}isdistinct.{}", filter_literal(value)),
                expr: format!(
                    "{col} IS {}DISTINCT FROM $1::text::{ty}",
                    if negate { "NOT " } else { "" }
                ),
                param: Some((*value).to_owned()),
            });
        }
        let stored: Vec<Option<&str>> = spec.rows.to_vec();
        let lists: Vec<Vec<Option<&str>>> = vec![
            vec![],
            stored.iter().take(2).copied().collect(),
            vec![stored[stored.len() / 2], None],
            stored.iter().rev().take(3).copied().collect(),
            spec.extra.iter().take(2).map(|v| Some(*v)).collect(),
        ];
        for list in lists {
            let content: Vec<String> = list.iter().map(|v| array_element(*v)).collect();
            let content = content.join(",");
            out.push(Case {
                filter: format!("{col}={not}in.({content})"),
                expr: wrap(format!("{col} = ANY($1::text::{ty}[])")),
                param: Some(format!("{{{content}}}")),
            });
        }
        let mut is_values = vec!["null"];
        if ty == "bool" {
            is_values.extend(["true", "false", "unknown"]);
        }
        for is in is_values {
            out.push(Case {
                filter: format!("{col}={not}is.{is}"),
                expr: format!(
                    "{col} IS {}{}",
                    if negate { "NOT " } else { "" },
                    is.to_uppercase()
                ),
                param: None,
            });
        }
        for pattern in spec.patterns {
            for (op, sql_op) in [("like", "LIKE"), ("ilike", "ILIKE")] {
                out.push(Case {
                    filter: format!("{col}={not}{op}.{}", filter_literal(pattern)),
                    expr: wrap(format!("{col} {sql_op} $1::text")),
                    param: Some((*pattern).to_owned()),
                });
            }
        }
        for regex in spec.regexes {
            for (op, sql_op) in [("match", "~"), ("imatch", "~*")] {
                out.push(Case {
                    filter: format!("{col}={not}{op}.{}", filter_literal(regex)),
                    expr: wrap(format!("{col} {sql_op} $1::text")),
                    param: Some((*regex).to_owned()),
                });
            }
        }
    }
    out
}

/// A value as a constant of the policy language, for a column of SQL type `ty`: numbers bare,
/// booleans as keywords, everything else quoted. `None` for a value the language cannot write
/// for that type (the type check refuses a quoted number for a numeric column, where Postgres
/// would coerce it).
fn policy_literal(ty: &str, v: &str) -> Option<String> {
    let number = |v: &str| {
        let digits = v.strip_prefix('-').unwrap_or(v);
        let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
        !int.is_empty()
            && !frac.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
    };
    match ty {
        "int2" | "int4" | "int8" | "numeric" | "float4" | "float8" => number(v).then(|| v.to_owned()),
        "bool" => matches!(v, "true" | "false").then(|| v.to_owned()),
        _ => Some(format!("'{}'", v.replace('\'', "''"))),
    }
}

/// `(rows condition, the same condition for Postgres)` for each comparison of `spec`'s column.
fn policy_cases(spec: &Spec) -> Vec<(String, String)> {
    let col = spec.column;
    let collate = if spec.cast == "text" { " COLLATE \"C\"" } else { "" };
    let mut values: Vec<&str> = spec.rows.iter().flatten().copied().collect();
    values.extend(spec.extra);
    let mut out = Vec::new();
    for value in values {
        let Some(literal) = policy_literal(spec.cast, value) else {
            continue;
        };
        for op in ["=", "<>", "<", "<=", ">", ">="] {
            out.push((
                format!("{col} {op} {literal}"),
                format!("{col}{collate} {op} {literal}"),
            ));
            out.push((
                format!("{literal} {op} {col}"),
                format!("{literal} {op} {col}{collate}"),
            ));
        }
        out.push((
            format!("{col} IN ({literal})"),
            format!("{col}{collate} IN ({literal})"),
        ));
        out.push((
            format!("{col} NOT IN ({literal}, {literal})"),
            format!("{col}{collate} NOT IN ({literal}, {literal})"),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_agree_with_postgres_on_every_supported_type() {
    let pg = start_postgres(Options::default());
    // Filter values without an offset are read in UTC, the session zone the service pins.
    pg.psql("postgres", "ALTER DATABASE postgres SET TimeZone = 'UTC'")
        .expect("set the time zone");
    let db = pool(&pg).await;
    let columns: Vec<String> = SPECS
        .iter()
        .map(|s| format!("{} {}", s.column, s.sql_type))
        .collect();
    exec(
        &db,
        &format!(
            "CREATE EXTENSION citext; CREATE TABLE f (id int4 PRIMARY KEY, {}); CREATE PUBLICATION pub FOR TABLE f;",
            columns.join(", ")
        ),
    )
    .await;
    let mut stream = Stream::start(database(&pg), replication_config("s_filters", "pub"));
    stream.wait_streaming().await;

    // Every stored value appears at least once per column; the rest are drawn at random.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let placeholders: Vec<String> = SPECS
        .iter()
        .enumerate()
        .map(|(i, s)| format!("${}::text::{}", i + 2, s.sql_type))
        .collect();
    let insert = format!("INSERT INTO f VALUES ($1, {})", placeholders.join(", "));
    let mut tx = db.begin().await.expect("begin");
    for id in 0..ROWS {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(insert.clone())).bind(id as i32);
        for spec in SPECS {
            let pick = if id < spec.rows.len() {
                id
            } else {
                rng.next() % spec.rows.len()
            };
            query = query.bind(spec.rows[pick]);
        }
        query.execute(&mut *tx).await.expect("insert a row");
    }
    tx.commit().await.expect("commit");

    let changes = stream.changes(ROWS).await;
    let table = changes[0].table.clone();
    let rows: BTreeMap<i32, Row> = changes
        .iter()
        .map(|c| {
            let row = c.new.clone().expect("an insert has a new row");
            let id = row.value(0).expect("id").parse().expect("integer id");
            (id, row)
        })
        .collect();
    assert_eq!(rows.len(), ROWS);

    let mut checked = 0usize;
    let mut mismatches = Vec::new();
    for spec in SPECS {
        for case in cases(spec) {
            let ours = match Filter::parse(&case.filter) {
                Ok(Some(filter)) => filter.bind(&table),
                other => panic!("{}: does not parse: {other:?}", case.filter),
            };
            let sql = format!("SELECT id, coalesce({}, false) FROM f ORDER BY id", case.expr);
            let mut query = sqlx::query_as::<_, (i32, bool)>(sqlx::AssertSqlSafe(sql));
            if let Some(param) = &case.param {
                query = query.bind(param.clone());
            }
            let theirs = query.fetch_all(&db).await;
            match (ours, theirs) {
                (Ok(bound), Ok(truth)) => {
                    assert_eq!(truth.len(), ROWS);
                    for (id, expected) in truth {
                        let row = &rows[&id];
                        checked += 1;
                        if bound.matches(row) != expected {
                            mismatches.push(format!(
                                "{}: row {id} {} → ours {}, Postgres {expected}",
                                case.filter, row.json, !expected
                            ));
                        }
                    }
                }
                (Err(_), Err(_)) => checked += 1,
                (Ok(_), Err(e)) => {
                    mismatches.push(format!("{}: Postgres refuses ({e}), we accept", case.filter))
                }
                (Err(e), Ok(_)) => {
                    mismatches.push(format!("{}: we refuse ({e}), Postgres accepts", case.filter))
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {checked} evaluations differ:\n{}",
        mismatches.len(),
        mismatches.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(checked > 50_000, "only {checked} evaluations");

    // Table policies, the same rows and literals.
    let claims = Claims {
        role: "authenticated".to_owned(),
        exp: 0,
        sub: None,
        all: Default::default(),
    };
    let mut checked = 0usize;
    for spec in SPECS {
        for (rows_expr, sql_expr) in policy_cases(spec) {
            let toml = format!(
                "[[table]]\ntable = \"public.f\"\nroles = [\"authenticated\"]\nrows = {rows_expr:?}\n"
            );
            let ours = PolicySet::from_toml(std::path::Path::new("differential.toml"), &toml)
                .map_err(|e| format!("{e:?}"))
                .and_then(|set| {
                    let rules = set.table_rules("public", "f").expect("rules for f");
                    rules.bind(&table).map_err(|e| e.to_string())
                });
            let sql = format!("SELECT id, coalesce({sql_expr}, false) FROM f ORDER BY id");
            let theirs = sqlx::query_as::<_, (i32, bool)>(sqlx::AssertSqlSafe(sql))
                .fetch_all(&db)
                .await;
            match (ours, theirs) {
                (Ok(bound), Ok(truth)) => {
                    for (id, expected) in truth {
                        let change = changes
                            .iter()
                            .find(|c| c.new.as_ref().and_then(|r| r.value(0)) == Some(&*id.to_string()))
                            .expect("the row's change");
                        let visible = matches!(bound.decide(change, &claims), Visibility::Visible { .. });
                        checked += 1;
                        if visible != expected {
                            mismatches.push(format!(
                                "rows = {rows_expr}: row {id} {} → ours {visible}, Postgres {expected}",
                                rows[&id].json
                            ));
                        }
                    }
                }
                (Err(_), Err(_)) => checked += 1,
                (Ok(_), Err(e)) => {
                    mismatches.push(format!("rows = {rows_expr}: Postgres refuses ({e}), we accept"))
                }
                (Err(e), Ok(_)) => {
                    mismatches.push(format!("rows = {rows_expr}: we refuse ({e}), Postgres accepts"))
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {checked} policy evaluations differ:\n{}",
        mismatches.len(),
        mismatches.iter().take(40).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(checked > 20_000, "only {checked} policy evaluations");
    eprintln!("policies: {checked} evaluations agree with Postgres");
    stream.stop().await.expect("clean stop");
}
