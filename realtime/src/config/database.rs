//! Where the database is and how to replicate from it.
//!
//! Accepts `DATABASE_URL` (libpq URL form) or Supabase's `DB_HOST`, `DB_PORT`, `DB_USER`,
//! `DB_PASSWORD`, `DB_NAME`, `DB_SSL`; `SLOT_NAME`, `TEMPORARY_SLOT`, `PUBLICATIONS`, and the
//! transaction caps and slot check interval of `[replication]`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, Secret, Sources};
use crate::window::WindowLimits;

/// libpq's `sslmode`. The default is libpq's: `prefer`, so a server that offers TLS is spoken
/// to over TLS without anyone asking, and one without TLS (a local dev cluster) still connects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, plain TCP otherwise; the certificate is not checked.
    #[default]
    Prefer,
    /// TLS, certificate not checked.
    Require,
    /// TLS, certificate chain checked against the CA.
    VerifyCa,
    /// TLS, chain and host name checked.
    VerifyFull,
}

impl SslMode {
    /// The setting's name as libpq spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl std::str::FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "disable" | "false" | "off" => Ok(SslMode::Disable),
            "prefer" | "allow" => Ok(SslMode::Prefer),
            "require" | "true" | "on" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            _ => Err("expected disable, prefer, require, verify-ca or verify-full".to_owned()),
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub dbname: String,
    pub ssl_mode: SslMode,
    /// PEM file of CA certificates for `verify-ca`/`verify-full`; the web PKI roots otherwise.
    pub ssl_root_cert: Option<PathBuf>,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseConfig({self})")
    }
}

impl fmt::Display for DatabaseConfig {
    /// The connection without its password: safe for logs and error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, self.dbname
        )
    }
}

impl DatabaseConfig {
    pub(super) fn load(sources: &Sources<'_>) -> Result<Option<DatabaseConfig>, ConfigError> {
        let mut config = match sources.get(&["DATABASE_URL"], "database", "url") {
            Some((url, blame)) => Some(Self::from_url(&url).map_err(|p| ConfigError::new(blame, p))?),
            None => None,
        };
        // The Supabase-style variables fill in (or override) single parts.
        let host = sources.get(&["DB_HOST"], "database", "host");
        if config.is_none() && host.is_some() {
            config = Some(DatabaseConfig::local(""));
        }
        let Some(mut c) = config else { return Ok(None) };
        if let Some((h, _)) = host {
            c.host = h;
        }
        if let Some(p) = sources.parse(&["DB_PORT"], "database", "port")? {
            c.port = p;
        }
        if let Some((u, _)) = sources.get(&["DB_USER"], "database", "user") {
            c.user = u;
        }
        if let Some((p, _)) = sources.get(&["DB_PASSWORD"], "database", "password") {
            c.password = Secret::new(p);
        }
        if let Some((n, _)) = sources.get(&["DB_NAME"], "database", "name") {
            c.dbname = n;
        }
        if let Some(mode) = sources.parse(&["DB_SSL", "PGSSLMODE"], "database", "sslmode")? {
            c.ssl_mode = mode;
        }
        if let Some((path, _)) = sources.get(&["DB_SSL_CA_CERT", "PGSSLROOTCERT"], "database", "sslrootcert")
        {
            c.ssl_root_cert = Some(PathBuf::from(path));
        }
        if c.host.is_empty() {
            return Err(ConfigError::new("DB_HOST", "the database host is empty"));
        }
        Ok(Some(c))
    }

    /// Defaults for a server on `host`: port 5432, user and database `postgres`.
    pub fn local(host: &str) -> DatabaseConfig {
        DatabaseConfig {
            host: host.to_owned(),
            port: 5432,
            user: "postgres".to_owned(),
            password: Secret::default(),
            dbname: "postgres".to_owned(),
            ssl_mode: SslMode::default(),
            ssl_root_cert: None,
        }
    }

