//! A lean XMPP client for load: STARTTLS, in-band registration (XEP-0077),
//! SCRAM-SHA-1/-256 and resource binding, then one task reading stanzas and
//! one writing them, so thousands of sessions fit in one process.
//!
//! It speaks only standard XMPP, so the same code drives Chorus, Prosody and
//! ejabberd. The servers under test use self-signed certificates on
//! loopback, so certificates are not verified (see [`AnyCert`]); everything
//! else is checked, including the server's SCRAM signature.

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chorus_core::credentials::ScramHash;
use chorus_xmpp::parser::{StreamEvent, StreamParser};
use minidom::Element;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const NS_CLIENT: &str = "jabber:client";
const NS_STREAM: &str = "http://etherx.jabber.org/streams";
const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_REGISTER: &str = "jabber:iq:register";
const NS_PING: &str = "urn:xmpp:ping";

/// Largest stanza the client accepts.
const STANZA_BYTES_MAX: usize = 1 << 20;
/// Stanzas buffered between a session's reader task and its consumer.
const INBOX_MAX: usize = 8192;
/// Stanzas buffered for a session's writer task.
const OUTBOX_MAX: usize = 8192;
/// Time allowed for each step of a login.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the server listens and which domain it serves.
#[derive(Clone, Debug)]
pub struct Target {
    /// `host:port` of a STARTTLS client listener.
    pub addr: String,
    /// The XMPP domain.
    pub domain: String,
}

/// A logged-in session: send raw stanzas, receive parsed ones.
pub struct Session {
    /// The bound full JID.
    pub jid: String,
    /// Raw stanzas to send, written in order.
    pub tx: mpsc::Sender<String>,
    /// Stanzas from the server (pings are answered by the reader itself).
    pub rx: mpsc::Receiver<Element>,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

impl Session {
    /// Sends one raw stanza.
    pub async fn send(&self, xml: String) -> anyhow::Result<()> {
        self.tx.send(xml).await.map_err(|_| anyhow!("connection closed"))
    }

    /// Takes the incoming stanzas out, for a task of their own; the session
    /// keeps sending.
    pub fn take_rx(&mut self) -> mpsc::Receiver<Element> {
        std::mem::replace(&mut self.rx, mpsc::channel(1).1)
    }

    /// The next stanza, or an error after `within`.
    pub async fn recv(&mut self, within: Duration) -> anyhow::Result<Element> {
        match tokio::time::timeout(within, self.rx.recv()).await {
            Ok(Some(el)) => Ok(el),
            Ok(None) => bail!("connection closed"),
            Err(_) => bail!("nothing received within {within:?}"),
        }
    }

    /// Sends an IQ and waits for its result, skipping other stanzas.
    pub async fn iq(&mut self, id: &str, xml: String, within: Duration) -> anyhow::Result<Element> {
        self.send(xml).await?;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let el = self.recv(left).await?;
            if el.name() == "iq" && el.attr("id") == Some(id) {
                if el.attr("type") == Some("error") {
                    bail!("iq {id} failed: {}", String::from(&el));
                }
                return Ok(el);
            }
        }
    }

    /// Closes the stream politely: the writer sends what is queued and the
    /// closing tag, then ends the TLS session.
    pub async fn close(mut self) {
        self.reader.abort();
        let _ = self.tx.send("</stream:stream>".to_owned()).await;
        drop(std::mem::replace(&mut self.tx, mpsc::channel(1).0));
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.writer).await;
    }
}

/// Closes many sessions at once.
pub async fn close_all(sessions: Vec<Session>) {
    futures_util::future::join_all(sessions.into_iter().map(Session::close)).await;
}

/// Accepts any server certificate: the load generator only talks to servers
/// it (or the benchmark script) started on loopback with self-signed
/// certificates. TLS itself, and its cost, are the real thing.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn connector() -> TlsConnector {
    static CONNECTOR: OnceLock<TlsConnector> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
                .with_no_client_auth();
            TlsConnector::from(Arc::new(config))
        })
        .clone()
}

