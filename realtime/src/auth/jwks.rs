//! The JWKS key set: parsing (`{"keys":[…]}`), binding every key to its type, and for a URL
//! source a cached copy that is refetched when it expires or when a token names an unknown
//! `kid`, at most once per `min_refetch`.
//!
//! Owns the cached key set (a `moka` cache entry with a time to live, plus the last good set for
//! when a refetch fails) and the time of the last fetch attempt.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::server::JwksSource;
use crate::telemetry::chain;

pub use super::fetch::FetchError;

/// The type a key must have to verify an algorithm family. Binding each algorithm to one key
/// type makes HS/RS confusion impossible: an RSA public key is never used as an HMAC secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// `kty: oct`, HS256/384/512.
    Oct,
    /// `kty: RSA`, RS* and PS*.
    Rsa,
    /// `kty: EC, crv: P-256`, ES256.
    EcP256,
    /// `kty: EC, crv: P-384`, ES384.
    EcP384,
    /// `kty: OKP, crv: Ed25519`, EdDSA.
    Ed25519,
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read the JWKS file {path}")]
    File { path: String, source: std::io::Error },
    #[error("the JWKS is not valid JSON: {0}")]
    Json(String),
    #[error("the JWKS has no \"keys\" list")]
    NoKeys,
    #[error("fetching the JWKS failed")]
    Fetch(#[source] FetchError),
    /// The last fetch was less than the refetch interval ago (not logged).
    #[error("the JWKS was fetched too recently to fetch it again")]
    RateLimited,
    #[error("the JWKS URL must use https (http is allowed for loopback hosts only): {0}")]
    InsecureUrl(String),
}

/// Refuses JWKS URLs we would not fetch: https only, or http to a loopback host.
pub fn check_url(url: &str) -> Result<(), JwksError> {
    super::fetch::check_url(url)
}

/// One usable key of the set.
struct Entry {
    kid: String,
    key_type: KeyType,
    /// The key's own `alg`, when it states one: then it verifies that algorithm only.
    alg: Option<KeyAlgorithm>,
    key: DecodingKey,
}

/// A parsed key set. Keys without a `kid`, with `use` other than `sig`, of unsupported types
/// (Ed448, P-521, ...) or with invalid parameters are skipped: a token can only name keys that
/// have a `kid`.
#[derive(Default)]
pub struct KeySet {
    entries: Vec<Entry>,
    /// How many keys were skipped, for the log line after a (re)load.
    pub skipped: usize,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<(&str, KeyType)> = self
            .entries
            .iter()
            .map(|e| (e.kid.as_str(), e.key_type))
            .collect();
        f.debug_struct("KeySet")
            .field("keys", &kids)
            .field("skipped", &self.skipped)
            .finish()
    }
}

impl KeySet {
    /// Parses `{"keys":[…]}` (or a single JWK object).
    pub fn parse(text: &str) -> Result<KeySet, JwksError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| JwksError::Json(format!("line {} column {}", e.line(), e.column())))?;
        let keys = match &value {
            serde_json::Value::Object(o) if o.contains_key("keys") => match o.get("keys") {
                Some(serde_json::Value::Array(keys)) => keys.clone(),
                _ => return Err(JwksError::NoKeys),
            },
            serde_json::Value::Object(o) if o.contains_key("kty") => vec![value.clone()],
            _ => return Err(JwksError::NoKeys),
        };
        let mut set = KeySet::default();
        for key in keys {
            match serde_json::from_value::<Jwk>(key)
                .ok()
                .and_then(|jwk| entry(&jwk))
            {
                Some(e) => set.entries.push(e),
                None => set.skipped += 1,
            }
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The key with this `kid` and type that may verify `alg`.
    pub fn find(&self, kid: &str, key_type: KeyType, alg: Algorithm) -> Option<DecodingKey> {
        self.entries
            .iter()
            .find(|e| e.kid == kid && e.key_type == key_type && e.alg.is_none_or(|a| key_alg_matches(a, alg)))
            .map(|e| e.key.clone())
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.entries.iter().any(|e| e.kid == kid)
    }
}

fn key_alg_matches(key_alg: KeyAlgorithm, alg: Algorithm) -> bool {
    // Compare by name so that a JWK `alg` we cannot verify (ES512) never matches.
    key_alg.to_string() == format!("{alg:?}")
}

fn entry(jwk: &Jwk) -> Option<Entry> {
    let kid = jwk.common.key_id.clone()?;
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let key_type = match &jwk.algorithm {
        AlgorithmParameters::OctetKey(_) => KeyType::Oct,
        AlgorithmParameters::RSA(_) => KeyType::Rsa,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyType::EcP256,
            EllipticCurve::P384 => KeyType::EcP384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => KeyType::Ed25519,
            _ => return None,
        },
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Entry {
        kid,
        key_type,
        alg: jwk.common.key_algorithm,
        key,
    })
}

