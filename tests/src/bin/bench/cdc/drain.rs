//! Draining a slot: one workload is loaded once, then read to its end by `pg_recvlogical` and by
//! our replication task, each from its own slot created before the load, and each timed.
//!
//! Owns the workload's table, publication and two slots (dropped when the workload is done).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use realtime::bus::LocalBus;
use realtime::config::{DatabaseConfig, ReplicationConfig};
use realtime::embedded::{EmbeddedPostgres, SUPERUSER_PASSWORD, find_bindir};
use realtime::replication::Replication;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::machine::{cpu_time, is_root};

/// Any single drain (or load) that takes longer than this fails the benchmark.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);
/// More slots than either workload has transactions: the counting receiver can never lag, even
/// if it were not scheduled at all until the end.
const BUS_CAPACITY: usize = 262_144;

#[derive(Debug)]
pub struct Workload {
    pub name: &'static str,
    table: &'static str,
    pub rows: u64,
    pub txns: u64,
}

impl Workload {
    /// 1,000,000 rows in 1,000-row transactions.
    pub fn batch() -> Self {
        Workload {
            name: "batch",
            table: "bench_batch",
            rows: 1_000_000,
            txns: 1_000,
        }
    }

    /// 200,000 single-row transactions.
    pub fn single() -> Self {
        Workload {
            name: "single",
            table: "bench_single",
            rows: 200_000,
            txns: 200_000,
        }
    }

    fn publication(&self) -> String {
        format!("{}_pub", self.table)
    }

    /// One DO block that commits after every transaction's rows (a DO block may commit when it
    /// is the only statement of its query). PL/pgSQL keeps the INSERT's plan across commits.
    fn load_sql(&self) -> String {
        let per_txn = self.rows / self.txns;
        let insert = if per_txn == 1 {
            format!(
                "INSERT INTO {} VALUES (b + 1, (b + 1) % 1000, md5((b + 1)::text))",
                self.table
            )
        } else {
            format!(
                "INSERT INTO {} SELECT g, g % 1000, md5(g::text) FROM generate_series(b * {per_txn} + 1, (b + 1) * {per_txn}) g",
                self.table
            )
        };
        format!(
            "DO $$ BEGIN FOR b IN 0..{} LOOP {insert}; COMMIT; END LOOP; END $$",
            self.txns - 1
        )
    }
}

/// What one consumer did: rows and transactions it read, wall time, and CPU time it spent.
#[derive(Debug, Default)]
pub struct Drain {
    pub rows: u64,
    pub txns: u64,
    pub secs: f64,
    pub cpu_secs: f64,
}

impl Drain {
    pub fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.secs
    }

    pub fn txns_per_s(&self) -> f64 {
        self.txns as f64 / self.secs
    }

    fn add(&mut self, other: &Drain) {
        self.rows += other.rows;
        self.txns += other.txns;
        self.secs += other.secs;
        self.cpu_secs += other.cpu_secs;
    }

    fn describe(&self) -> String {
        format!(
            "{:.2} s, {:.0} rows/s, {:.0} txn/s, client CPU {:.2} s ({:.2} µs/row)",
            self.secs,
            self.rows_per_s(),
            self.txns_per_s(),
            self.cpu_secs,
            self.cpu_secs * 1e6 / self.rows as f64
        )
    }
}

/// Applies the `realtime` schema once, so that no drain pays for the first migration, and creates
/// the publication of `realtime.messages` that our replication task streams too. It must exist
/// before the slots: Postgres 15 refuses to decode, from a slot, WAL older than a publication it
/// is asked for ("publication … does not exist"), and the task would retry forever.
pub fn prepare_database(pg: &EmbeddedPostgres, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let database = DatabaseConfig::from_url(&pg.url("postgres")).map_err(anyhow::Error::msg)?;
    runtime.block_on(async {
        let pool = realtime::db::connect(&database).await?;
        realtime::db::migrate(&pool).await?;
        anyhow::ensure!(
            realtime::db_broadcast::ensure_publication(&pool).await.is_some(),
            "cannot create the publication of realtime.messages"
        );
        pool.close().await;
        anyhow::Ok(())
    })
}

