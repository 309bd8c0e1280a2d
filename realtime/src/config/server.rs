//! Settings of the HTTP/WebSocket side: listen port, JWT verification, limits.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
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
    /// `LISTEN_ADDRESS`: the address the HTTP/WebSocket port (and the metrics port) listen on.
    /// `None`: the command's default, `0.0.0.0` for `serve` and `127.0.0.1` for `dev`.
    pub listen_address: Option<IpAddr>,
    /// `METRICS_PORT`: serve `/metrics` on a listener of its own (and not on `PORT`).
    pub metrics_port: Option<u16>,
    /// `METRICS_JWT_SECRET`: `/metrics` requires `Authorization: Bearer <JWT>`, HS256-signed
    /// with this secret (as Supabase Realtime).
    pub metrics_jwt_secret: Option<Secret>,
    /// `ADMIN_SECRET`: turns on the `/admin` inspector, which asks for this secret
    /// (`Authorization: Bearer <secret>`). Unset: no `/admin` at all.
    pub admin_secret: Option<Secret>,
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

#[derive(Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// JSON text. May hold `oct` (shared secret) keys, so it never prints.
    Inline(String),
    File(std::path::PathBuf),
    Url(String),
}

impl fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwksSource::Inline(_) => f.write_str("Inline([redacted])"),
            JwksSource::File(p) => f.debug_tuple("File").field(p).finish(),
            JwksSource::Url(u) => f.debug_tuple("Url").field(u).finish(),
        }
    }
}

impl JwksSource {
    /// `JWT_JWKS` text: JSON when it starts with `{`, a URL when it has a scheme, else a path.
    pub fn from_setting(text: &str) -> JwksSource {
        let t = text.trim();
        if t.starts_with('{') {
            JwksSource::Inline(t.to_owned())
        } else if t.starts_with("https://") || t.starts_with("http://") {
            JwksSource::Url(t.to_owned())
        } else {
            JwksSource::File(PathBuf::from(t))
        }
    }
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
    /// Time a client has to send a request head (a WebSocket handshake included) and a REST
    /// request its body; slower connections are closed (slowloris).
    pub handshake_timeout: Duration,
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
            handshake_timeout: Duration::from_secs(10),
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
            listen_address: None,
            metrics_port: None,
            metrics_jwt_secret: None,
            admin_secret: None,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Reads settings for one section while collecting every problem, each naming its key.
struct Reader<'a, 'b> {
    sources: &'a Sources<'b>,
    errors: Vec<ConfigError>,
}

impl Reader<'_, '_> {
    /// An integer of at least `min`.
    fn int<T>(&mut self, env: &[&str], section: &str, key: &str, min: T) -> Option<T>
    where
        T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        let (text, blame) = self.sources.get(env, section, key)?;
        match text.trim().parse::<T>() {
            Ok(v) if v >= min => Some(v),
            Ok(_) => {
                self.errors.push(ConfigError::new(
                    blame,
                    format!("must be at least {min} (got {text:?})"),
                ));
                None
            }
            Err(_) => {
                self.errors.push(ConfigError::new(
                    blame,
                    format!("expected a whole number, got {text:?}"),
                ));
                None
            }
        }
    }

    /// A duration given in milliseconds.
    fn millis(&mut self, env: &[&str], section: &str, key: &str) -> Option<Duration> {
        self.int::<u64>(env, section, key, 0).map(Duration::from_millis)
    }

    /// A JSON value: from the environment as JSON text; from the file as JSON text or a TOML
    /// table/array (written the TOML way).
    fn json(&mut self, env: &[&str], section: &str, key: &str) -> Option<(serde_json::Value, String)> {
        let from_file_table = env
            .iter()
            .all(|n| (self.sources.env)(n).filter(|v| !v.is_empty()).is_none())
            .then(|| self.sources.file.get(section)?.as_table()?.get(key).cloned())
            .flatten()
            .filter(|v| v.is_table() || v.is_array());
        if let Some(value) = from_file_table {
            let blame = format!("{section}.{key}");
            return match serde_json::to_value(&value) {
                Ok(v) => Some((v, blame)),
                Err(e) => {
                    self.errors.push(ConfigError::new(
                        blame,
                        format!("cannot be converted to JSON: {e}"),
                    ));
                    None
                }
            };
        }
        let (text, blame) = self.sources.get(env, section, key)?;
        match serde_json::from_str(&text) {
            Ok(v) => Some((v, blame)),
            Err(e) => {
                // The position, never the text: the value may be close to a secret.
                let problem = format!(
                    "invalid JSON at line {} column {}: {}",
                    e.line(),
                    e.column(),
                    e.classify_name()
                );
                self.errors.push(ConfigError::new(blame, problem));
                None
            }
        }
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected value",
            serde_json::error::Category::Eof => "unexpected end",
        }
    }
}

