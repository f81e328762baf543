//! Development and Kubernetes certificates for mutual TLS between nodes:
//! a cluster CA and node certificates it signs (`chorus cert`).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};

/// Common name of every Chorus cluster CA.
const CA_COMMON_NAME: &str = "Chorus cluster CA";

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// rcgen refused.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A name is not usable.
    #[error("invalid name {0:?}")]
    Name(String),
}

fn write(path: &Path, data: &str, private: bool) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mode = if private { 0o600 } else { 0o644 };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    // An existing file keeps its mode on open: tighten it before writing.
    use std::os::unix::fs::PermissionsExt as _;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)?;
    f.set_len(0).map_err(io)?;
    f.write_all(data.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, "Chorus");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

/// Creates `ca.pem` and `ca.key` in `dir`.
pub fn create_ca(dir: &Path) -> Result<(PathBuf, PathBuf), CertError> {
    let key = KeyPair::generate()?;
    let cert = ca_params().self_signed(&key)?;
    let (c, k) = (dir.join("ca.pem"), dir.join("ca.key"));
    write(&c, &cert.pem(), false)?;
    write(&k, &key.serialize_pem(), true)?;
    Ok((c, k))
}

/// Creates `<node_id>.pem` and `<node_id>.key` in `out`, signed by the CA in
/// `ca_dir`, valid for the node id and the extra DNS names or IP addresses
/// (servers and clients both present it).
pub fn create_node(
    ca_dir: &Path,
    node_id: &str,
    extra: &[String],
    out: &Path,
) -> Result<(PathBuf, PathBuf), CertError> {
    let ca_key = KeyPair::from_pem(&read(&ca_dir.join("ca.key"))?)?;
    let issuer = Issuer::new(ca_params(), ca_key);
    let mut names = vec![node_id.to_owned()];
    names.extend(extra.iter().cloned());
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_id);
    p.distinguished_name = dn;
    for n in names {
        let san = match n.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(n.clone().try_into().map_err(|_| CertError::Name(n.clone()))?),
        };
        p.subject_alt_names.push(san);
    }
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer)?;
    let (c, k) = (
        out.join(format!("{node_id}.pem")),
        out.join(format!("{node_id}.key")),
    );
    write(&c, &cert.pem(), false)?;
    write(&k, &key.serialize_pem(), true)?;
    Ok((c, k))
}
