//! The `realtime` binary: parses the command line, installs logging, and calls the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
    match cli.command {
        Command::Serve { config: _ } => Ok(()),
    }
}
