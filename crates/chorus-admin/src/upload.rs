//! XEP-0363 HTTP File Upload, the HTTP half: `PUT` takes the bytes of a
//! slot the XMPP service handed out, `GET`/`HEAD` serve them on any site.
//!
//! The slot's token (128 random bits) is the only credential, as XEP-0363
//! has it. An upload must match the size (and type) the slot announced; it
//! is hashed as it streams to disk, synced, stored under its SHA-256 and
//! only then recorded in the replicated slot row, so `201 Created` means
//! the bytes are durable here and every site will copy them. A download on
//! a site that does not hold the bytes yet fetches them from a peer first.
//! Files are served so a browser never runs them: `nosniff`, a sandboxing
//! CSP, and `attachment` for anything but pictures, audio, video and PDF.

use crate::App;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chorus_core::files::{Blobs, Upload, encode_segment};
use futures_util::StreamExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Fetches a file's bytes from a peer by SHA-256; true once held here.
pub type FetchFn = Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// What the upload routes need besides the XMPP context.
#[derive(Clone)]
pub struct FilesHttp {
    /// The bytes this node holds.
    pub blobs: Arc<dyn Blobs>,
    /// Fetches bytes from peers (clustered nodes).
    pub fetch: Option<FetchFn>,
}

/// Longest wait for the next piece of an upload's body.
const BODY_STALL: Duration = Duration::from_secs(30);
/// Longest wait for a peer to hand over a file a download asks for.
const PEER_FETCH_WAIT: Duration = Duration::from_secs(60);
/// Bytes gathered before one write to disk.
const WRITE_CHUNK_BYTES: usize = 256 * 1024;

type SlotPath = Path<(String, String, String)>;

/// A refusal: a status and a one-line reason.
struct Refusal(StatusCode, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, cors(), self.1).into_response()
    }
}

fn plain(status: StatusCode, text: &'static str) -> Refusal {
    Refusal(status, text)
}