/// Loads the workload once, then drains it `rounds` times with each consumer, alternating which
/// goes first (the machine is shared: alternation spreads any background load over both).
/// Returns (ours, theirs), each summed over the rounds.
pub fn run(
    pg: &EmbeddedPostgres,
    runtime: &tokio::runtime::Runtime,
    workload: &Workload,
    rounds: usize,
) -> anyhow::Result<(Drain, Drain)> {
    let name = workload.name;
    let publication = workload.publication();
    let suffix = unique_suffix();
    let slots: Vec<(String, String)> = (0..rounds)
        .map(|r| {
            (
                format!("rt_{name}_{suffix}_{r}"),
                format!("recvlogical_{name}_{suffix}_{r}"),
            )
        })
        .collect();
    pg.psql(
        "postgres",
        &format!(
            "CREATE TABLE {} (id bigint PRIMARY KEY, v int, s text)",
            workload.table
        ),
    )?;
    pg.psql(
        "postgres",
        &format!("CREATE PUBLICATION {publication} FOR TABLE {}", workload.table),
    )?;
    // Every slot exists before the first row, so each sees the whole workload.
    for slot in slots.iter().flat_map(|(ours, theirs)| [ours, theirs]) {
        pg.psql(
            "postgres",
            &format!("SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"),
        )?;
    }

    let start_lsn = pg.psql("postgres", "SELECT pg_current_wal_lsn()")?;
    let started = Instant::now();
    pg.psql("postgres", &workload.load_sql())?;
    let load_secs = started.elapsed().as_secs_f64();
    let end_lsn = pg.psql("postgres", "SELECT pg_current_wal_lsn()")?;
    let wal_mb = pg.psql(
        "postgres",
        &format!("SELECT round(pg_wal_lsn_diff('{end_lsn}', '{start_lsn}') / 1e6, 1)"),
    )?;
    println!(
        "{name}: loaded {} rows in {} transactions in {load_secs:.2} s ({:.0} rows/s, {:.0} txn/s), {wal_mb} MB of WAL, ends at {end_lsn}",
        workload.rows,
        workload.txns,
        workload.rows as f64 / load_secs,
        workload.txns as f64 / load_secs,
    );
    // Write dirty pages out now rather than in a checkpoint during a drain, and make sure the
    // whole load is on disk, so that no drain waits for the WAL writer.
    pg.psql("postgres", "CHECKPOINT")?;
    wait_for_flush(pg)?;

    let mut ours_total = Drain::default();
    let mut theirs_total = Drain::default();
    for (round, (our_slot, their_slot)) in slots.iter().enumerate() {
        let mut drain_theirs_now = || -> anyhow::Result<()> {
            let theirs = drain_theirs(pg, their_slot, &publication, &end_lsn, workload)?;
            println!("{name} round {}: pg_recvlogical {}", round + 1, theirs.describe());
            theirs_total.add(&theirs);
            Ok(())
        };
        if round % 2 == 0 {
            drain_theirs_now()?;
        }
        let ours = runtime.block_on(drain_ours(pg, our_slot, &publication, workload))?;
        println!("{name} round {}: ours           {}", round + 1, ours.describe());
        ours_total.add(&ours);
        if round % 2 == 1 {
            drain_theirs_now()?;
        }
        for slot in [our_slot, their_slot] {
            pg.psql("postgres", &format!("SELECT pg_drop_replication_slot('{slot}')"))?;
        }
    }
    println!("{name} total: pg_recvlogical {}", theirs_total.describe());
    println!("{name} total: ours           {}", ours_total.describe());
    println!(
        "{name}: ratio ours/pg_recvlogical = {:.3} (rows/s over {rounds} rounds)",
        ours_total.rows_per_s() / theirs_total.rows_per_s()
    );
    Ok((ours_total, theirs_total))
}

