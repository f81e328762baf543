//! `chorus archive ...`: the compliance API from the command line, and
//! `chorus api-token new`. The CLI is an HTTPS client of a node's API, so
//! it authenticates with a token and every action lands in the audit trail
//! exactly as it would through the API. On a node, `--config` supplies the
//! URL and the certificate to trust; elsewhere give `--url` and `--ca`.

mod client;

use anyhow::{Context as _, bail};
use chorus_core::config::Config;
use clap::{Args, Subcommand};
use client::{Client, encode};
use std::path::PathBuf;

/// Where the API is and who calls it.
#[derive(Args, Clone)]
pub struct ApiArgs {
    /// The node's HTTP base URL (default: from the configuration's http.listen).
    #[arg(long, env = "CHORUS_API_URL")]
    url: Option<String>,
    /// The API token (every action but verify-export needs one).
    #[arg(long, env = "CHORUS_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM certificate(s) to trust (default: the node's own certificate).
    #[arg(long, env = "CHORUS_API_CA")]
    ca: Option<PathBuf>,
}

/// Filters shared by search and export.
#[derive(Args, Clone, Default)]
pub struct SearchArgs {
    /// Bare JIDs that all took part (comma-separated).
    #[arg(long)]
    participants: Option<String>,
    /// The room's bare JID.
    #[arg(long)]
    room: Option<String>,
    /// Words to find (all must occur).
    #[arg(long, short)]
    query: Option<String>,
    /// From (RFC 3339, e.g. 2026-11-01T00:00:00Z).
    #[arg(long)]
    start: Option<String>,
    /// Until (RFC 3339).
    #[arg(long)]
    end: Option<String>,
}

