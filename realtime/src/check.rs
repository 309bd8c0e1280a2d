//! `realtime config check`: loads the configuration as `serve` would and also checks what
//! `serve` needs beyond well-formed settings: a JWT secret or a JWKS that can be read, the policy
//! folder, keys nothing reads. It sits above `config`, `auth` and `policy`, since it asks all
//! three; `main` prints its findings.

use std::fmt;
use std::path::Path;

use crate::auth::jwks::Jwks;
use crate::config::{Config, ConfigError};
use crate::telemetry::chain;

/// How serious a `config check` finding is: errors stop `serve`, warnings do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// A finding of [`check_config`].
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub error: ConfigError,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}", self.error)
    }
}

/// `realtime config check`: loads the configuration as `serve` would and also checks what
/// `serve` needs from this section: a JWT secret or a JWKS that can be read, the policy folder.
/// Returns every finding; an empty list means the configuration is good. Never prints secrets.
pub fn check_config(file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Vec<Problem> {
    let error = |e: ConfigError| Problem {
        severity: Severity::Error,
        error: e,
    };
    let config = match Config::load(file, env) {
        Ok(c) => c,
        Err(errors) => return errors.into_iter().map(error).collect(),
    };
    let mut problems = Vec::new();
    let auth = &config.server.auth;
    let has_secret = auth.jwt_secret.as_ref().is_some_and(|s| !s.is_empty());
    if !has_secret && auth.jwks.is_none() {
        problems.push(error(ConfigError::new(
            "API_JWT_SECRET",
            "no JWT secret and no JWT_JWKS: every token would be refused",
        )));
    }
    if let Some(secret) = auth.jwt_secret.as_ref().filter(|s| !s.is_empty())
        && secret.expose().len() < 32
    {
        problems.push(Problem {
            severity: Severity::Warning,
            error: ConfigError::new(
                "API_JWT_SECRET",
                "shorter than 32 bytes: HMAC secrets this short can be guessed",
            ),
        });
    }
    if let Some(source) = &auth.jwks {
        let key = if env("JWT_JWKS").is_some_and(|v| !v.is_empty()) {
            "JWT_JWKS"
        } else {
            "auth.jwks"
        };
        match Jwks::new(source.clone(), auth.jwks_cache_ttl, auth.jwks_min_refetch) {
            Err(e) => problems.push(error(ConfigError::new(key, chain(&e).to_string()))),
            Ok(jwks) => {
                if let Some(set) = jwks.fixed_set() {
                    if set.is_empty() {
                        problems.push(error(ConfigError::new(
                            key,
                            "the JWKS has no usable key (each needs a kid)",
                        )));
                    } else if set.skipped > 0 {
                        problems.push(Problem {
                            severity: Severity::Warning,
                            error: ConfigError::new(
                                key,
                                format!("{} keys are not usable and are ignored", set.skipped),
                            ),
                        });
                    }
                }
            }
        }
    }
    problems.extend(unknown_keys(file).into_iter().map(|key| Problem {
        severity: Severity::Warning,
        error: ConfigError::new(key, "unknown key, ignored"),
    }));
    if let Some(dir) = &config.server.policies_dir
        && !dir.is_dir()
    {
        let key = if env("POLICIES_DIR").is_some_and(|v| !v.is_empty()) {
            "POLICIES_DIR"
        } else {
            "server.policies_dir"
        };
        problems.push(error(ConfigError::new(
            key,
            format!("{} is not a folder", dir.display()),
        )));
    }
    problems
}

/// The keys this section reads, per TOML table.
const KNOWN_KEYS: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "port",
            "policies_dir",
            "shutdown_grace_ms",
            "listen_address",
            "metrics_port",
            "metrics_jwt_secret",
            "admin_secret",
        ],
    ),
    (
        "auth",
        &[
            "jwt_secret",
            "jwks",
            "claim_validators",
            "jwks_cache_ttl_ms",
            "jwks_min_refetch_ms",
            "allowed_roles",
            "trusted_proxies",
        ],
    ),
    (
        "limits",
        &[
            "max_connections",
            "max_channels_per_client",
            "max_joins_per_second",
            "max_events_per_second",
            "max_presence_events_per_second",
            "client_presence_max_calls",
            "client_presence_window_ms",
            "max_payload_size_kb",
            "max_frame_size",
            "outbound_queue_frames",
            "channel_error_backoff_ms",
            "connect_error_backoff_ms",
            "idle_timeout_ms",
            "handshake_timeout_ms",
            "outbound_queue_bytes",
            "write_stall_timeout_ms",
            "join_queue_max_wait_ms",
            "max_broadcasts_per_second",
            "max_joins_per_second_per_socket",
            "max_joins_per_second_per_subject",
            "max_joins_per_second_per_ip",
            "max_broadcasts_per_second_per_subject",
            "max_broadcasts_per_second_per_ip",
            "max_presence_events_per_second_per_subject",
            "max_presence_events_per_second_per_ip",
            "max_connections_per_subject",
            "max_connections_per_ip",
            "max_access_tokens_per_second",
            "max_changes_bindings_per_join",
            "max_rest_broadcast_batch",
            "max_presence_entries_per_topic",
            "max_presence_entry_bytes",
            "max_presence_topic_bytes",
        ],
    ),
];