/// Our replication task from start (connect, checks, START_REPLICATION) until a bus subscriber
/// has seen every row of the workload.
async fn drain_ours(
    pg: &EmbeddedPostgres,
    slot: &str,
    publication: &str,
    workload: &Workload,
) -> anyhow::Result<Drain> {
    let database = DatabaseConfig::from_url(&pg.url("postgres")).map_err(anyhow::Error::msg)?;
    let config = ReplicationConfig {
        slot_name: slot.to_owned(),
        temporary_slot: false,
        publications: vec![publication.to_owned()],
        manage_publication: false,
        ..ReplicationConfig::default()
    };
    let bus = LocalBus::new(BUS_CAPACITY);
    let mut receiver = bus.subscribe_transactions();
    let shutdown = CancellationToken::new();

    let cpu_before = cpu_time().0;
    let started = Instant::now();
    let task = tokio::spawn(Replication::new(database, config, bus).run(shutdown.clone()));
    let counted = tokio::time::timeout(DRAIN_LIMIT, async {
        let (mut rows, mut txns) = (0u64, 0u64);
        while rows < workload.rows {
            match receiver.recv().await {
                Ok(transaction) => {
                    rows += transaction.changes.len() as u64;
                    txns += 1;
                }
                Err(RecvError::Lagged(n)) => {
                    anyhow::bail!("the counting subscriber lagged by {n} transactions")
                }
                Err(RecvError::Closed) => anyhow::bail!("the replication task stopped after {rows} rows"),
            }
        }
        Ok((rows, txns))
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = (cpu_time().0 - cpu_before).as_secs_f64();

    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), task).await;
    let (rows, txns) = match counted {
        Ok(Ok(counts)) => counts,
        Ok(Err(e)) => {
            // Name the task's own error when it has one.
            if let Ok(Ok(Err(task_error))) = stopped {
                return Err(anyhow::Error::new(task_error).context(e.to_string()));
            }
            return Err(e);
        }
        Err(_) => anyhow::bail!("our drain did not finish within {DRAIN_LIMIT:?}"),
    };
    stopped
        .context("the replication task did not stop")?
        .context("the replication task panicked")??;
    check_counts("ours", workload, rows, txns)?;
    Ok(Drain {
        rows,
        txns,
        secs,
        cpu_secs,
    })
}

/// `pg_recvlogical --start --endpos=<end of the load>` into /dev/null: the process's wall time.
fn drain_theirs(
    pg: &EmbeddedPostgres,
    slot: &str,
    publication: &str,
    end_lsn: &str,
    workload: &Workload,
) -> anyhow::Result<Drain> {
    let program = find_bindir()
        .context("no Postgres binaries found")?
        .join("pg_recvlogical");
    // Like the server binaries, run it as the postgres user when we are root.
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&program);
        c
    } else {
        Command::new(&program)
    };
    command
        .arg("-d")
        .arg(format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            pg.port()
        ))
        .args(["--slot", slot, "--start", "--no-loop", "-f", "/dev/null"])
        .arg(format!("--endpos={end_lsn}"))
        .args(["-o", "proto_version=1", "-o"])
        .arg(format!("publication_names={publication}"))
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());

    let children_cpu_before = cpu_time().1;
    let started = Instant::now();
    let mut child = command.spawn().context("cannot run pg_recvlogical")?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > DRAIN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("pg_recvlogical did not finish within {DRAIN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let secs = started.elapsed().as_secs_f64();
    // Children's CPU counts once they are waited for: runuser's includes pg_recvlogical's.
    let cpu_secs = (cpu_time().1 - children_cpu_before).as_secs_f64();
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        anyhow::bail!("pg_recvlogical failed ({status}): {}", stderr.trim());
    }
    // pg_recvlogical stops at --endpos, which lies past the last commit: it read everything.
    Ok(Drain {
        rows: workload.rows,
        txns: workload.txns,
        secs,
        cpu_secs,
    })
}

fn check_counts(who: &str, workload: &Workload, rows: u64, txns: u64) -> anyhow::Result<()> {
    if rows != workload.rows || txns != workload.txns {
        anyhow::bail!(
            "{who} read {rows} rows in {txns} transactions, expected {} in {}",
            workload.rows,
            workload.txns
        );
    }
    Ok(())
}

/// Waits until Postgres has flushed its WAL through the current insert position: logical decoding
/// reads flushed WAL only, and with `synchronous_commit=off` the last commits may still be in
/// memory for up to `wal_writer_delay`.
pub fn wait_for_flush(pg: &EmbeddedPostgres) -> anyhow::Result<()> {
    let target = pg.psql("postgres", "SELECT pg_current_wal_insert_lsn()")?;
    let started = Instant::now();
    while pg.psql(
        "postgres",
        &format!("SELECT pg_current_wal_flush_lsn() >= '{target}'"),
    )? != "t"
    {
        if started.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("Postgres did not flush its WAL through {target} within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Slot names are unique per run, so a leftover cluster or slot never collides.
fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}_{nanos:x}", std::process::id())
}
