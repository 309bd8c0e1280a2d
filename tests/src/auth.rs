//! Tokens for the services the tests start: one HS256 secret and one signer, claims in, token
//! out. Tests of other algorithms or keys (`hardening_jwt`) sign their own.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// The JWT secret (`API_JWT_SECRET`) of every server the harness starts.
pub const SECRET: &str = "test-secret-with-enough-length-for-hs256";

/// Seconds since the Unix epoch, for `exp` claims.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `claims` signed with `secret` (HS256).
pub fn sign_with(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode a token")
}

/// `claims` signed with [`SECRET`].
pub fn sign(claims: &Value) -> String {
    sign_with(SECRET, claims)
}

/// A token for `role`, valid for an hour.
pub fn token(role: &str) -> String {
    sign(&json!({ "role": role, "exp": unix_now() + 3600 }))
}

/// A token for role `authenticated` and subject `user-1`, expiring `exp_in` seconds from now
/// (negative: already expired).
pub fn user_token(exp_in: i64) -> String {
    sign(&json!({ "role": "authenticated", "sub": "user-1", "exp": unix_now() + exp_in }))
}