/// Keys of `[server]`, `[auth]` and `[limits]` that nothing reads: usually typos.
fn unknown_keys(file: Option<&Path>) -> Vec<String> {
    let Some(table) = file
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|text| text.parse::<toml::Table>().ok())
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (section, known) in KNOWN_KEYS {
        if let Some(t) = table.get(*section).and_then(|v| v.as_table()) {
            out.extend(
                t.keys()
                    .filter(|k| !known.contains(&k.as_str()))
                    .map(|k| format!("{section}.{k}")),
            );
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn check(env: &[(&str, &str)]) -> Vec<Problem> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        check_config(None, &move |k| env.get(k).cloned())
    }

    #[test]
    fn check_requires_a_secret_or_jwks() {
        let problems = check(&[]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].severity, Severity::Error);
        assert_eq!(problems[0].error.key, "API_JWT_SECRET");
        assert!(check(&[("API_JWT_SECRET", "a-secret-of-at-least-thirty-two-bytes!!")]).is_empty());
        let short = check(&[("API_JWT_SECRET", "short")]);
        assert_eq!(
            (short[0].severity, short[0].error.key.as_str()),
            (Severity::Warning, "API_JWT_SECRET")
        );
    }

    #[test]
    fn check_reads_the_jwks_and_the_policy_folder() {
        let problems = check(&[("JWT_JWKS", "/nonexistent/jwks.json")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].error.key, "JWT_JWKS");
        let problems = check(&[("JWT_JWKS", r#"{"keys":[{"kty":"oct","k":"eA"}]}"#)]);
        assert_eq!(problems[0].error.key, "JWT_JWKS", "{problems:?}");
        assert!(problems[0].error.problem.contains("no usable key"));
        let ok = check(&[("JWT_JWKS", r#"{"keys":[{"kty":"oct","kid":"a","k":"eA"}]}"#)]);
        assert!(ok.is_empty(), "{ok:?}");
        let problems = check(&[
            ("API_JWT_SECRET", "a-secret-of-at-least-thirty-two-bytes!!"),
            ("POLICIES_DIR", "/nonexistent"),
        ]);
        assert_eq!(problems[0].error.key, "POLICIES_DIR");
        // Load errors come through as errors too.
        let problems = check(&[("PORT", "x")]);
        assert_eq!(problems[0].error.key, "PORT");
    }

    #[test]
    fn check_warns_about_unknown_keys() {
        let path = std::env::temp_dir().join(format!("realtime-config-check-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[limits]\nmax_conections = 5\n[auth]\njwt_secret = \"a-secret-of-at-least-thirty-two-bytes!!\"\n",
        )
        .expect("write temp config");
        let problems = check_config(Some(&path), &|_| None);
        let _ = std::fs::remove_file(&path);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].severity, Severity::Warning);
        assert_eq!(problems[0].error.key, "limits.max_conections");
        assert_eq!(
            problems[0].to_string(),
            "warning: limits.max_conections: unknown key, ignored"
        );
    }
}
