//! JWT attacks against the running binary, configured with a JWKS (RS256 and ES256 keys), the
//! shared secret and `iss`/`aud` validators: each forged, expired or malformed token is refused
//! with its documented message at the handshake (401), at `phx_join` (Supabase's reason) and on
//! an `access_token` refresh (`system` error), no token text ever reaches the server's log, an
//! attacker's `jku` is never fetched, unknown `kid`s refetch a URL JWKS at most once per
//! interval, and the server keeps serving valid clients.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use realtime_tests::{auth::*, phoenix::*, server::*};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ISS: &str = "https://auth.example.test";
const AUD: &str = "realtime";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../realtime/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

struct Keys {
    rsa: EncodingKey,
    ec: EncodingKey,
}

fn keys() -> Keys {
    Keys {
        rsa: EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).unwrap(),
        ec: EncodingKey::from_ec_pem(&fixture("ec_p256_private.pem")).unwrap(),
    }
}

/// The public halves of the fixture keys: `rsa1` (RS256) and `ec1` (ES256).
fn jwks() -> String {
    let k = keys();
    let jwk = |key: &EncodingKey, alg, kid: &str| {
        let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        jwk
    };
    let set = JwkSet {
        keys: vec![
            jwk(&k.rsa, Algorithm::RS256, "rsa1"),
            jwk(&k.ec, Algorithm::ES256, "ec1"),
        ],
    };
    serde_json::to_string(&set).unwrap()
}

fn claims() -> Value {
    json!({"role": "authenticated", "sub": "user-1", "exp": unix_now() + 3600, "iss": ISS, "aud": AUD})
}

fn with(changes: Value) -> Value {
    let mut c = claims();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn sign_with(header: Header, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    sign_with(header, key, claims)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        claims,
    )
}

/// Replaces the signature (third part) of `token`.
fn resign(token: &str, signature: &str) -> String {
    let (signed, _) = token.rsplit_once('.').unwrap();
    format!("{signed}.{signature}")
}

/// Percent-encodes everything but unreserved characters, for the `apikey` query parameter.
fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const SIGNER: &str = "Failed to generate JWT signer, check your JWT secret or JWKS configuration";
const SIGNATURE: &str = "Failed to validate JWT signature";
const MALFORMED: &str = "The token provided is not a valid JWT";

fn no_signer_for(kid: &str) -> String {
    format!(
        "Failed to generate JWT signer for key ID (kid) {kid:?}, check your JWT secret or JWKS configuration"
    )
}

/// One forged token and what it must get: the handshake's `error` and the join reason's code.
struct Attack {
    name: &'static str,
    token: String,
    message: String,
    code: &'static str,
}

fn attack(name: &'static str, token: String, message: impl Into<String>, code: &'static str) -> Attack {
    Attack {
        name,
        token,
        message: message.into(),
        code,
    }
}

