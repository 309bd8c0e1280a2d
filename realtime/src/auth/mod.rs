//! JWT verification: HS* with the shared secret (or a JWKS `oct` key), RS*/PS*/ES*/EdDSA only
//! through JWKS keys whose type matches the algorithm family.
//!
//! Owns the verification keys: the secret (fixed at start) and the JWKS key set ([`jwks`]), which
//! for a URL source is cached and refetched. The rules follow Supabase Realtime's (token
//! URL-decoded and whitespace-stripped, `role` and `exp` required) with RFC 8725's hardening:
//! the algorithm is bound to the key type, `alg: none` has no signer, `exp` has zero leeway and
//! `nbf` is enforced. Tokens are never logged.

mod fetch;
pub mod jwks;
pub mod roles;
pub mod token;

use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::server::AuthConfig;
use jwks::{Jwks, KeyType};

use crate::telemetry::chain;

/// The role that bypasses every policy and row-level security (Postgres `BYPASSRLS` in
/// Supabase); the only such role a token may name (`ALLOWED_ROLES`).
pub const BYPASS_ROLE: &str = "service_role";

/// The claims of a verified token that the server uses.
#[derive(Clone, Debug, PartialEq)]
pub struct Claims {
    pub role: String,
    /// Seconds since the Unix epoch.
    pub exp: i64,
    pub sub: Option<String>,
    /// Every claim, `role` and `sub` included: policies read claims from here only
    /// (`auth.role()`, `auth.uid()`, `auth.jwt() ->> 'x'`).
    pub all: serde_json::Map<String, serde_json::Value>,
}

/// Why a token was refused. `Display` gives the message Supabase sends (without the code prefix,
/// see [`AuthError::code`]).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("API key is missing")]
    Missing,
    #[error("Token has expired {0} seconds ago")]
    Expired(i64),
    #[error("Fields `role` and `exp` are required in JWT")]
    MissingClaims,
    /// `exp` is present but not a number.
    #[error("Token expiration time is invalid")]
    InvalidExpiry,
    /// `nbf` lies in the future. Supabase does not check `nbf`; the wording follows its
    /// `exp` message.
    #[error("Token is not valid yet")]
    NotYetValid,
    /// A claim differs from its `JWT_CLAIM_VALIDATORS` value (or is absent). The expected and
    /// actual values are not echoed.
    #[error("Token claim `{0}` does not match the expected value")]
    ClaimMismatch(String),
    #[error("The token provided is not a valid JWT")]
    Malformed,
    #[error("Failed to validate JWT signature")]
    BadSignature,
    #[error("Failed to generate JWT signer, check your JWT secret or JWKS configuration")]
    NoSigner,
    /// The token names a `kid` that no configured key has (for its algorithm family).
    #[error(
        "Failed to generate JWT signer for key ID (kid) {0:?}, check your JWT secret or JWKS configuration"
    )]
    NoSignerForKid(String),
}

impl AuthError {
    /// The code Supabase puts before the message in a join error reply:
    /// `{"reason": "<code>: <message>"}`.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing
            | AuthError::Expired(_)
            | AuthError::MissingClaims
            | AuthError::InvalidExpiry
            | AuthError::NotYetValid
            | AuthError::ClaimMismatch(_) => "InvalidJWTToken",
            AuthError::Malformed => "MalformedJWT",
            AuthError::BadSignature => "JwtSignatureError",
            AuthError::NoSigner | AuthError::NoSignerForKid(_) => "JwtSignerError",
        }
    }

    /// `<code>: <message>`, the `reason` of a refused `phx_join`.
    pub fn join_reason(&self) -> String {
        format!("{}: {self}", self.code())
    }

    /// The HTTP status of a refused WebSocket handshake: every token problem is 401.
    pub fn http_status(&self) -> u16 {
        401
    }

    /// The handshake body's `error`: Supabase drops the "N seconds ago" detail there.
    pub fn handshake_message(&self) -> String {
        match self {
            AuthError::Expired(_) => "Token has expired".to_owned(),
            other => other.to_string(),
        }
    }
}

