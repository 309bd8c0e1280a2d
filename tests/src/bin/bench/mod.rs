//! The benchmarks, and the line protocol their load-generator child processes answer in:
//! one line per step, a first word naming the step, then `key=value` fields.

pub mod broadcast;
pub mod cdc;
pub mod changes;
pub mod chart;
pub mod cluster;
pub mod db_broadcast;
pub mod peers;
pub mod presence;

use std::collections::HashMap;

use anyhow::{Context, bail};
use realtime::config::server::Limits;

/// The server's limits with everything that would police the benchmark itself lifted: one load
/// generator from one address and (broadcast) one user would otherwise meet the per-socket,
/// per-subject and per-address limits long before the node's.
pub fn unpoliced_limits() -> Limits {
    Limits {
        max_connections: 50_000,
        max_joins_per_second: u32::MAX,
        max_events_per_second: u32::MAX,
        max_presence_events_per_second: u32::MAX,
        max_joins_per_second_per_socket: u32::MAX,
        max_joins_per_second_per_subject: u32::MAX,
        max_joins_per_second_per_ip: u32::MAX,
        max_broadcasts_per_second: u32::MAX,
        max_broadcasts_per_second_per_subject: u32::MAX,
        max_broadcasts_per_second_per_ip: u32::MAX,
        max_presence_events_per_second_per_subject: u32::MAX,
        max_presence_events_per_second_per_ip: u32::MAX,
        max_connections_per_subject: u32::MAX,
        max_connections_per_ip: u32::MAX,
        idle_timeout: std::time::Duration::from_secs(600),
        ..Limits::default()
    }
}

/// One step line of a child: its first word (checked by [`Line::parse`]) and its fields.
#[derive(Debug)]
pub struct Line {
    fields: HashMap<String, String>,
}

impl Line {
    /// Parses `text`, which must start with `word`; `who` names the child in errors.
    pub fn parse(text: &str, word: &str, who: &str) -> anyhow::Result<Line> {
        let mut parts = text.split_whitespace();
        if parts.next() != Some(word) {
            bail!("{who}: expected `{word}`, got {text:?}");
        }
        let fields = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(Line { fields })
    }

    pub fn num(&self, key: &str) -> anyhow::Result<u64> {
        self.fields
            .get(key)
            .with_context(|| format!("child line lacks {key}"))?
            .parse()
            .with_context(|| format!("child line's {key} is not a number"))
    }
}
