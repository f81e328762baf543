//! The HTTPS client `chorus archive` speaks to a node's API with: one
//! request per connection, the node's own certificate (or `--ca`) trusted,
//! non-2xx answers turned into errors naming the status and the API's
//! message.

use super::ApiArgs;
use anyhow::{Context as _, bail};
use chorus_core::config::Config;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use std::sync::Arc;

/// Percent-encodes a query or path component.
pub(crate) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A minimal HTTPS client for the node's API.
pub(crate) struct Client {
    host: String,
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
    token: String,
}

impl Client {
    pub(crate) fn new(config: Option<&Config>, api: ApiArgs) -> anyhow::Result<Client> {
        let url = match (&api.url, config) {
            (Some(u), _) => u.clone(),
            (None, Some(c)) => {
                let listen = c
                    .http
                    .listen
                    .context("this node has no HTTP listener (http.listen)")?;
                let host = if listen.ip().is_unspecified() || listen.ip().is_loopback() {
                    "localhost".to_string()
                } else {
                    listen.ip().to_string()
                };
                format!(
                    "{}://{host}:{}",
                    if c.http.tls { "https" } else { "http" },
                    listen.port()
                )
            }
            (None, None) => bail!("give --url (or --config of a node)"),
        };
        let (scheme, rest) = url
            .split_once("://")
            .context("the URL needs a scheme (https://...)")?;
        let authority = rest.trim_end_matches('/');
        let (host, port) = authority
            .rsplit_once(':')
            .map(|(h, p)| (h.to_owned(), p.parse::<u16>()))
            .unwrap_or((authority.to_owned(), Ok(if scheme == "https" { 443 } else { 80 })));
        let port = port.context("bad port in the URL")?;
        let tls = match scheme {
            "http" => None,
            "https" => {
                let ca = match (&api.ca, config) {
                    (Some(ca), _) => ca.clone(),
                    (None, Some(c)) => c
                        .tls
                        .cert_file
                        .clone()
                        .unwrap_or_else(|| c.server.data_dir.join("tls").join("cert.pem")),
                    (None, None) => bail!("give --ca, the certificate to trust"),
                };
                let pem = std::fs::read(&ca).with_context(|| format!("read {}", ca.display()))?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                    roots
                        .add(cert.with_context(|| format!("parse {}", ca.display()))?)
                        .with_context(|| format!("trust {}", ca.display()))?;
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let cfg = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
            }
            other => bail!("unsupported scheme {other:?}"),
        };
        Ok(Client {
            host,
            port,
            tls,
            token: api
                .token
                .context("give --token (or set CHORUS_API_TOKEN): the API needs one")?,
        })
    }

    /// Calls the API and returns the pretty-printed JSON answer.
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        params: Vec<(&str, String)>,
        body: Option<String>,
    ) -> anyhow::Result<String> {
        let (bytes, _) = self.fetch(method, path, params, body).await?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).context("the node answered with no JSON")?;
        Ok(serde_json::to_string_pretty(&v)?)
    }

    /// Downloads a file from the API into `out` (default: the name the
    /// server suggests), streaming; returns the path, its size and the
    /// manifest hash the server announced.
    pub(crate) async fn download(
        &self,
        path: &str,
        params: Vec<(&str, String)>,
        out: Option<std::path::PathBuf>,
    ) -> anyhow::Result<(std::path::PathBuf, u64, String)> {
        use std::io::Write as _;
        let resp = self.request("GET", path, params, None).await?;
        let name = suggested_name(&resp);
        let manifest = resp
            .headers()
            .get("x-chorus-manifest-sha256")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body.collect().await?.to_bytes();
            bail!("{status}: {}", error_text(&bytes));
        }
        let target = out.unwrap_or_else(|| name.unwrap_or_else(|| "chorus-export.tar".into()).into());
        let mut f = std::fs::File::create(&target).with_context(|| format!("create {}", target.display()))?;
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                f.write_all(&data)?;
                bytes += data.len() as u64;
            }
        }
        f.sync_all()?;
        Ok((target, bytes, manifest))
    }

    /// Calls the API; returns the body and the suggested file name.
    pub(crate) async fn fetch(
        &self,
        method: &str,
        path: &str,
        params: Vec<(&str, String)>,
        body: Option<String>,
    ) -> anyhow::Result<(Bytes, Option<String>)> {
        let resp = self.request(method, path, params, body).await?;
        let status = resp.status();
        let name = suggested_name(&resp);
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{status}: {}", error_text(&bytes));
        }
        Ok((bytes, name))
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        params: Vec<(&str, String)>,
        body: Option<String>,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let mut uri = path.to_owned();
        if !params.is_empty() {
            let q: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
            uri = format!("{uri}?{}", q.join("&"));
        }
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("connect to {}:{}", self.host, self.port))?;
        let req = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header("host", format!("{}:{}", self.host, self.port))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        match &self.tls {
            Some(tls) => {
                let name =
                    rustls::pki_types::ServerName::try_from(self.host.clone()).context("bad host name")?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .context("TLS handshake with the node")?;
                send(hyper_util::rt::TokioIo::new(stream), req).await
            }
            None => send(hyper_util::rt::TokioIo::new(tcp), req).await,
        }
    }
}

fn suggested_name(resp: &hyper::Response<hyper::body::Incoming>) -> Option<String> {
    resp.headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("filename=\"").nth(1))
        .map(|v| v.trim_end_matches('"').to_owned())
}

/// The API's error message, or the body as text.
fn error_text(bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned())
}

async fn send<S>(
    io: S,
    req: hyper::Request<Full<Bytes>>,
) -> anyhow::Result<hyper::Response<hyper::body::Incoming>>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}
