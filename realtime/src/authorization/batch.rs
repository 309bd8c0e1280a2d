//! The RLS checks of concurrent joins, batched: whatever checks queued while the previous batch
//! ran go to Postgres together, in one statement on one connection (`probe.sql`), so a burst of
//! private joins costs a few round trips instead of several per join. Each check still runs
//! under its own role and claims, in its own subtransaction that is rolled back before the next
//! one starts; its answer goes back to the join that asked for it alone.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::policy::ChannelAccess;

/// Checks sent in one statement at most.
pub(super) const MAX_BATCH: usize = 128;
/// Batches running at once (each holds one connection of the check pool).
pub(super) const IN_FLIGHT: usize = 4;

/// The SQL that creates the batch probe function on a connection.
pub(super) const PROBE_FUNCTION: &str = include_str!("probe.sql");

/// One check: what `role` with `claims` may do on private sub-topic `topic`.
#[derive(Clone, Debug)]
pub(super) struct Check {
    pub topic: String,
    pub role: String,
    /// The token's claims as JSON (`request.jwt.claims`).
    pub claims: String,
    pub sub: String,
    /// Whether presence is enabled at join (presence read is probed only then).
    pub presence: bool,
}

/// What a check found: the access, or the failure Postgres reported.
#[derive(Clone, Debug)]
pub(super) enum Outcome {
    Access(ChannelAccess),
    /// A check that raised: its SQLSTATE and message.
    Failed {
        code: String,
        message: String,
    },
    /// The batch could not run (no connection, the connection broke).
    Unavailable(Arc<sqlx::Error>),
}

impl Outcome {
    /// "no partition of relation found for row": today's partition is missing.
    pub(super) fn is_missing_partition(&self) -> bool {
        matches!(self, Outcome::Failed { code, .. } if code == "23514")
    }
}

type Pending = (Check, oneshot::Sender<Outcome>);

/// The queue of checks waiting for a batch.
#[derive(Debug)]
pub(super) struct Batcher {
    queue: mpsc::UnboundedSender<Pending>,
}

impl Batcher {
    /// Starts the task that runs batches on `pool`; it ends when the batcher is dropped.
    pub(super) fn start(pool: PgPool) -> Batcher {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, pending));
        Batcher { queue }
    }

    /// Queues `check` and waits for its answer.
    pub(super) async fn check(&self, check: Check) -> Outcome {
        let (answer, answered) = oneshot::channel();
        if self.queue.send((check, answer)).is_err() {
            return Outcome::Unavailable(Arc::new(sqlx::Error::PoolClosed));
        }
        answered
            .await
            .unwrap_or_else(|_| Outcome::Unavailable(Arc::new(sqlx::Error::PoolClosed)))
    }
}

/// Takes the first waiting check, waits for a free batch slot (meanwhile more checks queue up),
/// then sends everything queued, up to [`MAX_BATCH`], as one batch.
async fn run(pool: PgPool, mut pending: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = pending.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            let (checks, answers): (Vec<Check>, Vec<_>) = batch.into_iter().unzip();
            let outcomes = probe_creating_partition(&pool, &checks).await;
            for (answer, outcome) in answers.into_iter().zip(outcomes) {
                // The join may have gone meanwhile: nobody to answer.
                let _ = answer.send(outcome);
            }
            drop(slot);
        });
    }
}

/// [`probe`], and when today's partition is missing (the service was down), creates it and asks
/// again the checks that met its absence.
async fn probe_creating_partition(pool: &PgPool, checks: &[Check]) -> Vec<Outcome> {
    let mut outcomes = probe(pool, checks).await;
    let missing: Vec<usize> = (0..checks.len())
        .filter(|&i| outcomes[i].is_missing_partition())
        .collect();
    if !missing.is_empty() {
        let _ = sqlx::query("SELECT realtime.ensure_messages_partition((now() at time zone 'utc')::date)")
            .execute(pool)
            .await;
        let again: Vec<Check> = missing.iter().map(|&i| checks[i].clone()).collect();
        for (i, outcome) in missing.into_iter().zip(probe(pool, &again).await) {
            outcomes[i] = outcome;
        }
    }
    outcomes
}

/// Runs `checks` in one statement; one outcome per check, in order.
pub(super) async fn probe(pool: &PgPool, checks: &[Check]) -> Vec<Outcome> {
    let column = |f: fn(&Check) -> &String| checks.iter().map(f).cloned().collect::<Vec<String>>();
    let rows: Result<Vec<Row>, sqlx::Error> = sqlx::query_as(
        "SELECT broadcast_read, presence_read, broadcast_write, presence_write, error_code, error_message \
         FROM pg_temp.realtime_authorize($1, $2, $3, $4, $5)",
    )
    .bind(column(|c| &c.topic))
    .bind(column(|c| &c.role))
    .bind(column(|c| &c.claims))
    .bind(column(|c| &c.sub))
    .bind(checks.iter().map(|c| c.presence).collect::<Vec<bool>>())
    .fetch_all(pool)
    .await;
    match rows {
        Ok(rows) if rows.len() == checks.len() => rows.into_iter().map(outcome).collect(),
        Ok(rows) => {
            let error = Arc::new(sqlx::Error::Protocol(format!(
                "{} answers to {} channel authorization checks",
                rows.len(),
                checks.len()
            )));
            vec![Outcome::Unavailable(error); checks.len()]
        }
        Err(error) => vec![Outcome::Unavailable(Arc::new(error)); checks.len()],
    }
}

type Row = (bool, bool, bool, bool, Option<String>, Option<String>);

/// A row of `realtime_authorize`: an error code means the check failed.
fn outcome(row: Row) -> Outcome {
    let (broadcast_read, presence_read, broadcast_write, presence_write, code, message) = row;
    match code {
        Some(code) => Outcome::Failed {
            code,
            message: message.unwrap_or_default(),
        },
        None => Outcome::Access(ChannelAccess {
            broadcast_read,
            presence_read,
            broadcast_write,
            presence_write,
        }),
    }
}
