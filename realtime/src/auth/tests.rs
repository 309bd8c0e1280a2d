//! Verifier behaviour: algorithms, key binding, claims, and JWKS fetching from a loopback server.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use super::*;
use crate::config::Secret;
use crate::config::server::JwksSource;

const SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters-long";

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("signing a test token")
}

fn hs_verifier() -> Verifier {
    Verifier::new(AuthConfig {
        jwt_secret: Some(Secret::new(SECRET)),
        ..AuthConfig::default()
    })
}

fn fresh_claims() -> Value {
    json!({"role": "authenticated", "exp": now() + 3600, "sub": "user-1", "email": "a@example.com"})
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

struct Keys {
    rsa: EncodingKey,
    ec: EncodingKey,
    ed: EncodingKey,
}

fn keys() -> Keys {
    Keys {
        rsa: EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).expect("rsa fixture"),
        ec: EncodingKey::from_ec_pem(&fixture("ec_p256_private.pem")).expect("ec fixture"),
        ed: EncodingKey::from_ed_pem(&fixture("ed25519_private.pem")).expect("ed fixture"),
    }
}

fn public_jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(key, alg).expect("public JWK of a fixture key");
    jwk.common.key_id = Some(kid.to_owned());
    jwk
}

fn jwks_json(keys: Vec<Jwk>) -> String {
    serde_json::to_string(&JwkSet { keys }).expect("JWKS serializes")
}

fn asymmetric_jwks() -> String {
    let k = keys();
    jwks_json(vec![
        public_jwk(&k.rsa, Algorithm::RS256, "rsa1"),
        public_jwk(&k.ec, Algorithm::ES256, "ec1"),
        public_jwk(&k.ed, Algorithm::EdDSA, "ed1"),
    ])
}

fn jwks_verifier(jwks: String, secret: Option<&str>) -> Verifier {
    Verifier::try_new(AuthConfig {
        jwt_secret: secret.map(Secret::new),
        jwks: Some(JwksSource::Inline(jwks)),
        ..AuthConfig::default()
    })
    .expect("valid JWKS")
}

#[tokio::test]
async fn hs256_384_512_verify_with_the_secret() {
    let v = hs_verifier();
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let claims = v
            .verify(&sign(alg, &key, None, &fresh_claims()))
            .await
            .expect("valid token");
        assert_eq!(claims.role, "authenticated");
        assert_eq!(claims.sub.as_deref(), Some("user-1"));
        assert_eq!(claims.all.get("email"), Some(&json!("a@example.com")));
    }
}

#[tokio::test]
async fn transported_tokens_are_url_decoded_and_trimmed() {
    let v = hs_verifier();
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        &fresh_claims(),
    );
    let (head, rest) = token.split_at(10);
    let mangled = format!("  {head}\r\n{} ", rest.replacen('.', "%2E", 1));
    assert!(v.verify(&mangled).await.is_ok());
}

#[tokio::test]
async fn wrong_secret_is_a_signature_error() {
    let v = hs_verifier();
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another secret"),
        None,
        &fresh_claims(),
    );
    let err = v.verify(&token).await.unwrap_err();
    assert_eq!(err, AuthError::BadSignature);
    assert_eq!(
        err.join_reason(),
        "JwtSignatureError: Failed to validate JWT signature"
    );
}

#[tokio::test]
async fn expired_token_gets_supabase_message() {
    let v = hs_verifier();
    let now = now();
    let claims = json!({"role": "anon", "exp": now - 1});
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        &claims,
    );
    let err = v.verify_at(&token, now).await.unwrap_err();
    assert_eq!(err, AuthError::Expired(1));
    assert_eq!(
        err.join_reason(),
        "InvalidJWTToken: Token has expired 1 seconds ago"
    );
    assert_eq!(err.handshake_message(), "Token has expired");
    assert_eq!(err.http_status(), 401);
}

#[tokio::test]
async fn role_and_exp_are_required() {
    let v = hs_verifier();
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    for claims in [json!({"exp": now() + 60}), json!({"role": "anon"})] {
        let err = v
            .verify(&sign(Algorithm::HS256, &key, None, &claims))
            .await
            .unwrap_err();
        assert_eq!(err, AuthError::MissingClaims);
        assert_eq!(err.to_string(), "Fields `role` and `exp` are required in JWT");
    }
}

#[tokio::test]
async fn alg_none_has_no_signer() {
    let v = hs_verifier();
    let payload = b64(fresh_claims().to_string().as_bytes());
    for alg in ["none", "None", "NONE"] {
        let header = b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        for sig in ["", "AAAA"] {
            let err = v.verify(&format!("{header}.{payload}.{sig}")).await.unwrap_err();
            assert_eq!(err, AuthError::NoSigner, "alg {alg} sig {sig:?}");
        }
    }
}

