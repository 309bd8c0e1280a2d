//! Settings of the HTTP/WebSocket side: listen port, JWT verification, limits.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
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
    /// `CHANNEL_AUTHORIZATION`: how private channels are authorized.
    pub channel_authorization: ChannelAuthorization,
    /// `PRIVATE_ONLY`: public channel joins are refused (Supabase's "Allow public access" off).
    pub private_only: bool,
    /// The demo page and its dev-only endpoints (`/demo/`). Only `realtime dev` sets it, on its
    /// own throwaway database: no setting of `serve` turns it on, because the endpoints mint
    /// tokens and write rows for whoever asks.
    pub demo: Option<DemoConfig>,
}

/// What the demo page needs (see `http::demo`).
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// The built SDK (`sdk-ts/dist`), served to the page as ES modules.
    pub sdk_dir: PathBuf,
}

/// How private channels are authorized (see the `authorization` module).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChannelAuthorization {
    /// The policy files, evaluated in-process.
    #[default]
    Policies,
    /// Row-level security on `realtime.messages`, as Supabase does (needs a database).
    Database,
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
    /// `ALLOWED_ROLES`: the token roles that may be used as Postgres roles (default `anon`,
    /// `authenticated`, `service_role`). Others are refused at connect and at join.
    pub allowed_roles: Vec<String>,
    /// `TRUSTED_PROXIES`: networks (CIDR) of reverse proxies whose `X-Forwarded-For` names the
    /// client. Empty (the default): the header is ignored.
    pub trusted_proxies: Vec<super::cidr::Cidr>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            jwks: None,
            claim_validators: serde_json::Map::new(),
            jwks_cache_ttl: Duration::from_secs(600),
            jwks_min_refetch: Duration::from_secs(30),
            allowed_roles: ["anon", "authenticated", "service_role"]
                .map(String::from)
                .to_vec(),
            trusted_proxies: Vec::new(),
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

