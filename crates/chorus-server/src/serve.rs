//! `chorus serve`: wires the store, router and XMPP context together,
//! starts the listeners and shuts down in order on SIGTERM or Ctrl-C:
//! stop accepting, close sessions with `system-shutdown`, flush storage.

use crate::control;
use anyhow::Context as _;
use chorus_admin::HttpState;
use chorus_cluster::node::{Cluster, ClusterRouter};
use chorus_core::config::Config;
use chorus_store::RocksStore;
use chorus_xmpp::context::Context;
use chorus_xmpp::router::{LocalRouter, Router};
use chorus_xmpp::runtime::{ConnectionLimiter, serve_connection};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Time sessions get to close after the shutdown signal.
const SHUTDOWN_DRAIN_SECS: u64 = 10;

/// Runs the node until a signal arrives.
pub fn run(config: Config) -> anyhow::Result<()> {
    // The main thread runs `serve` itself (opening and flushing the
    // stores); the runtime's threads turn the counters off as they start.
    chorus_store::quiet_perf_counters();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(chorus_store::quiet_perf_counters)
        .build()
        .context("start runtime")?;
    rt.block_on(async {
        let _telemetry = crate::telemetry::init(&config)?;
        serve(config).await
    })
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let data = config.server.data_dir.clone();
    crate::private_fs::private_dir(&data)?;
    let metrics = crate::metrics_recorder::install()?;
    crate::metrics_help::describe();
    let store = Arc::new(RocksStore::open(&data.join("db"), config.node_tag())?);
    // Sessions of this node's previous run ended with it: so did their
    // room occupancy.
    let stale = chorus_xmpp::muc::forget_node_occupants(&*store, &config.cluster.node_id);
    if stale > 0 {
        tracing::info!(entries = stale, "removed room occupants left by the previous run");
    }
    let (tls, end_point) = crate::tls::acceptor(&config)?;
    let clustered = !config.cluster.peers.is_empty();
    let cluster = if clustered {
        let incarnation = store.next_incarnation().context("bump incarnation")?;
        Some(Cluster::new(&config, store.clone(), incarnation))
    } else {
        None
    };
    let router: Arc<dyn Router> = match &cluster {
        Some(c) => Arc::new(ClusterRouter(c.clone())),
        None => Arc::new(LocalRouter::new()),
    };
    let ctls = match &cluster {
        Some(_) => {
            Some(chorus_cluster::tls::ClusterTls::load(&config.cluster).map_err(|e| anyhow::anyhow!(e))?)
        }
        None => None,
    };
    let net = match &ctls {
        Some(t) => chorus_cluster::raft_net::archive_net(&config.cluster.peers, t.clone()),
        None => chorus_archive::raft::ArchiveNet::alone(),
    };
    let archive = chorus_archive::runtime::start(&config, net).await?;
    let ctx = Arc::new(Context::new(
        config.clone(),
        store.clone(),
        router,
        archive.archive.clone(),
    ));
    if let Some(h) = end_point {
        let _ = ctx.tls_server_end_point.set(h);
    }
    let _ = ctx.turn_secrets.set(turn_secrets(&config)?);
    let blobs = Arc::new(chorus_store::FileBlobs::open(&data.join("files")).context("open the file store")?);
    let (cluster_stop_tx, cluster_stop_rx) = watch::channel(false);
    let mut cluster_tasks = JoinSet::new();
    if let (Some(c), Some(ctls)) = (&cluster, ctls) {
        c.set_context(ctx.clone());
        let sync = chorus_cluster::files::FileSync::new(
            blobs.clone(),
            ctls.clone(),
            &config.cluster.peers,
            config.upload.file_bytes_max,
        );
        let _ = c.files.set(Arc::new(sync));
        if let Some(r) = &archive.raft {
            let _ = c.raft.set(r.clone());
        }
        if let Some(sm) = &archive.sm {
            let _ = c.archive_sm.set(sm.clone());
            // A member an operator removes loses cluster access at once.
            let weak = Arc::downgrade(c);
            sm.on_removed_members(Box::new(move |ids| {
                if let Some(c) = weak.upgrade() {
                    c.access.set_removed(ids);
                }
            }));
        }
        let listen = config
            .cluster
            .listen
            .context("cluster.listen is required with peers")?;
        cluster_tasks = chorus_cluster::start(
            c.clone(),
            ctls,
            listen,
            Duration::from_millis(config.cluster.lease_ms),
            Duration::from_millis(config.cluster.heartbeat_ms),
            cluster_stop_rx,
        )
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    }
    let gauges_raft = archive.raft.clone().zip(archive.sm.clone());
    tokio::spawn(crate::gauges::run(
        cluster.clone(),
        gauges_raft,
        cluster_stop_tx.subscribe(),
    ));
    let limiter = Arc::new(ConnectionLimiter::new(&config.limits));
    let (stop_tx, stop_rx) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();

    let sock = control::socket_path(&data);
    let _ = std::fs::remove_file(&sock);
    let control_listener =
        tokio::net::UnixListener::bind(&sock).with_context(|| format!("bind {}", sock.display()))?;
    // Bound inside the 0700 data directory, so nobody else can reach it even
    // before it is 0600; each caller's uid is checked as well.
    std::fs::set_permissions(
        &sock,
        std::os::unix::fs::PermissionsExt::from_mode(crate::private_fs::PRIVATE_FILE_MODE),
    )?;
    let control_task = tokio::spawn(control::serve(
        control_listener,
        store.clone(),
        crate::users::Realm::of(&config),
    ));

    for (addr, direct) in [
        (config.c2s.starttls_listen, false),
        (config.c2s.direct_tls_listen, true),
    ] {
        let Some(addr) = addr else { continue };
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen on {addr}"))?;
        tracing::info!(%addr, direct_tls = direct, "c2s listener up");
        tasks.spawn(accept_loop(
            l,
            direct,
            ctx.clone(),
            tls.clone(),
            limiter.clone(),
            stop_rx.clone(),
        ));
    }
    // Sessions an administrator revoked (disabled, or ended from any site).
    tasks.spawn(chorus_xmpp::revoke::run(ctx.clone(), stop_rx.clone()));
    // Shared roster groups (directory and configured): pushes on change.
    tasks.spawn(chorus_xmpp::shared::run(ctx.clone(), stop_rx.clone()));
    let directory = start_directory(&config, &ctx, store.clone(), &mut tasks, stop_rx.clone())?;
    if let Some(addr) = config.components.listen {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen on {addr}"))?;
        tracing::info!(%addr, tls = config.components.tls, "component listener up (XEP-0114)");
        let acceptor = config.components.tls.then(|| tls.clone());
        let secrets = Arc::new(component_secrets(&config)?);
        tasks.spawn(component_loop(l, acceptor, ctx.clone(), secrets, stop_rx.clone()));
    }
    if let Some(addr) = config.http.listen {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen on {addr}"))?;
        tracing::info!(%addr, tls = config.http.tls, "HTTP listener up");
        let cluster_status: Option<chorus_admin::StatusFn> = cluster.clone().map(|c| {
            let f: chorus_admin::StatusFn =
                Arc::new(move || crate::cluster_cli::status_json(&chorus_cluster::service::status(&c)));
            f
        });
        let directory_status: Option<chorus_admin::StatusFn> = directory.clone().map(|d| {
            let f: chorus_admin::StatusFn =
                Arc::new(move || serde_json::to_value(d.status()).unwrap_or_default());
            f
        });
        let mut api = crate::api::routes(archive.compliance.clone(), config.api.tokens.clone());
        if config.console.enabled {
            let render = metrics.clone();
            api = api.merge(chorus_console::routes(chorus_console::Deps {
                ctx: ctx.clone(),
                compliance: archive.compliance.clone(),
                tokens: config.api.tokens.clone(),
                cluster_status: cluster_status.clone(),
                archive_status: archive.status.clone(),
                metrics: Arc::new(move || render.render()),
                recent_errors: Some(Arc::new(crate::recent_log::lines)),
                directory_status: directory_status.clone(),
            }));
        }
        let state = HttpState {
            api: Some(api),
            archive_status: archive.status.clone(),
            directory_status,
            cluster_status,
            ctx: ctx.clone(),
            metrics,
            ready: ready.clone(),
            shutdown: stop_rx.clone(),
            limiter: limiter.clone(),
            files: Some(chorus_admin::FilesHttp {
                blobs: blobs.clone(),
                fetch: cluster.as_ref().and_then(|c| c.files.get().cloned()).map(|f| {
                    let fetch: chorus_admin::FetchFn = Arc::new(move |sha: String| {
                        let f = f.clone();
                        Box::pin(async move { f.fetch(&sha).await })
                    });
                    fetch
                }),
            }),
        };
        let http_tls = config.http.tls.then(|| tls.clone());
        tasks.spawn(async move {
            if let Err(e) = chorus_admin::serve(l, http_tls, state).await {
                tracing::error!(error = %e, "HTTP listener failed");
            }
        });
    }
    ready.store(true, Ordering::Relaxed);
    tracing::info!(domain = %config.server.domain, "chorus node ready");

    wait_for_signal().await;
    tracing::info!("shutting down: closing listeners and sessions");
    let watch = crate::shutdown_watch::ShutdownWatch::start();
    ready.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(Duration::from_secs(SHUTDOWN_DRAIN_SECS), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("some connections did not close in time");
    }
    watch.at("finishing parked sessions");
    for p in ctx.parked.take_all() {
        chorus_xmpp::session::finish_parked(p);
    }
    watch.at("handing the archive over");
    archive.shutdown().await;
    // Peers hear about our sessions ending before the links close.
    watch.at("closing cluster links");
    let _ = cluster_stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while cluster_tasks.join_next().await.is_some() {}
    })
    .await;
    control_task.abort();
    let _ = std::fs::remove_file(&sock);
    watch.at("flushing storage");
    store.flush().context("flush storage")?;
    watch.at("done");
    tracing::info!("shutdown complete");
    Ok(())
}

