//! Shared helpers for the end-to-end tests and benchmarks: throwaway Postgres clusters, an
//! in-process change stream, and the `realtime` binary run as a child process; `service` runs
//! `realtime serve` with Postgres Changes subscribers, `proxy` cuts or stalls connections.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use realtime::bus::LocalBus;
use realtime::change::{RowChange, Transaction};
use realtime::config::{DatabaseConfig, ReplicationConfig};
use realtime::embedded::{EmbeddedPostgres, Options};
use realtime::replication::{Replication, ReplicationError, State};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use realtime::embedded;

pub mod auth;
pub mod cluster;
pub mod nats;
pub mod phoenix;
pub mod proc_stats;
pub mod proxy;
pub mod server;
pub mod service;

/// A port nobody listens on now, below the kernel's ephemeral range: a port inside it could be
/// handed to one of our own outgoing connections (a client retrying while the server is down,
/// the server's own connections while it starts), which then talks to itself.
pub fn free_port() -> u16 {
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768);
    for _ in 0..1000 {
        let port = 10_000 + rand::random::<u16>() % low.saturating_sub(10_000).max(1);
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// Starts a throwaway cluster with logical replication on.
pub fn start_postgres(options: Options) -> EmbeddedPostgres {
    EmbeddedPostgres::start(options).expect("start a throwaway Postgres (are the server binaries installed?)")
}

pub async fn pool(pg: &EmbeddedPostgres) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&pg.url("postgres"))
        .await
        .expect("connect to the test cluster")
}

pub fn database(pg: &EmbeddedPostgres) -> DatabaseConfig {
    DatabaseConfig::from_url(&pg.url("postgres")).expect("a valid URL")
}

pub fn replication_config(slot: &str, publication: &str) -> ReplicationConfig {
    ReplicationConfig {
        slot_name: slot.to_owned(),
        publications: vec![publication.to_owned()],
        ..ReplicationConfig::default()
    }
}

/// The replication task running in-process, with a receiver on its bus.
pub struct Stream {
    pub shutdown: CancellationToken,
    pub state: watch::Receiver<State>,
    transactions: broadcast::Receiver<Arc<Transaction>>,
    task: Option<JoinHandle<Result<(), ReplicationError>>>,
}

impl Stream {
    pub fn start(database: DatabaseConfig, config: ReplicationConfig) -> Stream {
        let bus = LocalBus::new(1 << 20);
        let transactions = bus.subscribe_transactions();
        let replication = Replication::new(database, config, bus);
        let state = replication.state.subscribe();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(replication.run(shutdown.clone()));
        Stream {
            shutdown,
            state,
            transactions,
            task: Some(task),
        }
    }

    /// Waits until the task streams from the slot.
    pub async fn wait_streaming(&mut self) {
        let wait = self.state.wait_for(|s| matches!(s, State::Streaming { .. }));
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("replication did not start streaming within 30 s")
            .expect("the replication task ended");
    }

