//! The token-protected HTTP API under `/api/v1/`, served by the node's
//! HTTP listener next to the probes. Bearer tokens come from `[api]`
//! (stored as SHA-256 digests); the `compliance` role searches, views
//! conversations, manages holds, exports and reads the audit trail; the
//! `admin` role manages membership and the retention policy (a shortening
//! needs a second admin's approval). Both read the digest, the chain, the
//! retention policy and verify the chain. Every call that shows content or
//! changes anything is audited with the caller's address.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use chorus_archive::compliance::{
    Caller, Compliance, ComplianceError, ExportSource, HoldRequest, RetentionChange,
};
use chorus_archive::search::SearchQuery;
use chorus_archive::types::Retention;
use chorus_core::api_query::{self, AddParams, AuditParams, ConversationParams, RunParams, SearchParams};
use chorus_core::archive::MamQuery;
use chorus_core::config::{ApiRole, ApiToken};
use serde_json::json;
use std::sync::Arc;

/// Largest request body the API accepts, in bytes.
const BODY_BYTES_MAX: usize = 1024 * 1024;

#[derive(Clone)]
struct ApiState {
    compliance: Option<Arc<Compliance>>,
    tokens: Arc<Vec<ApiToken>>,
}

/// The API's routes.
pub fn routes(compliance: Option<Arc<Compliance>>, tokens: Vec<ApiToken>) -> Router {
    let state = ApiState {
        compliance,
        tokens: Arc::new(tokens),
    };
    Router::new()
        .route("/api/v1/archive/search", get(search))
        .route("/api/v1/archive/conversation", get(conversation))
        .route("/api/v1/archive/holds", get(holds).post(place_hold))
        .route("/api/v1/archive/holds/{id}/release", post(release_hold))
        .route("/api/v1/archive/retention", get(retention).put(set_retention))
        .route("/api/v1/archive/retention/run", post(run_retention))
        .route(
            "/api/v1/archive/retention/changes/{id}/approve",
            post(approve_retention),
        )
        .route(
            "/api/v1/archive/retention/changes/{id}/cancel",
            post(cancel_retention),
        )
        .route("/api/v1/archive/verify", get(verify))
        .route("/api/v1/archive/chain", get(chain))
        .route("/api/v1/archive/export", get(export))
        .route("/api/v1/archive/audit", get(audit))
        .route("/api/v1/archive/digest", get(digest))
        .route("/api/v1/archive/members", get(members))
        .route(
            "/api/v1/archive/members/{id}",
            post(add_member).delete(remove_member),
        )
        .route("/api/v1/whoami", get(whoami))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state)
        .route(
            "/api/v1/{*rest}",
            delete(not_found).get(not_found).post(not_found),
        )
}

/// An API error as JSON.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ComplianceError> for ApiError {
    fn from(e: ComplianceError) -> Self {
        let status = match &e {
            ComplianceError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ComplianceError::NotFound(_) => StatusCode::NOT_FOUND,
            ComplianceError::Conflict(_) => StatusCode::CONFLICT,
            ComplianceError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ComplianceError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
        };
        ApiError(status, e.to_string())
    }
}

type ApiResult = Result<Response, ApiError>;

/// A raw query string, parsed (by `chorus_core::api_query`, which the
/// fuzzer runs) only after the caller is authorized, so that a stranger
/// learns nothing from parameter errors.
type Params = RawQuery;

fn params<T: serde::de::DeserializeOwned>(p: Params) -> Result<T, ApiError> {
    api_query::parse(p.0.as_deref()).map_err(bad_request)
}

fn bad_request(e: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, e)
}

fn time(v: &Option<String>, what: &str) -> Result<Option<u64>, ApiError> {
    api_query::time(v, what).map_err(bad_request)
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such API endpoint".into())
}

