//! `config.broadcast.replication_ready`: the channel is told once the replication stream that
//! carries database broadcasts is up (`system` "Replication connection established"), or, after
//! the timeout, that it was not (`system` error, then `phx_close`), as Supabase does.

use std::sync::Arc;
use std::time::Duration;

use crate::bus::LocalBus;
use crate::protocol::outbound::Outbound;
use crate::protocol::phoenix::{self, Vsn};
use crate::protocol::ws_frame;

/// How often readiness is looked at (Supabase polls every 500 ms).
const POLL: Duration = Duration::from_millis(500);
/// Supabase's `replication_ready_timeout`.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The channel that asked, and where to tell it.
#[derive(Debug)]
pub struct Asker {
    pub outbound: Arc<Outbound>,
    pub vsn: Vsn,
    /// `realtime:<sub-topic>`.
    pub topic: String,
    pub sub_topic: String,
    pub join_ref: Option<String>,
}

/// Tells `asker` when the stream is up: at once when it is, else from a task that waits for it.
pub fn announce(bus: &LocalBus, asker: Asker, timeout: Duration) {
    if bus.replication_metrics().is_streaming() {
        return established(&asker);
    }
    let metrics = bus.replication_metrics().clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            tokio::time::sleep(POLL).await;
            if metrics.is_streaming() {
                return established(&asker);
            }
            if tokio::time::Instant::now() >= deadline {
                return timed_out(&asker);
            }
        }
    });
}

fn system(asker: &Asker, message: &str, status: &str) {
    let payload = serde_json::json!({
        "channel": asker.sub_topic, "extension": "system", "message": message, "status": status,
    })
    .to_string();
    let text = phoenix::encode_text(
        asker.vsn,
        asker.join_ref.as_deref(),
        None,
        &asker.topic,
        "system",
        &payload,
    );
    let _ = asker.outbound.push(ws_frame::text(&text));
}

fn established(asker: &Asker) {
    system(asker, "Replication connection established", "ok");
}

fn timed_out(asker: &Asker) {
    system(
        asker,
        "Replication connection was not established in time",
        "error",
    );
    let close = phoenix::encode_text(
        asker.vsn,
        asker.join_ref.as_deref(),
        asker.join_ref.as_deref(),
        &asker.topic,
        "phx_close",
        "{}",
    );
    let _ = asker.outbound.push(ws_frame::text(&close));
}