/// `chorus archive` actions.
#[derive(Subcommand)]
pub enum ArchiveAction {
    /// Full-text search with paging.
    Search {
        #[command(flatten)]
        filter: SearchArgs,
        /// Results to skip.
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// Results per page.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// A conversation between two users, or in a room.
    Conversation {
        /// One participant.
        #[arg(long)]
        user: Option<String>,
        /// The other participant.
        #[arg(long)]
        with: Option<String>,
        /// Or a room.
        #[arg(long)]
        room: Option<String>,
        /// From (RFC 3339).
        #[arg(long)]
        start: Option<String>,
        /// Until (RFC 3339).
        #[arg(long)]
        end: Option<String>,
        /// Continue after this archive id.
        #[arg(long)]
        after: Option<String>,
        /// Records per page.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Legal holds.
    Hold {
        #[command(subcommand)]
        action: HoldAction,
    },
    /// Show the retention policy, or replace it.
    Retention {
        /// Default retention in days (omit to keep forever).
        #[arg(long)]
        default_days: Option<u32>,
        /// Per-user retention: JID=DAYS (repeatable).
        #[arg(long = "user")]
        users: Vec<String>,
        /// Per-room retention: JID=DAYS (repeatable).
        #[arg(long = "room")]
        rooms: Vec<String>,
        /// Replace the policy with the one given (otherwise only show it);
        /// a policy that shortens a period is only proposed.
        #[arg(long)]
        set: bool,
        /// Approve a proposed change (a second, different admin).
        #[arg(long, value_name = "CHANGE", conflicts_with_all = ["set", "cancel"])]
        approve: Option<String>,
        /// Withdraw a proposed change.
        #[arg(long, value_name = "CHANGE", conflicts_with = "set")]
        cancel: Option<String>,
    },
    /// Run retention now (admin).
    Purge,
    /// Export a search or a hold: a tar with the records (JSON Lines), their
    /// chain links, a rendering (.eml transcripts or Actiance XML) and a
    /// manifest; check it with verify-export.
    Export {
        #[command(flatten)]
        filter: SearchArgs,
        /// Export what this hold covers instead of a search.
        #[arg(long)]
        hold: Option<String>,
        /// jsonl, eml or actiance.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Write here (default: the name the server suggests).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// The audit trail.
    Audit {
        /// From this sequence number.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Entries to show.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// This node's record count and digest.
    Digest,
    /// Check a downloaded export offline (no node, no token needed): every
    /// file against the manifest, every record against its chain link.
    /// Exits non-zero if anything was changed.
    VerifyExport {
        /// The export (.tar).
        file: PathBuf,
    },
    /// Recompute the hash chain on this node (and on every `--site`),
    /// compare heads across sites; exits non-zero on any problem.
    Verify {
        /// The API URL of another site to verify too (repeatable; same
        /// token and CA).
        #[arg(long = "site", value_name = "URL")]
        sites: Vec<String>,
    },
    /// The archive group's members (admin).
    Members {
        #[command(subcommand)]
        action: Option<MemberAction>,
    },
}

/// `chorus archive hold` actions.
#[derive(Subcommand)]
pub enum HoldAction {
    /// List holds.
    List,
    /// Place a hold.
    Create {
        /// Why (case reference).
        #[arg(long)]
        reason: String,
        /// Users covered (repeatable).
        #[arg(long = "user")]
        users: Vec<String>,
        /// Rooms covered (repeatable).
        #[arg(long = "room")]
        rooms: Vec<String>,
        /// From (RFC 3339).
        #[arg(long)]
        start: Option<String>,
        /// Until (RFC 3339).
        #[arg(long)]
        end: Option<String>,
        /// The hold's id (generated if absent).
        #[arg(long)]
        id: Option<String>,
    },
    /// Release a hold.
    Release {
        /// The hold's id.
        id: String,
    },
}

/// `chorus archive members` actions.
#[derive(Subcommand)]
pub enum MemberAction {
    /// Add a configured node.
    Add {
        /// Its node id.
        id: String,
        /// Add it as a learner rather than a voter.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a node.
    Remove {
        /// Its node id.
        id: String,
    },
}

/// `chorus api-token` actions.
#[derive(Subcommand)]
pub enum TokenAction {
    /// Generate a token and print it with its `[[api.tokens]]` entry.
    New {
        /// Who holds it.
        #[arg(long)]
        name: String,
        /// admin or compliance.
        #[arg(long)]
        role: String,
    },
}

/// Runs `chorus health`: asks the node's `/readyz` (or `/healthz` with
/// `live`) over its own HTTPS listener; fails unless it answers 200. For
/// container health checks, where no curl exists.
pub fn health(config: &Config, live: bool) -> anyhow::Result<()> {
    let api = ApiArgs {
        url: None,
        token: Some(String::new()),
        ca: None,
    };
    let client = Client::new(Some(config), api)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let path = if live { "/healthz" } else { "/readyz" };
    let (body, _) = rt.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.fetch("GET", path, vec![], None),
        )
        .await
        .context("the node did not answer within 5 s")?
    })?;
    println!("{}", String::from_utf8_lossy(&body).trim());
    Ok(())
}

/// Runs `chorus api-token`.
pub fn token(action: TokenAction) -> anyhow::Result<()> {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    let TokenAction::New { name, role } = action;
    if !matches!(role.as_str(), "admin" | "compliance") {
        bail!("role must be admin or compliance");
    }
    let secret: [u8; 32] = rand::random();
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let digest: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("token: {token}");
    println!();
    println!("[[api.tokens]]\nname = {name:?}\nrole = {role:?}\nsha256 = \"{digest}\"");
    Ok(())
}

fn search_params(f: &SearchArgs) -> Vec<(&'static str, String)> {
    let mut p = Vec::new();
    for (k, v) in [
        ("participants", &f.participants),
        ("room", &f.room),
        ("q", &f.query),
        ("start", &f.start),
        ("end", &f.end),
    ] {
        if let Some(v) = v {
            p.push((k, v.clone()));
        }
    }
    p
}

fn days_map(items: &[String]) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut m = serde_json::Map::new();
    for i in items {
        let (jid, days) = i
            .split_once('=')
            .with_context(|| format!("{i:?}: use JID=DAYS"))?;
        let days: u32 = days
            .parse()
            .with_context(|| format!("{i:?}: DAYS must be a number"))?;
        m.insert(jid.to_owned(), days.into());
    }
    Ok(m)
}

/// Runs `chorus archive`.
pub fn run(config: Option<&Config>, api: ApiArgs, action: ArchiveAction) -> anyhow::Result<()> {
    if let ArchiveAction::VerifyExport { file } = &action {
        return verify_export(file);
    }
    let api_args = api.clone();
    let client = Client::new(config, api)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let get =
            |path: &'static str, params: Vec<(&'static str, String)>| client.call("GET", path, params, None);
        let out = match action {
            ArchiveAction::Search {
                filter,
                offset,
                limit,
            } => {
                let mut p = search_params(&filter);
                p.push(("offset", offset.to_string()));
                p.push(("limit", limit.to_string()));
                get("/api/v1/archive/search", p).await?
            }
            ArchiveAction::Conversation {
                user,
                with,
                room,
                start,
                end,
                after,
                limit,
            } => {
                let mut p: Vec<(&str, String)> = Vec::new();
                for (k, v) in [
                    ("user", user),
                    ("with", with),
                    ("room", room),
                    ("start", start),
                    ("end", end),
                    ("after", after),
                ] {
                    if let Some(v) = v {
                        p.push((k, v));
                    }
                }
                p.push(("limit", limit.to_string()));
                get("/api/v1/archive/conversation", p).await?
            }
            ArchiveAction::Hold {
                action: HoldAction::List,
            } => get("/api/v1/archive/holds", vec![]).await?,
            ArchiveAction::Hold {
                action:
                    HoldAction::Create {
                        reason,
                        users,
                        rooms,
                        start,
                        end,
                        id,
                    },
            } => {
                let ms = |v: &Option<String>| -> anyhow::Result<Option<u64>> {
                    v.as_deref()
                        .map(|s| {
                            chorus_core::time::parse_xep0082(s)
                                .with_context(|| format!("{s:?} is not RFC 3339"))
                        })
                        .transpose()
                };
                let body = serde_json::json!({
                    "id": id, "reason": reason, "users": users, "rooms": rooms,
                    "start_ms": ms(&start)?, "end_ms": ms(&end)?,
                });
                client
                    .call("POST", "/api/v1/archive/holds", vec![], Some(body.to_string()))
                    .await?
            }
            ArchiveAction::Hold {
                action: HoldAction::Release { id },
            } => {
                client
                    .call(
                        "POST",
                        &format!("/api/v1/archive/holds/{}/release", encode(&id)),
                        vec![],
                        None,
                    )
                    .await?
            }
            ArchiveAction::Retention {
                approve: Some(id), ..
            } => {
                let path = format!("/api/v1/archive/retention/changes/{}/approve", encode(&id));
                client.call("POST", &path, vec![], None).await?
            }
            ArchiveAction::Retention { cancel: Some(id), .. } => {
                let path = format!("/api/v1/archive/retention/changes/{}/cancel", encode(&id));
                client.call("POST", &path, vec![], None).await?
            }
            ArchiveAction::Retention {
                default_days,
                users,
                rooms,
                set,
                ..
            } => {
                if set {
                    let body = serde_json::json!({
                        "default_days": default_days, "users": days_map(&users)?, "rooms": days_map(&rooms)?,
                    });
                    client
                        .call("PUT", "/api/v1/archive/retention", vec![], Some(body.to_string()))
                        .await?
                } else {
                    get("/api/v1/archive/retention", vec![]).await?
                }
            }
            ArchiveAction::Purge => {
                client
                    .call("POST", "/api/v1/archive/retention/run", vec![], None)
                    .await?
            }
            ArchiveAction::Export {
                filter,
                hold,
                format,
                out,
            } => {
                let mut p = search_params(&filter);
                if let Some(h) = hold {
                    p.push(("hold", h));
                }
                p.push(("format", format));
                let (path, bytes, manifest) = client.download("/api/v1/archive/export", p, out).await?;
                format!(
                    "wrote {bytes} bytes to {} (manifest SHA-256 {manifest}); check it with \
                     `chorus archive verify-export {}`",
                    path.display(),
                    path.display()
                )
            }
            ArchiveAction::Audit { from, limit } => {
                get(
                    "/api/v1/archive/audit",
                    vec![("from", from.to_string()), ("limit", limit.to_string())],
                )
                .await?
            }
            ArchiveAction::Digest => get("/api/v1/archive/digest", vec![]).await?,
            ArchiveAction::Verify { sites } => return verify(&client, config, &api_args, sites).await,
            ArchiveAction::VerifyExport { .. } => unreachable!("handled before connecting"),
            ArchiveAction::Members { action: None } => get("/api/v1/archive/members", vec![]).await?,
            ArchiveAction::Members {
                action: Some(MemberAction::Add { id, learner }),
            } => {
                let role = if learner { "learner" } else { "voter" };
                client
                    .call(
                        "POST",
                        &format!("/api/v1/archive/members/{}", encode(&id)),
                        vec![("role", role.into())],
                        None,
                    )
                    .await?
            }
            ArchiveAction::Members {
                action: Some(MemberAction::Remove { id }),
            } => {
                client
                    .call(
                        "DELETE",
                        &format!("/api/v1/archive/members/{}", encode(&id)),
                        vec![],
                        None,
                    )
                    .await?
            }
        };
        println!("{out}");
        Ok(())
    })
}

