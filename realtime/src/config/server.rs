//! Settings of the HTTP/WebSocket side: listen port, JWT verification, limits.

use std::time::Duration;

use super::{ConfigError, Secret, Sources};

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// `PORT`, default 4000.
    pub port: u16,
    pub auth: AuthConfig,
    pub limits: Limits,
    /// Folder of policy files (`POLICIES_DIR`, default `policies` when it exists).
    pub policies_dir: Option<std::path::PathBuf>,
    /// How long SIGTERM waits for sockets to close before exiting.
    pub shutdown_grace: Duration,
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// `API_JWT_SECRET` (or `JWT_SECRET`): HS256/384/512 shared secret.
    pub jwt_secret: Option<Secret>,
    /// `JWT_JWKS`: a JWKS as JSON text, a file path, or an https URL.
    pub jwks: Option<JwksSource>,
    /// `JWT_CLAIM_VALIDATORS`: claims that must equal these values, e.g. `{"iss":"..."}`.
    pub claim_validators: serde_json::Map<String, serde_json::Value>,
    /// `JWT_JWKS_CACHE_TTL_MS`: how long a fetched JWKS is used before it is fetched again.
    pub jwks_cache_ttl: Duration,
    /// `JWT_JWKS_MIN_REFETCH_MS`: the least time between two fetches, however many tokens name
    /// unknown key ids.
    pub jwks_min_refetch: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            jwks: None,
            claim_validators: serde_json::Map::new(),
            jwks_cache_ttl: Duration::from_secs(600),
            jwks_min_refetch: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    Inline(String),
    File(std::path::PathBuf),
    Url(String),
}

/// Limits, with Supabase's defaults unless stated.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub max_channels_per_client: usize,
    pub max_joins_per_second: u32,
    pub max_events_per_second: u32,
    pub max_presence_events_per_second: u32,
    pub max_client_presence_events_per_window: u32,
    pub client_presence_window: Duration,
    pub max_payload_size_kb: usize,
    pub max_frame_size: usize,
    /// Frames a socket may have queued before it is closed as too slow.
    pub outbound_queue_frames: usize,
    /// Delay before a join error reply, to damp reconnect storms (`CHANNEL_ERROR_BACKOFF_MS`).
    pub channel_error_backoff: Duration,
    /// Delay before a refused handshake is answered (`CONNECT_ERROR_BACKOFF_MS`).
    pub connect_error_backoff: Duration,
    /// Sockets without a heartbeat for this long are closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_channels_per_client: 100,
            max_joins_per_second: 100,
            max_events_per_second: 100,
            max_presence_events_per_second: 1000,
            max_client_presence_events_per_window: 5,
            client_presence_window: Duration::from_secs(30),
            max_payload_size_kb: 3000,
            max_frame_size: 5_000_000,
            outbound_queue_frames: 1024,
            channel_error_backoff: Duration::from_millis(5000),
            connect_error_backoff: Duration::from_millis(2000),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            port: 4000,
            auth: AuthConfig::default(),
            limits: Limits::default(),
            policies_dir: None,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl ServerConfig {
    pub fn load(sources: &Sources<'_>) -> Result<ServerConfig, Vec<ConfigError>> {
        let mut config = ServerConfig::default();
        if let Some(port) = sources.parse(&["PORT"], "server", "port").map_err(|e| vec![e])? {
            config.port = port;
        }
        if let Some((s, _)) = sources.get(&["API_JWT_SECRET", "JWT_SECRET"], "auth", "jwt_secret") {
            config.auth.jwt_secret = Some(Secret::new(s));
        }
        Ok(config)
    }
}
