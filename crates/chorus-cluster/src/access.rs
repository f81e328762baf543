//! Who may call this node's cluster API. A caller is the node its verified
//! client certificate names (the common name `chorus cert node --id`
//! writes), never an id claimed inside a request; it must be a configured
//! peer that no operator has removed from the archive group. Refusals are
//! PERMISSION_DENIED (UNAUTHENTICATED without a certificate), logged once
//! per caller and counted in `chorus_cluster_rpc_refused_total`.

use chorus_core::config::PeerConfig;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};
use tonic::{Request, Status};

/// Distinct refused callers whose refusal is logged; later ones are only counted.
const REFUSALS_LOGGED_MAX: usize = 1024;

/// A peer as the configuration knows it.
#[derive(Clone, Debug)]
pub struct Member {
    /// Its site.
    pub site: String,
    /// Its Raft id (node tag).
    pub raft_id: u64,
    /// Its configured cluster address.
    pub addr: String,
}

/// The membership every cluster RPC is checked against.
pub struct Access {
    /// This node, which may ask itself for its status (`chorus cluster status`).
    self_id: String,
    /// This node's cluster address.
    self_addr: String,
    members: HashMap<String, Member>,
    /// Raft ids an operator removed from the archive group.
    removed: RwLock<HashSet<u64>>,
    /// Callers whose refusal was already logged.
    logged: Mutex<HashSet<String>>,
}