/// `chorus archive verify`: verify on this node and every `--site`, print
/// each result and whether the heads agree; fail on any problem.
async fn verify(
    client: &Client,
    config: Option<&Config>,
    api: &ApiArgs,
    sites: Vec<String>,
) -> anyhow::Result<()> {
    let mut results = vec![verify_one(client).await?];
    for url in sites {
        let other = Client::new(
            config,
            ApiArgs {
                url: Some(url.clone()),
                ..api.clone()
            },
        )?;
        results.push(
            verify_one(&other)
                .await
                .with_context(|| format!("verify at {url}"))?,
        );
    }
    // Every pair must agree at the shorter chain's last link.
    let heads: Vec<(u64, String)> = results
        .iter()
        .map(|r| {
            (
                r["computed"]["length"].as_u64().unwrap_or(0),
                r["computed"]["hash"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let ok = results.iter().all(|r| r["ok"] == true);
    let out = serde_json::json!({ "ok": ok, "nodes": results, "heads": heads });
    println!("{}", serde_json::to_string_pretty(&out)?);
    if !ok {
        bail!("the archive did not verify: see the problems above");
    }
    Ok(())
}

async fn verify_one(client: &Client) -> anyhow::Result<serde_json::Value> {
    let text = client.call("GET", "/api/v1/archive/verify", vec![], None).await?;
    Ok(serde_json::from_str(&text)?)
}

/// `chorus archive verify-export FILE`: prints the report; fails unless
/// the export is intact.
fn verify_export(file: &std::path::Path) -> anyhow::Result<()> {
    let report = chorus_archive::package::verify::verify_file(file)
        .with_context(|| format!("read the export {}", file.display()))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !report.ok {
        bail!(
            "{} does not verify: {} problem(s) above",
            file.display(),
            report.problems.len()
        );
    }
    Ok(())
}
