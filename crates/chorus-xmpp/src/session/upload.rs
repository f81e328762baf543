//! XEP-0363 HTTP File Upload, the XMPP half: the upload service's disco
//! and slot requests. A slot is a replicated row (so any site can serve
//! the download) named by an unguessable token; the HTTP listener takes
//! the bytes (`chorus-admin`'s upload routes).

use super::Session;
use crate::ns;
use crate::xml::{self, ElementExt};
use chorus_core::files::{Upload, slot_path, valid_filename};
use minidom::Element;

/// XEP-0363 namespace.
pub(super) const NS_UPLOAD: &str = "urn:xmpp:http:upload:0";

/// Slots one user may hold open (handed out, not yet uploaded) at once.
const OPEN_SLOTS_PER_USER_MAX: usize = 100;

/// Longest MIME type accepted.
const CONTENT_TYPE_BYTES_MAX: usize = 255;

impl Session {
    /// Whether `to` is the upload service's address.
    pub(super) fn is_upload_service(&self, to: Option<&str>) -> bool {
        self.ctx.config.upload.enabled && to.is_some_and(|t| t == self.ctx.config.upload_domain())
    }

    /// An IQ to the upload service.
    pub(super) fn on_upload_iq(&mut self, iq: &Element, typ: &str) {
        if typ != "get" && typ != "set" {
            return;
        }
        let payload = iq.children().next().cloned();
        match payload {
            Some(p) if p.is("query", ns::DISCO_INFO) && typ == "get" => self.upload_disco(iq),
            Some(p) if p.is("query", ns::DISCO_ITEMS) && typ == "get" => {
                self.send(xml::iq_result(iq).with_child(xml::new("query", ns::DISCO_ITEMS)))
            }
            Some(p) if p.is("ping", ns::PING) => self.send(xml::iq_result(iq)),
            Some(p) if p.is("request", NS_UPLOAD) && typ == "get" => self.upload_slot(iq, &p),
            _ => self.send(xml::error_reply(iq, "cancel", "service-unavailable")),
        }
    }

    fn upload_disco(&mut self, iq: &Element) {
        let max = self.ctx.config.upload.file_bytes_max.to_string();
        let field = |var: &str, typ: Option<&str>, value: &str| {
            let mut f = xml::new("field", ns::DATA).with_attr("var", var);
            if let Some(t) = typ {
                f.put_attr("type", t);
            }
            f.with_child(xml::new("value", ns::DATA).with_text(value))
        };
        let form = xml::new("x", ns::DATA)
            .with_attr("type", "result")
            .with_child(field("FORM_TYPE", Some("hidden"), NS_UPLOAD))
            .with_child(field("max-file-size", None, &max));
        let query = xml::new("query", ns::DISCO_INFO)
            .with_child(
                xml::new("identity", ns::DISCO_INFO)
                    .with_attr("category", "store")
                    .with_attr("type", "file")
                    .with_attr("name", "Chorus file sharing"),
            )
            .with_child(xml::new("feature", ns::DISCO_INFO).with_attr("var", ns::DISCO_INFO))
            .with_child(xml::new("feature", ns::DISCO_INFO).with_attr("var", NS_UPLOAD))
            .with_child(form);
        self.send(xml::iq_result(iq).with_child(query));
    }

    fn upload_slot(&mut self, iq: &Element, req: &Element) {
        let cfg = &self.ctx.config.upload;
        let (max, quota) = (cfg.file_bytes_max, cfg.quota_bytes_per_user);
        let filename = req.attr("filename").unwrap_or_default().to_owned();
        let size = req.attr("size").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        if !valid_filename(&filename) || size == 0 {
            return self.send(xml::error_reply(iq, "modify", "bad-request"));
        }
        if size > max {
            let mut e = xml::error_reply(iq, "modify", "not-acceptable");
            if let Some(err) = e.get_child_mut("error", ns::CLIENT) {
                let limit = xml::new("max-file-size", NS_UPLOAD).with_text(max.to_string());
                err.append_child(xml::new("file-too-large", NS_UPLOAD).with_child(limit));
            }
            return self.send(e);
        }
        let content_type = req
            .attr("content-type")
            .filter(|t| t.len() <= CONTENT_TYPE_BYTES_MAX && t.contains('/'))
            .filter(|t| !t.chars().any(|c| c.is_control() || c.is_whitespace()))
            .map(str::to_owned);
        let user = self.user().to_owned();
        let (used, open) = match self.upload_usage(&user) {
            Ok(u) => u,
            Err(()) => return self.send(xml::error_reply(iq, "wait", "internal-server-error")),
        };
        if used.saturating_add(size) > quota || open >= OPEN_SLOTS_PER_USER_MAX {
            return self.send(xml::error_reply(iq, "wait", "resource-constraint"));
        }
        let token = slot_token();
        let upload = Upload {
            filename: filename.clone(),
            size,
            content_type,
            created_ms: chorus_core::time::now_millis(),
            sha256: None,
        };
        let json = serde_json::to_string(&upload).unwrap_or_default();
        if self.ctx.store.set_upload(&user, &token, Some(&json)).is_err() {
            return self.send(xml::error_reply(iq, "wait", "internal-server-error"));
        }
        let url = format!(
            "{}{}",
            self.ctx.config.upload_url_base(),
            slot_path(&user, &token, &filename)
        );
        let slot = xml::new("slot", NS_UPLOAD)
            .with_child(xml::new("put", NS_UPLOAD).with_attr("url", url.clone()))
            .with_child(xml::new("get", NS_UPLOAD).with_attr("url", url));
        tracing::info!(user = %user, size, "upload slot handed out");
        self.send(xml::iq_result(iq).with_child(slot));
    }

    /// Bytes the user's files and open slots take, and how many slots are
    /// open; expired slots that were never used are removed on the way.
    fn upload_usage(&self, user: &str) -> Result<(u64, usize), ()> {
        let ttl_ms = self.ctx.config.upload.slot_ttl_secs.saturating_mul(1000);
        let now = chorus_core::time::now_millis();
        let mut used = 0u64;
        let mut open = 0;
        for (token, json) in self.ctx.store.uploads(user).map_err(|_| ())? {
            let Ok(u) = serde_json::from_str::<Upload>(&json) else {
                continue;
            };
            if u.sha256.is_none() && now.saturating_sub(u.created_ms) > ttl_ms {
                let _ = self.ctx.store.set_upload(user, &token, None);
                continue;
            }
            open += usize::from(u.sha256.is_none());
            used = used.saturating_add(u.size);
        }
        Ok((used, open))
    }
}

/// An unguessable slot token (128 random bits).
fn slot_token() -> String {
    use base64::Engine;
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