/// The configured JWKS with its cache.
pub struct Jwks {
    source: JwksSource,
    /// Inline and file sources are read once, at start.
    fixed: Option<Arc<KeySet>>,
    /// URL source: the current set, expiring after the configured time to live.
    cache: moka::future::Cache<(), Arc<KeySet>>,
    /// URL source: the last set fetched, used when a refetch fails.
    last_good: Mutex<Option<Arc<KeySet>>>,
    /// URL source: when the last fetch started; no new fetch before `min_refetch` has passed.
    last_attempt: Mutex<Option<Instant>>,
    min_refetch: Duration,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.source {
            JwksSource::Inline(_) => "inline".to_owned(),
            JwksSource::File(p) => format!("file {}", p.display()),
            JwksSource::Url(u) => format!("url {u}"),
        };
        f.debug_struct("Jwks")
            .field("source", &source)
            .field("fixed", &self.fixed)
            .finish()
    }
}

impl Jwks {
    /// Reads an inline or file source now; a URL source is only checked (https, or http to a
    /// loopback host) and fetched on first use.
    pub fn new(source: JwksSource, ttl: Duration, min_refetch: Duration) -> Result<Jwks, JwksError> {
        let fixed = match &source {
            JwksSource::Inline(text) => Some(Arc::new(KeySet::parse(text)?)),
            JwksSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| JwksError::File {
                    path: path.display().to_string(),
                    source,
                })?;
                Some(Arc::new(KeySet::parse(&text)?))
            }
            JwksSource::Url(url) => {
                super::fetch::check_url(url)?;
                None
            }
        };
        if let Some(set) = &fixed
            && set.skipped > 0
        {
            tracing::warn!(
                usable = set.len(),
                skipped = set.skipped,
                "some JWKS keys are not usable"
            );
        }
        // The cache must live at least as long as the refetch interval, or expiry alone would
        // leave us without keys while refetching is still forbidden.
        let ttl = ttl.max(min_refetch).max(Duration::from_secs(1));
        Ok(Jwks {
            source,
            fixed,
            cache: moka::future::Cache::builder()
                .max_capacity(1)
                .time_to_live(ttl)
                .build(),
            last_good: Mutex::new(None),
            last_attempt: Mutex::new(None),
            min_refetch,
        })
    }

    /// The key set of an inline or file source (`None` for a URL).
    pub fn fixed_set(&self) -> Option<&KeySet> {
        self.fixed.as_deref()
    }

    /// The key for a token's `kid`. With `may_refetch`, an unknown kid refetches a URL source
    /// (rate limited) and looks again.
    pub async fn find(
        &self,
        kid: &str,
        key_type: KeyType,
        alg: Algorithm,
        may_refetch: bool,
    ) -> Option<DecodingKey> {
        if let Some(set) = &self.fixed {
            return set.find(kid, key_type, alg);
        }
        let current = self.current().await;
        if let Some(key) = current.as_ref().and_then(|s| s.find(kid, key_type, alg)) {
            return Some(key);
        }
        if !may_refetch || !self.may_fetch_now() {
            return None;
        }
        tracing::info!("a token names an unknown JWKS key id; refetching the JWKS");
        self.cache.invalidate(&()).await;
        self.current().await?.find(kid, key_type, alg)
    }

    /// The cached set, fetching it when absent or expired (concurrent callers share one fetch).
    /// When the fetch fails or is rate limited, the last good set.
    async fn current(&self) -> Option<Arc<KeySet>> {
        let JwksSource::Url(url) = &self.source else {
            return self.fixed.clone();
        };
        let fetched = self
            .cache
            .try_get_with((), async {
                if !self.claim_fetch_slot() {
                    return Err(JwksError::RateLimited);
                }
                let set = Arc::new(fetch_set(url).await?);
                tracing::info!(usable = set.len(), skipped = set.skipped, "fetched the JWKS");
                if let Ok(mut last) = self.last_good.lock() {
                    *last = Some(set.clone());
                }
                Ok::<_, JwksError>(set)
            })
            .await;
        match fetched {
            Ok(set) => Some(set),
            Err(e) => {
                if !matches!(*e, JwksError::RateLimited) {
                    tracing::warn!(error = %chain(&e), "cannot fetch the JWKS; using the last keys fetched");
                }
                self.last_good.lock().ok().and_then(|l| l.clone())
            }
        }
    }

    fn may_fetch_now(&self) -> bool {
        match self.last_attempt.lock() {
            Ok(last) => last.is_none_or(|t| t.elapsed() >= self.min_refetch),
            Err(_) => false,
        }
    }

    /// Records a fetch attempt now, unless one happened less than `min_refetch` ago.
    fn claim_fetch_slot(&self) -> bool {
        let Ok(mut last) = self.last_attempt.lock() else {
            return false;
        };
        if last.is_some_and(|t| t.elapsed() < self.min_refetch) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

async fn fetch_set(url: &str) -> Result<KeySet, JwksError> {
    let body = super::fetch::get(url, super::fetch::MAX_BODY).await?;
    let text = String::from_utf8(body).map_err(|_| JwksError::Json("the body is not UTF-8".to_owned()))?;
    KeySet::parse(&text)
}
