//! Reading policy files: every `*.toml` file of the folder (not sub-folders, so examples kept in
//! `examples/` never apply by accident), in name order. A named folder that is missing is an
//! error, not an empty set of rules.
//! Each file is checked completely and every problem is reported with its file and line, so one
//! `realtime policies check` run shows them all.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::channel::{ACTIONS, ChannelAccess, ChannelRule};
use super::expr::{Expr, Type};
use super::table::{self, TableName, TableRule};
use super::topic::TopicPattern;
use super::{PolicyError, PolicySet};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    channel: Vec<ChannelToml>,
    #[serde(default)]
    table: Vec<TableToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableToml {
    #[serde(default)]
    description: Option<String>,
    table: Spanned<String>,
    #[serde(default)]
    roles: Option<Spanned<Vec<Spanned<String>>>>,
    rows: Spanned<String>,
    #[serde(default)]
    columns: Option<Spanned<Vec<Spanned<String>>>>,
}

/// The rules of one file.
#[derive(Default)]
pub(super) struct FileRules {
    pub channels: Vec<ChannelRule>,
    pub tables: Vec<(TableName, TableRule)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelToml {
    #[serde(default)]
    description: Option<String>,
    topic: Spanned<String>,
    actions: Spanned<Vec<Spanned<String>>>,
    when: Spanned<String>,
}

/// The largest policy file read: policies are hand-written.
const MAX_FILE: u64 = 4 * 1024 * 1024;

pub(super) fn load_dir(dir: &Path) -> Result<PolicySet, Vec<PolicyError>> {
    // A folder that was named but is not there is a mistake (a typo, a missing mount), never
    // "no rules": saying so plainly keeps a server from starting without the rules meant for it.
    if !dir.is_dir() {
        let problem = if dir.exists() {
            "the policy folder is not a folder"
        } else {
            "the policy folder does not exist"
        };
        return Err(vec![PolicyError::new(dir, None, problem)]);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| {
        vec![PolicyError::new(
            dir,
            None,
            format!("cannot read the policy folder: {e}"),
        )]
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    let mut set = PolicySet::empty();
    let mut errors = Vec::new();
    for path in files {
        let text = match std::fs::metadata(&path) {
            Ok(m) if m.len() > MAX_FILE => {
                errors.push(PolicyError::new(
                    &path,
                    None,
                    format!("larger than {MAX_FILE} bytes"),
                ));
                continue;
            }
            _ => match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(PolicyError::new(
                        &path,
                        None,
                        format!("cannot read the file: {e}"),
                    ));
                    continue;
                }
            },
        };
        match parse_file(&path, &text) {
            Ok(rules) => {
                set.add(rules);
                set.files.push(path);
            }
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() { Ok(set) } else { Err(errors) }
}

/// Parses one file's text; `path` only names the file in errors.
pub(super) fn parse_file(path: &Path, text: &str) -> Result<FileRules, Vec<PolicyError>> {
    let lines = Lines::new(text);
    let file: FileToml = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| lines.line(s.start));
        vec![PolicyError::new(path, line, e.message().trim().to_owned())]
    })?;
    let mut rules = FileRules::default();
    let mut errors = Vec::new();
    for ch in file.channel {
        match channel_rule(ch, text, &lines) {
            Ok(rule) => rules.channels.push(rule),
            Err(errs) => errors.extend(
                errs.into_iter()
                    .map(|(line, msg)| PolicyError::new(path, Some(line), msg)),
            ),
        }
    }
    for t in file.table {
        match table_rule(t, path, text, &lines) {
            Ok(rule) => rules.tables.push(rule),
            Err(errs) => errors.extend(
                errs.into_iter()
                    .map(|(line, msg)| PolicyError::new(path, Some(line), msg)),
            ),
        }
    }
    if errors.is_empty() { Ok(rules) } else { Err(errors) }
}

