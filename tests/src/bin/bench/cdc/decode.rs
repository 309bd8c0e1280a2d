//! Decode throughput: real pgoutput messages, recorded once from a slot with
//! `pg_logical_slot_peek_binary_changes`, replayed through `pgoutput::decode`, `Decoder::apply`
//! and `RowChange::to_json` on one thread, with no network or Postgres in the timed loop.
//!
//! Owns the `bench_decode` table, its publication and slot (dropped once recorded).

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use realtime::change::Epoch;
use realtime::embedded::EmbeddedPostgres;
use realtime::replication::decode::Decoder;
use realtime::replication::pgoutput;

use super::machine::thread_cpu_time;

const ROWS: u64 = 100_000;
const ROWS_PER_TXN: u64 = 1_000;
/// The full pipeline is timed for at least this long (wall clock).
const MIN_TIME: Duration = Duration::from_secs(2);
/// Each partial stage (for the breakdown) is timed for at least this long.
const STAGE_TIME: Duration = Duration::from_millis(600);

#[derive(Debug)]
pub struct DecodeResult {
    /// Messages per second of CPU time of the decoding thread: throughput per core, which stays
    /// meaningful when other processes share the machine (on an idle one it equals wall-clock).
    pub msgs_per_cpu_s: f64,
}

pub fn run(pg: &EmbeddedPostgres, runtime: &tokio::runtime::Runtime) -> anyhow::Result<DecodeResult> {
    let messages = record(pg, runtime)?;
    let bytes: usize = messages.iter().map(Bytes::len).sum();
    println!(
        "decode: recorded {} pgoutput messages ({:.1} MB) for {ROWS} rows in {}-row transactions",
        messages.len(),
        bytes as f64 / 1e6,
        ROWS_PER_TXN
    );

    // Breakdown first, so that the headline number comes from a warm cache.
    let parse = time_stage(&messages, STAGE_TIME, Stage::Parse)?;
    let assemble = time_stage(&messages, STAGE_TIME, Stage::Assemble)?;
    let full = time_stage(&messages, MIN_TIME, Stage::Full)?;
    let per_msg = |t: &Timing| t.cpu.as_secs_f64() * 1e9 / t.messages as f64;
    println!(
        "decode: CPU per message: pgoutput::decode {:.0} ns, + Decoder::apply {:.0} ns, + to_json {:.0} ns",
        per_msg(&parse),
        per_msg(&assemble) - per_msg(&parse),
        per_msg(&full) - per_msg(&assemble)
    );
    let wall = full.elapsed.as_secs_f64();
    let cpu = full.cpu.as_secs_f64();
    let msgs_per_cpu_s = full.messages as f64 / cpu;
    println!(
        "decode: {} passes, {} msgs, {:.2} s wall ({:.0} msgs/s), {:.2} s CPU: {:.0} msgs/s per core, {:.0} rows/s per core, {:.0} ns/msg (goal >= 1,000,000 msgs/s per core)",
        full.passes,
        full.messages,
        wall,
        full.messages as f64 / wall,
        cpu,
        msgs_per_cpu_s,
        full.rows as f64 / cpu,
        per_msg(&full)
    );
    Ok(DecodeResult { msgs_per_cpu_s })
}

