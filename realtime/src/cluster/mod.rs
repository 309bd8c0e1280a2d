//! Several nodes on NATS: the link every clustered feature uses.
//!
//! A node of a cluster keeps two connections to NATS: one for the change stream (`cdc`), one for
//! channels and control (`channels`), so that a burst of changes can never get the control
//! connection cut as a slow consumer. Every subject starts with `rt.<cluster name>.`; topics,
//! which may hold `.`, `*`, `>` or spaces, travel as one base64url token.
//!
//! Core NATS is at-most-once: what the features here build on top (positions and fetches for
//! changes, sequences and heartbeats for presence) is what makes them whole again.

pub(crate) mod cdc;
pub(crate) mod feed;
pub(crate) mod follow;
pub(crate) mod wire;

use std::time::Duration;

use base64::Engine as _;

use crate::config::{ClusterConfig, NatsAuth};

/// Why the node cannot reach NATS.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read the NATS credentials file {path}")]
    Credentials { path: String, source: std::io::Error },
    /// `url` has its passwords redacted; the client's error never holds the URL.
    #[error("cannot connect to NATS at {url}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
}

/// This node's membership of a cluster: its identity and its two NATS connections.
#[derive(Clone, Debug)]
pub(crate) struct Cluster {
    pub config: ClusterConfig,
    /// Random per start: a restarted node with the same `NODE_ID` is told apart from its
    /// previous life (whose presence entries must leave).
    pub incarnation: u64,
    /// Channels (broadcast, presence) and control (heartbeats).
    pub channels: async_nats::Client,
    /// The change stream (transactions, heads, fetches).
    pub cdc: async_nats::Client,
}

impl Cluster {
    /// Connects both links. Waits for NATS to answer once (the node must not serve as a
    /// lone node while it believes it is part of a cluster); reconnects forever afterwards.
    pub(crate) async fn connect(config: &ClusterConfig) -> Result<Cluster, ClusterError> {
        let channels = connect_one(config, "channels").await?;
        let cdc = connect_one(config, "cdc").await?;
        Ok(Cluster {
            config: config.clone(),
            incarnation: rand::random(),
            channels,
            cdc,
        })
    }

    /// `rt.<cluster>.<rest>`.
    pub(crate) fn subject(&self, rest: &str) -> String {
        subject(&self.config.name, rest)
    }

    pub(crate) fn node_id(&self) -> &str {
        &self.config.node_id
    }
}

/// `rt.<cluster>.<rest>`.
pub(crate) fn subject(cluster: &str, rest: &str) -> String {
    format!("rt.{cluster}.{rest}")
}

/// A topic as one subject token (base64url without padding: `A-Z a-z 0-9 - _` only).
pub(crate) fn topic_token(topic: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(topic.as_bytes())
}

/// The topic a token names, or `None` for a token no node would send.
pub(crate) fn topic_from_token(token: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    String::from_utf8(bytes).ok()
}

async fn connect_one(config: &ClusterConfig, link: &str) -> Result<async_nats::Client, ClusterError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("realtime {} {link}", config.node_id))
        .connection_timeout(Duration::from_secs(5))
        // Reconnect forever, quickly at first: the features repair what was lost meanwhile.
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * 2u64.saturating_pow(attempts.min(5) as u32)).min(2_000))
        });
    options = match &config.auth {
        NatsAuth::None => options,
        NatsAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.expose().to_owned())
        }
        NatsAuth::Token(token) => options.token(token.expose().to_owned()),
        NatsAuth::CredentialsFile(path) => {
            options
                .credentials_file(path)
                .await
                .map_err(|source| ClusterError::Credentials {
                    path: path.display().to_string(),
                    source,
                })?
        }
    };
    let urls: Vec<&str> = config.nats_url.split(',').map(str::trim).collect();
    options
        .connect(urls.as_slice())
        .await
        .map_err(|source| ClusterError::Connect {
            url: redact_url(&config.nats_url),
            source,
        })
}

/// The URL without any `user:password@` part, for errors and logs.
fn redact_url(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let url = url.trim();
            match (url.split_once("://"), url.rfind('@')) {
                (Some((scheme, _)), Some(at)) => format!("{scheme}://[redacted]@{}", &url[at + 1..]),
                _ => url.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_one_subject_token_and_round_trip() {
        for topic in ["room:1", "a.b.*.>", "with space", "", "émoji🙂"] {
            let token = topic_token(topic);
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{token}"
            );
            assert_eq!(topic_from_token(&token).as_deref(), Some(topic));
        }
        assert_eq!(topic_from_token("*"), None);
    }

    #[test]
    fn credentials_in_the_url_never_print() {
        assert_eq!(
            redact_url("nats://u:p4ss@h:4222, tls://h2:4222"),
            "nats://[redacted]@h:4222,tls://h2:4222"
        );
        assert_eq!(subject("main", "node.hb"), "rt.main.node.hb");
    }
}
