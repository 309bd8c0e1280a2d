//! The `cdc` benchmark: how fast replication turns WAL into row events, measured against
//! `pg_recvlogical` (Postgres's own client, which only copies the stream to a file).
//!
//! One run, on one throwaway cluster tuned for throughput:
//! - `decode`: pgoutput messages recorded from a real slot, decoded, assembled into transactions
//!   and encoded as JSON on one thread → messages/s;
//! - `drain`: the same slot workload drained by our replication task and by `pg_recvlogical`,
//!   for 1,000,000 rows in 1,000-row transactions and for 200,000 single-row transactions.
//!
//! It ends with one `result cdc ...` line. `realtime-bench cdc decode` runs the decode part alone
//! (for a profiler). Owns the cluster, its tables, publications and slots.

mod decode;
mod drain;
mod machine;

use anyhow::Context;
use realtime::embedded::{EmbeddedPostgres, Options};

use drain::{Drain, Workload};

/// Drains per workload and consumer (`CDC_BENCH_ROUNDS` overrides): one drain is a few seconds,
/// and on a shared machine a single one can be off by a quarter.
const DEFAULT_ROUNDS: usize = 3;

pub fn main() -> anyhow::Result<()> {
    install_tracing();
    // The server's runtime is multi-threaded; `CDC_BENCH_RUNTIME=current_thread` runs the consumer
    // and the counting subscriber on one thread instead (no cross-thread wake-ups), to compare.
    let runtime = match std::env::var("CDC_BENCH_RUNTIME").as_deref() {
        Ok("current_thread") => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
    };
    println!("cdc: tokio runtime {:?}", runtime.handle().runtime_flavor());
    println!(
        "cdc: starting a throwaway Postgres (shared_buffers=512MB, max_wal_size=4GB, logical_decoding_work_mem=256MB)"
    );
    let pg = EmbeddedPostgres::start(
        Options::default()
            .setting("shared_buffers", "512MB")
            .setting("max_wal_size", "4GB")
            .setting("logical_decoding_work_mem", "256MB"),
    )
    .context("cannot start the benchmark's Postgres")?;
    machine::describe(&pg)?;

    let decode = decode::run(&pg, &runtime).context("decode benchmark")?;
    // `realtime-bench cdc decode`: the decode part alone, e.g. under a profiler.
    if std::env::args().nth(2).as_deref() == Some("decode") {
        return Ok(());
    }

    drain::prepare_database(&pg, &runtime).context("cannot prepare the database")?;
    let rounds: usize = match std::env::var("CDC_BENCH_ROUNDS") {
        Ok(n) => n
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .context("CDC_BENCH_ROUNDS must be a positive number")?,
        Err(_) => DEFAULT_ROUNDS,
    };
    println!("cdc: {rounds} drain rounds per workload and consumer, alternating which consumer goes first");
    let mut results = Vec::new();
    for workload in [Workload::batch(), Workload::single()] {
        let result = drain::run(&pg, &runtime, &workload, rounds)
            .with_context(|| format!("drain benchmark {}", workload.name))?;
        results.push((workload, result));
    }
    let [(_, batch), (_, single)] = &results[..] else {
        anyhow::bail!("expected two workloads");
    };

    // Over both workloads: total rows / total drain time, for each consumer.
    let total = |pick: fn(&(Workload, (Drain, Drain))) -> &Drain| {
        let rows: u64 = results.iter().map(|r| pick(r).rows).sum();
        let secs: f64 = results.iter().map(|r| pick(r).secs).sum();
        rows as f64 / secs
    };
    let ours_total = total(|r| &r.1.0);
    let theirs_total = total(|r| &r.1.1);
    let ratio = ours_total / theirs_total;
    println!(
        "overall: ours {:.0} rows/s, pg_recvlogical {:.0} rows/s over both workloads -> ratio {ratio:.3}",
        ours_total, theirs_total
    );
    println!(
        "result cdc ratio_vs_pg_recvlogical={ratio:.3} decode_msgs_per_s={:.0} ours_rows_per_s_batch={:.0} \
         recvlogical_rows_per_s_batch={:.0} ours_txn_per_s_single={:.0} recvlogical_txn_per_s_single={:.0}",
        decode.msgs_per_cpu_s,
        batch.0.rows_per_s(),
        batch.1.rows_per_s(),
        single.0.txns_per_s(),
        single.1.txns_per_s(),
    );
    Ok(())
}

/// Warnings from the replication task go to stderr (a retrying task would otherwise look like a
/// hang); `RUST_LOG` overrides.
fn install_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
