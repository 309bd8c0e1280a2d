//! Binding a [`Filter`] to a table, and evaluating the bound filter on row images.
//!
//! Binding classifies each filter column by its type ([`Class`]), checks the operator fits,
//! and pre-parses the value into the comparable form, so evaluation only reads the row's JSON
//! text for that column and compares (no allocation for numbers, booleans, uuids, times, and
//! text without escapes).
//!
//! Truth follows SQL's three-valued logic as Supabase's `check_equality_op` evaluates it: a
//! comparison with a NULL column is unknown, `not.` of unknown is unknown, and unknown does not
//! match. `is` and `isdistinct` are never unknown (`NULL IS NULL`, `NULL IS DISTINCT FROM 1`).
//! A column the image does not carry (unchanged TOAST, non-key column of a key-only old row)
//! never matches, whatever the operator.

use std::cmp::Ordering;

use regex::{Regex, RegexBuilder};

use super::pattern::LikePattern;
use super::{Condition, Filter, FilterError, Op};
use crate::change::{Cell, ChangeKind, Column, Row, RowChange, Table};
use crate::changes::ColumnSet;
use crate::pgvalue::{
    self, Class, CmpOp, Scalar, ScalarError, classify, compare, json_bool, json_string, sql_type_name,
};

/// Most values an `in` list may hold.
pub const MAX_IN_VALUES: usize = 100;

/// Compiled regexes are bounded in size: `regex` matches in linear time, and this keeps a
/// hostile pattern from costing much memory either.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Clone, Debug)]
enum Test {
    Compare(CmpOp, Scalar),
    In {
        values: Box<[Scalar]>,
        has_null: bool,
    },
    Distinct(Scalar),
    IsNull,
    /// `is true` / `is false` / `is unknown` (`None`).
    IsBool(Option<bool>),
    /// With `lower`, the subject is lower-cased before matching (ILIKE, citext).
    Like {
        pattern: LikePattern,
        lower: bool,
    },
    Regex(Regex),
}

#[derive(Clone, Debug)]
struct Bound {
    column: usize,
    class: Class,
    negate: bool,
    test: Test,
}

/// A filter bound to one table: evaluate it with [`matches`](Self::matches).
#[derive(Clone, Debug)]
pub struct BoundFilter {
    conditions: Box<[Bound]>,
}

impl Filter {
    /// Binds the filter to `table`: every column must exist, every operator fit its type and
    /// every value parse as it.
    pub fn bind(&self, table: &Table) -> Result<BoundFilter, FilterError> {
        self.bind_visible(table, None)
    }

    /// As [`bind`](Self::bind), also refusing columns outside `visible` (the columns the
    /// subscriber may read): Supabase reports those as invalid too.
    pub fn bind_visible(
        &self,
        table: &Table,
        visible: Option<&ColumnSet>,
    ) -> Result<BoundFilter, FilterError> {
        let conditions = self
            .conditions
            .iter()
            .map(|c| bind_condition(c, table, visible))
            .collect::<Result<_, _>>()?;
        Ok(BoundFilter { conditions })
    }
}

