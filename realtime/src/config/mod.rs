//! Typed configuration, loaded once at start from a TOML file and the environment (the
//! environment wins), validated, and handed out by section. Secrets never print.
//!
//! Loading is pure over its inputs (file text and an environment lookup), so every rule here is
//! unit-tested without touching the process environment.

mod database;
mod secret;
pub mod server;

use std::path::Path;

pub(crate) use database::percent_decode;
pub use database::{DatabaseConfig, ReplicationConfig, SslMode};
pub use secret::Secret;
pub use server::ServerConfig;

/// The whole configuration of a `realtime serve` process.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub database: Option<DatabaseConfig>,
    pub replication: ReplicationConfig,
    pub server: ServerConfig,
}

/// A configuration problem, naming the key (file key or environment variable) at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Where settings come from: the parsed TOML file (possibly empty) and the environment.
pub struct Sources<'a> {
    pub file: toml::Table,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Sources<'_> {
    /// A string setting: the first environment variable in `env_names` that is set, else the
    /// file's `section.key`. Returns the value and the name to blame if it is invalid.
    pub fn get(&self, env_names: &[&str], section: &str, key: &str) -> Option<(String, String)> {
        for name in env_names {
            if let Some(v) = (self.env)(name).filter(|v| !v.is_empty()) {
                return Some((v, (*name).to_owned()));
            }
        }
        let value = self.file.get(section)?.as_table()?.get(key)?;
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned).unwrap_or_else(|| i.to_string()))
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        Some((text, format!("{section}.{key}")))
    }

    pub fn parse<T: std::str::FromStr>(
        &self,
        env_names: &[&str],
        section: &str,
        key: &str,
    ) -> Result<Option<T>, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(env_names, section, key) {
            None => Ok(None),
            Some((text, blame)) => text
                .trim()
                .parse()
                .map(Some)
                .map_err(|e| ConfigError::new(blame, format!("{e} (got {text:?})"))),
        }
    }

    pub fn bool(&self, env_names: &[&str], section: &str, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(env_names, section, key) {
            None => Ok(None),
            Some((text, blame)) => match text.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(Some(true)),
                "0" | "false" | "no" | "off" => Ok(Some(false)),
                _ => Err(ConfigError::new(
                    blame,
                    format!("expected true or false, got {text:?}"),
                )),
            },
        }
    }
}

impl Config {
    /// Loads from an optional TOML file and the environment; every problem found is returned,
    /// not only the first.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<ConfigError>> {
        let text = match file {
            None => String::new(),
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                vec![ConfigError::new(
                    path.display().to_string(),
                    format!("cannot read the file: {e}"),
                )]
            })?,
        };
        Self::from_sources(&text, env)
    }

    pub fn from_sources(
        file_text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<ConfigError>> {
        let file: toml::Table = file_text
            .parse()
            .map_err(|e: toml::de::Error| vec![ConfigError::new("config file", e.message().to_owned())])?;
        let sources = Sources { file, env };
        let mut errors = Vec::new();
        let database = DatabaseConfig::load(&sources).unwrap_or_else(|e| {
            errors.push(e);
            None
        });
        let replication = ReplicationConfig::load(&sources).unwrap_or_else(|e| {
            errors.push(e);
            ReplicationConfig::default()
        });
        let server = ServerConfig::load(&sources).unwrap_or_else(|e| {
            errors.extend(e);
            ServerConfig::default()
        });
        if errors.is_empty() {
            Ok(Config {
                database,
                replication,
                server,
            })
        } else {
            Err(errors)
        }
    }
}

/// The process environment, for [`Config::load`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
