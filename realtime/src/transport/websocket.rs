//! The WebSocket endpoint (`/socket/websocket`, `/realtime/v1/websocket`): the handshake checks
//! and the hand-over of the upgraded socket to a [`Session`] task.
//!
//! Handshake failures are plain HTTP responses with a JSON body `{"error": "<message>"}`, sent
//! after the connect error backoff (Supabase's `CONNECT_ERROR_BACKOFF_MS`) to slow down clients
//! that reconnect in a loop.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};
use tracing::Instrument;

use super::session::Session;
use super::ws::Connection;
use crate::limits::{Peer, Subject, TOO_MANY_CONNECTIONS, TOO_MANY_JOINS, client_ip, peer_ip};
use crate::node::Node;
use crate::protocol::phoenix::Vsn;
use crate::telemetry::TARGET;
use crate::telemetry::chain;

/// The API key: header `x-api-key` wins over the `apikey` query parameter.
fn api_key(headers: &HeaderMap, params: &HashMap<String, String>) -> Option<String> {
    let header = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    header
        .or(params.get("apikey").map(String::as_str))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The client's key when the request is a valid WebSocket upgrade (RFC 6455 §4.2.1).
fn upgrade_key(request: &Request) -> Option<HeaderValue> {
    let headers = request.headers();
    let valid = request.method() == Method::GET
        && header_has_token(headers, header::CONNECTION, "upgrade")
        && header_has_token(headers, header::UPGRADE, "websocket")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    valid
        .then(|| headers.get(header::SEC_WEBSOCKET_KEY).cloned())
        .flatten()
}

async fn refuse(node: &Node, status: StatusCode, message: &str) -> Response {
    tokio::time::sleep(node.config.server.limits.connect_error_backoff).await;
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

pub(crate) async fn handler(
    State(node): State<Arc<Node>>,
    peer: Peer,
    Query(params): Query<HashMap<String, String>>,
    mut request: Request,
) -> Response {
    if !node.is_ready() {
        let body = axum::Json(serde_json::json!({ "error": "Realtime is shutting down" }));
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    let Some(client_key) = upgrade_key(&request) else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            axum::Json(serde_json::json!({ "error": "WebSocket upgrade expected" })),
        )
            .into_response();
    };
    let Some(key) = api_key(request.headers(), &params) else {
        node.refusals
            .token_refused(crate::auth::AuthError::Missing.code());
        return refuse(&node, StatusCode::UNAUTHORIZED, "API key is missing").await;
    };
    let Some(vsn) = Vsn::parse(params.get("vsn").map(String::as_str)) else {
        return refuse(&node, StatusCode::BAD_REQUEST, "Unsupported serializer version").await;
    };
    let claims = match node.verifier.verify(&key).await {
        Ok(claims) => claims,
        Err(error) => {
            node.refusals.token_refused(error.code());
            let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
            return refuse(&node, status, &error.handshake_message()).await;
        }
    };
    if let Err(refusal) = node.roles.check(&claims.role, false).await {
        tracing::info!(reason = %refusal, "refused a connection: its token's role is not allowed");
        return refuse(&node, StatusCode::FORBIDDEN, &refusal.to_string()).await;
    }
    let ip = client_ip(
        peer_ip(peer),
        request.headers(),
        &node.config.server.auth.trusted_proxies,
    );
    let subject = Subject::of(&claims, ip);
    let slot = match node.limits.acquire_connection(&subject, ip) {
        Ok(slot) => slot,
        Err(refused) => {
            tracing::debug!(?refused, "refused a connection: too many connections");
            return refuse(&node, StatusCode::TOO_MANY_REQUESTS, TOO_MANY_CONNECTIONS).await;
        }
    };
    if node.limits.joins_exceeded(tokio::time::Instant::now()) {
        return refuse(&node, StatusCode::TOO_MANY_REQUESTS, TOO_MANY_JOINS).await;
    }

    let on_upgrade = hyper::upgrade::on(&mut request);
    let max_message = node.config.server.limits.max_frame_size;
    // The socket's whole life, exported when it closes. Nothing about the peer (no address,
    // no token): the role is one of a few configured names.
    let span = tracing::info_span!(
        target: TARGET,
        "connection",
        "protocol.version" = vsn.as_str(),
        role = %claims.role,
        "close.reason" = tracing::field::Empty,
        "close.code" = tracing::field::Empty,
    );
    // Tracked from the handshake on, so shutdown also waits for sockets still upgrading. The
    // socket's session gets a task of its own: this one, with what the handshake needed, ends
    // as soon as the upgrade is done, and an idle socket holds only the session's future.
    let session = Session::new(node.clone(), vsn, node.share_key(key), ip, slot);
    let tracker = node.tracker.clone();
    let upgrade = tracker.track_future(
        async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => return tracing::debug!(error = %chain(&error), "WebSocket upgrade failed"),
            };
            let span = tracing::Span::current();
            // The server's own connections are plain TCP streams: unwrapped from hyper's
            // upgrade box, the stream is held inline (with the bytes that came after the
            // handshake, if any), one allocation less per socket.
            match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
                Ok(parts) => {
                    let socket = Connection::with_read(parts.io.into_inner(), parts.read_buf, max_message);
                    spawn_session(&node, session, socket, span);
                }
                Err(upgraded) => {
                    let socket = Connection::new(TokioIo::new(upgraded), max_message);
                    spawn_session(&node, session, socket, span);
                }
            }
        }
        .instrument(span),
    );
    tokio::spawn(upgrade);

    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept_key(client_key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// Runs a socket's session in a task of its own, inside the `connection` span when a
/// subscriber records it (traces are exported). Otherwise the span is left out: even disabled,
/// it would take 40 bytes in every idle socket's task.
fn spawn_session<S>(node: &Node, session: Session, socket: Connection<S>, span: tracing::Span)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if span.is_disabled() {
        tokio::spawn(node.tracker.track_future(session.run(socket)));
    } else {
        tokio::spawn(node.tracker.track_future(session.run(socket).instrument(span)));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_6455() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn header_key_wins_over_query() {
        let mut headers = HeaderMap::new();
        let mut params = HashMap::new();
        assert_eq!(api_key(&headers, &params), None);
        params.insert("apikey".to_owned(), "query".to_owned());
        assert_eq!(api_key(&headers, &params).as_deref(), Some("query"));
        headers.insert("x-api-key", "header".parse().unwrap());
        assert_eq!(api_key(&headers, &params).as_deref(), Some("header"));
        params.insert("apikey".to_owned(), "  ".to_owned());
        headers.clear();
        assert_eq!(api_key(&headers, &params), None);
    }
}
