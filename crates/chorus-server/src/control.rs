//! The control socket: a Unix socket in the data directory through which
//! `chorus user ...` manages accounts while the node holds the database.
//! Access is limited by file permissions (0600 inside the 0700 data
//! directory, as with prosodyctl and ejabberdctl) and by the caller's uid
//! (SO_PEERCRED): only the node's own user and root are served.

use crate::users::Realm;
use chorus_core::store::Store;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Longest request line accepted, in bytes (a batch of provisioned
/// accounts, see `provision::SOCKET_BATCH`).
const REQUEST_BYTES_MAX: usize = 1024 * 1024;

/// A request on the control socket.
#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Create an account.
    AddUser { user: String, password: String },
    /// Create accounts with credentials the caller derived (bulk
    /// provisioning); the response names those that existed.
    CreateAccounts {
        accounts: Vec<chorus_core::store::NewAccount>,
    },
    /// Remove an account.
    RemoveUser { user: String },
    /// Change a password.
    SetPassword { user: String, password: String },
    /// List accounts.
    ListUsers,
    /// Give an existing account a one-time link (the setting's value:
    /// the token's digest and expiry, never the token).
    SetupLink { user: String, value: String },
}

/// The answer.
#[derive(Serialize, Deserialize, Debug)]
pub struct Response {
    /// Set on failure.
    pub error: Option<String>,
    /// Account names, for `ListUsers`.
    pub users: Vec<String>,
}

/// Where the socket lives.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// Carries out a request against the store.
pub fn execute(store: &dyn Store, realm: &Realm, req: Request) -> Response {
    let r = crate::users::apply(store, realm, req);
    match r {
        Ok(users) => Response { error: None, users },
        Err(e) => Response {
            error: Some(format!("{e:#}")),
            users: Vec::new(),
        },
    }
}

/// Serves the control socket until the task is dropped.
pub async fn serve(listener: UnixListener, store: Arc<dyn Store>, realm: Realm) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let (store, realm) = (store.clone(), realm.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(conn, store, realm).await {
                tracing::warn!(error = %e, "control connection failed");
            }
        });
    }
}

async fn handle(conn: UnixStream, store: Arc<dyn Store>, realm: Realm) -> std::io::Result<()> {
    let uid = conn.peer_cred()?.uid();
    if !crate::private_fs::peer_allowed(uid) {
        tracing::warn!(uid, "refused a control-socket caller running as another user");
        metrics::counter!("chorus_control_refused_total").increment(1);
        let mut conn = conn;
        let resp = Response {
            error: Some(format!("uid {uid} may not manage this node")),
            users: Vec::new(),
        };
        let mut out = serde_json::to_vec(&resp).unwrap_or_default();
        out.push(b'\n');
        return conn.write_all(&out).await;
    }
    let (r, mut w) = conn.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(r).take(REQUEST_BYTES_MAX as u64);
    reader.read_line(&mut line).await?;
    let resp = match serde_json::from_str::<Request>(&line) {
        Ok(req) => tokio::task::spawn_blocking(move || execute(store.as_ref(), &realm, req))
            .await
            .unwrap_or_else(|e| Response {
                error: Some(e.to_string()),
                users: Vec::new(),
            }),
        Err(e) => Response {
            error: Some(format!("bad request: {e}")),
            users: Vec::new(),
        },
    };
    let mut out = serde_json::to_vec(&resp).unwrap_or_default();
    out.push(b'\n');
    w.write_all(&out).await
}

/// Sends one request to a running node.
pub fn call(data_dir: &Path, req: &Request) -> anyhow::Result<Response> {
    use anyhow::Context as _;
    use std::io::{BufRead, Write};
    let path = socket_path(data_dir);
    let mut s = std::os::unix::net::UnixStream::connect(&path)
        .with_context(|| format!("connect to the running node's control socket {}", path.display()))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line).context("send request")?;
    let mut resp = String::new();
    std::io::BufReader::new(s)
        .read_line(&mut resp)
        .context("read response")?;
    serde_json::from_str(&resp).context("parse response")
}

use tokio::io::AsyncReadExt as _;