/// Starts the enterprise directory's synchronization when `[directory]`
/// names a server, and makes it check its people's logins.
fn start_directory(
    config: &Config,
    ctx: &Arc<Context>,
    store: Arc<RocksStore>,
    tasks: &mut JoinSet<()>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<Arc<chorus_directory::Directory>>> {
    if config.directory.url.is_none() {
        return Ok(None);
    }
    let client = chorus_directory::ldap::Client::new(&config.directory).map_err(|e| anyhow::anyhow!(e))?;
    let grace = Duration::from_secs(config.directory.login_grace_hours.saturating_mul(3600));
    let dir = Arc::new(chorus_directory::Directory::new(client, grace));
    let _ = ctx.people.set(dir.clone());
    let weak = Arc::downgrade(ctx);
    dir.on_groups_changed(Box::new(move || {
        if let Some(ctx) = weak.upgrade() {
            tokio::task::spawn_blocking(move || chorus_xmpp::shared::refresh(&ctx));
        }
    }));
    tasks.spawn(chorus_directory::sync::run(
        dir.clone(),
        store,
        config.c2s.scram_iterations,
        Duration::from_secs(config.directory.sync_interval_secs),
        stop,
    ));
    tracing::info!(url = ?config.directory.url, "enterprise directory configured");
    Ok(Some(dir))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn accept_loop(
    listener: TcpListener,
    direct_tls: bool,
    ctx: Arc<Context>,
    tls: TlsAcceptor,
    limiter: Arc<ConnectionLimiter>,
    mut stop: watch::Receiver<bool>,
) {
    let mut sessions = JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        // Never waits for a slot: a connection over a bound is closed at
        // once (counted in chorus_connections_refused_total{reason}), so a
        // flood cannot stall the accept loop for those who may connect.
        let guard = match limiter.admit(peer.ip()) {
            Ok(g) => g,
            Err(why) => {
                tracing::debug!(%peer, reason = why.label(), "connection refused");
                drop(tcp);
                continue;
            }
        };
        let (ctx, tls, stop) = (ctx.clone(), tls.clone(), stop.clone());
        sessions.spawn(serve_connection(ctx, tls, tcp, peer, direct_tls, stop, guard));
        while sessions.try_join_next().is_some() {}
    }
    drop(listener);
    while sessions.join_next().await.is_some() {}
}

/// Reads the TURN shared secrets of `[[extdisco.services]]` (one per
/// entry, `None` without `secret_file`); an unreadable or empty file stops
/// the node with its name.
fn turn_secrets(config: &Config) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
    config
        .extdisco
        .services
        .iter()
        .map(|s| {
            let Some(path) = &s.secret_file else {
                return Ok(None);
            };
            let raw = std::fs::read(path)
                .with_context(|| format!("extdisco.services: read the TURN secret {}", path.display()))?;
            let secret = raw.trim_ascii().to_vec();
            anyhow::ensure!(
                !secret.is_empty(),
                "extdisco.services: {} is empty",
                path.display()
            );
            Ok(Some(secret))
        })
        .collect()
}