fn bind_condition(
    condition: &Condition,
    table: &Table,
    visible: Option<&ColumnSet>,
) -> Result<Bound, FilterError> {
    let unknown = || FilterError::UnknownColumn(condition.column.clone());
    let index = table
        .columns
        .iter()
        .position(|c| *c.name == *condition.column)
        .ok_or_else(unknown)?;
    if visible.is_some_and(|v| !v.contains(index)) {
        return Err(unknown());
    }
    let column = &table.columns[index];
    let class = classify(&column.type_name, column.type_oid);
    let type_name = || sql_type_name(&column.type_name);
    let op = condition.op;
    let unsupported = || FilterError::Unsupported {
        op: op.as_str(),
        type_name: type_name(),
    };
    let value = &condition.value;
    let test = match op {
        Op::Is => match value.as_str() {
            "null" => Test::IsNull,
            "true" | "false" | "unknown" if class != Class::Bool => {
                return Err(FilterError::IsNeedsBoolean {
                    value: value.clone(),
                    type_name: type_name(),
                });
            }
            "true" => Test::IsBool(Some(true)),
            "false" => Test::IsBool(Some(false)),
            "unknown" => Test::IsBool(None),
            _ => return Err(FilterError::IsValue),
        },
        Op::Like | Op::Ilike | Op::Match | Op::Imatch => {
            let Class::Text { fold, .. } = class else {
                return Err(FilterError::NeedsText {
                    op: op.as_str(),
                    type_name: type_name(),
                });
            };
            let insensitive = fold || matches!(op, Op::Ilike | Op::Imatch);
            if matches!(op, Op::Like | Op::Ilike) {
                Test::Like {
                    pattern: LikePattern::compile(value, insensitive)?,
                    lower: insensitive,
                }
            } else {
                Test::Regex(compile_regex(value, insensitive, op)?)
            }
        }
        Op::In => {
            if class == Class::Unsupported {
                return Err(unsupported());
            }
            let elements = array_elements(value)?;
            let mut values = Vec::with_capacity(elements.len());
            let mut has_null = false;
            for element in &elements {
                match element {
                    Some(text) => values.push(parse_scalar(class, column, text)?),
                    None => has_null = true,
                }
            }
            if elements.len() > MAX_IN_VALUES {
                return Err(FilterError::TooManyValues);
            }
            Test::In {
                values: values.into_boxed_slice(),
                has_null,
            }
        }
        Op::Eq | Op::Neq | Op::IsDistinct => {
            if class == Class::Unsupported {
                return Err(unsupported());
            }
            let scalar = parse_scalar(class, column, value)?;
            match op {
                Op::Eq => Test::Compare(CmpOp::Eq, scalar),
                Op::Neq => Test::Compare(CmpOp::Ne, scalar),
                _ => Test::Distinct(scalar),
            }
        }
        Op::Lt | Op::Lte | Op::Gt | Op::Gte => {
            if matches!(class, Class::Unsupported | Class::Opaque) {
                return Err(unsupported());
            }
            let cmp = match op {
                Op::Lt => CmpOp::Lt,
                Op::Lte => CmpOp::Le,
                Op::Gt => CmpOp::Gt,
                _ => CmpOp::Ge,
            };
            Test::Compare(cmp, parse_scalar(class, column, value)?)
        }
    };
    Ok(Bound {
        column: index,
        class,
        negate: condition.negate,
        test,
    })
}

fn compile_regex(pattern: &str, insensitive: bool, op: Op) -> Result<Regex, FilterError> {
    RegexBuilder::new(pattern)
        .case_insensitive(insensitive)
        // Postgres's `.` matches newlines unless newline-sensitive mode is asked for.
        .dot_matches_new_line(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            let text = e.to_string();
            let reason = text.lines().last().unwrap_or_default();
            FilterError::Regex {
                op: op.as_str(),
                reason: reason.strip_prefix("error: ").unwrap_or(reason).to_owned(),
            }
        })
}

/// Reads a filter value as the column type's input function would.
fn parse_scalar(class: Class, column: &Column, text: &str) -> Result<Scalar, FilterError> {
    pgvalue::parse_scalar(class, &column.type_name, text).map_err(|e| match e {
        ScalarError::Invalid(message) => FilterError::InvalidValue(message),
        ScalarError::Unsupported => FilterError::Unsupported {
            op: "eq",
            type_name: sql_type_name(&column.type_name),
        },
    })
}

/// The elements of an `in` list, read as Postgres reads an array literal's contents:
/// `a, "b,c", NULL` → `a`, `b,c`, NULL. Quoted elements take `\` escapes; unquoted ones are
/// trimmed, may use `\` escapes, and `NULL` (any case) is a NULL element.
fn array_elements(content: &str) -> Result<Vec<Option<String>>, FilterError> {
    let malformed = || FilterError::InvalidValue(format!("malformed array literal: \"{{{content}}}\""));
    let is_space = |c: char| c.is_ascii_whitespace();
    let mut out = Vec::new();
    let mut chars = content.chars().peekable();
    let skip_spaces = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.peek().is_some_and(|c| is_space(*c)) {
            chars.next();
        }
    };
    skip_spaces(&mut chars);
    if chars.peek().is_none() {
        return Ok(out);
    }
    loop {
        skip_spaces(&mut chars);
        let mut element = String::new();
        let mut quoted = false;
        // Length of `element` that escaped characters protect from trimming.
        let mut protected = 0;
        if chars.peek() == Some(&'"') {
            chars.next();
            quoted = true;
            loop {
                match chars.next().ok_or_else(malformed)? {
                    '\\' => element.push(chars.next().ok_or_else(malformed)?),
                    '"' => break,
                    c => element.push(c),
                }
            }
            skip_spaces(&mut chars);
        } else {
            while let Some(&c) = chars.peek() {
                match c {
                    ',' => break,
                    '"' | '{' | '}' => return Err(malformed()),
                    '\\' => {
                        chars.next();
                        element.push(chars.next().ok_or_else(malformed)?);
                        protected = element.len();
                        continue;
                    }
                    c => element.push(c),
                }
                chars.next();
            }
            let trimmed = element.trim_end_matches(is_space).len().max(protected);
            element.truncate(trimmed);
            if element.is_empty() {
                return Err(malformed());
            }
        }
        let null = !quoted && protected == 0 && element.eq_ignore_ascii_case("null");
        out.push((!null).then_some(element));
        match chars.next() {
            None => return Ok(out),
            Some(',') => continue,
            Some(_) => return Err(malformed()),
        }
    }
}

