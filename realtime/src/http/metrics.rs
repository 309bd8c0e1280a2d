//! `GET /metrics`: OpenMetrics text (Prometheus reads it), served on the main port or, with `METRICS_PORT`, on a
//! listener of its own.
//!
//! With `METRICS_JWT_SECRET` set, a scrape must carry `Authorization: Bearer <JWT>` signed with
//! that secret (HS256), as Supabase Realtime asks; anything else is 401 with no figures. The
//! figures name no rows and no users, but they do tell an outsider how busy the service is and
//! how its replication fares, which is no one else's business.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::config::Secret;
use crate::node::Node;

/// A router with `/metrics` only: what the `METRICS_PORT` listener serves.
pub(crate) fn router(node: Arc<Node>) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(node)
}

/// Prometheus text: replication lag and health, sockets, subscriptions, refusals (no row data,
/// no names).
pub(super) async fn metrics(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    if let Some(secret) = &node.config.server.metrics_jwt_secret
        && let Err(reason) = authorize(secret, &headers)
    {
        // Debug only: unauthenticated scrapes are cheap to send and must not flood the log.
        tracing::debug!(reason, "metrics scrape refused");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "unauthorized\n",
        )
            .into_response();
    }
    let text = crate::metrics::render(node.bus.replication_metrics(), node.figures(), &node.refusals);
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

/// Checks the bearer token of a scrape. The reason (never the token) is for the log.
fn authorize(secret: &Secret, headers: &HeaderMap) -> Result<(), &'static str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or("no Authorization header")?
        .to_str()
        .map_err(|_| "unreadable Authorization header")?;
    let (scheme, token) = value.trim().split_once(' ').ok_or("not a bearer token")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("not a bearer token");
    }
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    // No claim is required; `exp` and `nbf` are checked when present.
    validation.required_spec_claims.clear();
    validation.validate_nbf = true;
    let key = jsonwebtoken::DecodingKey::from_secret(secret.expose().as_bytes());
    match jsonwebtoken::decode::<serde_json::Value>(token.trim(), &key, &validation) {
        Ok(_) => Ok(()),
        Err(e) => Err(match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => "expired token",
            jsonwebtoken::errors::ErrorKind::ImmatureSignature => "token not valid yet",
            jsonwebtoken::errors::ErrorKind::InvalidSignature => "bad signature",
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => "algorithm is not HS256",
            _ => "invalid token",
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    fn sign(secret: &str, alg: jsonwebtoken::Algorithm, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn only_an_hs256_token_of_the_secret_passes() {
        let secret = Secret::new("metrics-secret-of-enough-length-000");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let alg = jsonwebtoken::Algorithm::HS256;
        let good = sign(secret.expose(), alg, serde_json::json!({}));
        assert_eq!(authorize(&secret, &bearer(&format!("Bearer {good}"))), Ok(()));
        assert_eq!(authorize(&secret, &bearer(&format!("bearer  {good}"))), Ok(()));
        assert!(authorize(&secret, &HeaderMap::new()).is_err());
        assert!(authorize(&secret, &bearer(&format!("Basic {good}"))).is_err());
        assert!(authorize(&secret, &bearer(good.as_str())).is_err());
        let other = sign("another-secret-of-enough-length-0000", alg, serde_json::json!({}));
        assert_eq!(
            authorize(&secret, &bearer(&format!("Bearer {other}"))),
            Err("bad signature")
        );
        let expired = sign(secret.expose(), alg, serde_json::json!({ "exp": now - 120 }));
        assert_eq!(
            authorize(&secret, &bearer(&format!("Bearer {expired}"))),
            Err("expired token")
        );
        let hs512 = sign(
            secret.expose(),
            jsonwebtoken::Algorithm::HS512,
            serde_json::json!({}),
        );
        assert!(authorize(&secret, &bearer(&format!("Bearer {hs512}"))).is_err());
        // An unsigned token (`alg: none`) is never accepted.
        let none = format!("eyJhbGciOiJub25lIn0.{}.", "e30");
        assert!(authorize(&secret, &bearer(&format!("Bearer {none}"))).is_err());
    }
}