/// Loads the rows and peeks the slot's binary output: exactly the payloads a walsender would
/// put in XLogData messages for this publication.
fn record(pg: &EmbeddedPostgres, runtime: &tokio::runtime::Runtime) -> anyhow::Result<Vec<Bytes>> {
    // One statement per call: a multi-statement string runs as one transaction, and a slot
    // cannot be created in a transaction that wrote.
    pg.psql(
        "postgres",
        "CREATE TABLE bench_decode (id bigint PRIMARY KEY, v int, s text)",
    )?;
    pg.psql(
        "postgres",
        "CREATE PUBLICATION bench_decode_pub FOR TABLE bench_decode",
    )?;
    pg.psql(
        "postgres",
        "SELECT pg_create_logical_replication_slot('bench_decode_slot', 'pgoutput')",
    )?;
    pg.psql(
        "postgres",
        &format!(
            "DO $$ BEGIN
               FOR b IN 0..{} LOOP
                 INSERT INTO bench_decode SELECT g, g % 1000, md5(g::text)
                   FROM generate_series(b * {ROWS_PER_TXN} + 1, (b + 1) * {ROWS_PER_TXN}) g;
                 COMMIT;
               END LOOP;
             END $$;",
            ROWS / ROWS_PER_TXN - 1
        ),
    )?;
    // The peek decodes flushed WAL only.
    super::drain::wait_for_flush(pg)?;
    let url = pg.url("postgres");
    let messages: Vec<Vec<u8>> = runtime.block_on(async {
        let pool = sqlx::PgPool::connect(&url).await?;
        let rows = sqlx::query_scalar(
            "SELECT data FROM pg_logical_slot_peek_binary_changes('bench_decode_slot', NULL, NULL, \
             'proto_version', '1', 'publication_names', 'bench_decode_pub')",
        )
        .fetch_all(&pool)
        .await;
        pool.close().await;
        rows
    })?;
    // Recorded: the slot would only hold WAL back from now on.
    pg.psql("postgres", "SELECT pg_drop_replication_slot('bench_decode_slot')")?;
    let expected = (ROWS / ROWS_PER_TXN) * (ROWS_PER_TXN + 2) + 1;
    if messages.len() as u64 != expected {
        anyhow::bail!(
            "recorded {} messages, expected {expected} (Begin, Relation once, Insert per row, Commit)",
            messages.len()
        );
    }
    Ok(messages.into_iter().map(Bytes::from).collect())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// `pgoutput::decode` only.
    Parse,
    /// + `Decoder::apply` (relation cache, row JSON, transactions).
    Assemble,
    /// + `to_json()` of every change: the whole per-event cost before the bus.
    Full,
}

struct Timing {
    passes: u64,
    messages: u64,
    rows: u64,
    elapsed: Duration,
    /// CPU time of this thread over the same span (wall time where the kernel does not say).
    cpu: Duration,
}

/// Replays all messages, pass after pass, until `min` has passed. Every pass uses a fresh decoder,
/// as a new session would; the recording starts with the Relation message it needs.
fn time_stage(messages: &[Bytes], min: Duration, stage: Stage) -> anyhow::Result<Timing> {
    let mut timing = Timing {
        passes: 0,
        messages: 0,
        rows: 0,
        elapsed: Duration::ZERO,
        cpu: Duration::ZERO,
    };
    let cpu_start = thread_cpu_time();
    let start = Instant::now();
    while timing.passes == 0 || start.elapsed() < min {
        let mut decoder = Decoder::new(Epoch(1));
        let mut rows = 0u64;
        let mut json_bytes = 0usize;
        for payload in messages {
            let message = pgoutput::decode(payload).context("a recorded message did not decode")?;
            if stage == Stage::Parse {
                black_box(&message);
                continue;
            }
            let Some(transaction) = decoder
                .apply(message)
                .context("the recorded stream is inconsistent")?
            else {
                continue;
            };
            rows += transaction.changes.len() as u64;
            if stage == Stage::Full {
                for change in &transaction.changes {
                    json_bytes += black_box(change.to_json()).len();
                }
            }
            black_box(&transaction);
        }
        black_box(json_bytes);
        if stage != Stage::Parse && rows != ROWS {
            anyhow::bail!("a pass decoded {rows} rows, expected {ROWS}");
        }
        timing.passes += 1;
        timing.messages += messages.len() as u64;
        timing.rows += rows;
    }
    timing.elapsed = start.elapsed();
    timing.cpu = match (cpu_start, thread_cpu_time()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => timing.elapsed,
    };
    Ok(timing)
}