fn attacks(attacker_url: &str) -> Vec<Attack> {
    let k = keys();
    let rs = |kid: &str, claims: &Value| sign(Algorithm::RS256, &k.rsa, Some(kid), claims);
    let valid_rs = rs("rsa1", &claims());
    let (header, payload, signature) = {
        let p: Vec<&str> = valid_rs.split('.').collect();
        (p[0].to_owned(), p[1].to_owned(), p[2].to_owned())
    };
    let unsigned = |alg: &str| {
        let header = b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        format!("{header}.{}.", b64(claims().to_string().as_bytes()))
    };
    let rsa_pem = EncodingKey::from_secret(&fixture("rsa_public.pem"));
    let long_kid = "k".repeat(10_000);
    let mut jku = Header::new(Algorithm::RS256);
    jku.kid = Some("attacker".into());
    jku.jku = Some(attacker_url.to_owned());
    jku.x5u = Some(attacker_url.to_owned());
    let forged = b64(with(json!({"role": "service_role"})).to_string().as_bytes());
    let mut flipped = signature.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let (signer, sig, bad, malformed) = (
        "JwtSignerError",
        "JwtSignatureError",
        "InvalidJWTToken",
        "MalformedJWT",
    );
    vec![
        attack("alg none", unsigned("none"), SIGNER, signer),
        attack(
            "alg nOnE, signed",
            format!("{}c2ln", unsigned("nOnE")),
            SIGNER,
            signer,
        ),
        attack(
            "HS256 signed with the RSA public key, RSA kid",
            sign(Algorithm::HS256, &rsa_pem, Some("rsa1"), &claims()),
            SIGNATURE,
            sig,
        ),
        attack(
            "HS256 signed with the RSA public key, no kid",
            sign(Algorithm::HS256, &rsa_pem, None, &claims()),
            SIGNATURE,
            sig,
        ),
        attack(
            "unknown kid",
            rs("nope", &claims()),
            no_signer_for("nope"),
            signer,
        ),
        attack(
            "kid with a path",
            rs("../../../../etc/passwd", &claims()),
            no_signer_for("../../../../etc/passwd"),
            signer,
        ),
        attack(
            "kid with SQL",
            rs("' OR 1=1 --", &claims()),
            no_signer_for("' OR 1=1 --"),
            signer,
        ),
        attack(
            "10,000-character kid",
            rs(&long_kid, &claims()),
            no_signer_for(&"k".repeat(64)),
            signer,
        ),
        attack(
            "RS256 naming the EC key",
            rs("ec1", &claims()),
            no_signer_for("ec1"),
            signer,
        ),
        attack(
            "jku and x5u to an attacker",
            sign_with(jku, &k.rsa, &claims()),
            no_signer_for("attacker"),
            signer,
        ),
        attack(
            "ES256 with r = s = 0",
            resign(
                &sign(Algorithm::ES256, &k.ec, Some("ec1"), &claims()),
                &b64(&[0; 64]),
            ),
            SIGNATURE,
            sig,
        ),
        attack(
            "tampered payload",
            format!("{header}.{forged}.{signature}"),
            SIGNATURE,
            sig,
        ),
        attack(
            "tampered signature",
            resign(&valid_rs, std::str::from_utf8(&flipped).unwrap()),
            SIGNATURE,
            sig,
        ),
        attack(
            "zero-length signature",
            format!("{header}.{payload}."),
            SIGNATURE,
            sig,
        ),
        attack(
            "wrong secret",
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"guessed"),
                None,
                &claims(),
            ),
            SIGNATURE,
            sig,
        ),
        attack("garbage base64", "!!!.@@@.###".into(), MALFORMED, malformed),
        attack("two parts", format!("{header}.{payload}"), MALFORMED, malformed),
        attack(
            "payload not JSON",
            format!("{header}.{}.{signature}", b64(b"role=admin")),
            MALFORMED,
            malformed,
        ),
        attack(
            "expired",
            rs("rsa1", &with(json!({"exp": unix_now() - 120}))),
            "Token has expired",
            bad,
        ),
        attack(
            "nbf in the future",
            rs("rsa1", &with(json!({"nbf": unix_now() + 3600}))),
            "Token is not valid yet",
            bad,
        ),
        attack(
            "wrong aud",
            rs("rsa1", &with(json!({"aud": "other-service"}))),
            "Token claim `aud` does not match the expected value",
            bad,
        ),
        attack(
            "wrong iss",
            hs(&with(json!({"iss": "https://evil.example.test"}))),
            "Token claim `iss` does not match the expected value",
            bad,
        ),
        attack(
            "no iss",
            rs("rsa1", &with(json!({"iss": null}))),
            "Token claim `iss` does not match the expected value",
            bad,
        ),
        attack(
            "no exp",
            rs("rsa1", &with(json!({"exp": null}))),
            "Fields `role` and `exp` are required in JWT",
            bad,
        ),
    ]
}

