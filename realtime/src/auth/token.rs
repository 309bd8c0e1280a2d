//! Pure token handling: cleaning the transported text, splitting a compact JWS into its parts,
//! and checking the claims after the signature is verified. No keys, no I/O, no clock: the
//! caller passes `now`, so every rule is testable. Never panics on any input.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::{AuthError, Claims};
use crate::config::percent_decode;

/// The longest token we look at. Real JWTs are a few KB; this bounds the work an attacker can
/// make us do (URL-decoding, base64, JSON) before any signature check.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A compact JWS split into parts; header and payload are decoded but nothing is verified yet.
#[derive(Debug)]
pub struct Parsed<'a> {
    /// `alg` exactly as the header states it.
    pub alg: String,
    pub kid: Option<String>,
    /// `base64(header) "." base64(payload)`: the bytes the signature covers.
    pub signing_input: &'a str,
    /// The third part, still base64url.
    pub signature: &'a str,
    pub payload: Map<String, Value>,
}

/// The token as the client sent it, URL-decoded (realtime-js puts it in a query string) and with
/// every whitespace character removed (copied tokens often carry line breaks).
pub fn clean(raw: &str) -> String {
    // `+` stays as is (a JWT never contains one); a broken escape leaves the raw text.
    let decoded = percent_decode(raw).unwrap_or_else(|| raw.to_owned());
    decoded.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Splits and decodes a cleaned token. Anything that is not three base64url parts whose first
/// two are JSON objects is `Malformed`.
pub fn parse(token: &str) -> Result<Parsed<'_>, AuthError> {
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let header = decode_object(header)?;
    let payload = decode_object(payload)?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.clone(),
        _ => return Err(AuthError::Malformed),
    };
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(AuthError::Malformed),
    };
    let signing_input = &token[..token.len() - signature.len() - 1];
    Ok(Parsed {
        alg,
        kid,
        signing_input,
        signature,
        payload,
    })
}

fn decode_object(part: &str) -> Result<Map<String, Value>, AuthError> {
    // Some encoders pad; the JWS spec says they must not, but refusing them helps nobody.
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(AuthError::Malformed),
    }
}

/// Checks the claims of a token whose signature is valid, at time `now` (Unix seconds), and
/// extracts what the server uses. Order follows Supabase: time claims first, then the
/// configured validators, then the required `role` and `exp`.
pub fn check_claims(
    payload: Map<String, Value>,
    now: i64,
    validators: &Map<String, Value>,
) -> Result<Claims, AuthError> {
    let exp = match payload.get("exp") {
        None | Some(Value::Null) => None,
        Some(v) => Some(numeric(v).ok_or(AuthError::InvalidExpiry)?),
    };
    // Zero leeway: a token is valid while `now < exp` (Joken's rule), so `exp = now` has expired
    // 0 seconds ago.
    if let Some(exp) = exp
        && exp <= now
    {
        return Err(AuthError::Expired(now - exp));
    }
    if let Some(nbf) = payload.get("nbf").filter(|v| !v.is_null()) {
        let nbf = numeric(nbf).ok_or(AuthError::Malformed)?;
        if nbf > now {
            return Err(AuthError::NotYetValid);
        }
    }
    if let Some(iat) = payload.get("iat").filter(|v| !v.is_null())
        && numeric(iat).is_none()
    {
        return Err(AuthError::Malformed);
    }
    for (claim, expected) in validators {
        if payload.get(claim) != Some(expected) {
            return Err(AuthError::ClaimMismatch(claim.clone()));
        }
    }
    let role = match payload.get("role") {
        Some(Value::String(r)) => r.clone(),
        _ => return Err(AuthError::MissingClaims),
    };
    let exp = exp.ok_or(AuthError::MissingClaims)?;
    let sub = match payload.get("sub") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    Ok(Claims {
        role,
        exp,
        sub,
        all: payload,
    })
}