#[tokio::test]
async fn tampered_payload_and_empty_signature_are_refused() {
    let v = hs_verifier();
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        &fresh_claims(),
    );
    let parts: Vec<&str> = token.split('.').collect();
    let forged = json!({"role": "service_role", "exp": now() + 3600});
    let tampered = format!("{}.{}.{}", parts[0], b64(forged.to_string().as_bytes()), parts[2]);
    assert_eq!(v.verify(&tampered).await.unwrap_err(), AuthError::BadSignature);
    let unsigned = format!("{}.{}.", parts[0], parts[1]);
    assert_eq!(v.verify(&unsigned).await.unwrap_err(), AuthError::BadSignature);
    assert_eq!(v.verify("not a token").await.unwrap_err(), AuthError::Malformed);
    assert_eq!(v.verify("  ").await.unwrap_err(), AuthError::Missing);
}

#[tokio::test]
async fn no_secret_and_no_jwks_means_no_signer() {
    let v = Verifier::new(AuthConfig::default());
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        &fresh_claims(),
    );
    let err = v.verify(&token).await.unwrap_err();
    assert_eq!(
        err.join_reason(),
        "JwtSignerError: Failed to generate JWT signer, check your JWT secret or JWKS configuration"
    );
}

#[tokio::test]
async fn claim_validators_refuse_other_issuers() {
    let mut validators = serde_json::Map::new();
    validators.insert("iss".into(), json!("https://auth.example.com"));
    let v = Verifier::new(AuthConfig {
        jwt_secret: Some(Secret::new(SECRET)),
        claim_validators: validators,
        ..AuthConfig::default()
    });
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let mut claims = fresh_claims();
    claims["iss"] = json!("https://auth.example.com");
    assert!(
        v.verify(&sign(Algorithm::HS256, &key, None, &claims))
            .await
            .is_ok()
    );
    claims["iss"] = json!("https://evil.example.com");
    let err = v
        .verify(&sign(Algorithm::HS256, &key, None, &claims))
        .await
        .unwrap_err();
    assert_eq!(
        err.join_reason(),
        "InvalidJWTToken: Token claim `iss` does not match the expected value"
    );
}

#[tokio::test]
async fn rs256_es256_eddsa_verify_through_the_jwks() {
    let k = keys();
    let v = jwks_verifier(asymmetric_jwks(), None);
    for (alg, key, kid) in [
        (Algorithm::RS256, &k.rsa, "rsa1"),
        (Algorithm::ES256, &k.ec, "ec1"),
        (Algorithm::EdDSA, &k.ed, "ed1"),
    ] {
        let claims = v.verify(&sign(alg, key, Some(kid), &fresh_claims())).await;
        assert_eq!(claims.map(|c| c.role), Ok("authenticated".to_owned()), "{alg:?}");
    }
    // A kid of the wrong key type does not verify: the RSA token naming the EC key.
    let err = v
        .verify(&sign(Algorithm::RS256, &k.rsa, Some("ec1"), &fresh_claims()))
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::NoSignerForKid("ec1".into()));
    // Asymmetric tokens need a kid.
    let err = v
        .verify(&sign(Algorithm::RS256, &k.rsa, None, &fresh_claims()))
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::NoSigner);
    let err = v
        .verify(&sign(Algorithm::ES256, &k.ec, Some("nope"), &fresh_claims()))
        .await
        .unwrap_err();
    assert_eq!(
        err.join_reason(),
        "JwtSignerError: Failed to generate JWT signer for key ID (kid) \"nope\", check your JWT secret or JWKS configuration"
    );
}

#[tokio::test]
async fn ecdsa_zero_signature_is_refused() {
    // CVE-2022-21449 ("psychic signatures"): r = s = 0 must never verify.
    let k = keys();
    let v = jwks_verifier(asymmetric_jwks(), None);
    let token = sign(Algorithm::ES256, &k.ec, Some("ec1"), &fresh_claims());
    let (signed, _) = token.rsplit_once('.').unwrap();
    let forged = format!("{signed}.{}", b64(&[0u8; 64]));
    assert_eq!(v.verify(&forged).await.unwrap_err(), AuthError::BadSignature);
}

#[tokio::test]
async fn rsa_public_key_as_hmac_secret_is_refused() {
    let k = keys();
    let pem = fixture("rsa_public.pem");
    let confused = EncodingKey::from_secret(&pem);
    // Only the RSA key configured: an HS256 token has no signer, with or without the RSA kid.
    let v = jwks_verifier(
        jwks_json(vec![public_jwk(&k.rsa, Algorithm::RS256, "rsa1")]),
        None,
    );
    for kid in [Some("rsa1"), None] {
        let token = sign(Algorithm::HS256, &confused, kid, &fresh_claims());
        let err = v.verify(&token).await.unwrap_err();
        assert!(
            matches!(err, AuthError::NoSigner | AuthError::NoSignerForKid(_)),
            "{err:?}"
        );
    }
    // With a secret too, the RSA kid still never selects the RSA key for HMAC.
    let v = jwks_verifier(
        jwks_json(vec![public_jwk(&k.rsa, Algorithm::RS256, "rsa1")]),
        Some(SECRET),
    );
    let token = sign(Algorithm::HS256, &confused, Some("rsa1"), &fresh_claims());
    assert_eq!(v.verify(&token).await.unwrap_err(), AuthError::BadSignature);
}

