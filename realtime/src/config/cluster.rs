//! The `[cluster]` section: several nodes on one NATS server (or cluster of servers).
//!
//! Without `NATS_URL` the service is a single node and never opens a connection to NATS.

use std::time::Duration;

use super::{ConfigError, Secret, Sources};

/// How a node takes part in streaming the slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CdcRole {
    /// Contend for leadership; stream the slot while leading, follow otherwise.
    #[default]
    Auto,
    /// Never stream the slot; always follow (pins the leader to the nodes near Postgres).
    Never,
}

/// How the node authenticates to NATS (besides credentials embedded in the URL).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NatsAuth {
    #[default]
    None,
    UserPassword {
        user: String,
        password: Secret,
    },
    Token(Secret),
    /// A `.creds` file (JWT and NKey seed), read at connect time.
    CredentialsFile(std::path::PathBuf),
}

/// Settings of a clustered node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `nats://host:port` or `tls://host:port` (several, comma-separated, for a NATS cluster).
    pub nats_url: String,
    pub auth: NatsAuth,
    /// Prefix of every subject: nodes of different clusters can share one NATS server.
    pub name: String,
    /// This node's name in logs, metrics and messages.
    pub node_id: String,
    pub cdc: CdcRole,
    /// How often a node announces itself (and the leader its head).
    pub heartbeat: Duration,
    /// A node silent for this long is down: its presence entries leave.
    pub node_down_after: Duration,
    /// A leader that cannot reach NATS for this long steps down.
    pub leader_bus_grace: Duration,
}