/// A request's headers and the address it came from.
struct Ctx {
    headers: HeaderMap,
    addr: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let addr = parts
            .extensions
            .get::<axum::extract::ConnectInfo<chorus_admin::PeerAddr>>()
            .map(|c| c.0.0.to_string())
            .unwrap_or_default();
        Ok(Ctx {
            headers: parts.headers.clone(),
            addr,
        })
    }
}

/// Checks the bearer token against `roles`; returns the caller and the
/// archive's compliance side.
fn authorize(s: &ApiState, cx: &Ctx, roles: &[ApiRole]) -> Result<(Caller, Arc<Compliance>), ApiError> {
    use sha2::{Digest, Sha256};
    let token = cx
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "missing bearer token".into()))?;
    let digest: String = Sha256::digest(token.trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let t = s
        .tokens
        .iter()
        .find(|t| t.sha256 == digest)
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "unknown token".into()))?;
    if !roles.contains(&t.role) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("the {:?} role may not do this", t.role).to_lowercase(),
        ));
    }
    let c = s
        .compliance
        .clone()
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "archiving is off on this node".into()))?;
    Ok((
        Caller {
            name: t.name.clone(),
            role: t.role,
            addr: cx.addr.clone(),
        },
        c,
    ))
}

const COMPLIANCE: &[ApiRole] = &[ApiRole::Compliance];
const ADMIN: &[ApiRole] = &[ApiRole::Admin];
const ANYONE: &[ApiRole] = &[ApiRole::Admin, ApiRole::Compliance];

fn ok(v: serde_json::Value) -> ApiResult {
    Ok(axum::Json(v).into_response())
}

/// A search from its parameters.
fn search_query(p: &SearchParams) -> Result<SearchQuery, ApiError> {
    Ok(SearchQuery {
        participants: api_query::list(&p.participants),
        room: p.room.clone().filter(|r| !r.is_empty()),
        site: p.site.clone().filter(|s| !s.is_empty()),
        words: p.q.clone().filter(|q| !q.trim().is_empty()),
        start_ms: time(&p.start, "start")?,
        end_ms: time(&p.end, "end")?,
        offset: p.offset.unwrap_or(0),
        limit: p.limit.unwrap_or(50),
    })
}

/// Records as the API shows them: corrections and retractions name the
/// record they edit, when it is still held.
fn records_json(c: &Compliance, records: &[chorus_archive::types::Record]) -> Vec<serde_json::Value> {
    records
        .iter()
        .map(|r| chorus_archive::export::jsonl_value(r, c.sm.edited_record(r).ok().flatten()))
        .collect()
}

async fn search(State(s): State<ApiState>, cx: Ctx, p: Params) -> ApiResult {
    let (who, c) = authorize(&s, &cx, COMPLIANCE)?;
    let p: SearchParams = params(p)?;
    let page = c.search(&who, search_query(&p)?).await?;
    ok(json!({ "total": page.total, "records": records_json(&c, &page.records) }))
}

async fn conversation(State(s): State<ApiState>, cx: Ctx, p: Params) -> ApiResult {
    let (who, c) = authorize(&s, &cx, COMPLIANCE)?;
    let p: ConversationParams = params(p)?;
    let (owner, with) = match (&p.room, &p.user, &p.with) {
        (Some(room), None, None) => (room.clone(), None),
        (None, Some(u), Some(w)) => (u.clone(), Some(w.clone())),
        _ => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "give user and with, or room".into(),
            ));
        }
    };
    let q = MamQuery {
        owner,
        with,
        start_ms: time(&p.start, "start")?,
        end_ms: time(&p.end, "end")?,
        after: p.after.clone(),
        max: p.limit.unwrap_or(100).clamp(1, 1000),
        ..MamQuery::default()
    };
    let (records, complete) = c.conversation(&who, q).await?;
    ok(json!({ "records": records_json(&c, &records), "complete": complete }))
}

async fn holds(State(s): State<ApiState>, cx: Ctx) -> ApiResult {
    let (who, c) = authorize(&s, &cx, COMPLIANCE)?;
    ok(json!({ "holds": c.holds(&who).await? }))
}