fn channel_rule(ch: ChannelToml, text: &str, lines: &Lines) -> Result<ChannelRule, Vec<(usize, String)>> {
    let mut errors = Vec::new();
    let topic_line = lines.line(ch.topic.span().start);
    let pattern = TopicPattern::parse(ch.topic.get_ref())
        .map_err(|e| errors.push((topic_line, format!("topic {:?}: {e}", ch.topic.get_ref()))))
        .ok();

    let mut grants = ChannelAccess::default();
    if ch.actions.get_ref().is_empty() {
        errors.push((
            lines.line(ch.actions.span().start),
            "actions is empty: name at least one".to_owned(),
        ));
    }
    for action in ch.actions.get_ref() {
        match ChannelAccess::from_action(action.get_ref()) {
            Some(a) => grants = grants.union(a),
            None => errors.push((
                lines.line(action.span().start),
                format!(
                    "unknown action {:?} (known: {})",
                    action.get_ref(),
                    ACTIONS.join(", ")
                ),
            )),
        }
    }

    let when_span = ch.when.span();
    let when = match Expr::parse(ch.when.get_ref()) {
        Err(e) => {
            let line = expression_line(text, when_span, ch.when.get_ref(), e.offset, lines);
            errors.push((line, format!("when: {}", e.message)));
            None
        }
        Ok(expr) => {
            if let Some(pattern) = &pattern {
                let params: Vec<&str> = pattern.params().collect();
                let var_type = |name: &str| params.contains(&name).then_some(Type::Text);
                if let Err(e) = expr.check(&var_type) {
                    let mut message = format!("when: {}", e.message);
                    if message.contains("unknown name") {
                        message.push_str(&if params.is_empty() {
                            " (the topic pattern has no parameters)".to_owned()
                        } else {
                            format!(" (topic parameters: {})", params.join(", "))
                        });
                    }
                    errors.push((lines.line(when_span.start), message));
                }
            }
            Some(expr)
        }
    };
    match (pattern, when) {
        (Some(pattern), Some(when)) if errors.is_empty() => Ok(ChannelRule {
            description: ch.description,
            pattern,
            grants,
            when,
        }),
        _ => Err(errors),
    }
}

/// Checks a `[[table]]` rule as far as it can be without the table's columns (the rest is
/// checked when the rules are bound to the table).
fn table_rule(
    t: TableToml,
    path: &Path,
    text: &str,
    lines: &Lines,
) -> Result<(TableName, TableRule), Vec<(usize, String)>> {
    let mut errors = Vec::new();
    let name = TableName::parse(t.table.get_ref())
        .map_err(|e| {
            errors.push((
                lines.line(t.table.span().start),
                format!("table {:?}: {e}", t.table.get_ref()),
            ))
        })
        .ok();
    let names =
        |list: Option<Spanned<Vec<Spanned<String>>>>, what: &str, errors: &mut Vec<(usize, String)>| {
            let list = list?;
            if list.get_ref().is_empty() {
                errors.push((
                    lines.line(list.span().start),
                    format!("{what} is empty: leave it out to mean all {what}"),
                ));
            }
            let mut out: Vec<String> = Vec::new();
            for item in list.get_ref() {
                let line = lines.line(item.span().start);
                if item.get_ref().is_empty() {
                    errors.push((line, format!("{what}: empty name")));
                } else if out.contains(item.get_ref()) {
                    errors.push((line, format!("{what}: {:?} is listed twice", item.get_ref())));
                } else {
                    out.push(item.get_ref().clone());
                }
            }
            Some(out)
        };
    let roles = names(t.roles, "roles", &mut errors);
    let columns_line = t.columns.as_ref().map_or(0, |c| lines.line(c.span().start));
    let columns = names(t.columns, "columns", &mut errors);
    let rows_span = t.rows.span();
    let rows_line = lines.line(rows_span.start);
    let rows = match Expr::parse(t.rows.get_ref()) {
        Err(e) => {
            let line = expression_line(text, rows_span, t.rows.get_ref(), e.offset, lines);
            errors.push((line, format!("rows: {}", e.message)));
            None
        }
        Ok(expr) => match table::check_rows_at_load(&expr) {
            Ok(()) => Some(expr),
            Err(message) => {
                errors.push((rows_line, format!("rows: {message}")));
                None
            }
        },
    };
    match (name, rows) {
        (Some(name), Some(rows)) if errors.is_empty() => Ok((
            name,
            TableRule {
                description: t.description,
                roles,
                rows,
                columns,
                file: path.to_owned(),
                rows_line,
                columns_line,
            },
        )),
        _ => Err(errors),
    }
}

/// The line of a parse error inside a `when` string: the string's first content line plus the
/// line breaks before the error offset. Exact for literal and multi-line strings; escapes such
/// as `\n` in basic strings can shift it.
fn expression_line(
    text: &str,
    span: Range<usize>,
    expr: &str,
    offset: Option<usize>,
    lines: &Lines,
) -> usize {
    let raw = text.get(span.clone()).unwrap_or("");
    let multi = raw.starts_with("\"\"\"") || raw.starts_with("'''");
    let mut start = span.start + if multi { 3 } else { 1 };
    if multi {
        let after = text.get(start..).unwrap_or("");
        if after.starts_with("\r\n") {
            start += 2;
        } else if after.starts_with('\n') {
            start += 1;
        }
    }
    let breaks = offset
        .and_then(|o| expr.get(..o))
        .map_or(0, |before| before.matches('\n').count());
    lines.line(start) + breaks
}

/// Byte offset → 1-based line number.
struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    fn new(text: &str) -> Lines {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Lines { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|s| *s <= offset).max(1)
    }
}