/// Limits, with Supabase's defaults unless stated. Every limit, its default and its setting are
/// listed in `docs/limits.md`.
///
/// Rates are counted at four levels: per socket, per subject (the token's `sub`; without one,
/// its role from that client address), per client address and per node. The per-socket,
/// per-subject and per-address limits are far below the node's, so one client reaches its
/// own limit long before it could use up what everyone else needs.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub max_channels_per_client: usize,
    /// Joins per second of the whole node (not Supabase's per-tenant 100: a restart's reconnect
    /// storm must not turn into minutes of refusals). Joins beyond it wait their turn, up to
    /// `join_queue_max_wait`, instead of being refused.
    pub max_joins_per_second: u32,
    /// How long a join may wait for the node's join rate before it is refused.
    pub join_queue_max_wait: Duration,
    /// Client events (broadcasts, presence, unknown events) per second and socket.
    pub max_events_per_second: u32,
    /// Presence events per second of the whole node.
    pub max_presence_events_per_second: u32,
    pub max_client_presence_events_per_window: u32,
    pub client_presence_window: Duration,
    /// Broadcasts per second of the whole node (socket and REST).
    pub max_broadcasts_per_second: u32,
    pub max_joins_per_second_per_socket: u32,
    pub max_joins_per_second_per_subject: u32,
    pub max_joins_per_second_per_ip: u32,
    pub max_broadcasts_per_second_per_subject: u32,
    pub max_broadcasts_per_second_per_ip: u32,
    pub max_presence_events_per_second_per_subject: u32,
    pub max_presence_events_per_second_per_ip: u32,
    pub max_connections_per_subject: u32,
    pub max_connections_per_ip: u32,
    /// `access_token` messages per second and socket.
    pub max_access_tokens_per_second: u32,
    /// `postgres_changes` bindings in one join.
    pub max_changes_bindings_per_join: usize,
    /// Messages in one `POST /api/broadcast`.
    pub max_rest_broadcast_batch: usize,
    /// Presence entries (tracking channels) on one topic.
    pub max_presence_entries_per_topic: usize,
    /// Bytes of one tracked presence payload.
    pub max_presence_entry_bytes: usize,
    /// Bytes of every tracked payload of one topic together.
    pub max_presence_topic_bytes: usize,
    pub max_payload_size_kb: usize,
    pub max_frame_size: usize,
    /// Frames a socket may have queued before it is closed as too slow.
    pub outbound_queue_frames: usize,
    /// Bytes a socket may have queued before it is closed as too slow.
    pub outbound_queue_bytes: usize,
    /// A socket whose writes make no progress for this long is closed (code 4009).
    pub write_stall_timeout: Duration,
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
            max_joins_per_second: 5_000,
            join_queue_max_wait: Duration::from_secs(10),
            max_events_per_second: 100,
            max_presence_events_per_second: 10_000,
            max_client_presence_events_per_window: 5,
            client_presence_window: Duration::from_secs(30),
            max_broadcasts_per_second: 50_000,
            max_joins_per_second_per_socket: 100,
            max_joins_per_second_per_subject: 200,
            max_joins_per_second_per_ip: 1_000,
            max_broadcasts_per_second_per_subject: 500,
            max_broadcasts_per_second_per_ip: 2_500,
            max_presence_events_per_second_per_subject: 100,
            max_presence_events_per_second_per_ip: 1_000,
            max_connections_per_subject: 100,
            max_connections_per_ip: 1_000,
            max_access_tokens_per_second: 100,
            max_changes_bindings_per_join: 100,
            max_rest_broadcast_batch: 100,
            max_presence_entries_per_topic: 10_000,
            max_presence_entry_bytes: 64 * 1024,
            max_presence_topic_bytes: 16 * 1024 * 1024,
            max_payload_size_kb: 3000,
            max_frame_size: 5_000_000,
            outbound_queue_frames: 1024,
            outbound_queue_bytes: 16 * 1024 * 1024,
            write_stall_timeout: Duration::from_secs(30),
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
            channel_authorization: ChannelAuthorization::Policies,
            private_only: false,
            demo: None,
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
        if let Some((mode, blame)) =
            sources.get(&["CHANNEL_AUTHORIZATION"], "server", "channel_authorization")
        {
            match mode.trim().to_ascii_lowercase().as_str() {
                "policies" => c.channel_authorization = ChannelAuthorization::Policies,
                "database" => c.channel_authorization = ChannelAuthorization::Database,
                _ => r.errors.push(ConfigError::new(
                    blame,
                    format!("must be `policies` or `database`, got {mode:?}"),
                )),
            }
        }
        match sources.bool(&["PRIVATE_ONLY"], "server", "private_only") {
            Ok(Some(b)) => c.private_only = b,
            Ok(None) => {}
            Err(e) => r.errors.push(e),
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
            && !jwks_url_allowed(url)
        {
            r.errors.push(ConfigError::new(blame, JWKS_URL_RULE));
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
    if let Some((text, _)) = sources.get(&["ALLOWED_ROLES"], "auth", "allowed_roles") {
        a.allowed_roles = list(&text).map(str::to_owned).collect();
    }
    if let Some((text, blame)) = sources.get(&["TRUSTED_PROXIES"], "auth", "trusted_proxies") {
        a.trusted_proxies.clear();
        for item in list(&text) {
            match item.parse() {
                Ok(cidr) => a.trusted_proxies.push(cidr),
                Err(e) => r.errors.push(ConfigError::new(blame.clone(), format!("{e}"))),
            }
        }
    }
    a
}

/// The items of a comma-separated setting, trimmed, empty ones skipped.
fn list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
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
    millis!(
        join_queue_max_wait,
        "JOIN_QUEUE_MAX_WAIT_MS",
        "join_queue_max_wait_ms"
    );
    int!(
        max_broadcasts_per_second,
        "MAX_BROADCASTS_PER_SECOND",
        "max_broadcasts_per_second"
    );
    int!(
        max_joins_per_second_per_socket,
        "MAX_JOINS_PER_SECOND_PER_SOCKET",
        "max_joins_per_second_per_socket"
    );
    int!(
        max_joins_per_second_per_subject,
        "MAX_JOINS_PER_SECOND_PER_SUBJECT",
        "max_joins_per_second_per_subject"
    );
    int!(
        max_joins_per_second_per_ip,
        "MAX_JOINS_PER_SECOND_PER_IP",
        "max_joins_per_second_per_ip"
    );
    int!(
        max_broadcasts_per_second_per_subject,
        "MAX_BROADCASTS_PER_SECOND_PER_SUBJECT",
        "max_broadcasts_per_second_per_subject"
    );
    int!(
        max_broadcasts_per_second_per_ip,
        "MAX_BROADCASTS_PER_SECOND_PER_IP",
        "max_broadcasts_per_second_per_ip"
    );
    int!(
        max_presence_events_per_second_per_subject,
        "MAX_PRESENCE_EVENTS_PER_SECOND_PER_SUBJECT",
        "max_presence_events_per_second_per_subject"
    );
    int!(
        max_presence_events_per_second_per_ip,
        "MAX_PRESENCE_EVENTS_PER_SECOND_PER_IP",
        "max_presence_events_per_second_per_ip"
    );
    int!(
        max_connections_per_subject,
        "MAX_CONNECTIONS_PER_SUBJECT",
        "max_connections_per_subject"
    );
    int!(
        max_connections_per_ip,
        "MAX_CONNECTIONS_PER_IP",
        "max_connections_per_ip"
    );
    int!(
        max_access_tokens_per_second,
        "MAX_ACCESS_TOKENS_PER_SECOND",
        "max_access_tokens_per_second"
    );
    int!(
        max_changes_bindings_per_join,
        "MAX_CHANGES_BINDINGS_PER_JOIN",
        "max_changes_bindings_per_join"
    );
    int!(
        max_rest_broadcast_batch,
        "MAX_REST_BROADCAST_BATCH",
        "max_rest_broadcast_batch"
    );
    int!(
        max_presence_entries_per_topic,
        "MAX_PRESENCE_ENTRIES_PER_TOPIC",
        "max_presence_entries_per_topic"
    );
    int!(
        max_presence_entry_bytes,
        "MAX_PRESENCE_ENTRY_BYTES",
        "max_presence_entry_bytes"
    );
    int!(
        max_presence_topic_bytes,
        "MAX_PRESENCE_TOPIC_BYTES",
        "max_presence_topic_bytes"
    );
    int!(
        outbound_queue_bytes,
        "OUTBOUND_QUEUE_BYTES",
        "outbound_queue_bytes"
    );
    millis!(
        write_stall_timeout,
        "WRITE_STALL_TIMEOUT_MS",
        "write_stall_timeout_ms"
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
    if l.write_stall_timeout.is_zero() {
        r.errors.push(ConfigError::new(
            blame(
                r.sources,
                "WRITE_STALL_TIMEOUT_MS",
                "limits",
                "write_stall_timeout_ms",
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

/// Why a JWKS URL was refused at load time.
pub const JWKS_URL_RULE: &str = "the JWKS URL must use https (http is allowed for loopback hosts only)";

/// The JWKS URL rule: https, or plain http to a loopback host only, since a key set fetched in
/// the clear from elsewhere could be swapped on the way. Checked at load time and again by the
/// fetcher before every request.
pub fn jwks_url_allowed(url: &str) -> bool {
    let Ok(uri) = url.parse::<axum::http::Uri>() else {
        return false;
    };
    let Some(host) = uri.host() else {
        return false;
    };
    match uri.scheme_str() {
        Some("https") => true,
        Some("http") => is_loopback_host(host),
        _ => false,
    }
}

/// `localhost` or a loopback address (an IPv6 literal with or without its brackets).
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests;
