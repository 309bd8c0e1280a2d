//! Test helpers: tables and row images built by hand (the first column is the key).

use crate::change::{Cell, Column, ReplicaIdentity, Row, Table};

/// What a row image holds for one column.
#[derive(Clone, Copy)]
pub(crate) enum V<'a> {
    /// A value's JSON text.
    J(&'a str),
    Null,
    Unchanged,
    Absent,
}

pub(crate) fn table(columns: &[(&str, &str, u32)]) -> Table {
    Table {
        oid: 16_500,
        schema: "public".into(),
        name: "t".into(),
        replica_identity: ReplicaIdentity::Default,
        json: Default::default(),
        columns: columns
            .iter()
            .enumerate()
            .map(|(i, (name, type_name, type_oid))| Column {
                name: (*name).into(),
                type_name: (*type_name).into(),
                type_oid: *type_oid,
                key: i == 0,
            })
            .collect(),
    }
}

pub(crate) fn row(table: &Table, values: &[V<'_>]) -> Row {
    let mut json = String::from("{");
    let mut cells = Vec::new();
    for (column, value) in table.columns.iter().zip(values) {
        let text = match value {
            V::J(text) => Some(*text),
            V::Null => Some("null"),
            V::Unchanged => {
                cells.push(Cell::Unchanged);
                continue;
            }
            V::Absent => {
                cells.push(Cell::Absent);
                continue;
            }
        };
        if json.len() > 1 {
            json.push(',');
        }
        crate::json::write_string(&column.name, &mut json);
        json.push(':');
        let start = json.len() as u32;
        json.push_str(text.unwrap_or("null"));
        cells.push(match value {
            V::Null => Cell::Null,
            _ => Cell::Value {
                start,
                end: json.len() as u32,
            },
        });
    }
    json.push('}');
    Row {
        json: json.into(),
        cells: cells.into(),
    }
}