impl ServerConfig {
    /// Loads `[server]`, `[auth]` and `[limits]` and their environment variables (which win).
    pub fn load(sources: &Sources<'_>) -> Result<ServerConfig, Vec<ConfigError>> {
        let mut r = Reader {
            sources,
            errors: Vec::new(),
        };
        let mut c = ServerConfig::default();
        if let Some(port) = r.int::<u16>(&["PORT"], "server", "port", 0) {
            c.port = port;
        }
        if let Some((dir, _)) = sources.get(&["POLICIES_DIR"], "server", "policies_dir") {
            c.policies_dir = Some(PathBuf::from(dir));
        }
        if let Some(d) = r.millis(&["SHUTDOWN_GRACE_PERIOD_MS"], "server", "shutdown_grace_ms") {
            c.shutdown_grace = d;
        }
        load_listeners(&mut r, &mut c);
        c.auth = load_auth(&mut r);
        c.limits = load_limits(&mut r);
        if r.errors.is_empty() { Ok(c) } else { Err(r.errors) }
    }

    /// The policy folder: `POLICIES_DIR` when set, else `./policies` when that folder exists.
    pub fn resolved_policies_dir(&self) -> Option<PathBuf> {
        match &self.policies_dir {
            Some(dir) => Some(dir.clone()),
            None => Some(PathBuf::from("policies")).filter(|d| d.is_dir()),
        }
    }
}

/// `LISTEN_ADDRESS`, `METRICS_PORT` and `METRICS_JWT_SECRET`.
fn load_listeners(r: &mut Reader<'_, '_>, c: &mut ServerConfig) {
    match r
        .sources
        .parse::<IpAddr>(&["LISTEN_ADDRESS"], "server", "listen_address")
    {
        Ok(address) => c.listen_address = address,
        Err(e) => r.errors.push(ConfigError::new(
            e.key,
            format!(
                "expected an IP address such as 127.0.0.1, 0.0.0.0 or ::, {}",
                e.problem
            ),
        )),
    }
    if let Some(port) = r.int::<u16>(&["METRICS_PORT"], "server", "metrics_port", 1) {
        if port == c.port {
            r.errors.push(ConfigError::new(
                blame(r.sources, "METRICS_PORT", "server", "metrics_port"),
                format!("must differ from the HTTP port {}", c.port),
            ));
        }
        c.metrics_port = Some(port);
    }
    if let Some((secret, _)) = r
        .sources
        .get(&["METRICS_JWT_SECRET"], "server", "metrics_jwt_secret")
    {
        c.metrics_jwt_secret = Some(Secret::new(secret));
    }
    if let Some((secret, _)) = r.sources.get(&["ADMIN_SECRET"], "server", "admin_secret") {
        // The secret guards disconnecting clients and minting tokens: a guessable one is refused.
        if secret.chars().count() < 16 {
            r.errors.push(ConfigError::new(
                blame(r.sources, "ADMIN_SECRET", "server", "admin_secret"),
                "must be at least 16 characters long".to_owned(),
            ));
        } else {
            c.admin_secret = Some(Secret::new(secret));
        }
    }
}

fn load_auth(r: &mut Reader<'_, '_>) -> AuthConfig {
    let sources = r.sources;
    let mut a = AuthConfig::default();
    if let Some((s, _)) = sources.get(&["API_JWT_SECRET", "JWT_SECRET"], "auth", "jwt_secret") {
        a.jwt_secret = Some(Secret::new(s));
    }
    // A JWKS may be written inline in the file as a TOML table.
    let file_table = sources
        .file
        .get("auth")
        .and_then(|s| s.as_table())
        .and_then(|t| t.get("jwks"))
        .is_some_and(|v| v.is_table());
    let env_set = (sources.env)("JWT_JWKS").is_some_and(|v| !v.is_empty());
    if file_table && !env_set {
        if let Some((v, _)) = r.json(&["JWT_JWKS"], "auth", "jwks") {
            a.jwks = Some(JwksSource::Inline(v.to_string()));
        }
    } else if let Some((text, blame)) = sources.get(&["JWT_JWKS"], "auth", "jwks") {
        let source = JwksSource::from_setting(&text);
        if let JwksSource::Url(url) = &source
            && let Err(e) = crate::auth::jwks::check_url(url)
        {
            r.errors.push(ConfigError::new(blame, e.to_string()));
        }
        a.jwks = Some(source);
    }
    if let Some((v, blame)) = r.json(&["JWT_CLAIM_VALIDATORS"], "auth", "claim_validators") {
        match v {
            serde_json::Value::Object(map) => a.claim_validators = map,
            _ => r.errors.push(ConfigError::new(
                blame,
                "expected a JSON object such as {\"iss\": \"...\"}",
            )),
        }
    }
    if let Some(d) = r.millis(&["JWT_JWKS_CACHE_TTL_MS"], "auth", "jwks_cache_ttl_ms") {
        a.jwks_cache_ttl = d;
    }
    if let Some(d) = r.millis(&["JWT_JWKS_MIN_REFETCH_MS"], "auth", "jwks_min_refetch_ms") {
        a.jwks_min_refetch = d;
    }
    a
}

