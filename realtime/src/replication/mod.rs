//! Logical replication: a pgoutput stream from Postgres becomes ordered [`crate::change::Transaction`]s.
//!
//! Layers, one file each: `wire` (the Postgres connection) and `tls`, `setup` (checks, publication,
//! slot, epoch), `stream` (the task and its loop), `progress` (what to confirm), `pgoutput` (pure
//! bytes → messages), `relations` (the relation and type cache), `values` (text values → JSON as
//! `to_jsonb`), `decode` (messages → row events), `watchdog` (the slot's lag and WAL retention)
//! with its pure rules in `lag`.

pub mod decode;
pub mod lag;
pub mod leadership;
pub mod pgoutput;
pub mod progress;
pub mod relations;
pub mod setup;
pub mod stream;
pub mod tls;
pub mod values;
pub mod watchdog;
pub mod wire;

pub use stream::{Replication, ReplicationError, State};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::LocalBus;
use crate::config::{DatabaseConfig, ReplicationConfig};

/// Starts the replication task: the one place it is spawned (`realtime serve` and `tail`). A
/// fatal error cancels `shutdown` too, so the whole service stops: it needs a person.
pub fn spawn(
    database: DatabaseConfig,
    config: ReplicationConfig,
    bus: LocalBus,
    leadership: Option<leadership::Leadership>,
    shutdown: CancellationToken,
) -> JoinHandle<Result<(), ReplicationError>> {
    let mut task = Replication::new(database, config, bus);
    task.leadership = leadership;
    tokio::spawn(async move {
        let result = task.run(shutdown.clone()).await;
        shutdown.cancel();
        result
    })
}