    /// Parses `postgres://user:password@host:port/dbname?sslmode=...`. Errors never echo the URL,
    /// since it may hold a password.
    pub fn from_url(url: &str) -> Result<DatabaseConfig, String> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or("expected a URL starting with postgres:// or postgresql://")?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut c = DatabaseConfig::local("localhost");
        if let Some(userinfo) = userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            c.user = percent_decode(user).ok_or("the user name has an invalid %-escape")?;
            if let Some(p) = password {
                c.password = Secret::new(percent_decode(p).ok_or("the password has an invalid %-escape")?);
            }
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, rest) = v6.split_once(']').ok_or("unterminated [ in the host")?;
            (h, rest.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if !host.is_empty() {
            c.host = percent_decode(host).ok_or("the host has an invalid %-escape")?;
        }
        if let Some(port) = port.filter(|p| !p.is_empty()) {
            c.port = port
                .parse()
                .map_err(|_| "the port is not a number between 1 and 65535")?;
        }
        if !path.is_empty() {
            c.dbname = percent_decode(path).ok_or("the database name has an invalid %-escape")?;
        } else {
            c.dbname = c.user.clone();
        }
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v).ok_or("a query parameter has an invalid %-escape")?;
            match k {
                "sslmode" => c.ssl_mode = v.parse()?,
                "sslrootcert" => c.ssl_root_cert = Some(PathBuf::from(v)),
                "user" => c.user = v,
                "password" => c.password = Secret::new(v),
                "host" => c.host = v,
                "port" => {
                    c.port = v
                        .parse()
                        .map_err(|_| "the port is not a number between 1 and 65535")?
                }
                "dbname" => c.dbname = v,
                // Other libpq parameters (application_name, connect_timeout, ...) are ignored.
                _ => {}
            }
        }
        Ok(c)
    }
}

/// `%XX` decoding (`+` stays as is). `None` on a broken escape or a result that is not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// How to replicate: slot, publications, and what we may create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationConfig {
    pub slot_name: String,
    /// A temporary slot disappears with the connection: no WAL is ever retained for us, but
    /// every reconnect starts a new epoch.
    pub temporary_slot: bool,
    pub publications: Vec<String>,
    /// Create the publication when it is missing (empty: add tables to it yourself).
    pub manage_publication: bool,
    /// The resume window: how much recent history is kept for clients that come back with
    /// their last position (and how much WAL the slot retains for it).
    pub window: WindowLimits,
    /// A transaction with more changes than this is not kept in memory: it reaches subscribers
    /// as one overflow signal telling them to refetch its tables.
    pub max_transaction_changes: usize,
    /// The same cap in bytes of decoded row images.
    pub max_transaction_bytes: usize,
    /// How often the slot is checked (lag, `wal_status`, `max_slot_wal_keep_size`).
    pub slot_check_interval: Duration,
    /// How often cached grants, RLS flags and role attributes are re-read from the catalog
    /// (`ACCESS_RECHECK_MS`): the bound on how long a role change (ALTER ROLE, GRANT role TO
    /// role), which no event trigger reports, can go unnoticed.
    pub access_recheck_interval: Duration,
    /// Daily partitions of `realtime.messages` older than this many days are dropped
    /// (`MESSAGES_RETENTION_DAYS`; Supabase keeps about 3).
    pub messages_retention_days: u32,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            slot_name: "realtime_slot".to_owned(),
            temporary_slot: false,
            publications: vec!["supabase_realtime".to_owned()],
            manage_publication: true,
            window: WindowLimits::default(),
            max_transaction_changes: 100_000,
            max_transaction_bytes: 128 << 20,
            slot_check_interval: Duration::from_secs(10),
            access_recheck_interval: Duration::from_millis(500),
            messages_retention_days: 3,
        }
    }
}

/// Longest resume window accepted: a week of WAL is already more than most disks should hold.
const MAX_WINDOW_SECONDS: u64 = 7 * 24 * 3600;

