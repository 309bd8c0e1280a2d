//! JWT verification: HS* with the shared secret, RS*/ES*/EdDSA through a JWKS.

use crate::config::server::AuthConfig;

/// The claims of a verified token that the server uses.
#[derive(Clone, Debug, PartialEq)]
pub struct Claims {
    pub role: String,
    /// Seconds since the Unix epoch.
    pub exp: i64,
    pub sub: Option<String>,
    /// Every claim, for policies (`auth.jwt() ->> 'x'`).
    pub all: serde_json::Map<String, serde_json::Value>,
}

/// Why a token was refused. `Display` gives the message Supabase sends (without the code prefix).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("API key is missing")]
    Missing,
    #[error("Token has expired {0} seconds ago")]
    Expired(i64),
    #[error("Fields `role` and `exp` are required in JWT")]
    MissingClaims,
    #[error("The token provided is not a valid JWT")]
    Malformed,
    #[error("Failed to validate JWT signature")]
    BadSignature,
    #[error("Failed to generate JWT signer, check your JWT secret or JWKS configuration")]
    NoSigner,
}

/// Verifies tokens against the configured secret and JWKS.
#[derive(Debug)]
pub struct Verifier {
    _config: AuthConfig,
}

impl Verifier {
    pub fn new(config: AuthConfig) -> Self {
        Verifier { _config: config }
    }

    pub async fn verify(&self, _token: &str) -> Result<Claims, AuthError> {
        Err(AuthError::NoSigner)
    }
}
