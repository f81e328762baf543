//! The `chorus` binary: a thin top that parses the command line and hands
//! over to `serve`, `users` or `demo`.

mod api;
mod archive_cli;
mod cluster_cli;
mod cluster_probe;
mod control;
mod demo;
mod dev;
mod gauges;
mod metrics_help;
mod metrics_recorder;
mod private_fs;
mod provision;
mod recent_log;
mod serve;
mod shutdown_watch;
mod telemetry;
mod tls;
mod users;

use anyhow::Context as _;
use chorus_core::config::Config;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Chorus: an enterprise XMPP server.
#[derive(Parser)]
#[command(name = "chorus", version, about)]
struct Cli {
    /// The TOML configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "CHORUS_CONFIG",
        default_value = "chorus.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node.
    Serve,
    /// Manage accounts (works whether the node runs or not).
    User {
        #[command(subcommand)]
        action: users::UserAction,
    },
    /// Create certificates for mutual TLS between nodes.
    Cert {
        #[command(subcommand)]
        action: cluster_cli::CertAction,
    },
    /// Inspect the cluster this node belongs to.
    Cluster {
        #[command(subcommand)]
        action: cluster_cli::ClusterAction,
    },
    /// Run a local three-site cluster (one node per site) with demo accounts.
    Dev {
        /// Where the cluster keeps its data, configs and certificates.
        #[arg(long, default_value = "./dev-data")]
        data_dir: PathBuf,
        /// First port; each site uses a block of ten above it.
        #[arg(long, default_value_t = 15200)]
        base_port: u16,
    },
    /// The compliance archive: search, conversations, holds, retention,
    /// exports, audit trail, digest and membership (through the node's API).
    Archive {
        #[command(flatten)]
        api: archive_cli::ApiArgs,
        #[command(subcommand)]
        action: archive_cli::ArchiveAction,
    },
    /// Check that this node is ready (or, with --live, alive) through its
    /// HTTPS endpoint; exits non-zero otherwise (for container health checks).
    Health {
        /// Check liveness (/healthz) instead of readiness (/readyz).
        #[arg(long)]
        live: bool,
    },
    /// Create API tokens.
    ApiToken {
        #[command(subcommand)]
        action: archive_cli::TokenAction,
    },
    /// Run a single local node with demo accounts (alice, bob, carol).
    Demo {
        /// Where the demo keeps its data and configuration.
        #[arg(long, default_value = "./dev-data")]
        data_dir: PathBuf,
    },
}

/// Reads and validates the configuration, naming file, key and reason.
pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read configuration file {}", path.display()))?;
    Config::parse(&text, &path.display().to_string(), std::env::vars()).map_err(|e| anyhow::anyhow!("{e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve => load_config(&cli.config).and_then(serve::run),
        Command::User { action } => load_config(&cli.config).and_then(|c| users::run(&c, action)),
        Command::Demo { data_dir } => demo::run(&data_dir),
        Command::Cert { action } => cluster_cli::cert(action),
        Command::Cluster {
            action: cluster_cli::ClusterAction::Probe(a),
        } => cluster_probe::run(a),
        Command::Cluster { action } => {
            load_config(&cli.config).and_then(|c| cluster_cli::cluster(&c, action))
        }
        Command::Dev { data_dir, base_port } => dev::run(&data_dir, base_port),
        Command::Archive { api, action } => {
            // The configuration is optional here: it only supplies defaults.
            let config = cli.config.exists().then(|| load_config(&cli.config)).transpose();
            config.and_then(|c| archive_cli::run(c.as_ref(), api, action))
        }
        Command::ApiToken { action } => archive_cli::token(action),
        Command::Health { live } => load_config(&cli.config).and_then(|c| archive_cli::health(&c, live)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
