//! XEP-0398: the PEP avatar (XEP-0084) and the vCard photo (XEP-0054 and
//! XEP-0153) are one avatar. A vCard read shows the PEP avatar as its
//! PHOTO; a vCard written with a PHOTO publishes it to PEP, so older
//! clients and newer ones see the same picture.
//!
//! A directory account's card lists the fields the directory owns
//! ([`chorus_core::directory::VCARD_READ_ONLY_NS`]); a vCard the person
//! writes keeps the directory's values of those ([`keep_read_only`]).

use super::Session;
use crate::ns;
use crate::pep;
use crate::xml::{self, ElementExt};
use minidom::Element;

/// `submitted` with the fields the stored card marks read-only taken from
/// the stored card (and its marker kept); `submitted` itself when the
/// stored card marks none.
pub(super) fn keep_read_only(stored: Option<&str>, submitted: &Element) -> Element {
    use chorus_core::directory::VCARD_READ_ONLY_NS;
    // Only the directory's synchronization writes a marker.
    let mut own = xml::new("vCard", ns::VCARD);
    for c in submitted.children().filter(|c| c.ns() != VCARD_READ_ONLY_NS) {
        own.append_child(c.clone());
    }
    let Some(stored) = stored.and_then(|s| s.parse::<Element>().ok()) else {
        return own;
    };
    let Some(marker) = stored.get_child("read-only", VCARD_READ_ONLY_NS) else {
        return own;
    };
    let fields: Vec<String> = marker.children().map(|f| f.text()).collect();
    let owned = |c: &Element| c.ns() == ns::VCARD && fields.iter().any(|f| f == c.name());
    let mut card = xml::new("vCard", ns::VCARD);
    for c in own.children().filter(|c| !owned(c)) {
        card.append_child(c.clone());
    }
    for c in stored.children().filter(|c| owned(c)) {
        card.append_child(c.clone());
    }
    card.append_child(marker.clone());
    card
}

impl Session {
    /// `vcard` with its PHOTO replaced by `user`'s PEP avatar, if any and
    /// if the asker may see that avatar (its nodes' access models hold for
    /// the vCard too).
    pub(super) fn vcard_with_avatar(&self, user: &str, mut vcard: Element) -> Element {
        let Some(hash) = self.avatar_hash(user) else {
            return vcard;
        };
        let directory_photo = vcard
            .get_child("read-only", chorus_core::directory::VCARD_READ_ONLY_NS)
            .is_some_and(|m| m.children().any(|f| f.text() == "PHOTO"));
        if directory_photo {
            // The directory's photo stands; a PEP avatar does not replace it.
            return vcard;
        }
        let me = self.user().to_owned();
        let readable = [ns::AVATAR_METADATA, ns::AVATAR_DATA].iter().all(
            |node| matches!(self.pep_node(user, node), Ok(Some(cfg)) if self.pep_may_read(user, &me, &cfg)),
        );
        if !readable {
            return vcard;
        }
        while vcard.remove_child("PHOTO", ns::VCARD).is_some() {}
        if hash.is_empty() {
            return vcard;
        }
        let Some((data, mime)) = self.avatar_data(user, &hash) else {
            return vcard;
        };
        let photo = xml::new("PHOTO", ns::VCARD)
            .with_child(xml::new("TYPE", ns::VCARD).with_text(mime))
            .with_child(xml::new("BINVAL", ns::VCARD).with_text(data));
        vcard.append_child(photo);
        vcard
    }

    /// The base64 data and MIME type of `user`'s avatar `hash`.
    fn avatar_data(&self, user: &str, hash: &str) -> Option<(String, String)> {
        let parse = |x: &str| crate::parser::parse_frame(x.as_bytes(), x.len() * 2 + 1024, 16).ok();
        let data = pep::ordered(self.ctx.store.pep_items(user, ns::AVATAR_DATA).ok()?)
            .into_iter()
            .find(|(id, _)| id == hash)
            .and_then(|(_, i)| parse(&i.xml))?;
        let meta = pep::ordered(self.ctx.store.pep_items(user, ns::AVATAR_METADATA).ok()?)
            .pop()
            .and_then(|(_, i)| parse(&i.xml))?;
        let mime = meta
            .children()
            .find(|i| i.is("info", ns::AVATAR_METADATA) && i.attr("id") == Some(hash))
            .and_then(|i| i.attr("type"))
            .unwrap_or("image/png")
            .to_owned();
        Some((data.text().split_whitespace().collect(), mime))
    }

    /// After a vCard with a PHOTO is stored, publishes that photo as the
    /// PEP avatar (unless it already is).
    pub(super) fn avatar_from_vcard(&mut self, vcard: &Element) {
        use base64::Engine;
        use sha1::Digest;
        let Some(photo) = vcard.get_child("PHOTO", ns::VCARD) else {
            return;
        };
        let Some(binval) = photo.get_child("BINVAL", ns::VCARD) else {
            return;
        };
        let b64: String = binval.text().split_whitespace().collect();
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&b64) else {
            return;
        };
        let hash: String = sha1::Sha1::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let user = self.user().to_owned();
        if self.avatar_hash(&user).as_deref() == Some(hash.as_str()) {
            return;
        }
        let mime = photo
            .get_child("TYPE", ns::VCARD)
            .map(|t| t.text())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "image/png".into());
        let data = xml::new("data", ns::AVATAR_DATA).with_text(b64);
        let info = xml::new("info", ns::AVATAR_METADATA)
            .with_attr("id", hash.clone())
            .with_attr("bytes", bytes.len().to_string())
            .with_attr("type", mime);
        let meta = xml::new("metadata", ns::AVATAR_METADATA).with_child(info);
        let published = self
            .pep_store_item(ns::AVATAR_DATA, &hash, &data, None)
            .and_then(|()| self.pep_store_item(ns::AVATAR_METADATA, &hash, &meta, None));
        match published {
            Ok(()) => self.rebroadcast_for_avatar(),
            Err(e) => tracing::info!(user = %user, error = ?e, "vCard photo not published as PEP avatar"),
        }
    }
}