impl ReplicationConfig {
    pub(super) fn load(sources: &Sources<'_>) -> Result<ReplicationConfig, ConfigError> {
        let mut c = ReplicationConfig::default();
        if let Some((slot, blame)) = sources.get(&["SLOT_NAME"], "replication", "slot_name") {
            validate_slot_name(&slot).map_err(|p| ConfigError::new(blame, p))?;
            c.slot_name = slot;
        }
        if let Some(t) = sources.bool(&["TEMPORARY_SLOT"], "replication", "temporary_slot")? {
            c.temporary_slot = t;
        }
        if let Some((pubs, blame)) = sources.get(&["PUBLICATIONS"], "replication", "publications") {
            let list = parse_publications(&pubs);
            if list.is_empty() {
                return Err(ConfigError::new(blame, "name at least one publication"));
            }
            c.publications = list;
        }
        if let Some(m) = sources.bool(&["MANAGE_PUBLICATION"], "replication", "manage_publication")? {
            c.manage_publication = m;
        }
        let seconds: Option<u64> =
            sources.parse(&["REPLICATION_WINDOW_SECONDS"], "replication", "window_seconds")?;
        if let Some(seconds) = seconds {
            if seconds > MAX_WINDOW_SECONDS {
                let (_, blame) = sources
                    .get(&["REPLICATION_WINDOW_SECONDS"], "replication", "window_seconds")
                    .unwrap_or_default();
                return Err(ConfigError::new(
                    blame,
                    format!("at most {MAX_WINDOW_SECONDS} (a week), got {seconds}"),
                ));
            }
            c.window.max_age = std::time::Duration::from_secs(seconds);
        }
        let bytes: Option<usize> =
            sources.parse(&["REPLICATION_WINDOW_BYTES"], "replication", "window_bytes")?;
        if let Some(bytes) = bytes {
            c.window.max_bytes = bytes;
        }
        let positive = |env: &str, key: &str| -> Result<Option<usize>, ConfigError> {
            match sources.parse::<usize>(&[env], "replication", key)? {
                Some(0) => Err(ConfigError::new(
                    sources
                        .get(&[env], "replication", key)
                        .map(|(_, b)| b)
                        .unwrap_or_default(),
                    "must be at least 1",
                )),
                other => Ok(other),
            }
        };
        if let Some(days) = sources.parse::<u32>(
            &["MESSAGES_RETENTION_DAYS"],
            "replication",
            "messages_retention_days",
        )? {
            c.messages_retention_days = days;
        }
        if let Some(n) = positive("MAX_TRANSACTION_CHANGES", "max_transaction_changes")? {
            c.max_transaction_changes = n;
        }
        if let Some(n) = positive("MAX_TRANSACTION_BYTES", "max_transaction_bytes")? {
            c.max_transaction_bytes = n;
        }
        if let Some(ms) = sources.parse::<u64>(
            &["SLOT_CHECK_INTERVAL_MS"],
            "replication",
            "slot_check_interval_ms",
        )? {
            if ms < 100 {
                return Err(ConfigError::new(
                    sources
                        .get(
                            &["SLOT_CHECK_INTERVAL_MS"],
                            "replication",
                            "slot_check_interval_ms",
                        )
                        .map(|(_, b)| b)
                        .unwrap_or_default(),
                    format!("must be at least 100 (got {ms})"),
                ));
            }
            c.slot_check_interval = Duration::from_millis(ms);
        }
        let recheck = ("ACCESS_RECHECK_MS", "access_recheck_ms");
        if let Some(ms) = sources.parse::<u64>(&[recheck.0], "replication", recheck.1)? {
            if !(50..=1000).contains(&ms) {
                return Err(ConfigError::new(
                    sources
                        .get(&[recheck.0], "replication", recheck.1)
                        .map(|(_, b)| b)
                        .unwrap_or_default(),
                    format!(
                        "must be between 50 and 1000 (got {ms}): access changes must take effect within a second"
                    ),
                ));
            }
            c.access_recheck_interval = Duration::from_millis(ms);
        }
        Ok(c)
    }
}