/// Verifies tokens against the configured secret and JWKS. Cheap to share behind an `Arc`.
pub struct Verifier {
    secret: Option<DecodingKey>,
    jwks: Option<Jwks>,
    validators: serde_json::Map<String, serde_json::Value>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("jwks", &self.jwks)
            .field("validators", &self.validators.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The verification rule of a header `alg`: the library's algorithm and the key type it needs.
/// `None` for `none` and every algorithm we cannot verify (ES512, Ed448): such tokens have no
/// signer.
fn algorithm(alg: &str) -> Option<(Algorithm, KeyType)> {
    Some(match alg {
        "HS256" => (Algorithm::HS256, KeyType::Oct),
        "HS384" => (Algorithm::HS384, KeyType::Oct),
        "HS512" => (Algorithm::HS512, KeyType::Oct),
        "RS256" => (Algorithm::RS256, KeyType::Rsa),
        "RS384" => (Algorithm::RS384, KeyType::Rsa),
        "RS512" => (Algorithm::RS512, KeyType::Rsa),
        "PS256" => (Algorithm::PS256, KeyType::Rsa),
        "PS384" => (Algorithm::PS384, KeyType::Rsa),
        "PS512" => (Algorithm::PS512, KeyType::Rsa),
        "ES256" => (Algorithm::ES256, KeyType::EcP256),
        "ES384" => (Algorithm::ES384, KeyType::EcP384),
        // RFC 9864's fully specified name for EdDSA over Ed25519.
        "EdDSA" | "Ed25519" => (Algorithm::EdDSA, KeyType::Ed25519),
        _ => return None,
    })
}

impl Verifier {
    /// Builds a verifier. A JWKS given inline or as a file is read here; when it cannot be read
    /// or parsed the problem is logged and only the secret is used (`config check` reports it
    /// first; [`Verifier::try_new`] refuses instead).
    pub fn new(config: AuthConfig) -> Self {
        match Self::try_new(config.clone()) {
            Ok(v) => v,
            Err(problem) => {
                tracing::error!(problem = %chain(&problem), "JWT_JWKS is unusable; only the JWT secret will verify tokens");
                let secret = Self::secret_key(&config);
                Verifier {
                    secret,
                    jwks: None,
                    validators: config.claim_validators,
                }
            }
        }
    }

    /// Builds a verifier, failing when an inline or file JWKS cannot be read or parsed. A URL
    /// JWKS is fetched on first use.
    pub fn try_new(config: AuthConfig) -> Result<Self, jwks::JwksError> {
        let secret = Self::secret_key(&config);
        let jwks = match &config.jwks {
            Some(source) => Some(Jwks::new(
                source.clone(),
                config.jwks_cache_ttl,
                config.jwks_min_refetch,
            )?),
            None => None,
        };
        Ok(Verifier {
            secret,
            jwks,
            validators: config.claim_validators,
        })
    }

    fn secret_key(config: &AuthConfig) -> Option<DecodingKey> {
        config
            .jwt_secret
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|s| DecodingKey::from_secret(s.expose().as_bytes()))
    }

    /// Verifies `token` (as transported: it is URL-decoded and whitespace-stripped here) and
    /// returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, now()).await
    }

    /// [`Verifier::verify`] at a given time (Unix seconds), for tests and re-checks.
    pub async fn verify_at(&self, token: &str, now: i64) -> Result<Claims, AuthError> {
        let token = token::clean(token);
        let parsed = token::parse(&token)?;
        let (alg, key_type) = algorithm(&parsed.alg).ok_or(AuthError::NoSigner)?;
        let key = self.key_for(key_type, alg, parsed.kid.as_deref()).await?;
        check_signature(parsed.signature, parsed.signing_input, &key, alg)?;
        token::check_claims(parsed.payload, now, &self.validators)
    }

    /// The key that may verify a token of this algorithm and `kid`. HS* uses a JWKS `oct` key
    /// with the token's `kid` when there is one, else the secret; the others need a JWKS key of
    /// their own type with the token's `kid`.
    async fn key_for(
        &self,
        key_type: KeyType,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<DecodingKey, AuthError> {
        if let (Some(jwks), Some(kid)) = (&self.jwks, kid) {
            // Only an asymmetric token with an unknown kid may trigger a refetch: HS* tokens fall
            // back to the secret, so their kids must not cost us a fetch.
            let may_refetch = key_type != KeyType::Oct || self.secret.is_none();
            if let Some(key) = jwks.find(kid, key_type, alg, may_refetch).await {
                return Ok(key);
            }
        }
        if key_type == KeyType::Oct
            && let Some(secret) = &self.secret
        {
            return Ok(secret.clone());
        }
        match kid {
            Some(kid) if self.jwks.is_some() => Err(AuthError::NoSignerForKid(shorten(kid))),
            _ => Err(AuthError::NoSigner),
        }
    }
}

/// The kid is attacker-chosen and echoed in the error reply: bound its length.
fn shorten(kid: &str) -> String {
    kid.chars().take(64).collect()
}

fn check_signature(
    signature: &str,
    message: &str,
    key: &DecodingKey,
    alg: Algorithm,
) -> Result<(), AuthError> {
    use base64::Engine;
    // Decode first so that a garbled signature is a signature error, while an error from the
    // library below can only mean an unusable key.
    if base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .is_err()
        || signature.is_empty()
    {
        return Err(AuthError::BadSignature);
    }
    match jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, alg) {
        Ok(true) => Ok(()),
        Ok(false) => Err(AuthError::BadSignature),
        Err(_) => Err(AuthError::NoSigner),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;