/// Component connections served at once (they are few and trusted).
const COMPONENT_CONNECTIONS_MAX: usize = 64;
/// Component connections from one address at once, so one address that
/// reaches the listener cannot hold every slot in the handshake.
const COMPONENT_CONNECTIONS_PER_IP_MAX: usize = 8;

/// Accepts XEP-0114 component connections until shutdown.
async fn component_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    ctx: Arc<Context>,
    secrets: Arc<chorus_xmpp::component::Secrets>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(COMPONENT_CONNECTIONS_MAX));
    let per_ip: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>> = Arc::default();
    let mut conns = JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(_) => continue,
            },
            _ = stop.changed() => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(tcp);
            continue;
        };
        let Some(per_ip) = PerIp::enter(&per_ip, peer.ip()) else {
            tracing::debug!(%peer, "component connection refused: too many from this address");
            drop(tcp);
            continue;
        };
        let (ctx, secrets, stop, tls) = (ctx.clone(), secrets.clone(), stop.clone(), tls.clone());
        conns.spawn(async move {
            let (_permit, _per_ip) = (permit, per_ip);
            let _ = tcp.set_nodelay(true);
            let handshake = Duration::from_secs(ctx.config.limits.handshake_timeout_secs);
            match tls {
                Some(a) => match tokio::time::timeout(handshake, a.accept(tcp)).await {
                    Ok(Ok(s)) => chorus_xmpp::component::serve(ctx, secrets, s, peer, stop).await,
                    _ => tracing::debug!(%peer, "component TLS handshake failed"),
                },
                None => chorus_xmpp::component::serve(ctx, secrets, tcp, peer, stop).await,
            }
        });
        while conns.try_join_next().is_some() {}
    }
    while conns.join_next().await.is_some() {}
}

