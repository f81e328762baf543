//! Loads the node's certificate, or generates a self-signed development
//! certificate on first start.

use anyhow::Context as _;
use chorus_core::config::Config;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Builds the TLS acceptor shared by every listener, and the certificate's
/// `tls-server-end-point` channel-binding hash (RFC 5929), if it has one.
pub fn acceptor(config: &Config) -> anyhow::Result<(TlsAcceptor, Option<Vec<u8>>)> {
    let (cert_path, key_path) = match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let dir = config.server.data_dir.join("tls");
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !c.exists() || !k.exists() {
                generate(&config.server.domain, &c, &k)?;
                tracing::warn!(cert = %c.display(), "generated a self-signed development certificate; configure tls.cert_file and tls.key_file for production");
            }
            (c, k)
        }
    };
    let certs: Vec<CertificateDer<'static>> = {
        let pem =
            std::fs::read(&cert_path).with_context(|| format!("read certificate {}", cert_path.display()))?;
        rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .with_context(|| format!("parse certificate {}", cert_path.display()))?
    };
    anyhow::ensure!(
        !certs.is_empty(),
        "no certificate found in {}",
        cert_path.display()
    );
    let key: PrivateKeyDer<'static> = {
        let pem =
            std::fs::read(&key_path).with_context(|| format!("read private key {}", key_path.display()))?;
        rustls_pemfile::private_key(&mut pem.as_slice())
            .with_context(|| format!("parse private key {}", key_path.display()))?
            .with_context(|| format!("no private key found in {}", key_path.display()))?
    };
    let end_point = end_point_hash(&certs[0]);
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choose TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("load certificate and key")?;
    // Client connections run on rustls's unbuffered API, which has no
    // exporter: this log hands each one its exporter secret for
    // `tls-exporter` channel binding, and keeps nothing else.
    cfg.key_log = Arc::new(chorus_xmpp::runtime::tls::ExporterSecretLog);
    Ok((TlsAcceptor::from(Arc::new(cfg)), end_point))
}

/// RFC 5929 section 4.1: the certificate hashed with the hash of its
/// signature algorithm, SHA-256 when that is MD5 or SHA-1; none for
/// algorithms without a hash of their own (Ed25519, Ed448).
fn end_point_hash(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    use sha2::Digest;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let oid = parsed.signature_algorithm.algorithm.to_id_string();
    match oid.as_str() {
        // Ed25519, Ed448: RFC 5929 defines no hash.
        "1.3.101.112" | "1.3.101.113" => None,
        // sha384WithRSAEncryption, ecdsa-with-SHA384
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => Some(sha2::Sha384::digest(cert.as_ref()).to_vec()),
        // sha512WithRSAEncryption, ecdsa-with-SHA512
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => Some(sha2::Sha512::digest(cert.as_ref()).to_vec()),
        _ => Some(sha2::Sha256::digest(cert.as_ref()).to_vec()),
    }
}

fn generate(domain: &str, cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<()> {
    let names = vec![domain.to_owned(), format!("*.{domain}"), "localhost".to_owned()];
    let ck = rcgen::generate_simple_self_signed(names).context("generate self-signed certificate")?;
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(cert, ck.cert.pem()).with_context(|| format!("write {}", cert.display()))?;
    crate::private_fs::write_private(key, ck.signing_key.serialize_pem().as_bytes())
}