/// `SaltedPassword`-derived keys per (user, mechanism, salt, iterations): a
/// client may cache them (RFC 5802 §5.1), which keeps PBKDF2 out of the
/// load generator's hot path so the server, not the client, is measured.
type KeyCache = Mutex<HashMap<(String, &'static str, Vec<u8>, u32), (Vec<u8>, Vec<u8>)>>;

fn key_cache() -> &'static KeyCache {
    static CACHE: OnceLock<KeyCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A stream during negotiation: reads whole elements through the parser.
struct Negotiation<S> {
    io: S,
    parser: StreamParser,
    events: VecDeque<StreamEvent>,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Negotiation<S> {
    fn new(io: S) -> Self {
        Negotiation {
            io,
            parser: StreamParser::new(STANZA_BYTES_MAX, 64),
            events: VecDeque::new(),
            buf: vec![0; 16 * 1024],
        }
    }

    async fn send(&mut self, xml: &str) -> anyhow::Result<()> {
        self.io.write_all(xml.as_bytes()).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Opens a (new) stream and returns its features.
    async fn open(&mut self, domain: &str) -> anyhow::Result<Element> {
        self.parser.reset();
        self.events.clear();
        let header = format!(
            "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAM}'>"
        );
        self.send(&header).await?;
        let features = self.element().await?;
        if features.name() != "features" {
            bail!("expected stream features, got <{}>", features.name());
        }
        Ok(features)
    }

    async fn element(&mut self) -> anyhow::Result<Element> {
        loop {
            while let Some(ev) = self.events.pop_front() {
                match ev {
                    StreamEvent::Header(_) => {}
                    StreamEvent::Element(el) if el.name() == "error" && el.ns() == NS_STREAM => {
                        let cond = el.children().next().map(|c| c.name().to_owned());
                        bail!("stream error: {}", cond.unwrap_or_default())
                    }
                    StreamEvent::Element(el) => return Ok(el),
                    StreamEvent::Close => bail!("server closed the stream"),
                }
            }
            let n = tokio::time::timeout(STEP_TIMEOUT, self.io.read(&mut self.buf))
                .await
                .map_err(|_| anyhow!("server silent for {STEP_TIMEOUT:?}"))??;
            if n == 0 {
                bail!("server closed the connection");
            }
            let evs = self
                .parser
                .feed(&self.buf[..n])
                .map_err(|e| anyhow!("bad XML from server: {e}"))?;
            self.events.extend(evs);
        }
    }
}

/// Connects and upgrades to TLS; returns the TLS negotiation and its first
/// features.
async fn connect_tls(target: &Target) -> anyhow::Result<(Negotiation<TlsStream<TcpStream>>, Element)> {
    let tcp = TcpStream::connect(&target.addr)
        .await
        .with_context(|| format!("connecting to {}", target.addr))?;
    tcp.set_nodelay(true)?;
    let mut plain = Negotiation::new(tcp);
    let features = plain.open(&target.domain).await?;
    if features.get_child("starttls", NS_TLS).is_none() {
        bail!("server offers no STARTTLS");
    }
    plain.send(&format!("<starttls xmlns='{NS_TLS}'/>")).await?;
    let proceed = plain.element().await?;
    if proceed.name() != "proceed" {
        bail!("STARTTLS refused: <{}>", proceed.name());
    }
    let name = rustls::pki_types::ServerName::try_from(target.domain.clone())
        .map_err(|e| anyhow!("bad domain {}: {e}", target.domain))?;
    let tls = connector()
        .connect(name, plain.io)
        .await
        .context("TLS handshake")?;
    let mut tls = Negotiation::new(tls);
    let features = tls.open(&target.domain).await?;
    Ok((tls, features))
}

/// Creates an account with XEP-0077 in-band registration; an account that
/// already exists (`<conflict/>`) counts as created.
pub async fn register(target: &Target, user: &str, password: &str) -> anyhow::Result<()> {
    let (mut n, _) = connect_tls(target).await?;
    n.send(&format!(
        "<iq type='set' id='reg'><query xmlns='{NS_REGISTER}'><username>{user}</username><password>{password}</password></query></iq>"
    ))
    .await?;
    let reply = n.element().await?;
    let _ = n.send("</stream:stream>").await;
    match reply.attr("type") {
        Some("result") => Ok(()),
        Some("error") if String::from(&reply).contains("conflict") => Ok(()),
        _ => bail!("registering {user} failed: {}", String::from(&reply)),
    }
}

/// Logs in (STARTTLS, SCRAM, bind) and starts the session's tasks.
pub async fn login(target: &Target, user: &str, password: &str, resource: &str) -> anyhow::Result<Session> {
    let (mut n, features) = connect_tls(target).await?;
    let offered: Vec<String> = features
        .get_child("mechanisms", NS_SASL)
        .map(|m| m.children().map(|c| c.text()).collect())
        .unwrap_or_default();
    let hash = if offered.iter().any(|m| m == "SCRAM-SHA-1") {
        ScramHash::Sha1
    } else if offered.iter().any(|m| m == "SCRAM-SHA-256") {
        ScramHash::Sha256
    } else {
        bail!("server offers no SCRAM mechanism (offered: {offered:?})");
    };
    scram(&mut n, hash, user, password).await?;
    let features = n.open(&target.domain).await?;
    if features.get_child("bind", NS_BIND).is_none() {
        bail!("server offers no resource binding");
    }
    n.send(&format!(
        "<iq type='set' id='bind'><bind xmlns='{NS_BIND}'><resource>{resource}</resource></bind></iq>"
    ))
    .await?;
    let bound = n.element().await?;
    let jid = bound
        .get_child("bind", NS_BIND)
        .and_then(|b| b.get_child("jid", NS_BIND))
        .map(|j| j.text())
        .ok_or_else(|| anyhow!("bind failed: {}", String::from(&bound)))?;
    Ok(spawn_session(n, jid))
}

/// SCRAM-SHA-1 (chosen first for every server alike) or SCRAM-SHA-256.
async fn scram<S: AsyncRead + AsyncWrite + Unpin>(
    n: &mut Negotiation<S>,
    hash: ScramHash,
    user: &str,
    password: &str,
) -> anyhow::Result<()> {
    let cnonce: String = {
        use rand::Rng;
        let bytes: [u8; 18] = rand::rng().random();
        B64.encode(bytes)
    };
    let first_bare = format!("n={user},r={cnonce}");
    n.send(&format!(
        "<auth xmlns='{NS_SASL}' mechanism='{}'>{}</auth>",
        hash.mechanism(),
        B64.encode(format!("n,,{first_bare}"))
    ))
    .await?;
    let challenge = n.element().await?;
    if challenge.name() != "challenge" {
        bail!("SASL refused at the first step: <{}>", challenge.name());
    }
    let server_first = String::from_utf8(B64.decode(challenge.text().trim())?)?;
    let (mut salt, mut iterations, mut nonce) = (None, 0u32, "");
    for part in server_first.split(',') {
        if let Some(v) = part.strip_prefix("s=") {
            salt = Some(B64.decode(v)?);
        } else if let Some(v) = part.strip_prefix("i=") {
            iterations = v.parse()?;
        } else if let Some(v) = part.strip_prefix("r=") {
            nonce = v;
        }
    }
    let salt = salt.ok_or_else(|| anyhow!("server-first-message without salt"))?;
    if !nonce.starts_with(&cnonce) {
        bail!("server nonce does not extend ours");
    }
    let key = (user.to_owned(), hash.mechanism(), salt.clone(), iterations);
    let cached = key_cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .cloned();
    let (client_key, server_key) = match cached {
        Some(k) => k,
        None => {
            let salted = hash.salted_password(password.as_bytes(), &salt, iterations);
            let k = (
                hash.hmac(&salted, b"Client Key"),
                hash.hmac(&salted, b"Server Key"),
            );
            key_cache()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, k.clone());
            k
        }
    };
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{first_bare},{server_first},{without_proof}");
    let signature = hash.hmac(&hash.hash(&client_key), auth_message.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
    n.send(&format!(
        "<response xmlns='{NS_SASL}'>{}</response>",
        B64.encode(format!("{without_proof},p={}", B64.encode(proof)))
    ))
    .await?;
    let outcome = n.element().await?;
    if outcome.name() != "success" {
        bail!("authentication failed for {user}: {}", String::from(&outcome));
    }
    let server_final = String::from_utf8(B64.decode(outcome.text().trim())?)?;
    let expected = B64.encode(hash.hmac(&server_key, auth_message.as_bytes()));
    if server_final.strip_prefix("v=") != Some(expected.as_str()) {
        bail!("the server's SCRAM signature is wrong");
    }
    Ok(())
}

fn spawn_session(n: Negotiation<TlsStream<TcpStream>>, jid: String) -> Session {
    let Negotiation {
        io,
        mut parser,
        mut events,
        mut buf,
    } = n;
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::channel::<String>(OUTBOX_MAX);
    let (in_tx, in_rx) = mpsc::channel::<Element>(INBOX_MAX);
    let writer = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(16 * 1024);
        while let Some(first) = out_rx.recv().await {
            batch.clear();
            batch.extend_from_slice(first.as_bytes());
            while batch.len() < 64 * 1024 {
                match out_rx.try_recv() {
                    Ok(more) => batch.extend_from_slice(more.as_bytes()),
                    Err(_) => break,
                }
            }
            if wr.write_all(&batch).await.is_err() || wr.flush().await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let pong = out_tx.clone();
    let reader = tokio::spawn(async move {
        loop {
            while let Some(ev) = events.pop_front() {
                let StreamEvent::Element(el) = ev else {
                    if matches!(ev, StreamEvent::Close) {
                        return;
                    }
                    continue;
                };
                if el.name() == "iq"
                    && el.attr("type") == Some("get")
                    && el.get_child("ping", NS_PING).is_some()
                {
                    let id = el.attr("id").unwrap_or_default();
                    let to = el.attr("from").unwrap_or_default();
                    let _ = pong
                        .send(format!("<iq type='result' id='{id}' to='{to}'/>"))
                        .await;
                    continue;
                }
                if in_tx.send(el).await.is_err() {
                    return;
                }
            }
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            match parser.feed(&buf[..n]) {
                Ok(evs) => events.extend(evs),
                Err(_) => return,
            }
        }
    });
    Session {
        jid,
        tx: out_tx,
        rx: in_rx,
        reader,
        writer,
    }
}