#[tokio::test]
async fn jwks_oct_key_verifies_hs_tokens_with_its_kid() {
    let oct = json!({"keys": [{"kty": "oct", "kid": "h1", "k": b64(b"jwks-hmac-secret")}]}).to_string();
    let v = jwks_verifier(oct, Some(SECRET));
    let token = sign(
        Algorithm::HS512,
        &EncodingKey::from_secret(b"jwks-hmac-secret"),
        Some("h1"),
        &fresh_claims(),
    );
    assert!(v.verify(&token).await.is_ok());
    // An unknown kid on an HS token falls back to the secret.
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        Some("zz"),
        &fresh_claims(),
    );
    assert!(v.verify(&token).await.is_ok());
}

#[tokio::test]
async fn jwk_alg_pins_the_algorithm() {
    let k = keys();
    let mut jwk = public_jwk(&k.rsa, Algorithm::RS256, "rsa1");
    jwk.common.key_algorithm = Some(jsonwebtoken::jwk::KeyAlgorithm::RS512);
    let v = jwks_verifier(jwks_json(vec![jwk]), None);
    assert!(
        v.verify(&sign(Algorithm::RS512, &k.rsa, Some("rsa1"), &fresh_claims()))
            .await
            .is_ok()
    );
    let err = v
        .verify(&sign(Algorithm::RS256, &k.rsa, Some("rsa1"), &fresh_claims()))
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::NoSignerForKid("rsa1".into()));
}

#[test]
fn bad_inline_jwks_is_refused_by_try_new() {
    for text in ["{", "[]", r#"{"keys": 3}"#] {
        let config = AuthConfig {
            jwks: Some(JwksSource::Inline(text.into())),
            ..AuthConfig::default()
        };
        assert!(Verifier::try_new(config).is_err(), "{text}");
    }
}

/// Serves whatever `body` holds at any path, counting requests. Loopback only.
async fn jwks_server(body: Arc<Mutex<String>>, hits: Arc<AtomicUsize>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            hits.fetch_add(1, Ordering::SeqCst);
            let text = body.lock().map(|b| b.clone()).unwrap_or_default();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/.well-known/jwks.json")
}

#[tokio::test]
async fn url_jwks_is_fetched_and_unknown_kids_refetch_at_most_once_per_interval() {
    let k = keys();
    let body = Arc::new(Mutex::new(jwks_json(vec![public_jwk(
        &k.rsa,
        Algorithm::RS256,
        "old",
    )])));
    let hits = Arc::new(AtomicUsize::new(0));
    let url = jwks_server(body.clone(), hits.clone()).await;
    // Tokio's clock is paused between the fetches, so the interval can be long: only the two
    // fetches themselves (real HTTP on loopback) run on the wall clock.
    let min_refetch = Duration::from_secs(60);
    let v = Verifier::try_new(AuthConfig {
        jwks: Some(JwksSource::Url(url)),
        jwks_cache_ttl: Duration::from_secs(600),
        jwks_min_refetch: min_refetch,
        ..AuthConfig::default()
    })
    .expect("loopback http URL accepted");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "fetched lazily");

    let old = sign(Algorithm::RS256, &k.rsa, Some("old"), &fresh_claims());
    assert!(v.verify(&old).await.is_ok());
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    tokio::time::pause();

    // The keys rotate: "new" appears. Right after the first fetch, a refetch is not allowed yet.
    *body.lock().expect("body") = jwks_json(vec![
        public_jwk(&k.rsa, Algorithm::RS256, "old"),
        public_jwk(&k.ec, Algorithm::ES256, "new"),
    ]);
    let new = sign(Algorithm::ES256, &k.ec, Some("new"), &fresh_claims());
    for _ in 0..20 {
        assert_eq!(
            v.verify(&new).await.unwrap_err(),
            AuthError::NoSignerForKid("new".into())
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "unknown kids within the interval do not refetch"
    );

    // Once the interval has passed, one unknown kid refetches and the rotated key works.
    // Time runs again for the fetch: paused time would jump to its timeout while it waits on
    // the socket.
    tokio::time::advance(min_refetch).await;
    tokio::time::resume();
    assert!(v.verify(&new).await.is_ok());
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    tokio::time::pause();

    // A flood of random kids costs at most one fetch per interval.
    let bogus = sign(Algorithm::ES256, &k.ec, Some("bogus"), &fresh_claims());
    for _ in 0..50 {
        assert!(v.verify(&bogus).await.is_err());
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // Known keys keep working from the cache without fetching.
    assert!(v.verify(&old).await.is_ok());
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[test]
fn non_loopback_http_jwks_url_is_refused() {
    let config = AuthConfig {
        jwks: Some(JwksSource::Url("http://auth.example.com/jwks.json".into())),
        ..AuthConfig::default()
    };
    assert!(matches!(
        Verifier::try_new(config),
        Err(jwks::JwksError::InsecureUrl(_))
    ));
}

#[test]
fn debug_output_hides_the_secret() {
    let v = hs_verifier();
    assert!(!format!("{v:?}").contains(SECRET));
}
