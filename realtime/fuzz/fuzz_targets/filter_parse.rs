//! The Postgres Changes filter language never panics: any text either fails to parse or parses
//! into a filter that either fails to bind to a table of every column class or binds and then
//! evaluates on rows (values and NULLs) to a plain yes or no.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use realtime::change::{Cell, Column, ReplicaIdentity, Row, Table};
use realtime::changes::Filter;

/// (column, type name, type OID, a value's JSON text).
const COLUMNS: &[(&str, &str, u32, &str)] = &[
    ("i2", "int2", 21, "-7"),
    ("i4", "int4", 23, "42"),
    ("i8", "int8", 20, "9007199254740993"),
    ("n", "numeric", 1700, "12345678901234567890.000100"),
    ("f4", "float4", 700, "\"NaN\""),
    ("f8", "float8", 701, "1e+308"),
    ("t", "text", 25, "\"a\\\"b%_\\\\\""),
    ("vc", "varchar", 1043, "\"x\""),
    ("c", "bpchar", 1042, "\"ab   \""),
    ("b", "bool", 16, "true"),
    ("tz", "timestamptz", 1184, "\"2024-01-01T23:04:05.123456+00:00\""),
    ("ts", "timestamp", 1114, "\"0044-03-15T00:00:00 BC\""),
    ("d", "date", 1082, "\"infinity\""),
    ("u", "uuid", 2950, "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\""),
    ("j", "jsonb", 3802, "{\"k\": [1]}"),
    ("m", "mood", 16_600, "\"happy\""),
    ("ci", "citext", 16_700, "\"Hi\""),
];

fn fixture() -> &'static (Table, Row, Row) {
    static FIXTURE: OnceLock<(Table, Row, Row)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let table = Table {
            oid: 16_500,
            schema: "public".into(),
            name: "t".into(),
            replica_identity: ReplicaIdentity::Default,
            json: Default::default(),
            columns: Arc::from(
                COLUMNS
                    .iter()
                    .map(|(name, type_name, oid, _)| Column {
                        name: (*name).into(),
                        type_name: (*type_name).into(),
                        type_oid: *oid,
                        key: *name == "i4",
                    })
                    .collect::<Vec<_>>(),
            ),
        };
        let mut json = String::from("{");
        let mut cells = Vec::new();
        for (i, (name, _, _, value)) in COLUMNS.iter().enumerate() {
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
        let values = Row {
            json: json.into(),
            cells: cells.into(),
        };
        // NULLs, with one unchanged TOASTed column.
        let nulls = Row {
            json: "{}".into(),
            cells: COLUMNS
                .iter()
                .enumerate()
                .map(|(i, _)| if i == 6 { Cell::Unchanged } else { Cell::Null })
                .collect(),
        };
        (table, values, nulls)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (table, values, nulls) = fixture();
    if let Ok(Some(filter)) = Filter::parse(text)
        && let Ok(bound) = filter.bind(table)
    {
        let _ = bound.matches(values);
        let _ = bound.matches(nulls);
    }
});