    pub async fn next_transaction(&mut self) -> Arc<Transaction> {
        match tokio::time::timeout(Duration::from_secs(60), self.transactions.recv()).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => panic!("the bus failed: {e}"),
            Err(_) => panic!("no transaction within 60 s (state: {:?})", *self.state.borrow()),
        }
    }

    /// Collects changes until `n` have arrived.
    pub async fn changes(&mut self, n: usize) -> Vec<Arc<RowChange>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.extend(self.next_transaction().await.changes.iter().cloned());
        }
        assert_eq!(out.len(), n, "more changes than expected arrived");
        out
    }

    /// Asserts nothing else arrives within `wait`.
    pub async fn assert_quiet(&mut self, wait: Duration) {
        if let Ok(Ok(t)) = tokio::time::timeout(wait, self.transactions.recv()).await {
            panic!(
                "unexpected transaction: {} changes, end {}",
                t.changes.len(),
                t.end_lsn
            );
        }
    }

    /// Shuts down gracefully and returns the task's result.
    pub async fn stop(mut self) -> Result<(), ReplicationError> {
        self.shutdown.cancel();
        let task = self.task.take().expect("stopped once");
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("replication did not stop within 30 s")
            .expect("the replication task panicked")
    }

    /// Waits for the task to end by itself (a fatal error).
    pub async fn finished(mut self) -> Result<(), ReplicationError> {
        let task = self.task.take().expect("awaited once");
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("replication did not end within 30 s")
            .expect("the replication task panicked")
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The `realtime` binary of this build (`cargo build --bins` puts it beside the test binaries).
pub fn realtime_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("REALTIME_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test> → target/<profile>/realtime
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("a target folder");
    let bin = profile_dir.join("realtime");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --bins` first",
        bin.display()
    );
    bin
}

/// A `realtime` child process whose stdout lines and stderr text are collected.
pub struct Process {
    pub child: Child,
    pub stdout: std::sync::mpsc::Receiver<String>,
    stderr: Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// `realtime <args>` with `env` on top of this process's environment, less the settings that
/// would point it at another database, port, configuration, key or log format.
fn realtime_command(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut command = Command::new(realtime_bin());
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.env("RUST_LOG", "info").env("NO_COLOR", "1");
    for var in [
        "DATABASE_URL",
        "DB_HOST",
        "SLOT_NAME",
        "PUBLICATIONS",
        "TEMPORARY_SLOT",
        "PORT",
        "REALTIME_CONFIG",
        "POLICIES_DIR",
        "JWT_SECRET",
        "JWT_JWKS",
        "JWT_CLAIM_VALIDATORS",
        "LOG_FORMAT",
    ] {
        command.env_remove(var);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

/// Runs `realtime <args>` to its end (a short command such as `healthcheck`).
pub fn run_realtime(args: &[&str], env: &[(&str, String)]) -> std::process::Output {
    realtime_command(args, env).output().expect("run realtime")
}

impl Process {
    pub fn spawn(args: &[&str], env: &[(&str, String)]) -> Process {
        Self::start(realtime_command(args, env))
    }

    /// [`Process::spawn`] with `dir` as the working directory (where `./policies` is looked for).
    pub fn spawn_in(dir: &std::path::Path, args: &[&str], env: &[(&str, String)]) -> Process {
        let mut command = realtime_command(args, env);
        command.current_dir(dir);
        Self::start(command)
    }

    fn start(mut command: Command) -> Process {
        let mut child = command.spawn().expect("spawn realtime");
        let (tx, stdout) = std::sync::mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        let err = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
        Process {
            child,
            stdout,
            stderr,
            readers: vec![stdout_reader, stderr_reader],
        }
    }

    /// Waits until everything the process wrote is collected; only once it has exited (or
    /// been killed), when its pipes close.
    pub fn wait_output(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until stderr contains `needle`.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let text = self.stderr();
            if text.contains(needle) {
                return text;
            }
            if std::time::Instant::now() > deadline {
                panic!("stderr never contained {needle:?}; it was:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "realtime did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.wait_exit(timeout)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `sql` in its own connection; panics with the error.
/// A Postgres whose `items (id, grp)` table is published as `supabase_realtime` and readable by
/// `service_role`: the resume checkers' database.
pub async fn items_database() -> (EmbeddedPostgres, sqlx::PgPool) {
    let pg = start_postgres(Options::default());
    let db = pool(&pg).await;
    exec(
        &db,
        "CREATE ROLE service_role NOLOGIN BYPASSRLS;
         CREATE TABLE items (id serial PRIMARY KEY, grp int NOT NULL);
         GRANT SELECT ON items TO service_role;
         CREATE PUBLICATION supabase_realtime FOR TABLE items;",
    )
    .await;
    (pg, db)
}

/// Commits rows into `items_database()`'s table until it holds `total`, starting after
/// `written` rows: transactions of 1 to 9 rows in turn, `grp` alternating. The writer of the
/// crash and failover checkers; its task ends when every row is committed.
pub fn write_items(url: String, mut written: i64, total: i64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let db = sqlx::PgPool::connect(&url).await.expect("connect");
        let mut size = 1;
        while written < total {
            let n = size.min(total - written);
            let sql = format!("INSERT INTO items (grp) SELECT g % 2 FROM generate_series(1, {n}) g");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&db)
                .await
                .expect("insert");
            written += n;
            size = size % 9 + 1;
        }
    })
}

pub async fn exec(pool: &sqlx::PgPool, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}
