//! `chorus-bench`: a load generator for XMPP servers. It speaks standard
//! XMPP (STARTTLS, SCRAM, XEP-0077, XEP-0045, XEP-0313), so the same
//! scenarios run against Chorus, Prosody and ejabberd; each prints a line
//! for people and appends a JSON outcome for `chorus-bench table`.

mod client;
mod outcome;
mod proxy;
mod scenarios;
mod stats;

use clap::{Args, Parser, Subcommand};
use client::Target;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "chorus-bench", version, about = "Load generator for XMPP servers")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The server under test.
#[derive(Args, Clone)]
struct ServerArgs {
    /// STARTTLS client listener, host:port.
    #[arg(long, default_value = "127.0.0.1:5222")]
    addr: String,
    /// The XMPP domain the server serves.
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// PID of the server process, to sample its memory and CPU.
    #[arg(long)]
    pid: Option<u32>,
    /// Name of the server in results ("chorus", "prosody", "ejabberd").
    #[arg(long, default_value = "server")]
    label: String,
    /// Append the outcome as one JSON line to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Account names are PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// Password of every bench account.
    #[arg(long, default_value = "bench-password-1")]
    password: String,
    /// Connections opened at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

impl ServerArgs {
    fn target(&self) -> Target {
        Target {
            addr: self.addr.clone(),
            domain: self.domain.clone(),
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Create bench accounts with in-band registration (existing ones are kept).
    Provision {
        #[command(flatten)]
        server: ServerArgs,
        /// Accounts to create.
        #[arg(long, default_value_t = 1000)]
        users: usize,
    },
    /// Login storm: TLS + SCRAM + bind per account, as fast as the server takes them.
    Login {
        #[command(flatten)]
        server: ServerArgs,
        /// Accounts that log in.
        #[arg(long, default_value_t = 1000)]
        users: usize,
    },
    /// Idle sessions held open: server memory per authenticated TLS session.
    Idle {
        #[command(flatten)]
        server: ServerArgs,
        /// Sessions to hold (each uses one file descriptor here and on the server).
        #[arg(long, default_value_t = 5000)]
        sessions: usize,
        /// Seconds to let the server settle before measuring.
        #[arg(long, default_value_t = 5)]
        settle_secs: u64,
        /// The scenario's name in the results.
        #[arg(long, default_value = "idle")]
        name: String,
    },
    /// One-to-one messages at increasing rates until latency breaks.
    One2one(scenarios::one2one::Opts),
    /// Presence updates fanned out to rosters of CONTACTS contacts.
    Presence(scenarios::presence::Opts),
    /// Groupchat messages fanned out to the occupants of rooms.
    Room(scenarios::room::Opts),
    /// MAM (XEP-0313) query latency on a filled archive.
    Mam(scenarios::mam::Opts),
    /// A TCP proxy adding one-way latency and jitter (WAN emulation).
    Proxy(proxy::Opts),
    /// Prints the comparison table from JSON outcome files.
    Table {
        /// Files of JSON lines written with --out.
        files: Vec<PathBuf>,
        /// The server the ratios are computed for.
        #[arg(long, default_value = "chorus")]
        ours: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Provision { server, users } => {
                let o = scenarios::provision(&server, users).await?;
                outcome::emit(&server, o)
            }
            Cmd::Login { server, users } => {
                let o = scenarios::login::run(&server, users).await?;
                outcome::emit(&server, o)
            }
            Cmd::Idle {
                server,
                sessions,
                settle_secs,
                name,
            } => {
                let o = scenarios::idle::run(&server, sessions, settle_secs, &name).await?;
                outcome::emit(&server, o)
            }
            Cmd::One2one(opts) => {
                let o = scenarios::one2one::run(&opts).await?;
                outcome::emit(&opts.server, o)
            }
            Cmd::Presence(opts) => {
                let o = scenarios::presence::run(&opts).await?;
                outcome::emit(&opts.server, o)
            }
            Cmd::Room(opts) => {
                let o = scenarios::room::run(&opts).await?;
                outcome::emit(&opts.server, o)
            }
            Cmd::Mam(opts) => {
                let o = scenarios::mam::run(&opts).await?;
                outcome::emit(&opts.server, o)
            }
            Cmd::Proxy(opts) => proxy::run(opts).await,
            Cmd::Table { files, ours } => {
                print!("{}", outcome::table(&files, &ours)?);
                Ok(())
            }
        }
    })
}