fn load_limits(r: &mut Reader<'_, '_>) -> Limits {
    let mut l = Limits::default();
    macro_rules! int {
        ($field:ident, $env:expr, $key:expr) => {
            if let Some(v) = r.int(&[$env], "limits", $key, 1) {
                l.$field = v;
            }
        };
    }
    macro_rules! millis {
        ($field:ident, $env:expr, $key:expr) => {
            if let Some(v) = r.millis(&[$env], "limits", $key) {
                l.$field = v;
            }
        };
    }
    int!(max_connections, "TENANT_MAX_CONCURRENT_USERS", "max_connections");
    int!(
        max_channels_per_client,
        "TENANT_MAX_CHANNELS_PER_CLIENT",
        "max_channels_per_client"
    );
    int!(
        max_joins_per_second,
        "TENANT_MAX_JOINS_PER_SECOND",
        "max_joins_per_second"
    );
    int!(
        max_events_per_second,
        "TENANT_MAX_EVENTS_PER_SECOND",
        "max_events_per_second"
    );
    int!(
        max_presence_events_per_second,
        "TENANT_MAX_PRESENCE_EVENTS_PER_SECOND",
        "max_presence_events_per_second"
    );
    int!(
        max_client_presence_events_per_window,
        "CLIENT_PRESENCE_MAX_CALLS",
        "client_presence_max_calls"
    );
    millis!(
        client_presence_window,
        "CLIENT_PRESENCE_WINDOW_MS",
        "client_presence_window_ms"
    );
    int!(max_payload_size_kb, "MAX_PAYLOAD_SIZE_KB", "max_payload_size_kb");
    int!(max_frame_size, "MAX_FRAME_SIZE", "max_frame_size");
    int!(
        outbound_queue_frames,
        "OUTBOUND_QUEUE_FRAMES",
        "outbound_queue_frames"
    );
    millis!(
        channel_error_backoff,
        "CHANNEL_ERROR_BACKOFF_MS",
        "channel_error_backoff_ms"
    );
    millis!(
        connect_error_backoff,
        "CONNECT_ERROR_BACKOFF_MS",
        "connect_error_backoff_ms"
    );
    millis!(idle_timeout, "IDLE_TIMEOUT_MS", "idle_timeout_ms");
    millis!(handshake_timeout, "HANDSHAKE_TIMEOUT_MS", "handshake_timeout_ms");
    if l.client_presence_window.is_zero() {
        r.errors.push(ConfigError::new(
            blame(
                r.sources,
                "CLIENT_PRESENCE_WINDOW_MS",
                "limits",
                "client_presence_window_ms",
            ),
            "must be more than 0",
        ));
    }
    if l.idle_timeout.is_zero() {
        r.errors.push(ConfigError::new(
            blame(r.sources, "IDLE_TIMEOUT_MS", "limits", "idle_timeout_ms"),
            "must be more than 0",
        ));
    }
    if l.handshake_timeout.is_zero() {
        r.errors.push(ConfigError::new(
            blame(
                r.sources,
                "HANDSHAKE_TIMEOUT_MS",
                "limits",
                "handshake_timeout_ms",
            ),
            "must be more than 0",
        ));
    }
    l
}

/// The name a problem with a setting should carry: the variable when it is set, else the key.
fn blame(sources: &Sources<'_>, env: &str, section: &str, key: &str) -> String {
    sources
        .get(&[env], section, key)
        .map(|(_, b)| b)
        .unwrap_or_else(|| format!("{section}.{key}"))
}

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
    let config = match super::Config::load(file, env) {
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
        match crate::auth::jwks::Jwks::new(source.clone(), auth.jwks_cache_ttl, auth.jwks_min_refetch) {
            Err(e) => problems.push(error(ConfigError::new(key, e.to_string()))),
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
mod tests;