/// What a row image says about one column.
#[derive(Clone, Copy)]
enum CellRef<'a> {
    Value(&'a str),
    Null,
    Missing,
}

fn cell(row: &Row, i: usize) -> CellRef<'_> {
    match row.cells.get(i) {
        Some(Cell::Value { .. }) => row.value(i).map_or(CellRef::Missing, CellRef::Value),
        Some(Cell::Null) => CellRef::Null,
        Some(Cell::Unchanged | Cell::Absent) | None => CellRef::Missing,
    }
}

impl BoundFilter {
    /// Whether `row` passes every condition.
    pub fn matches(&self, row: &Row) -> bool {
        self.conditions.iter().all(|c| c.holds(cell(row, c.column)))
    }

    /// Whether `change` passes, reading the image Supabase reads: the new row for INSERT and
    /// UPDATE (an UPDATE that moves a row out of the filter is not delivered), the old row for
    /// DELETE (so only replica-identity columns can filter deletes). TRUNCATE never matches.
    pub fn matches_change(&self, change: &RowChange) -> bool {
        let row = match change.kind {
            ChangeKind::Insert | ChangeKind::Update => change.new.as_ref(),
            ChangeKind::Delete => change.old.as_ref(),
            ChangeKind::Truncate => None,
        };
        row.is_some_and(|row| self.matches(row))
    }

    /// The columns the filter reads, in condition order (repeats possible).
    pub fn columns(&self) -> impl Iterator<Item = usize> + '_ {
        self.conditions.iter().map(|c| c.column)
    }
}

impl Bound {
    fn holds(&self, cell: CellRef<'_>) -> bool {
        let truth = match cell {
            CellRef::Missing => return false,
            CellRef::Null => match &self.test {
                Test::IsNull | Test::Distinct(_) | Test::IsBool(None) => Some(true),
                Test::IsBool(Some(_)) => Some(false),
                // `NULL = ANY('{}')` is false, not unknown: there is nothing to compare with.
                Test::In { values, has_null } if values.is_empty() && !has_null => Some(false),
                _ => None,
            },
            CellRef::Value(json) => self.test_value(json),
        };
        truth.map(|t| t != self.negate) == Some(true)
    }

    fn test_value(&self, json: &str) -> Option<bool> {
        match &self.test {
            Test::Compare(cmp, value) => compare(self.class, json, value).map(|o| cmp.holds(o)),
            Test::In { values, has_null } => {
                for value in values.iter() {
                    if compare(self.class, json, value)? == Ordering::Equal {
                        return Some(true);
                    }
                }
                if *has_null { None } else { Some(false) }
            }
            Test::Distinct(value) => compare(self.class, json, value).map(|o| o != Ordering::Equal),
            Test::IsNull => Some(false),
            Test::IsBool(expected) => {
                let actual = json_bool(json)?;
                Some(*expected == Some(actual))
            }
            Test::Like { pattern, lower } => {
                let text = json_string(json)?;
                Some(if *lower {
                    pattern.matches(&text.to_lowercase())
                } else {
                    pattern.matches(&text)
                })
            }
            Test::Regex(regex) => json_string(json).map(|text| regex.is_match(&text)),
        }
    }
}

#[cfg(test)]
mod array_tests {
    use super::*;

    fn elements(content: &str) -> Vec<Option<String>> {
        array_elements(content).expect(content)
    }

    #[test]
    fn in_lists_read_as_array_literals() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(elements("a,b"), [s("a"), s("b")]);
        assert_eq!(elements(" a , b c ,\"d,e\" "), [s("a"), s("b c"), s("d,e")]);
        assert_eq!(elements(r#""q\"uote",\,x,y\ "#), [s("q\"uote"), s(",x"), s("y ")]);
        assert_eq!(elements("1,NULL,null,\"NULL\""), [s("1"), None, None, s("NULL")]);
        assert_eq!(elements(""), Vec::<Option<String>>::new());
        assert_eq!(elements("  "), Vec::<Option<String>>::new());
        assert_eq!(elements("\"\""), [s("")]);
        for bad in ["1,,2", "1,", ",1", "a\"b", "{1}", "\"open", "\"a\"b", "x\\"] {
            assert!(array_elements(bad).is_err(), "{bad}");
        }
        assert_eq!(
            array_elements("1,,2"),
            Err(FilterError::InvalidValue(
                r#"malformed array literal: "{1,,2}""#.into()
            ))
        );
    }
}