/// The node id in a DER certificate: its subject's common name.
pub fn certificate_node_id(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

impl Access {
    /// Membership from the configured peers of node `self_id`, whose own
    /// cluster address is `self_addr`.
    pub fn new(self_id: &str, self_addr: &str, peers: &[PeerConfig]) -> Access {
        let members = peers
            .iter()
            .map(|p| {
                let m = Member {
                    site: p.site.clone(),
                    raft_id: chorus_archive::raft::raft_id(&p.id),
                    addr: p.addr.clone(),
                };
                (p.id.clone(), m)
            })
            .collect();
        Access {
            self_id: self_id.to_owned(),
            self_addr: self_addr.to_owned(),
            members,
            removed: RwLock::new(HashSet::new()),
            logged: Mutex::new(HashSet::new()),
        }
    }

    /// Replaces the set of removed members (from the archive state machine,
    /// whenever it changes). Takes effect on the next RPC and the next frame
    /// of every open link.
    pub fn set_removed(&self, raft_ids: impl IntoIterator<Item = u64>) {
        let mut removed = self.removed.write().unwrap_or_else(|e| e.into_inner());
        *removed = raft_ids.into_iter().collect();
    }

    /// The configured member `node_id`, if it is one and was not removed.
    pub fn member(&self, node_id: &str) -> Option<&Member> {
        let m = self.members.get(node_id)?;
        let removed = self.removed.read().unwrap_or_else(|e| e.into_inner());
        (!removed.contains(&m.raft_id)).then_some(m)
    }

    /// The verified caller of `req`, which must be a current member.
    pub fn caller<T>(&self, req: &Request<T>, rpc: &'static str) -> Result<String, Status> {
        let id = self.configured_caller(req, rpc)?;
        if id == self.self_id && rpc == "status" {
            return Ok(id);
        }
        if self.member(&id).is_none() {
            self.refuse(&id, rpc, "removed");
            return Err(Status::permission_denied(format!(
                "{id} was removed from this cluster"
            )));
        }
        Ok(id)
    }

    /// The verified caller of `req`, which must be a configured peer (an
    /// operator may have removed it; Raft traffic from a removed node that
    /// the Raft membership still lists is needed to finish its removal).
    pub fn configured_caller<T>(&self, req: &Request<T>, rpc: &'static str) -> Result<String, Status> {
        let Some(der) = req.peer_certs().and_then(|c| c.first().map(|c| c.to_vec())) else {
            self.refuse("(no certificate)", rpc, "no client certificate");
            return Err(Status::unauthenticated("a client certificate is required"));
        };
        let Some(id) = certificate_node_id(&der) else {
            self.refuse("(unreadable certificate)", rpc, "certificate names no node");
            return Err(Status::permission_denied("the client certificate names no node"));
        };
        let own_status = id == self.self_id && rpc == "status";
        if !self.members.contains_key(&id) && !own_status {
            self.refuse(&id, rpc, "not a member");
            return Err(Status::permission_denied(format!(
                "{id} is not a member of this cluster"
            )));
        }
        Ok(id)
    }

    /// Refuses a request whose claimed id is not the caller's.
    pub fn same_node(&self, caller: &str, claimed: &str, rpc: &'static str) -> Result<(), Status> {
        if caller == claimed {
            return Ok(());
        }
        self.refuse(caller, rpc, "claimed another node's id");
        Err(Status::permission_denied(format!(
            "{caller} may not act for {claimed}"
        )))
    }

    /// The configured peer `node_id`, removed or not.
    pub fn configured(&self, node_id: &str) -> Option<&Member> {
        self.members.get(node_id)
    }

    /// The configured cluster address of `node_id` (this node or a peer).
    pub fn addr_of(&self, node_id: &str) -> Option<String> {
        if node_id == self.self_id {
            return Some(self.self_addr.clone());
        }
        self.members.get(node_id).map(|m| m.addr.clone())
    }

    /// Still a member (checked on every frame of a long-lived link).
    pub fn still_member(&self, caller: &str, rpc: &'static str) -> Result<(), Status> {
        if self.member(caller).is_some() {
            return Ok(());
        }
        self.refuse(caller, rpc, "removed while connected");
        Err(Status::permission_denied(format!(
            "{caller} is no longer a member"
        )))
    }

    /// Counts a refusal and logs it the first time for this caller.
    pub fn refuse(&self, caller: &str, rpc: &'static str, reason: &'static str) {
        metrics::counter!("chorus_cluster_rpc_refused_total", "rpc" => rpc, "reason" => reason).increment(1);
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.len() < REFUSALS_LOGGED_MAX && logged.insert(caller.to_owned()) {
            tracing::warn!(caller, rpc, reason, "refused a cluster request");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers() -> Vec<PeerConfig> {
        vec![PeerConfig {
            id: "b".into(),
            site: "sb".into(),
            addr: "127.0.0.1:1".into(),
        }]
    }

    #[test]
    fn removed_members_stop_counting_and_come_back_when_re_added() {
        let a = Access::new("a", "127.0.0.1:7000", &peers());
        assert!(a.member("b").is_some());
        assert!(a.member("c").is_none());
        a.set_removed([chorus_archive::raft::raft_id("b")]);
        assert!(a.member("b").is_none());
        assert!(a.still_member("b", "link").is_err());
        a.set_removed([]);
        assert!(a.still_member("b", "link").is_ok());
    }

    #[test]
    fn a_claim_for_another_node_is_refused() {
        let a = Access::new("a", "127.0.0.1:7000", &peers());
        assert!(a.same_node("b", "b", "pull").is_ok());
        let e = a.same_node("b", "c", "pull").expect_err("must be refused");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn the_node_id_is_the_certificates_common_name() {
        let dir = tempfile::tempdir().expect("test setup");
        crate::certs::create_ca(dir.path()).expect("test setup");
        let (pem, _) = crate::certs::create_node(dir.path(), "tokyo-1", &["alias".into()], dir.path())
            .expect("test setup");
        let pem = std::fs::read(pem).expect("test setup");
        let der = pem_to_der(&pem);
        assert_eq!(certificate_node_id(&der).as_deref(), Some("tokyo-1"));
        assert_eq!(certificate_node_id(b"garbage"), None);
    }

    fn pem_to_der(pem: &[u8]) -> Vec<u8> {
        use base64::Engine as _;
        let text = std::str::from_utf8(pem).expect("test setup");
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("test setup")
    }
}
