//! The HTTP and WebSocket server: binds the routes, runs until shutdown, then drains.
//!
//! Shutdown (the `CancellationToken`): `/readyz` turns 503 at once, the listener stops
//! accepting, every socket closes with 1001 (each session watches the token itself, since
//! axum's graceful shutdown does not cover upgraded connections), and `run` returns when all
//! socket tasks ended or the grace period (`shutdown_grace`) ran out, whichever comes first.

use std::future::IntoFuture;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bus::LocalBus;
use crate::channels::registry;
use crate::config::Config;
use crate::http;
use crate::node::Node;
use crate::policy::{PolicyError, PolicySet};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid policy files: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Policies(Vec<PolicyError>),
}

/// The access rules of private channels: the policy folder when there is one, else none
/// (private channels are then refused to everyone but `service_role`).
fn channel_policy(config: &Config) -> Result<PolicySet, ServerError> {
    match config.server.resolved_policies_dir() {
        Some(dir) => PolicySet::load(&dir).map_err(ServerError::Policies),
        None => Ok(PolicySet::empty()),
    }
}

/// Serves `listener` until `shutdown` is cancelled, then closes every socket and returns.
pub async fn run(
    config: Arc<Config>,
    listener: TcpListener,
    bus: LocalBus,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let policy = channel_policy(&config)?;
    let grace = config.server.shutdown_grace;
    let node = Arc::new(Node::new(config, policy, bus.clone(), shutdown.clone()));

    // Subscribe before serving so no event published by a client can precede the dispatcher.
    let dispatcher = tokio::spawn(registry::dispatch(
        node.registry.clone(),
        bus.subscribe_channel_events(),
        shutdown.clone(),
    ));

    // Likewise for committed changes: the dispatcher reads the bus from before the first join.
    // It runs on a thread of its own (driving the runtime's I/O and timers through the handle):
    // every change passes through this one sequential stage, and as one task among thousands
    // of busy session tasks it fell behind the bus under load, which drops changes for every
    // subscriber. With its own share of the CPU it keeps up, and a backlog forms in the
    // sockets' queues instead, where writes batch and slow consumers are closed.
    if let Some(changes) = &node.changes {
        let dispatch =
            crate::changes::dispatch::run(changes.clone(), bus.subscribe_transactions(), shutdown.clone());
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("changes-dispatch".to_owned())
            .spawn(move || runtime.block_on(dispatch))?;
    }

    let listener = listener.tap_io(|tcp| {
        // Frames are small and latency matters more than packet count.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    let serve = axum::serve(listener, http::router(node.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    let mut serve = tokio::spawn(serve);

    let served = tokio::select! {
        _ = shutdown.cancelled() => None,
        result = &mut serve => Some(result),
    };
    if let Some(result) = served {
        // The server stopped on its own: an I/O failure.
        dispatcher.abort();
        return match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.into()),
            Err(join) => Err(std::io::Error::other(join).into()),
        };
    }

    node.tracker.close();
    let drained = tokio::time::timeout(grace, async {
        node.tracker.wait().await;
        let _ = serve.await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            sockets = node.tracker.len(),
            "shutdown grace period ran out with sockets still open"
        );
    }
    dispatcher.abort();
    Ok(())
}
