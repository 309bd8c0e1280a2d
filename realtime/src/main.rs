//! The `realtime` binary: parses the command line, installs logging, and calls the library.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use realtime::bus::LocalBus;
use realtime::config::{Config, process_env};

#[derive(Parser)]
#[command(name = "realtime", version, about = "Realtime service for Postgres")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service against DATABASE_URL (or DB_HOST, DB_PORT, ...).
    Serve {
        /// TOML configuration file; environment variables win over it.
        #[arg(long, env = "REALTIME_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    install_tracing();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve { config } => runtime.block_on(serve(load_config(config.as_deref())?)),
    }
}

fn load_config(file: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Config::load(file, &process_env).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
        anyhow::anyhow!("invalid configuration:\n{}", list.join("\n"))
    })
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let shutdown = CancellationToken::new();
    let bus = LocalBus::new(4096);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", config.server.port))
        .await
        .with_context(|| format!("cannot listen on port {}", config.server.port))?;
    tracing::info!(address = %listener.local_addr()?, "listening");
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    realtime::server::run(config, listener, bus, shutdown).await?;
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
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}

fn install_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| EnvFilter::try_new(std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into())))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
