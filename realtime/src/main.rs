//! The `realtime` binary: parses the command line, installs logging, and calls the library.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use realtime::bus::LocalBus;
use realtime::config::{Config, DatabaseConfig, process_env};
use realtime::embedded::{EmbeddedPostgres, Options};

#[global_allocator]
static ALLOCATOR: realtime::Allocator = realtime::Allocator;

#[derive(Parser)]
#[command(name = "realtime", version, about = "Realtime service for Postgres")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service against DATABASE_URL (or DB_HOST, DB_PORT, ...). Listens on every
    /// address (0.0.0.0) unless LISTEN_ADDRESS says otherwise.
    Serve {
        /// TOML configuration file; environment variables win over it.
        #[arg(long, env = "REALTIME_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run the service on a throwaway local Postgres (wal_level=logical) that it starts and stops
    /// itself; with DATABASE_URL set, use that database instead. Listens on 127.0.0.1 unless
    /// LISTEN_ADDRESS says otherwise.
    Dev {
        /// Data folder of the local Postgres (kept between runs).
        #[arg(long, default_value = ".realtime/dev-postgres")]
        data_dir: PathBuf,
        /// Port of the local Postgres.
        #[arg(long, default_value_t = 54322)]
        pg_port: u16,
        /// Delete the data folder first.
        #[arg(long)]
        fresh: bool,
        /// The built SDK (`npm run build` in sdk-ts) that the demo page at /demo/ loads; by
        /// default the one of the clone this binary was built from.
        #[arg(long, env = "DEMO_SDK_DIR", default_value = DEFAULT_SDK_DIR)]
        demo_sdk: PathBuf,
        #[arg(long, env = "REALTIME_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print every change as one JSON line on stdout (uses the configured slot and publications).
    Tail {
        #[arg(long, env = "REALTIME_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Exit 0 when the service on this machine is ready (`GET /readyz` on its PORT), else 1:
    /// the container health check. Reads the same settings as `serve`.
    Healthcheck {
        #[arg(long, env = "REALTIME_CONFIG")]
        config: Option<PathBuf>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Policy tools.
    #[command(subcommand)]
    Policies(PoliciesCommand),
}

/// `sdk-ts/dist` of the clone this binary was built from: `make dev` builds it there.
const DEFAULT_SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk-ts/dist");

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print what is wrong with a configuration (file and environment), naming each key.
    Check {
        #[arg(long, env = "REALTIME_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PoliciesCommand {
    /// Validate every policy file of a folder, with file and line for each problem.
    Check {
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let telemetry = match install_telemetry() {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {}", realtime::telemetry::chain(&error));
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(dispatch(cli.command)));
    // After the runtime: the last spans (those of the shutdown itself) are sent, then the
    // exporter's thread stops.
    telemetry.shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // Like anyhow's `{:#}`, and a cause that a dependency's message already ends with
            // (sqlx and async-nats print their own) is not printed twice.
            eprintln!("error: {}", realtime::telemetry::chain(error.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => serve(load_config(config.as_deref())?, Mode::Serve).await,
        Command::Dev {
            data_dir,
            pg_port,
            fresh,
            demo_sdk,
            config,
        } => dev(config, data_dir, pg_port, fresh, demo_sdk).await,
        Command::Tail { config } => tail(load_config(config.as_deref())?).await,
        Command::Healthcheck { config, timeout } => {
            healthcheck(load_config(config.as_deref())?, timeout).await
        }
        Command::Config(ConfigCommand::Check { config }) => config_check(config.as_deref()),
        Command::Policies(PoliciesCommand::Check { dir }) => policies_check(&dir),
    }
}

async fn healthcheck(config: Config, timeout_seconds: u64) -> anyhow::Result<()> {
    let port = config.server.port;
    let timeout = std::time::Duration::from_secs(timeout_seconds);
    let body = realtime::healthcheck::probe(port, realtime::healthcheck::READY_PATH, timeout).await?;
    println!("ready: {body}");
    Ok(())
}

fn config_check(file: Option<&Path>) -> anyhow::Result<()> {
    let problems = realtime::check::check_config(file, &process_env);
    for problem in &problems {
        println!("{problem}");
    }
    let errors = problems
        .iter()
        .filter(|p| p.severity == realtime::check::Severity::Error)
        .count();
    if errors > 0 {
        anyhow::bail!("{errors} error(s) in the configuration");
    }
    println!("configuration ok");
    Ok(())
}

fn policies_check(dir: &Path) -> anyhow::Result<()> {
    match realtime::policy::check_policies(dir) {
        Ok(_) => {
            println!("policies in {} are valid", dir.display());
            Ok(())
        }
        Err(errors) => {
            for error in &errors {
                println!("{error}");
            }
            anyhow::bail!("{} problem(s) in {}", errors.len(), dir.display())
        }
    }
}

fn load_config(file: Option<&Path>) -> anyhow::Result<Config> {
    Config::load(file, &process_env).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow::anyhow!("invalid configuration:\n{}", list.join("\n"))
    })
}

/// What `serve` runs for: `realtime serve`, or `realtime dev` (which also logs every change
/// and listens on loopback unless `LISTEN_ADDRESS` says otherwise).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Serve,
    Dev,
}

impl Mode {
    /// The listen address when `LISTEN_ADDRESS` is not set: every interface for a service,
    /// loopback for a developer's machine (a dev server prints its keys and must not be
    /// reachable from the network by accident).
    fn default_address(self) -> IpAddr {
        match self {
            Mode::Serve => IpAddr::from([0, 0, 0, 0]),
            Mode::Dev => IpAddr::from([127, 0, 0, 1]),
        }
    }
}

async fn bind(address: IpAddr, port: u16, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind((address, port))
        .await
        .with_context(|| format!("cannot listen on {address} port {port} ({what})"))?;
    tracing::info!(address = %listener.local_addr()?, "listening ({what})");
    Ok(listener)
}

async fn serve(config: Config, mode: Mode) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let shutdown = CancellationToken::new();
    let bus = LocalBus::new(4096);
    let address = config.server.listen_address.unwrap_or(mode.default_address());
    let listener = bind(address, config.server.port, "HTTP and WebSocket").await?;
    let metrics = match config.server.metrics_port {
        Some(port) => Some(bind(address, port, "metrics").await?),
        None => None,
    };
    if config.server.metrics_jwt_secret.is_none() {
        tracing::info!(
            "/metrics needs no token (set METRICS_JWT_SECRET to require one, or METRICS_PORT to serve it apart)"
        );
    }
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    if mode == Mode::Dev {
        tokio::spawn(log_changes_of(bus.clone()));
    }
    realtime::run_service(config, listener, metrics, bus, shutdown).await?;
    Ok(())
}

async fn dev(
    config_file: Option<PathBuf>,
    data_dir: PathBuf,
    pg_port: u16,
    fresh: bool,
    demo_sdk: PathBuf,
) -> anyhow::Result<()> {
    let mut config = load_config(config_file.as_deref())?;
    let publication = config
        .replication
        .publications
        .first()
        .cloned()
        .unwrap_or_else(|| "supabase_realtime".to_owned());
    // The embedded database only when none is given.
    let _postgres = match &config.database {
        Some(database) => {
            tracing::info!(database = %database, "using the configured database");
            // The demo creates a table of its own: only in the throwaway database.
            tracing::info!("no demo page at /demo/: it needs the local Postgres (DATABASE_URL is set)");
            None
        }
        None => {
            if fresh && data_dir.exists() {
                std::fs::remove_dir_all(&data_dir)
                    .with_context(|| format!("cannot delete {}", data_dir.display()))?;
            }
            let data_dir = std::path::absolute(&data_dir)?;
            let options = Options {
                data_dir: Some(data_dir),
                port: Some(pg_port),
                ..Options::default()
            };
            let postgres = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(options))
                .await?
                .context("cannot start the local Postgres")?;
            postgres
                .psql("postgres", DEV_ROLES)
                .context("cannot create the dev roles")?;
            let url = postgres.url("postgres");
            let database = DatabaseConfig::from_url(&url).map_err(anyhow::Error::msg)?;
            create_demo_table(&postgres, &database, &publication).await?;
            config.server.demo = Some(realtime::config::DemoConfig {
                sdk_dir: std::path::absolute(&demo_sdk)?,
            });
            println!(
                "Local Postgres (wal_level=logical) is running; data in {}",
                postgres.data_dir().display()
            );
            println!("  connect:  psql {url}");
            println!("  publish a table:  ALTER PUBLICATION {publication} ADD TABLE your_table;");
            println!("It stops when realtime exits (Ctrl-C).");
            config.database = Some(database);
            Some(postgres)
        }
    };
    if config.server.auth.jwt_secret.is_none() && config.server.auth.jwks.is_none() {
        // A dev-only secret, and keys signed with it, so a client can connect right away.
        let secret = format!("{:032x}", rand::random::<u128>());
        println!("JWT secret for this run: {secret}");
        println!("  anon key:          {}", dev_key(&secret, "anon")?);
        println!("  service_role key:  {}", dev_key(&secret, "service_role")?);
        config.server.auth.jwt_secret = Some(realtime::config::Secret::new(secret));
    }
    let host = match config.server.listen_address {
        None => "localhost".to_owned(),
        Some(address) if address.is_unspecified() => "localhost".to_owned(),
        Some(IpAddr::V6(address)) => format!("[{address}]"),
        Some(address) => address.to_string(),
    };
    println!(
        "WebSocket: ws://{host}:{}/socket/websocket?apikey=<key>&vsn=2.0.0",
        config.server.port
    );
    if config.server.demo.is_some() {
        println!("Demo: open http://{host}:{}/demo/", config.server.port);
    }
    let result = serve(config, Mode::Dev).await;
    // `_postgres` drops here: the local server stops.
    result
}