/// Reads each configured component's shared secret.
fn component_secrets(config: &Config) -> anyhow::Result<chorus_xmpp::component::Secrets> {
    let mut out = std::collections::HashMap::new();
    for s in &config.components.services {
        let raw = std::fs::read(&s.secret_file)
            .with_context(|| format!("components.services: read the secret {}", s.secret_file.display()))?;
        let secret = raw.trim_ascii().to_vec();
        anyhow::ensure!(
            secret.len() >= 16,
            "components.services: the secret in {} is shorter than 16 bytes",
            s.secret_file.display()
        );
        out.insert(s.domain.clone(), secret);
    }
    Ok(out)
}

/// One component connection counted against its address.
struct PerIp {
    map: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl PerIp {
    fn enter(
        map: &Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
        ip: std::net::IpAddr,
    ) -> Option<PerIp> {
        let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_default();
        if *n >= COMPONENT_CONNECTIONS_PER_IP_MAX {
            return None;
        }
        *n += 1;
        Some(PerIp { map: map.clone(), ip })
    }
}

impl Drop for PerIp {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod component_tests {
    use super::*;

    #[test]
    fn one_address_holds_a_bounded_share_of_component_slots() {
        let map = Arc::default();
        let ip: std::net::IpAddr = "192.0.2.7".parse().expect("ip");
        let held: Vec<PerIp> = (0..COMPONENT_CONNECTIONS_PER_IP_MAX)
            .map(|_| PerIp::enter(&map, ip).expect("room"))
            .collect();
        assert!(PerIp::enter(&map, ip).is_none());
        assert!(PerIp::enter(&map, "192.0.2.8".parse().expect("ip")).is_some());
        drop(held);
        assert!(PerIp::enter(&map, ip).is_some(), "freed when connections end");
    }
}
