//! `realtime healthcheck`: asks the service on this machine whether it is ready, for container
//! health checks (Docker's `HEALTHCHECK`, compose's `healthcheck.test`) in images that have no
//! `curl`.
//!
//! It reads the same configuration as `serve` (so the same `PORT`) and sends `GET /readyz` to
//! loopback over plain HTTP/1.1: a few lines of our own rather than an HTTP client library,
//! since the one request is fixed and the answer only needs its status line.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The readiness path `serve` answers (see `http::health`).
pub const READY_PATH: &str = "/readyz";

/// The most of an answer that is read: a readiness body is a few hundred bytes.
const MAX_RESPONSE: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("nothing answers on port {port}")]
    Unreachable { port: u16, source: std::io::Error },
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("not ready (HTTP {status}): {body}")]
    NotReady { status: u16, body: String },
    #[error("the answer is not HTTP: {0:?}")]
    NotHttp(String),
}

/// `GET <path>` on `127.0.0.1:<port>`. Returns the body when the status is 200.
pub async fn probe(port: u16, path: &str, timeout: Duration) -> Result<String, ProbeError> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|source| ProbeError::Unreachable { port, source })?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nUser-Agent: realtime-healthcheck\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|source| ProbeError::Unreachable { port, source })?;
        let mut response = Vec::new();
        stream
            .take(MAX_RESPONSE)
            .read_to_end(&mut response)
            .await
            .map_err(|source| ProbeError::Unreachable { port, source })?;
        Ok(response)
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ProbeError::TimedOut(timeout))??;
    judge(&response)
}

/// The status and body of a raw HTTP/1.1 answer: the body when the status is 200.
fn judge(response: &[u8]) -> Result<String, ProbeError> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| ProbeError::NotHttp(status_line.chars().take(80).collect()))?;
    // The body is JSON on one line; a chunked one would carry its chunk sizes, so take the
    // line that holds the object.
    let body = body
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or(body)
        .trim()
        .to_owned();
    if status == 200 {
        Ok(body)
    } else {
        Err(ProbeError::NotReady { status, body })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn judges_the_status_line() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"status\":\"ready\"}";
        assert_eq!(judge(ok).unwrap(), "{\"status\":\"ready\"}");
        let unavailable = b"HTTP/1.1 503 Service Unavailable\r\n\r\n{\"failing\":[\"database\"]}";
        match judge(unavailable) {
            Err(ProbeError::NotReady { status: 503, body }) => assert!(body.contains("database")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(judge(b"SSH-2.0-OpenSSH"), Err(ProbeError::NotHttp(_))));
        assert!(matches!(judge(b""), Err(ProbeError::NotHttp(_))));
        assert!(matches!(judge(b"HTTP/1.1 2"), Err(ProbeError::NotHttp(_))));
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable() {
        // Bind then drop: the port is free and nobody listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let error = probe(port, READY_PATH, Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(error, ProbeError::Unreachable { .. }), "{error}");
    }
}
