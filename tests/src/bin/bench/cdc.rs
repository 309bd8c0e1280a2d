//! The `cdc` benchmark: how fast replication turns WAL into row events, measured against
//! `pg_recvlogical` (Postgres's own client, which only copies the stream to a file).
//!
//! One run, on one throwaway cluster tuned for throughput:
//! - `decode`: pgoutput messages recorded from a real slot, decoded, assembled into transactions
//!   and encoded as JSON on one thread → messages/s;
//! - `drain`: the same slot workload drained by our replication task and by `pg_recvlogical`,
//!   for 1,000,000 rows in 1,000-row transactions and for 200,000 single-row transactions.
//!
//! It ends with one `result cdc ...` line. Owns the cluster, its tables, publications and slots.

mod decode;
mod drain;
mod machine;

use anyhow::Context;
use realtime::embedded::{EmbeddedPostgres, Options};

use drain::{Drain, Workload};

pub fn main() -> anyhow::Result<()> {
    install_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!("cdc: starting a throwaway Postgres (shared_buffers=512MB, max_wal_size=4GB, logical_decoding_work_mem=256MB)");
    let pg = EmbeddedPostgres::start(
        Options::default()
            .setting("shared_buffers", "512MB")
            .setting("max_wal_size", "4GB")
            .setting("logical_decoding_work_mem", "256MB"),
    )
    .context("cannot start the benchmark's Postgres")?;
    machine::describe(&pg)?;

    let decode = decode::run(&pg, &runtime).context("decode benchmark")?;

    drain::prepare_database(&pg, &runtime).context("cannot prepare the database")?;
    let mut results = Vec::new();
    for workload in [Workload::batch(), Workload::single()] {
        let result = drain::run(&pg, &runtime, &workload).with_context(|| format!("drain benchmark {}", workload.name))?;
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
        decode.msgs_per_s,
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
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
