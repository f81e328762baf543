//! Mutual TLS for the cluster listener and for links to peers.

use chorus_core::config::ClusterConfig;
use std::path::Path;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The node's TLS material.
#[derive(Clone)]
pub struct ClusterTls {
    ca: Certificate,
    identity: Identity,
}

fn read(path: Option<&Path>, key: &str) -> Result<Vec<u8>, String> {
    let path = path.ok_or_else(|| format!("cluster.{key} is not set"))?;
    std::fs::read(path).map_err(|e| format!("cluster.{key}: {}: {e}", path.display()))
}

impl ClusterTls {
    /// Loads the CA, certificate and key named in the configuration.
    pub fn load(c: &ClusterConfig) -> Result<ClusterTls, String> {
        let ca = read(c.ca_file.as_deref(), "ca_file")?;
        let cert = read(c.cert_file.as_deref(), "cert_file")?;
        let key = read(c.key_file.as_deref(), "key_file")?;
        Ok(ClusterTls {
            ca: Certificate::from_pem(ca),
            identity: Identity::from_pem(cert, key),
        })
    }

    /// Server side: present our certificate, require one signed by the CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
    }

    /// Client side: trust only the CA, expect the peer's node id as name.
    pub fn client(&self, peer_id: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(peer_id)
    }
}
