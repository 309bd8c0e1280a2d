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
pub mod topic;

use std::fmt;
use std::path::{Path, PathBuf};

pub use channel::{ChannelAccess, ChannelRule};

use crate::auth::Claims;

/// The role that bypasses every policy (Postgres `BYPASSRLS` in Supabase).
pub const BYPASS_ROLE: &str = "service_role";

/// Every loaded rule.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    channels: Vec<ChannelRule>,
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
    fn new(file: &Path, line: Option<usize>, message: impl Into<String>) -> Self {
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
        let channels = load::parse_file(name, text)?;
        Ok(PolicySet {
            channels,
            files: vec![name.to_owned()],
        })
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
        self.channels.is_empty()
    }
}

/// `realtime policies check`: loads and validates every policy file of `dir`.
pub fn check_policies(dir: &Path) -> Result<PolicySet, Vec<PolicyError>> {
    PolicySet::load(dir)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;
