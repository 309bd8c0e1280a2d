//! Loading of `[server]`, `[auth]` and `[limits]`: precedence, key names in errors, secrecy.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::config::Config;

fn load(file: &str, env: &[(&str, &str)]) -> Result<Config, Vec<ConfigError>> {
    let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::from_sources(file, &move |k| env.get(k).cloned())
}

fn error_keys(file: &str, env: &[(&str, &str)]) -> Vec<String> {
    match load(file, env) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.into_iter().map(|e| e.key).collect(),
    }
}

#[test]
fn defaults_without_settings() {
    let s = load("", &[]).expect("empty config loads").server;
    assert_eq!(s.port, 4000);
    assert!(s.auth.jwt_secret.is_none() && s.auth.jwks.is_none());
    assert_eq!(s.limits.max_channels_per_client, 100);
    assert_eq!(s.shutdown_grace, Duration::from_secs(10));
}

#[test]
fn every_setting_loads_from_the_file() {
    let file = r#"
[server]
port = 4100
policies_dir = "/etc/realtime/policies"
shutdown_grace_ms = 2500
[auth]
jwt_secret = "file-secret"
jwks = "https://auth.example.com/.well-known/jwks.json"
claim_validators = { iss = "https://auth.example.com", aud = "authenticated" }
jwks_cache_ttl_ms = 60000
jwks_min_refetch_ms = 5000
[limits]
max_connections = 7
max_channels_per_client = 8
max_joins_per_second = 9
max_events_per_second = 10
max_presence_events_per_second = 11
client_presence_max_calls = 12
client_presence_window_ms = 13000
max_payload_size_kb = 14
max_frame_size = 15
outbound_queue_frames = 16
channel_error_backoff_ms = 17
connect_error_backoff_ms = 18
idle_timeout_ms = 19000
handshake_timeout_ms = 20000
"#;
    let s = load(file, &[]).expect("valid file").server;
    assert_eq!(s.port, 4100);
    assert_eq!(
        s.policies_dir.as_deref(),
        Some(Path::new("/etc/realtime/policies"))
    );
    assert_eq!(s.shutdown_grace, Duration::from_millis(2500));
    assert_eq!(
        s.auth.jwt_secret.as_ref().map(Secret::expose),
        Some("file-secret")
    );
    assert_eq!(
        s.auth.jwks,
        Some(JwksSource::Url(
            "https://auth.example.com/.well-known/jwks.json".into()
        ))
    );
    assert_eq!(
        s.auth.claim_validators.get("aud"),
        Some(&serde_json::json!("authenticated"))
    );
    assert_eq!(s.auth.jwks_cache_ttl, Duration::from_secs(60));
    assert_eq!(s.auth.jwks_min_refetch, Duration::from_secs(5));
    let l = &s.limits;
    assert_eq!(
        (
            l.max_connections,
            l.max_channels_per_client,
            l.max_joins_per_second,
            l.max_events_per_second
        ),
        (7, 8, 9, 10)
    );
    assert_eq!(
        (
            l.max_presence_events_per_second,
            l.max_client_presence_events_per_window
        ),
        (11, 12)
    );
    assert_eq!(l.client_presence_window, Duration::from_secs(13));
    assert_eq!(
        (l.max_payload_size_kb, l.max_frame_size, l.outbound_queue_frames),
        (14, 15, 16)
    );
    assert_eq!(l.channel_error_backoff, Duration::from_millis(17));
    assert_eq!(l.connect_error_backoff, Duration::from_millis(18));
    assert_eq!(l.idle_timeout, Duration::from_secs(19));
    assert_eq!(l.handshake_timeout, Duration::from_secs(20));
    // `config check` knows every key the loader reads.
    let path = std::env::temp_dir().join(format!("realtime-config-all-{}.toml", std::process::id()));
    std::fs::write(&path, file).expect("write temp config");
    let problems = crate::check::check_config(Some(&path), &|_| None);
    let _ = std::fs::remove_file(&path);
    assert!(
        problems.iter().all(|p| p.error.problem != "unknown key, ignored"),
        "{problems:?}"
    );
}

