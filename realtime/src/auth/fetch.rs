//! A minimal HTTPS GET for the JWKS URL: one HTTP/1.1 request on a fresh connection, no
//! redirects, a bounded body and an overall timeout. TLS uses rustls (ring) with the web PKI
//! roots. Plain `http` is accepted only for loopback hosts (a sidecar on the same machine):
//! anywhere else a man in the middle could hand us his own keys.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::jwks::JwksError;
use crate::config::server::is_loopback_host;

/// Why a JWKS fetch failed: the step, with the library's error as the `source`.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no answer within {} s", TIMEOUT.as_secs())]
    TimedOut,
    #[error("cannot connect to {host}:{port}")]
    Connect {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("TLS setup failed")]
    TlsSetup(#[source] rustls::Error),
    #[error("TLS handshake failed")]
    TlsHandshake(#[source] std::io::Error),
    #[error("HTTP handshake failed")]
    HttpHandshake(#[source] hyper::Error),
    #[error("cannot build the request")]
    Request(#[source] hyper::http::Error),
    #[error("request failed")]
    Send(#[source] hyper::Error),
    #[error("the server answered {0}")]
    Status(hyper::StatusCode),
    #[error("cannot read the body (limit {limit} bytes)")]
    Body {
        limit: usize,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The largest JWKS body we read. Real sets are a few KB.
pub(super) const MAX_BODY: usize = 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Refuses URLs we would not fetch: not absolute, not https (or http to a loopback host).
pub(super) fn check_url(url: &str) -> Result<(), JwksError> {
    target(url).map(|_| ())
}

struct Target {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

fn target(url: &str) -> Result<Target, JwksError> {
    let uri: Uri = url.parse().map_err(|_| JwksError::InsecureUrl(url.to_owned()))?;
    let host = uri.host().ok_or_else(|| JwksError::InsecureUrl(url.to_owned()))?;
    // `Uri::host` keeps the brackets of an IPv6 literal.
    let bare = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") if is_loopback_host(&bare) => false,
        _ => return Err(JwksError::InsecureUrl(url.to_owned())),
    };
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    Ok(Target {
        tls,
        host: bare,
        port,
        path,
    })
}

/// GETs `url` and returns the body of a 200 response, at most `limit` bytes.
pub(super) async fn get(url: &str, limit: usize) -> Result<Vec<u8>, JwksError> {
    let target = target(url)?;
    match tokio::time::timeout(TIMEOUT, get_inner(&target, limit)).await {
        Ok(result) => result.map_err(JwksError::Fetch),
        Err(_) => Err(JwksError::Fetch(FetchError::TimedOut)),
    }
}

async fn get_inner(target: &Target, limit: usize) -> Result<Vec<u8>, FetchError> {
    let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| FetchError::Connect {
            host: target.host.clone(),
            port: target.port,
            source,
        })?;
    if target.tls {
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|_| FetchError::ServerName(target.host.clone()))?;
        let connector = tokio_rustls::TlsConnector::from(tls_config()?);
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(FetchError::TlsHandshake)?;
        request(tls, target, limit).await
    } else {
        request(tcp, target, limit).await
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, FetchError> {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(FetchError::TlsSetup)?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

async fn request<S>(stream: S, target: &Target, limit: usize) -> Result<Vec<u8>, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(FetchError::HttpHandshake)?;
    // The connection task ends when the response is read or the request is dropped.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let host = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    let request = hyper::Request::get(target.path.as_str())
        .header(hyper::header::HOST, format!("{host}:{}", target.port))
        .header(hyper::header::ACCEPT, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("realtime/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(FetchError::Request)?;
    let response = sender.send_request(request).await.map_err(FetchError::Send)?;
    if response.status() != hyper::StatusCode::OK {
        return Err(FetchError::Status(response.status()));
    }
    let body = Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|source| FetchError::Body { limit, source })?;
    Ok(body.to_bytes().to_vec())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http() {
        assert!(check_url("https://auth.example.com/.well-known/jwks.json").is_ok());
        assert!(check_url("http://127.0.0.1:9999/jwks").is_ok());
        assert!(check_url("http://[::1]:9999/jwks").is_ok());
        assert!(check_url("http://localhost/jwks").is_ok());
        assert!(check_url("http://auth.example.com/jwks").is_err());
        assert!(check_url("ftp://auth.example.com/jwks").is_err());
        assert!(check_url("/etc/jwks.json").is_err());
        let t = target("https://a.example/x?y=1").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path.as_str()),
            (true, "a.example", 443, "/x?y=1")
        );
    }

    #[tokio::test]
    async fn a_failed_fetch_names_each_cause_once() {
        // Bind then drop: the port is free and nobody listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let error = get(&format!("http://127.0.0.1:{port}/jwks"), MAX_BODY)
            .await
            .unwrap_err();
        let shown = crate::telemetry::chain(&error).to_string();
        let expected = format!("fetching the JWKS failed: cannot connect to 127.0.0.1:{port}: ");
        assert!(shown.starts_with(&expected), "{shown}");
        assert_eq!(shown.matches(&expected).count(), 1, "{shown}");
        assert_eq!(shown.matches("refused").count(), 1, "{shown}");
    }
}