/// A listener that counts connections: where an attacker's `jku` points.
async fn counting_listener() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((_stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    (url, hits)
}

/// Asserts that no part of `token` long enough to identify it appears in `log`.
fn assert_not_logged(log: &str, name: &str, token: &str) {
    assert!(!log.contains(token), "{name}: the token is in the log");
    for part in token.split('.').skip(1).filter(|p| p.len() >= 16) {
        assert!(!log.contains(part), "{name}: part of the token is in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_invalid_tokens_are_refused_everywhere_and_never_logged() {
    let (attacker_url, attacker_hits) = counting_listener().await;
    let validators = json!({"iss": ISS, "aud": AUD}).to_string();
    let server = ServerProcess::start(&[
        ("JWT_JWKS", jwks().as_str()),
        ("JWT_CLAIM_VALIDATORS", validators.as_str()),
        // Everything any crate logs, so a token in any log line is caught.
        ("RUST_LOG", "trace"),
    ])
    .await;
    let k = keys();
    let good_rs = sign(Algorithm::RS256, &k.rsa, Some("rsa1"), &claims());
    let good_es = sign(Algorithm::ES256, &k.ec, Some("ec1"), &claims());
    let good_hs = hs(&claims());
    // Valid tokens of each kind connect: the attacks below fail for their flaw alone.
    for good in [&good_rs, &good_es, &good_hs] {
        let mut c = Client::connect(&server.url(good, "2.0.0"), "2.0.0").await;
        c.heartbeat().await;
    }
    let mut member = Client::connect(&server.url(&good_rs, "2.0.0"), "2.0.0").await;
    let attacks = attacks(&attacker_url);
    for (n, a) in attacks.iter().enumerate() {
        // Handshake: 401 with the message (`Token has expired` without the seconds).
        let url = server.url(&query_value(&a.token), "2.0.0");
        let Err(tokio_tungstenite::tungstenite::Error::Http(response)) =
            tokio_tungstenite::connect_async(&url).await
        else {
            panic!("{}: the handshake was accepted", a.name);
        };
        assert_eq!(response.status().as_u16(), 401, "{}", a.name);
        let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
        assert_eq!(body, json!({"error": a.message}), "{}", a.name);

        // Join with the token: Supabase's `<Code>: <message>` reason.
        let topic = format!("realtime:attack-{n}");
        member
            .join_raw(&topic, json!({"config": {}, "access_token": a.token}))
            .await;
        let reply = member.recv_event("phx_reply").await;
        assert_eq!(reply.payload()["status"], "error", "{}", a.name);
        let reason = reply.payload()["response"]["reason"].as_str().unwrap().to_owned();
        assert!(
            reason.starts_with(&format!("{}: {}", a.code, a.message)),
            "{}: {reason}",
            a.name
        );

        // Refresh a joined channel with it: the channel is shut down with the message.
        let join_ref = member.join(&topic, json!({})).await;
        member
            .send(
                Some(&join_ref),
                &topic,
                "access_token",
                json!({"access_token": a.token}),
            )
            .await;
        let system = member.recv_event("system").await;
        let message = system.payload()["message"].as_str().unwrap().to_owned();
        assert!(message.starts_with(&a.message), "{}: {message}", a.name);
        member.recv_event("phx_close").await;
    }
    println!(
        "jwt attacks: {} kinds refused at handshake, join and refresh",
        attacks.len()
    );

    // The service still serves, and nothing was fetched from the attacker's URL.
    let join_ref = member
        .join("realtime:room", json!({"broadcast": {"ack": true}}))
        .await;
    member
        .send(
            Some(&join_ref),
            "realtime:room",
            "broadcast",
            json!({"type": "broadcast", "event": "e", "payload": {}}),
        )
        .await;
    assert_eq!(member.recv_event("phx_reply").await.payload()["status"], "ok");
    assert_eq!(
        attacker_hits.load(Ordering::SeqCst),
        0,
        "the server fetched the jku"
    );

    let log = server.log();
    assert!(log.contains("listening"), "the log was captured:\n{log}");
    println!("jwt attacks: {} lines of server log checked", log.lines().count());
    for a in &attacks {
        assert_not_logged(&log, a.name, &a.token);
    }
    for good in [&good_rs, &good_es, &good_hs] {
        assert_not_logged(&log, "a valid token", good);
    }
}

/// A JWKS endpoint on loopback that counts its requests.
async fn jwks_endpoint(body: String) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_refetch_a_url_jwks_at_most_once_per_interval() {
    let (url, hits) = jwks_endpoint(jwks()).await;
    let server =
        ServerProcess::start(&[("JWT_JWKS", url.as_str()), ("JWT_JWKS_MIN_REFETCH_MS", "60000")]).await;
    let k = keys();
    let claims = json!({"role": "authenticated", "exp": unix_now() + 3600});
    let good = sign(Algorithm::RS256, &k.rsa, Some("rsa1"), &claims);
    let mut c = Client::connect(&server.url(&good, "2.0.0"), "2.0.0").await;
    c.heartbeat().await;
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the first token fetched the JWKS");

    let mut tokens = Vec::new();
    for n in 0..200 {
        let kid = format!("random-{n}-{}", rand::random::<u64>());
        let token = sign(Algorithm::RS256, &k.rsa, Some(&kid), &claims);
        let Err(tokio_tungstenite::tungstenite::Error::Http(response)) =
            tokio_tungstenite::connect_async(server.url(&token, "2.0.0")).await
        else {
            panic!("a token with an unknown kid was accepted");
        };
        let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
        assert_eq!(body, json!({"error": no_signer_for(&kid)}));
        tokens.push(token);
    }
    let fetched = hits.load(Ordering::SeqCst);
    println!(
        "jwks: 200 unknown kids made {} fetch(es) after the first",
        fetched - 1
    );
    assert!(fetched <= 2, "the JWKS was fetched {fetched} times");
    // Known keys keep working.
    let mut c = Client::connect(&server.url(&good, "2.0.0"), "2.0.0").await;
    c.heartbeat().await;
    let log = server.log();
    for token in tokens.iter().chain([&good]) {
        assert_not_logged(&log, "jwks", token);
    }
}