/// The roles Supabase projects have (see the file's comment).
const DEV_ROLES: &str = include_str!("dev_roles.sql");

/// The demo's table (`realtime::http::demo::setup_sql`), after the `realtime` migrations that
/// its policy needs (`auth.uid()`); the service runs them again at start, finding them done.
async fn create_demo_table(
    postgres: &EmbeddedPostgres,
    database: &DatabaseConfig,
    publication: &str,
) -> anyhow::Result<()> {
    let pool = realtime::db::connect(database)
        .await
        .context("cannot connect to the local Postgres")?;
    realtime::db::migrate(&pool)
        .await
        .context("cannot apply the migrations")?;
    pool.close().await;
    postgres
        .psql("postgres", &realtime::http::demo::setup_sql(publication))
        .with_context(|| format!("cannot create the demo table {}", realtime::http::demo::TABLE))?;
    Ok(())
}

/// An HS256 token for `role`, valid for a day: the keys `realtime dev` prints.
fn dev_key(secret: &str, role: &str) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = serde_json::json!({ "role": role, "iat": now, "exp": now + 86_400, "iss": "realtime-dev" });
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &key,
    )?)
}

/// Logs one line per change: table, kind and position, never row values.
async fn log_changes_of(bus: LocalBus) {
    let mut changes = bus.subscribe_transactions();
    loop {
        match changes.recv().await {
            Ok(transaction) => {
                if let Some(overflow) = &transaction.overflow {
                    tracing::info!(changes = overflow.changes, commit_lsn = %transaction.commit_lsn, "overflowed transaction");
                }
                for change in &transaction.changes {
                    tracing::info!(
                        table = %format!("{}.{}", change.table.schema, change.table.name),
                        kind = change.kind.as_str(),
                        position = %change.position,
                        "change"
                    );
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(skipped = n, "change log fell behind")
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn tail(config: Config) -> anyhow::Result<()> {
    let database = config
        .database
        .clone()
        .context("tail needs a database: set DATABASE_URL")?;
    let bus = LocalBus::new(65_536);
    let mut changes = bus.subscribe_transactions();
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let replication =
        realtime::replication::spawn(database, config.replication.clone(), bus, None, shutdown.clone());
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    loop {
        tokio::select! {
            received = changes.recv() => match received {
                Ok(transaction) => {
                    for change in &transaction.changes {
                        writeln!(stdout, "{}", change.to_json())?;
                    }
                    if let Some(overflow) = transaction.overflow_json() {
                        writeln!(stdout, "{overflow}")?;
                    }
                    stdout.flush()?;
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    anyhow::bail!("tail fell {n} transactions behind; its output is incomplete")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            _ = shutdown.cancelled() => break,
        }
    }
    drop(stdout);
    replication.await.context("the replication task panicked")??;
    Ok(())
}

/// SIGTERM or Ctrl-C starts a graceful shutdown.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
        _ = shutdown.cancelled() => return,
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}

/// Installs logging (and tracing when the `OTEL_*` variables ask for it).
fn install_telemetry() -> Result<realtime::telemetry::Telemetry, realtime::telemetry::TelemetryError> {
    use realtime::telemetry::LogFormat;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into())))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let format = if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        LogFormat::Json
    } else {
        LogFormat::Text
    };
    realtime::telemetry::install(filter, format, &process_env)
}