/// XEP-0363 section 6: web clients upload from another origin.
fn cors() -> [(header::HeaderName, &'static str); 3] {
    [
        (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, PUT, OPTIONS"),
        (header::ACCESS_CONTROL_ALLOW_HEADERS, "Content-Type"),
    ]
}

/// The slot behind a path, if it exists and the name matches.
fn slot(app: &App, user: &str, token: &str, filename: &str) -> Result<Upload, Refusal> {
    let row = app.s.ctx.store.upload(user, token).map_err(|e| {
        tracing::error!(error = %e, "cannot read an upload slot");
        plain(StatusCode::INTERNAL_SERVER_ERROR, "storage error\n")
    })?;
    let upload = row
        .and_then(|r| serde_json::from_str::<Upload>(&r).ok())
        .filter(|u| u.filename == filename);
    upload.ok_or_else(|| plain(StatusCode::NOT_FOUND, "no such file\n"))
}

/// The file store and the slot of a request's path.
fn lookup(app: &App, user: &str, token: &str, filename: &str) -> Result<(FilesHttp, Upload), Refusal> {
    let files = app
        .s
        .files
        .clone()
        .ok_or(Refusal(StatusCode::NOT_FOUND, "file sharing is off\n"))?;
    Ok((files, slot(app, user, token, filename)?))
}

/// `OPTIONS`: the CORS preflight of a web client's upload.
pub(crate) async fn preflight() -> Response {
    (StatusCode::NO_CONTENT, cors()).into_response()
}

/// `PUT`: the bytes of a slot.
pub(crate) async fn put(
    State(app): State<Arc<App>>,
    Path((user, token, filename)): SlotPath,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (files, upload) = match lookup(&app, &user, &token, &filename) {
        Ok(found) => found,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = admissible(&app, &upload, &headers) {
        return r.into_response();
    }
    // One upload per slot: a second PUT while one streams is refused, and
    // a slot another node filled meanwhile is not filled again.
    let Some(_claim) = Claim::take(&app.uploading, format!("{user}/{token}")) else {
        return plain(StatusCode::CONFLICT, "an upload into this slot is in progress\n").into_response();
    };
    let sha = match receive(files.blobs.clone(), body, upload.size).await {
        Ok(sha) => sha,
        Err(r) => return r.into_response(),
    };
    if let Ok(again) = slot(&app, &user, &token, &filename)
        && again.sha256.is_some()
    {
        return plain(StatusCode::CONFLICT, "this slot was used already\n").into_response();
    }
    let done = Upload {
        sha256: Some(sha.clone()),
        ..upload
    };
    let json = serde_json::to_string(&done).unwrap_or_default();
    if let Err(e) = app.s.ctx.store.set_upload(&user, &token, Some(&json)) {
        tracing::error!(error = %e, "cannot record a finished upload");
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "storage error\n").into_response();
    }
    metrics::counter!("chorus_uploads_total").increment(1);
    tracing::info!(user = %user, sha256 = %sha, bytes = done.size, "file uploaded");
    plain(StatusCode::CREATED, "stored\n").into_response()
}

/// A slot being uploaded into, released when the upload ends however it
/// ends.
struct Claim {
    set: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    key: String,
}

impl Claim {
    fn take(set: &Arc<std::sync::Mutex<std::collections::HashSet<String>>>, key: String) -> Option<Claim> {
        let fresh = set.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone());
        fresh.then(|| Claim {
            set: set.clone(),
            key,
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// Whether the slot may take this upload now.
fn admissible(app: &App, upload: &Upload, headers: &HeaderMap) -> Result<(), Refusal> {
    if upload.sha256.is_some() {
        return Err(plain(StatusCode::CONFLICT, "this slot was used already\n"));
    }
    let ttl_ms = app.s.ctx.config.upload.slot_ttl_secs.saturating_mul(1000);
    if chorus_core::time::now_millis().saturating_sub(upload.created_ms) > ttl_ms {
        return Err(plain(StatusCode::FORBIDDEN, "this slot has expired\n"));
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        None => return Err(plain(StatusCode::LENGTH_REQUIRED, "Content-Length is required\n")),
        Some(n) if n > upload.size => {
            return Err(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "larger than the slot allows\n",
            ));
        }
        Some(n) if n != upload.size => {
            return Err(plain(StatusCode::BAD_REQUEST, "not the announced size\n"));
        }
        Some(_) => {}
    }
    let media = |s: &str| {
        s.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    };
    let sent = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(media);
    if let (Some(want), Some(sent)) = (upload.content_type.as_deref(), sent)
        && media(want) != sent
    {
        return Err(plain(StatusCode::BAD_REQUEST, "not the announced content type\n"));
    }
    Ok(())
}

/// Streams the body to a new blob; returns its SHA-256 once synced.
async fn receive(blobs: Arc<dyn Blobs>, body: Body, size: u64) -> Result<String, Refusal> {
    let failed = |e: chorus_core::store::StoreError| {
        tracing::error!(error = %e, "cannot store an upload");
        plain(StatusCode::INSUFFICIENT_STORAGE, "cannot store the file\n")
    };
    let b = blobs.clone();
    let mut writer = tokio::task::spawn_blocking(move || b.create())
        .await
        .map_err(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"))?
        .map_err(failed)?;
    let mut stream = body.into_data_stream();
    let mut pending: Vec<u8> = Vec::with_capacity(WRITE_CHUNK_BYTES);
    let mut received = 0u64;
    loop {
        let next = tokio::time::timeout(BODY_STALL, stream.next())
            .await
            .map_err(|_| plain(StatusCode::REQUEST_TIMEOUT, "the upload stalled\n"))?;
        let last = match next {
            Some(Ok(bytes)) => {
                received += bytes.len() as u64;
                if received > size {
                    return Err(plain(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "larger than the slot allows\n",
                    ));
                }
                pending.extend_from_slice(&bytes);
                false
            }
            Some(Err(_)) => return Err(plain(StatusCode::BAD_REQUEST, "the upload broke off\n")),
            None => true,
        };
        if pending.len() >= WRITE_CHUNK_BYTES || (last && !pending.is_empty()) {
            let chunk = std::mem::take(&mut pending);
            writer = tokio::task::spawn_blocking(move || writer.write(&chunk).map(|()| writer))
                .await
                .map_err(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"))?
                .map_err(failed)?;
        }
        if last {
            break;
        }
    }
    if received != size {
        return Err(plain(StatusCode::BAD_REQUEST, "not the announced size\n"));
    }
    tokio::task::spawn_blocking(move || writer.finish(None))
        .await
        .map_err(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"))?
        .map_err(failed)
}

/// `GET` and `HEAD`: the bytes, from this site or fetched from a peer.
pub(crate) async fn get(
    State(app): State<Arc<App>>,
    method: axum::http::Method,
    Path((user, token, filename)): SlotPath,
) -> Response {
    let (files, upload) = match lookup(&app, &user, &token, &filename) {
        Ok(found) => found,
        Err(r) => return r.into_response(),
    };
    let Some(sha) = upload.sha256.clone() else {
        return plain(StatusCode::NOT_FOUND, "not uploaded yet\n").into_response();
    };
    if !files.blobs.contains(&sha)
        && let Some(fetch) = &files.fetch
    {
        let _ = tokio::time::timeout(PEER_FETCH_WAIT, fetch(sha.clone())).await;
    }
    let opened = files.blobs.open(&sha);
    let Ok(Some((file, len))) = opened else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "the file has not reached this site yet\n",
        )
            .into_response();
    };
    let mut r = if method == axum::http::Method::HEAD {
        Response::new(Body::empty())
    } else {
        let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
        Response::new(Body::from_stream(stream))
    };
    serve_headers(r.headers_mut(), &upload, &sha, len);
    r
}

/// Headers that keep a browser from running what it downloads.
fn serve_headers(h: &mut HeaderMap, upload: &Upload, sha: &str, len: u64) {
    let declared = upload
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream")
        .to_ascii_lowercase();
    let declared = declared.as_str();
    let inline = ["image/", "audio/", "video/"]
        .iter()
        .any(|p| declared.starts_with(p))
        && !declared.starts_with("image/svg")
        || declared == "application/pdf";
    let shown = if inline {
        declared
    } else {
        "application/octet-stream"
    };
    let disposition = format!(
        "{}; filename*=UTF-8''{}",
        if inline { "inline" } else { "attachment" },
        encode_segment(&upload.filename)
    );
    for (name, value) in cors() {
        h.insert(name, HeaderValue::from_static(value));
    }
    let pairs = [
        (header::CONTENT_TYPE, shown.to_owned()),
        (header::CONTENT_LENGTH, len.to_string()),
        (header::CONTENT_DISPOSITION, disposition),
        (header::ETAG, format!("\"{sha}\"")),
        (
            header::CACHE_CONTROL,
            "private, max-age=31536000, immutable".to_owned(),
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox".to_owned(),
        ),
    ];
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_takes_one_upload_at_a_time() {
        let set = Arc::default();
        let first = Claim::take(&set, "alice/t".into()).expect("free");
        assert!(
            Claim::take(&set, "alice/t".into()).is_none(),
            "a second PUT is refused"
        );
        assert!(
            Claim::take(&set, "alice/u".into()).is_some(),
            "other slots are free"
        );
        drop(first);
        assert!(
            Claim::take(&set, "alice/t".into()).is_some(),
            "released when the upload ends"
        );
    }

    #[test]
    fn active_types_are_downloads_whatever_their_spelling() {
        let up = |t: &str| Upload {
            filename: "f".into(),
            size: 1,
            content_type: Some(t.into()),
            created_ms: 0,
            sha256: None,
        };
        for (declared, shown) in [
            ("image/png", "image/png"),
            ("image/SVG+xml", "application/octet-stream"),
            ("text/html", "application/octet-stream"),
            ("application/PDF", "application/pdf"),
        ] {
            let mut h = HeaderMap::new();
            serve_headers(&mut h, &up(declared), &"a".repeat(64), 1);
            assert_eq!(h[header::CONTENT_TYPE], shown, "{declared}");
        }
    }
}