#[test]
fn environment_wins_over_the_file() {
    let file = "[server]\nport = 4100\n[auth]\njwt_secret = \"file\"\n[limits]\nmax_connections = 5\n";
    let env = [
        ("PORT", "4200"),
        ("API_JWT_SECRET", "env"),
        ("TENANT_MAX_CONCURRENT_USERS", "50"),
        ("JWT_CLAIM_VALIDATORS", r#"{"iss":"env-issuer"}"#),
        ("SHUTDOWN_GRACE_PERIOD_MS", "100"),
        ("CLIENT_PRESENCE_WINDOW_MS", "1000"),
        ("CONNECT_ERROR_BACKOFF_MS", "0"),
    ];
    let s = load(file, &env).expect("valid").server;
    assert_eq!(s.port, 4200);
    assert_eq!(s.auth.jwt_secret.as_ref().map(Secret::expose), Some("env"));
    assert_eq!(s.limits.max_connections, 50);
    assert_eq!(
        s.auth.claim_validators.get("iss"),
        Some(&serde_json::json!("env-issuer"))
    );
    assert_eq!(s.shutdown_grace, Duration::from_millis(100));
    assert_eq!(s.limits.client_presence_window, Duration::from_secs(1));
    assert_eq!(s.limits.connect_error_backoff, Duration::ZERO);
    // API_JWT_SECRET wins over JWT_SECRET; JWT_SECRET alone works.
    let both = load("", &[("API_JWT_SECRET", "a"), ("JWT_SECRET", "b")])
        .expect("valid")
        .server;
    assert_eq!(both.auth.jwt_secret.as_ref().map(Secret::expose), Some("a"));
    let alias = load("", &[("JWT_SECRET", "b")]).expect("valid").server;
    assert_eq!(alias.auth.jwt_secret.as_ref().map(Secret::expose), Some("b"));
}

#[test]
fn jwks_setting_forms() {
    let inline = load("", &[("JWT_JWKS", r#" {"keys":[]} "#)])
        .expect("valid")
        .server;
    assert_eq!(
        inline.auth.jwks,
        Some(JwksSource::Inline(r#"{"keys":[]}"#.into()))
    );
    let file = load("", &[("JWT_JWKS", "/etc/jwks.json")]).expect("valid").server;
    assert_eq!(file.auth.jwks, Some(JwksSource::File("/etc/jwks.json".into())));
    let table = "[auth.jwks]\nkeys = [{ kty = \"oct\", kid = \"k1\", k = \"c2VjcmV0\" }]\n";
    let s = load(table, &[]).expect("valid").server;
    let Some(JwksSource::Inline(json)) = s.auth.jwks else {
        panic!("inline JWKS from a TOML table")
    };
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["keys"][0]["kid"], "k1");
}

#[test]
fn each_bad_value_names_its_key() {
    let cases: &[(&str, &str)] = &[
        ("PORT", "70000"),
        ("PORT", "http"),
        ("TENANT_MAX_CONCURRENT_USERS", "0"),
        ("TENANT_MAX_CHANNELS_PER_CLIENT", "-1"),
        ("TENANT_MAX_JOINS_PER_SECOND", "x"),
        ("TENANT_MAX_EVENTS_PER_SECOND", "1.5"),
        ("TENANT_MAX_PRESENCE_EVENTS_PER_SECOND", "0"),
        ("CLIENT_PRESENCE_MAX_CALLS", "many"),
        ("CLIENT_PRESENCE_WINDOW_MS", "0"),
        ("MAX_PAYLOAD_SIZE_KB", "0"),
        ("MAX_FRAME_SIZE", "big"),
        ("OUTBOUND_QUEUE_FRAMES", "0"),
        ("CHANNEL_ERROR_BACKOFF_MS", "-5"),
        ("CONNECT_ERROR_BACKOFF_MS", "soon"),
        ("IDLE_TIMEOUT_MS", "0"),
        ("HANDSHAKE_TIMEOUT_MS", "0"),
        ("SHUTDOWN_GRACE_PERIOD_MS", "1s"),
        ("JWT_CLAIM_VALIDATORS", "{iss: x}"),
        ("JWT_CLAIM_VALIDATORS", "[\"iss\"]"),
        ("JWT_JWKS_CACHE_TTL_MS", "forever"),
        ("JWT_JWKS_MIN_REFETCH_MS", "-1"),
        ("JWT_JWKS", "http://auth.example.com/jwks.json"),
    ];
    for (key, value) in cases {
        assert_eq!(error_keys("", &[(key, value)]), [*key], "{key}={value}");
    }
    assert_eq!(
        error_keys("[limits]\nmax_connections = 0\n", &[]),
        ["limits.max_connections"]
    );
    assert_eq!(
        error_keys("[auth]\nclaim_validators = \"nope\"\n", &[]),
        ["auth.claim_validators"]
    );
    assert_eq!(
        error_keys("[server]\nshutdown_grace_ms = \"soon\"\n", &[]),
        ["server.shutdown_grace_ms"]
    );
    // All problems at once, not only the first.
    let keys = error_keys("", &[("PORT", "x"), ("MAX_FRAME_SIZE", "0")]);
    assert_eq!(keys, ["PORT", "MAX_FRAME_SIZE"]);
}

#[test]
fn invalid_validator_json_does_not_echo_the_value() {
    let errors = load("", &[("JWT_CLAIM_VALIDATORS", "{\"iss\": hunter2}")]).expect_err("invalid JSON");
    assert_eq!(errors[0].key, "JWT_CLAIM_VALIDATORS");
    assert!(!errors[0].to_string().contains("hunter2"), "{}", errors[0]);
}

#[test]
fn secrets_never_print() {
    let oct = r#"{"keys":[{"kty":"oct","kid":"k","k":"aHVudGVyMg"}]}"#;
    let c = load("", &[("API_JWT_SECRET", "hunter2-secret"), ("JWT_JWKS", oct)]).expect("valid");
    let debug = format!("{:?}", c.server);
    assert!(
        !debug.contains("hunter2-secret") && !debug.contains("aHVudGVyMg"),
        "{debug}"
    );
    let debug = format!("{c:?}");
    assert!(!debug.contains("hunter2-secret") && !debug.contains("aHVudGVyMg"));
}

#[test]
fn listen_address_and_metrics_settings() {
    let s = load("", &[]).unwrap().server;
    assert_eq!((s.listen_address, s.metrics_port), (None, None));
    assert!(s.metrics_jwt_secret.is_none());
    let file = "[server]\nlisten_address = \"::\"\nmetrics_port = 9100\nmetrics_jwt_secret = \"from-file\"\n";
    let s = load(
        file,
        &[
            ("LISTEN_ADDRESS", "127.0.0.1"),
            ("METRICS_JWT_SECRET", "from-env"),
        ],
    )
    .unwrap()
    .server;
    assert_eq!(s.listen_address, Some(IpAddr::from([127, 0, 0, 1])));
    assert_eq!(s.metrics_port, Some(9100));
    assert_eq!(
        s.metrics_jwt_secret.as_ref().map(Secret::expose),
        Some("from-env")
    );
    assert!(!format!("{s:?}").contains("from-env"));
    let s = load(file, &[]).unwrap().server;
    assert_eq!(s.listen_address, Some("::".parse().unwrap()));

    assert_eq!(
        error_keys("", &[("LISTEN_ADDRESS", "localhost")]),
        ["LISTEN_ADDRESS"]
    );
    assert_eq!(
        error_keys("", &[("PORT", "9100"), ("METRICS_PORT", "9100")]),
        ["METRICS_PORT"]
    );
    assert_eq!(error_keys("", &[("METRICS_PORT", "0")]), ["METRICS_PORT"]);
}

#[test]
fn allowed_roles_trusted_proxies_and_fairness_limits_load() {
    let s = load("", &[]).expect("valid").server;
    assert_eq!(s.auth.allowed_roles, ["anon", "authenticated", "service_role"]);
    assert!(
        s.auth.trusted_proxies.is_empty(),
        "X-Forwarded-For is ignored by default"
    );
    let file =
        "[auth]\nallowed_roles = [\"anon\", \"editor\"]\n[limits]\nmax_joins_per_second_per_socket = 7\n";
    let env = [
        ("TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"),
        ("OUTBOUND_QUEUE_BYTES", "1000"),
        ("WRITE_STALL_TIMEOUT_MS", "250"),
    ];
    let s = load(file, &env).expect("valid").server;
    assert_eq!(s.auth.allowed_roles, ["anon", "editor"]);
    assert_eq!(s.auth.trusted_proxies.len(), 2);
    assert!(s.auth.trusted_proxies[0].contains("10.2.3.4".parse().expect("an address")));
    assert_eq!(s.limits.max_joins_per_second_per_socket, 7);
    assert_eq!(s.limits.outbound_queue_bytes, 1000);
    assert_eq!(s.limits.write_stall_timeout, Duration::from_millis(250));
    assert_eq!(
        error_keys("", &[("TRUSTED_PROXIES", "10.0.0.0/99")]),
        ["TRUSTED_PROXIES"]
    );
    assert_eq!(
        error_keys("", &[("WRITE_STALL_TIMEOUT_MS", "0")]),
        ["WRITE_STALL_TIMEOUT_MS"]
    );
}

#[test]
fn admin_secret_turns_admin_on_and_must_not_be_guessable() {
    assert!(
        load("", &[]).unwrap().server.admin_secret.is_none(),
        "off by default"
    );
    let s = load(
        "[server]\nadmin_secret = \"from-file-0123456789\"\n",
        &[("ADMIN_SECRET", "from-env-0123456789")],
    )
    .unwrap()
    .server;
    assert_eq!(
        s.admin_secret.as_ref().map(Secret::expose),
        Some("from-env-0123456789")
    );
    assert!(!format!("{s:?}").contains("from-env"));
    assert_eq!(error_keys("", &[("ADMIN_SECRET", "short")]), ["ADMIN_SECRET"]);
}