async fn place_hold(State(s): State<ApiState>, cx: Ctx, body: axum::body::Bytes) -> ApiResult {
    let (who, c) = authorize(&s, &cx, COMPLIANCE)?;
    let req: HoldRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad hold: {e}")))?;
    let hold = c.place_hold(&who, req).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "hold": hold }))).into_response())
}

async fn release_hold(State(s): State<ApiState>, cx: Ctx, Path(id): Path<String>) -> ApiResult {
    let (who, c) = authorize(&s, &cx, COMPLIANCE)?;
    c.release_hold(&who, &id, None).await?;
    ok(json!({ "released": id }))
}

async fn retention(State(s): State<ApiState>, cx: Ctx) -> ApiResult {
    let (who, c) = authorize(&s, &cx, ANYONE)?;
    ok(c.retention(&who).await?)
}

async fn set_retention(State(s): State<ApiState>, cx: Ctx, body: axum::body::Bytes) -> ApiResult {
    let (who, c) = authorize(&s, &cx, ADMIN)?;
    let r: Retention = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad retention policy: {e}")))?;
    match c.set_retention(&who, r).await? {
        RetentionChange::Applied(r) => ok(json!({ "retention": r })),
        RetentionChange::Pending(p) => Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({
                "pending": p,
                "note": "this shortens a retention period: a second admin must approve it",
            })),
        )
            .into_response()),
    }
}

async fn approve_retention(State(s): State<ApiState>, cx: Ctx, Path(id): Path<String>) -> ApiResult {
    let (who, c) = authorize(&s, &cx, ADMIN)?;
    ok(json!({ "retention": c.approve_retention(&who, &id).await?, "approved": id }))
}

async fn cancel_retention(State(s): State<ApiState>, cx: Ctx, Path(id): Path<String>) -> ApiResult {
    let (who, c) = authorize(&s, &cx, ADMIN)?;
    c.cancel_retention(&who, &id).await?;
    ok(json!({ "cancelled": id }))
}

async fn run_retention(State(s): State<ApiState>, cx: Ctx, p: Params) -> ApiResult {
    let (who, c) = authorize(&s, &cx, ADMIN)?;
    let p: RunParams = params(p)?;
    if p.at.is_some() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "at: retention is judged at the archive's committed time, never a caller's; \
             records go only once their retention has passed"
                .into(),
        ));
    }
    let purged = c.purge(&who).await?;
    ok(json!({ "purged": purged }))
}

async fn export(State(s): State<ApiState>, cx: Ctx, p: Params) -> ApiResult {
    use chorus_archive::package::Format;
    let (who, c) = authorize(&s, &cx, COMPLIANCE)?;
    let p: SearchParams = params(p)?;
    let format = match p.format.as_deref().unwrap_or("jsonl") {
        "jsonl" => Format::Jsonl,
        "eml" => Format::Eml,
        "actiance" => Format::Actiance,
        other => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("unknown format {other:?}: use jsonl, eml or actiance"),
            ));
        }
    };
    let source = match &p.hold {
        Some(h) => ExportSource::Hold(h.clone()),
        None => ExportSource::Search(SearchQuery {
            offset: 0,
            limit: chorus_archive::search::SEARCH_LIMIT_MAX,
            ..search_query(&p)?
        }),
    };
    let (name, pkg, permit) = c.export(&who, source, format).await?;
    let headers = [
        (header::CONTENT_TYPE, "application/x-tar".to_owned()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ),
        (header::CONTENT_LENGTH, pkg.bytes.to_string()),
        (
            header::HeaderName::from_static("x-chorus-manifest-sha256"),
            pkg.manifest_sha256.clone(),
        ),
    ];
    Ok((headers, axum::body::Body::from_stream(file_stream(pkg, permit))).into_response())
}

