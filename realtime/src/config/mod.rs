//! Typed configuration, loaded once at start from a TOML file and the environment (the
//! environment wins), validated, and handed out by section. Secrets never print.
//!
//! Loading is pure over its inputs (file text and an environment lookup), so every rule here is
//! unit-tested without touching the process environment.

pub mod cidr;
mod cluster;
mod database;
mod secret;
pub mod server;

use std::path::Path;

pub use cluster::{CdcRole, ClusterConfig, NatsAuth};
pub(crate) use database::percent_decode;
pub use database::{DatabaseConfig, ReplicationConfig, SslMode};
pub use secret::Secret;
pub use server::{DemoConfig, ServerConfig};

/// The whole configuration of a `realtime serve` process.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub database: Option<DatabaseConfig>,
    pub replication: ReplicationConfig,
    pub server: ServerConfig,
    /// `None`: a single node (no `NATS_URL`).
    pub cluster: Option<ClusterConfig>,
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
        for (name, why) in ignored_settings(env) {
            // The name only: values of these (SECRET_KEY_BASE, DB_ENC_KEY) are secrets.
            tracing::debug!(
                setting = name,
                why,
                "accepted and ignored: a Supabase setting with no meaning here"
            );
        }
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
        let cluster = ClusterConfig::load(&sources).unwrap_or_else(|e| {
            errors.extend(e);
            None
        });
        if errors.is_empty() {
            Ok(Config {
                database,
                replication,
                server,
                cluster,
            })
        } else {
            Err(errors)
        }
    }
}

/// Settings of Supabase's self-hosted compose that mean nothing to this service, with why. They
/// are accepted (a compose file written for Supabase's image starts this one unchanged) and each
/// one set is logged at debug level.
pub const IGNORED_SUPABASE_SETTINGS: &[(&str, &str)] = &[
    ("SECRET_KEY_BASE", "signs Phoenix sessions; this service has none"),
    (
        "SEED_SELF_HOST",
        "seeds the multi-tenant catalog; this service is single-tenant",
    ),
    (
        "DB_ENC_KEY",
        "encrypts tenant settings in the multi-tenant catalog",
    ),
    (
        "DB_AFTER_CONNECT_QUERY",
        "sets the multi-tenant catalog's search_path",
    ),
    ("ERL_AFLAGS", "Erlang VM flags"),
    ("DNS_NODES", "Erlang cluster discovery"),
    ("APP_NAME", "Erlang node name"),
    ("FLY_ALLOC_ID", "Erlang node name on Fly.io"),
    ("FLY_APP_NAME", "Erlang node name on Fly.io"),
    ("ENABLE_TAILSCALE", "Supabase's image networking"),
    (
        "RLIMIT_NOFILE",
        "raised by the image's start script there; set the container's nofile ulimit instead",
    ),
    (
        "DISABLE_HEALTHCHECK_LOGGING",
        "health checks are never logged here",
    ),
];

/// The ignored Supabase settings that are set, for the debug log.
pub fn ignored_settings(env: &dyn Fn(&str) -> Option<String>) -> Vec<(&'static str, &'static str)> {
    IGNORED_SUPABASE_SETTINGS
        .iter()
        .filter(|(name, _)| env(name).is_some())
        .copied()
        .collect()
}

/// The process environment, for [`Config::load`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The realtime service's environment in Supabase's self-hosted compose.
    fn supabase_compose(name: &str) -> Option<String> {
        let value = match name {
            "PORT" => "4000",
            "DB_HOST" => "db",
            "DB_PORT" => "5432",
            "DB_USER" => "supabase_admin",
            "DB_PASSWORD" => "postgres-password",
            "DB_NAME" => "postgres",
            "DB_AFTER_CONNECT_QUERY" => "SET search_path TO _realtime",
            "DB_ENC_KEY" => "supabaserealtime",
            "API_JWT_SECRET" => "super-secret-jwt-token-with-at-least-32-characters",
            "SECRET_KEY_BASE" => "UpNVntn3cDxHJpq99YMc1T1AQgQpc8kfYTuRgBiYa15BLrx8etQoXz3gZv1/u2oq",
            "ERL_AFLAGS" => "-proto_dist inet_tcp",
            "DNS_NODES" => "''",
            "RLIMIT_NOFILE" => "10000",
            "APP_NAME" => "realtime",
            "SEED_SELF_HOST" => "true",
            "RUN_JANITOR" => "true",
            "DISABLE_HEALTHCHECK_LOGGING" => "true",
            _ => return None,
        };
        Some(value.to_owned())
    }

    #[test]
    fn supabase_self_hosted_environment_is_accepted() {
        let config = Config::load(None, &supabase_compose).unwrap();
        assert_eq!(config.server.port, 4000);
        let database = config.database.unwrap();
        assert_eq!((database.host.as_str(), database.port), ("db", 5432));
        assert_eq!(database.user, "supabase_admin");
        assert!(config.server.auth.jwt_secret.is_some());
        let ignored: Vec<&str> = ignored_settings(&supabase_compose)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(
            ignored,
            [
                "SECRET_KEY_BASE",
                "SEED_SELF_HOST",
                "DB_ENC_KEY",
                "DB_AFTER_CONNECT_QUERY",
                "ERL_AFLAGS",
                "DNS_NODES",
                "APP_NAME",
                "RLIMIT_NOFILE",
                "DISABLE_HEALTHCHECK_LOGGING",
            ]
        );
    }
}
