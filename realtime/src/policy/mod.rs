//! Authorization policies, loaded from the TOML files of the `policies/` folder (format in
//! `policies/README.md`) and evaluated in-process, without a database round trip.
//!
//! A [`PolicySet`] is immutable once loaded; the server holds it in an `Arc` and swaps the whole
//! set on reload. Everything here is pure apart from reading the files in [`PolicySet::load`].
//! Default deny: what no rule grants is refused. Tokens whose role is `service_role` bypass the
//! rules, as that role bypasses row-level security in Supabase.

mod channel;
pub mod expr;
mod load;
pub mod table;
pub mod topic;

use std::fmt;
use std::path::{Path, PathBuf};

pub use channel::{ChannelAccess, ChannelRule};
pub use table::{BoundRules, ColumnSet, OldImage, TableName, TableRules, Visibility};

use crate::auth::Claims;

pub use crate::auth::BYPASS_ROLE;

/// Every loaded rule.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    channels: Vec<ChannelRule>,
    /// Sorted by table name; one entry per table, holding the rules of every file.
    tables: Vec<TableRules>,
    files: Vec<PathBuf>,
}

/// A problem in a policy file, with the line when it is known.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl PolicyError {
    pub(crate) fn new(file: &Path, line: Option<usize>, message: impl Into<String>) -> Self {
        PolicyError {
            file: file.to_owned(),
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl PolicySet {
    /// No rules: every private channel is refused (except to `service_role`).
    pub fn empty() -> PolicySet {
        PolicySet::default()
    }

    /// Loads every `*.toml` file of `dir`. All problems of all files are returned together.
    pub fn load(dir: &Path) -> Result<PolicySet, Vec<PolicyError>> {
        load::load_dir(dir)
    }

    /// Parses one policy file's text (`name` is used in error messages).
    pub fn from_toml(name: &Path, text: &str) -> Result<PolicySet, Vec<PolicyError>> {
        let rules = load::parse_file(name, text)?;
        let mut set = PolicySet::empty();
        set.add(rules);
        set.files.push(name.to_owned());
        Ok(set)
    }

    fn add(&mut self, rules: load::FileRules) {
        self.channels.extend(rules.channels);
        for (name, rule) in rules.tables {
            match self.tables.binary_search_by(|t| t.table.cmp(&name)) {
                Ok(i) => self.tables[i].rules.push(rule),
                Err(i) => self.tables.insert(
                    i,
                    TableRules {
                        table: name,
                        rules: vec![rule],
                    },
                ),
            }
        }
    }

    /// The rules for a table, or `None` when no file has a rule for it: then Postgres decides
    /// (column privileges and row-level security, see `changes::access`).
    pub fn table_rules(&self, schema: &str, name: &str) -> Option<&TableRules> {
        self.tables
            .binary_search_by(|t| (t.table.schema.as_str(), t.table.name.as_str()).cmp(&(schema, name)))
            .ok()
            .map(|i| &self.tables[i])
    }

    /// Every table that has rules, sorted by name.
    pub fn tables(&self) -> &[TableRules] {
        &self.tables
    }

    /// What `claims` may do on the private channel `sub_topic` (the topic without its
    /// `realtime:` prefix).
    pub fn channel_access(&self, sub_topic: &str, claims: &Claims) -> ChannelAccess {
        if claims.role == BYPASS_ROLE {
            return ChannelAccess::ALL;
        }
        channel::access(&self.channels, sub_topic, claims)
    }

    pub fn channel_rules(&self) -> &[ChannelRule] {
        &self.channels
    }

    /// The files the rules came from, in load order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.tables.is_empty()
    }
}

/// `realtime policies check`: loads and validates every policy file of `dir`.
pub fn check_policies(dir: &Path) -> Result<PolicySet, Vec<PolicyError>> {
    PolicySet::load(dir)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;