/// A JSON number as whole seconds; decimals are rounded as Supabase does. Values outside the
/// `i64` range are refused rather than saturated.
fn numeric(v: &Value) -> Option<i64> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?.round();
    // i64::MAX as f64 rounds up to 2^63, which is itself out of range, hence the strict `<`.
    if f.is_finite() && f >= i64::MIN as f64 && f < i64::MAX as f64 {
        Some(f as i64)
    } else {
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn cleaning_url_decodes_and_drops_whitespace() {
        assert_eq!(clean(" a.b%2Ec\n"), "a.b.c");
        assert_eq!(clean("a.b.c%zz"), "a.b.c%zz");
        assert_eq!(clean("a .\tb\r\n.c"), "a.b.c");
    }

    #[test]
    fn wrong_shapes_are_malformed() {
        assert_eq!(parse("").unwrap_err(), AuthError::Missing);
        for t in [
            "a",
            "a.b",
            "a.b.c.d",
            "!!.e30.x",
            "e30.!!.x",
            "W10.e30.x",
            "e30.e30.x",
        ] {
            assert_eq!(parse(t).unwrap_err(), AuthError::Malformed, "{t}");
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(parse(&long).unwrap_err(), AuthError::Malformed);
    }

    #[test]
    fn parse_keeps_the_signing_input() {
        // {"alg":"HS256","kid":"k"} . {"a":1} . sig
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","kid":"k"}"#);
        let p = URL_SAFE_NO_PAD.encode(br#"{"a":1}"#);
        let token = format!("{h}.{p}.c2ln");
        let parsed = parse(&token).unwrap();
        assert_eq!(parsed.alg, "HS256");
        assert_eq!(parsed.kid.as_deref(), Some("k"));
        assert_eq!(parsed.signing_input, format!("{h}.{p}"));
        assert_eq!(parsed.signature, "c2ln");
    }

    #[test]
    fn expiry_has_zero_leeway() {
        let none = Map::new();
        let c = check_claims(obj(json!({"role":"anon","exp":101})), 100, &none).unwrap();
        assert_eq!((c.role.as_str(), c.exp), ("anon", 101));
        assert_eq!(
            check_claims(obj(json!({"role":"anon","exp":100})), 100, &none),
            Err(AuthError::Expired(0))
        );
        assert_eq!(
            check_claims(obj(json!({"role":"anon","exp":99})), 100, &none),
            Err(AuthError::Expired(1))
        );
        assert_eq!(
            check_claims(obj(json!({"role":"anon","exp":100.6})), 100, &none)
                .unwrap()
                .exp,
            101
        );
        assert_eq!(
            check_claims(obj(json!({"role":"anon","exp":"200"})), 100, &none),
            Err(AuthError::InvalidExpiry)
        );
        assert_eq!(
            check_claims(obj(json!({"role":"anon","exp":1e300})), 100, &none),
            Err(AuthError::InvalidExpiry)
        );
    }

    #[test]
    fn required_and_optional_claims() {
        let none = Map::new();
        assert_eq!(
            check_claims(obj(json!({"exp":200})), 100, &none),
            Err(AuthError::MissingClaims)
        );
        assert_eq!(
            check_claims(obj(json!({"role":"anon"})), 100, &none),
            Err(AuthError::MissingClaims)
        );
        assert_eq!(
            check_claims(obj(json!({"role":1,"exp":200})), 100, &none),
            Err(AuthError::MissingClaims)
        );
        assert_eq!(
            check_claims(obj(json!({"role":"a","exp":200,"nbf":150})), 100, &none),
            Err(AuthError::NotYetValid)
        );
        assert!(check_claims(obj(json!({"role":"a","exp":200,"nbf":100})), 100, &none).is_ok());
        assert_eq!(
            check_claims(obj(json!({"role":"a","exp":200,"iat":"yesterday"})), 100, &none),
            Err(AuthError::Malformed)
        );
        let c = check_claims(obj(json!({"role":"a","exp":200,"sub":"u1","x":[1]})), 100, &none).unwrap();
        assert_eq!(c.sub.as_deref(), Some("u1"));
        assert_eq!(c.all.get("x"), Some(&json!([1])));
    }

    #[test]
    fn validators_require_equal_claims() {
        let v = obj(json!({"iss": "https://auth.example"}));
        let ok = json!({"role":"a","exp":200,"iss":"https://auth.example"});
        assert!(check_claims(obj(ok), 100, &v).is_ok());
        let wrong = json!({"role":"a","exp":200,"iss":"https://evil.example"});
        assert_eq!(
            check_claims(obj(wrong), 100, &v),
            Err(AuthError::ClaimMismatch("iss".into()))
        );
        let absent = json!({"role":"a","exp":200});
        assert_eq!(
            check_claims(obj(absent), 100, &v),
            Err(AuthError::ClaimMismatch("iss".into()))
        );
    }
}