/// The export's bytes in 64 KiB chunks, read as they are sent; the
/// temporary file and the heavy-operation permit go when the stream is
/// dropped (a client that stops reading is cut by the listener's write
/// timeout, so neither is held for long).
fn file_stream(
    pkg: chorus_archive::package::Package,
    permit: chorus_archive::compliance::HeavyPermit,
) -> impl futures_util::Stream<Item = std::io::Result<axum::body::Bytes>> + Send {
    use tokio::io::AsyncReadExt as _;
    let file = pkg.file.reopen().map(tokio::fs::File::from_std);
    futures_util::stream::unfold((file, Some((pkg, permit))), |(file, pkg)| async move {
        let mut f = match file {
            Ok(f) => f,
            Err(e) => return pkg.map(|_| (Err(e), (Err(std::io::Error::other("closed")), None))),
        };
        pkg.as_ref()?;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(axum::body::Bytes::from(buf)), (Ok(f), pkg)))
            }
            Err(e) => Some((Err(e), (Ok(f), None))),
        }
    })
}

async fn audit(State(s): State<ApiState>, cx: Ctx, p: Params) -> ApiResult {
    let (who, c) = authorize(&s, &cx, COMPLIANCE)?;
    let p: AuditParams = params(p)?;
    let entries: Vec<serde_json::Value> = c
        .audit_trail(&who, p.from.unwrap_or(0), p.limit.unwrap_or(100))
        .await?
        .into_iter()
        .map(|(seq, e)| {
            json!({
                "seq": seq, "time": chorus_core::time::xep0082(e.at_ms), "actor": e.actor,
                "role": e.role, "action": e.action, "node": e.node, "addr": e.addr,
                "detail": serde_json::from_str::<serde_json::Value>(&e.detail).unwrap_or_default(),
            })
        })
        .collect();
    ok(json!({ "entries": entries }))
}

async fn digest(State(s): State<ApiState>, cx: Ctx) -> ApiResult {
    let (_, c) = authorize(&s, &cx, ANYONE)?;
    ok(c.digest()?)
}

async fn verify(State(s): State<ApiState>, cx: Ctx) -> ApiResult {
    let (who, c) = authorize(&s, &cx, ANYONE)?;
    ok(c.verify(&who).await?)
}

async fn chain(State(s): State<ApiState>, cx: Ctx, p: Params) -> ApiResult {
    let (_, c) = authorize(&s, &cx, ANYONE)?;
    let p: AuditParams = params(p)?;
    let links: Vec<serde_json::Value> = c
        .chain_links(p.from.unwrap_or(0), p.limit.unwrap_or(100))?
        .into_iter()
        .map(|(n, l)| json!({ "link": n, "entry": l }))
        .collect();
    ok(json!({ "head": c.chain_head()?, "links": links }))
}

async fn members(State(s): State<ApiState>, cx: Ctx) -> ApiResult {
    let (who, c) = authorize(&s, &cx, ADMIN)?;
    ok(c.members_audited(&who).await?)
}

async fn add_member(State(s): State<ApiState>, cx: Ctx, Path(id): Path<String>, p: Params) -> ApiResult {
    let (who, c) = authorize(&s, &cx, ADMIN)?;
    let p: AddParams = params(p)?;
    let voter = match p.role.as_deref().unwrap_or("voter") {
        "voter" => true,
        "learner" => false,
        other => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("unknown role {other:?}: use voter or learner"),
            ));
        }
    };
    let msg = c.change_member(&who, &id, Some(voter)).await?;
    ok(json!({ "result": msg, "members": c.members() }))
}

async fn remove_member(State(s): State<ApiState>, cx: Ctx, Path(id): Path<String>) -> ApiResult {
    let (who, c) = authorize(&s, &cx, ADMIN)?;
    let msg = c.change_member(&who, &id, None).await?;
    ok(json!({ "result": msg, "members": c.members() }))
}

async fn whoami(State(s): State<ApiState>, cx: Ctx) -> ApiResult {
    let (who, _) = authorize(&s, &cx, ANYONE)?;
    ok(json!({ "name": who.name, "role": format!("{:?}", who.role).to_lowercase() }))
}