impl ClusterConfig {
    /// `None` when `NATS_URL` (or `cluster.nats_url`) is not set: a single node.
    pub(super) fn load(sources: &Sources<'_>) -> Result<Option<ClusterConfig>, Vec<ConfigError>> {
        let Some((nats_url, blame)) = sources.get(&["NATS_URL"], "cluster", "nats_url") else {
            return Ok(None);
        };
        let mut errors = Vec::new();
        for url in nats_url.split(',') {
            let url = url.trim();
            let scheme = url.split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("nats" | "tls")) {
                errors.push(ConfigError::new(
                    &blame,
                    "expected nats://host:port or tls://host:port (comma-separated for several servers)",
                ));
                break;
            }
        }
        let text = |env: &str, key: &str| sources.get(&[env], "cluster", key).map(|(v, _)| v);
        let auth = match (
            text("NATS_USER", "user"),
            text("NATS_PASSWORD", "password"),
            text("NATS_TOKEN", "token"),
            text("NATS_CREDS", "credentials_file"),
        ) {
            (None, None, None, None) => NatsAuth::None,
            (Some(user), Some(password), None, None) => NatsAuth::UserPassword {
                user,
                password: Secret::new(password),
            },
            (None, None, Some(token), None) => NatsAuth::Token(Secret::new(token)),
            (None, None, None, Some(path)) => NatsAuth::CredentialsFile(path.into()),
            _ => {
                errors.push(ConfigError::new(
                    "NATS_USER/NATS_PASSWORD/NATS_TOKEN/NATS_CREDS",
                    "set either NATS_USER and NATS_PASSWORD, or NATS_TOKEN, or NATS_CREDS",
                ));
                NatsAuth::None
            }
        };
        let name = text("CLUSTER_NAME", "name").unwrap_or_else(|| "main".to_owned());
        if !is_token(&name) {
            errors.push(ConfigError::new(
                "CLUSTER_NAME",
                format!("letters, digits, '-' and '_' only, got {name:?}"),
            ));
        }
        let node_id = text("NODE_ID", "node_id").unwrap_or_else(default_node_id);
        if !is_token(&node_id) {
            errors.push(ConfigError::new(
                "NODE_ID",
                format!("letters, digits, '-' and '_' only, got {node_id:?}"),
            ));
        }
        let cdc = match text("CLUSTER_CDC", "cdc").as_deref() {
            None | Some("auto") => CdcRole::Auto,
            Some("never") => CdcRole::Never,
            Some(other) => {
                errors.push(ConfigError::new(
                    "CLUSTER_CDC",
                    format!("expected auto or never, got {other:?}"),
                ));
                CdcRole::Auto
            }
        };
        let millis = |env: &str, key: &str, default: u64, errors: &mut Vec<ConfigError>| match sources
            .parse::<u64>(&[env], "cluster", key)
        {
            Ok(Some(0)) => {
                errors.push(ConfigError::new(env, "must be at least 1"));
                Duration::from_millis(default)
            }
            Ok(value) => Duration::from_millis(value.unwrap_or(default)),
            Err(e) => {
                errors.push(e);
                Duration::from_millis(default)
            }
        };
        let heartbeat = millis("CLUSTER_HEARTBEAT_MS", "heartbeat_ms", 1_000, &mut errors);
        let node_down_after = millis(
            "CLUSTER_NODE_DOWN_AFTER_MS",
            "node_down_after_ms",
            5_000,
            &mut errors,
        );
        let leader_bus_grace = millis(
            "CLUSTER_LEADER_BUS_GRACE_MS",
            "leader_bus_grace_ms",
            10_000,
            &mut errors,
        );
        if node_down_after <= heartbeat * 2 {
            errors.push(ConfigError::new(
                "CLUSTER_NODE_DOWN_AFTER_MS",
                "must exceed two heartbeats (CLUSTER_HEARTBEAT_MS), or live nodes would be declared down",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Some(ClusterConfig {
            nats_url,
            auth,
            name,
            node_id,
            cdc,
            heartbeat,
            node_down_after,
            leader_bus_grace,
        }))
    }
}

/// A name that is one NATS subject token and reads well in logs.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The host name plus four random hex digits: two nodes on one host (or one restarted with
/// the same host name while its old entries still live) never share a name.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .take(40)
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!("{host}-{:04x}", rand::random::<u16>())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::Config;
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Config, Vec<ConfigError>> {
        let lookup = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned());
        Config::from_sources("", &lookup)
    }

    #[test]
    fn without_nats_url_the_node_stands_alone() {
        assert_eq!(load(&[]).unwrap().cluster, None);
    }

    #[test]
    fn defaults_and_settings() {
        let c = load(&[("NATS_URL", "nats://127.0.0.1:4222"), ("NODE_ID", "a-1")])
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(c.name, "main");
        assert_eq!(c.node_id, "a-1");
        assert_eq!(c.cdc, CdcRole::Auto);
        assert_eq!(c.auth, NatsAuth::None);
        assert_eq!(
            (c.heartbeat, c.node_down_after, c.leader_bus_grace),
            (
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(10)
            )
        );
        let c = load(&[
            ("NATS_URL", "tls://a:4222,tls://b:4222"),
            ("NATS_TOKEN", "s3cret"),
            ("CLUSTER_NAME", "eu"),
            ("CLUSTER_CDC", "never"),
        ])
        .unwrap()
        .cluster
        .unwrap();
        assert_eq!((c.name.as_str(), c.cdc), ("eu", CdcRole::Never));
        assert!(matches!(c.auth, NatsAuth::Token(_)));
        assert!(c.node_id.len() > 5, "a generated node id: {}", c.node_id);
    }

    #[test]
    fn bad_settings_are_named() {
        let errors = load(&[
            ("NATS_URL", "http://nats:4222"),
            ("CLUSTER_NAME", "a.b"),
            ("NODE_ID", "x y"),
            ("CLUSTER_CDC", "sometimes"),
            ("NATS_USER", "u"),
            ("NATS_TOKEN", "t"),
            ("CLUSTER_HEARTBEAT_MS", "3000"),
        ])
        .unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "NATS_URL",
                "NATS_USER/NATS_PASSWORD/NATS_TOKEN/NATS_CREDS",
                "CLUSTER_NAME",
                "NODE_ID",
                "CLUSTER_CDC",
                "CLUSTER_NODE_DOWN_AFTER_MS",
            ]
        );
        // The token is a secret: it never appears in an error.
        assert!(errors.iter().all(|e| !e.to_string().contains("s3cret")));
    }
}