/// Accepts `a,b`, `["a","b"]` (Supabase v1's JSON form) and surrounding blanks.
fn parse_publications(text: &str) -> Vec<String> {
    text.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|p| p.trim().trim_matches('"').trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Postgres allows lower-case letters, digits and underscores in slot names, at most 63 bytes.
fn validate_slot_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err("a slot name has 1 to 63 characters".to_owned());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!("{name:?}: slot names may hold only a-z, 0-9 and _"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::collections::HashMap;

    fn load(file: &str, env: &[(&str, &str)]) -> Result<Config, Vec<ConfigError>> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_sources(file, &move |k| env.get(k).cloned())
    }

    #[test]
    fn parses_a_full_url() {
        let c = DatabaseConfig::from_url("postgres://app:p%40ss@db.example:6543/shop?sslmode=verify-full")
            .unwrap();
        assert_eq!((c.user.as_str(), c.password.expose()), ("app", "p@ss"));
        assert_eq!(
            (c.host.as_str(), c.port, c.dbname.as_str()),
            ("db.example", 6543, "shop")
        );
        assert_eq!(c.ssl_mode, SslMode::VerifyFull);
    }

    #[test]
    fn sslmode_defaults_to_prefer_as_libpq() {
        let url = DatabaseConfig::from_url("postgres://u:p@db.example/app").unwrap();
        assert_eq!(url.ssl_mode, SslMode::Prefer);
        let vars = load("", &[("DB_HOST", "db.example")]).unwrap().database.unwrap();
        assert_eq!(vars.ssl_mode, SslMode::Prefer);
        let off = DatabaseConfig::from_url("postgres://u:p@h/d?sslmode=disable").unwrap();
        assert_eq!(off.ssl_mode, SslMode::Disable);
        let supabase = load("", &[("DB_HOST", "h"), ("DB_SSL", "true")])
            .unwrap()
            .database
            .unwrap();
        assert_eq!(supabase.ssl_mode, SslMode::Require);
    }

    #[test]
    fn url_errors_and_display_never_show_the_password() {
        let c = DatabaseConfig::from_url("postgres://u:hunter2@h/d").unwrap();
        assert!(!c.to_string().contains("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
        let err = DatabaseConfig::from_url("mysql://u:hunter2@h/d").unwrap_err();
        assert!(!err.contains("hunter2"));
        let err = load("", &[("DATABASE_URL", "postgres://u:hunter2@h:notaport/d")]).unwrap_err();
        assert_eq!(err[0].key, "DATABASE_URL");
        assert!(!err[0].to_string().contains("hunter2"), "{}", err[0]);
    }

    #[test]
    fn supabase_variables_build_a_connection() {
        let c = load(
            "",
            &[
                ("DB_HOST", "pg"),
                ("DB_PORT", "5433"),
                ("DB_USER", "rt"),
                ("DB_PASSWORD", "x"),
                ("DB_NAME", "app"),
            ],
        )
        .unwrap();
        let db = c.database.unwrap();
        assert_eq!(db.to_string(), "postgres://rt@pg:5433/app");
        assert_eq!(db.password.expose(), "x");
    }

    #[test]
    fn environment_wins_over_the_file() {
        let file = "[replication]\nslot_name = \"from_file\"\npublications = [\"a\", \"b\"]\n";
        let c = load(file, &[("SLOT_NAME", "from_env")]).unwrap();
        assert_eq!(c.replication.slot_name, "from_env");
        assert_eq!(c.replication.publications, ["a", "b"]);
    }

    #[test]
    fn bad_values_name_their_key() {
        let errs = load(
            "",
            &[("SLOT_NAME", "Bad-Name"), ("DB_HOST", "h"), ("DB_PORT", "x")],
        )
        .unwrap_err();
        let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
        assert!(
            keys.contains(&"SLOT_NAME") && keys.contains(&"DB_PORT"),
            "{keys:?}"
        );
        let errs = load("[replication]\ntemporary_slot = \"maybe\"\n", &[]).unwrap_err();
        assert_eq!(errs[0].key, "replication.temporary_slot");
    }

    #[test]
    fn the_resume_window_is_configurable_and_checked() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.replication.window, WindowLimits::default());
        assert_eq!(c.replication.window.max_age.as_secs(), 300);
        assert_eq!(c.replication.window.max_bytes, 256 * 1024 * 1024);
        let c = load(
            "[replication]\nwindow_seconds = 60\nwindow_bytes = 1000\n",
            &[("REPLICATION_WINDOW_SECONDS", "5")],
        )
        .unwrap();
        assert_eq!(c.replication.window.max_age.as_secs(), 5, "the environment wins");
        assert_eq!(c.replication.window.max_bytes, 1000);
        let c = load("", &[("REPLICATION_WINDOW_SECONDS", "0")]).unwrap();
        assert_eq!(c.replication.window.max_age.as_secs(), 0, "0 turns resuming off");
        for (key, value, blame) in [
            ("REPLICATION_WINDOW_SECONDS", "-1", "REPLICATION_WINDOW_SECONDS"),
            ("REPLICATION_WINDOW_SECONDS", "5m", "REPLICATION_WINDOW_SECONDS"),
            (
                "REPLICATION_WINDOW_SECONDS",
                "604801",
                "REPLICATION_WINDOW_SECONDS",
            ),
            ("REPLICATION_WINDOW_BYTES", "256MB", "REPLICATION_WINDOW_BYTES"),
        ] {
            let errs = load("", &[(key, value)]).unwrap_err();
            assert_eq!(errs[0].key, blame, "{value}: {errs:?}");
        }
        let errs = load("[replication]\nwindow_bytes = -5\n", &[]).unwrap_err();
        assert_eq!(errs[0].key, "replication.window_bytes");
    }

    #[test]
    fn transaction_caps_and_the_slot_check_interval_are_read_and_validated() {
        let c = load("", &[]).unwrap().replication;
        assert_eq!(
            (c.max_transaction_changes, c.max_transaction_bytes),
            (100_000, 128 << 20)
        );
        assert_eq!(c.slot_check_interval, Duration::from_secs(10));
        let file = "[replication]\nmax_transaction_changes = 500\nslot_check_interval_ms = 250\n";
        let c = load(file, &[("MAX_TRANSACTION_BYTES", "4096")])
            .unwrap()
            .replication;
        assert_eq!((c.max_transaction_changes, c.max_transaction_bytes), (500, 4096));
        assert_eq!(c.slot_check_interval, Duration::from_millis(250));
        let errs = load("", &[("MAX_TRANSACTION_CHANGES", "0")]).unwrap_err();
        assert_eq!(errs[0].key, "MAX_TRANSACTION_CHANGES");
        let errs = load("[replication]\nslot_check_interval_ms = 5\n", &[]).unwrap_err();
        assert_eq!(errs[0].key, "replication.slot_check_interval_ms");
        let errs = load("", &[("MAX_TRANSACTION_BYTES", "lots")]).unwrap_err();
        assert_eq!(errs[0].key, "MAX_TRANSACTION_BYTES");
    }

    #[test]
    fn the_access_recheck_interval_is_at_most_a_second() {
        let c = load("", &[]).unwrap().replication;
        assert_eq!(c.access_recheck_interval, Duration::from_millis(500));
        let c = load("", &[("ACCESS_RECHECK_MS", "200")]).unwrap().replication;
        assert_eq!(c.access_recheck_interval, Duration::from_millis(200));
        for bad in ["2000", "0", "soon"] {
            let errs = load("", &[("ACCESS_RECHECK_MS", bad)]).unwrap_err();
            assert_eq!(errs[0].key, "ACCESS_RECHECK_MS", "{bad}");
        }
    }

    #[test]
    fn publications_accept_both_list_forms() {
        assert_eq!(parse_publications(" a , b "), ["a", "b"]);
        assert_eq!(parse_publications("[\"x\",\"y\"]"), ["x", "y"]);
    }
}
