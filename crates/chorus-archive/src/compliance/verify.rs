//! `chorus archive verify`: this node recomputes its hash chain from its
//! own rows (naming any changed, missing or unlinked record or audit
//! entry), then compares chains with every other configured node over the
//! cluster's mTLS channel: each site's hash at the last link both hold
//! must be the same, since all apply one Raft log. A site whose rows were
//! changed behind the chain's back is found by running verify there (the
//! CLI's `--site` does it for several at once).

use super::{Caller, Compliance, Result, unavailable};
use crate::chain::Head;
use crate::raft::raft_id;

impl Compliance {
    /// Recomputes this node's chain and compares heads with every site
    /// (audited).
    pub async fn verify(&self, who: &Caller) -> Result<serde_json::Value> {
        let permit = self.heavy.enter("verification")?;
        let v = self
            .blocking(move |_, sm| {
                let _hold = permit;
                sm.verify_chain().map_err(unavailable)
            })
            .await?;
        let mut sites = Vec::new();
        let mut agree = true;
        for node in self.peers.keys().filter(|n| **n != self.node_id) {
            let site = self.compare_with(node, &v.computed).await;
            // An unreachable site is reported, not counted as a difference.
            agree &= site["agrees"].as_bool() != Some(false);
            sites.push(site);
        }
        let ok = v.ok() && agree;
        self.audit(
            who,
            "archive.verify",
            serde_json::json!({
                "ok": ok, "problems": v.problems.len(), "links": v.computed.length,
                "sites_agree": agree,
            }),
        )
        .await?;
        let mut out = serde_json::to_value(&v).unwrap_or_default();
        out["ok"] = ok.into();
        out["node"] = self.node_id.clone().into();
        out["sites"] = sites.into();
        Ok(out)
    }

    /// Whether `node`'s chain agrees with ours at the last link both have.
    async fn compare_with(&self, node: &str, ours: &Head) -> serde_json::Value {
        let target = raft_id(node);
        let ask = |link: u64| self.net.ask_chain(target, link);
        let answer = |agrees: Option<bool>, head: Option<&Head>, note: String| serde_json::json!({ "node": node, "agrees": agrees, "head": head, "note": note });
        if ours.length == 0 {
            return match ask(0).await {
                Ok(p) => answer(
                    Some(p.head.length == 0),
                    Some(&p.head),
                    "our chain is empty".into(),
                ),
                Err(e) => answer(None, None, format!("unreachable: {e}")),
            };
        }
        let theirs = match ask(ours.length - 1).await {
            Ok(p) => p,
            Err(e) => return answer(None, None, format!("unreachable: {e}")),
        };
        if let Some(h) = &theirs.hash_at {
            let same = *h == ours.hash;
            let note = if same {
                format!("same hash at link {}", ours.length - 1)
            } else {
                format!(
                    "a different hash at link {}: the histories differ",
                    ours.length - 1
                )
            };
            return answer(Some(same), Some(&theirs.head), note);
        }
        // They are behind: compare at their head.
        let at = theirs.head.length.saturating_sub(1);
        let mine = self.sm.chain_links(at, 1).ok().and_then(|l| l.into_iter().next());
        let same =
            theirs.head.length == 0 || mine.is_some_and(|(n, l)| n == at && l.hash == theirs.head.hash);
        let note = format!(
            "{} links behind; {} at their head",
            ours.length - theirs.head.length,
            if same { "same hash" } else { "a different hash" }
        );
        answer(Some(same), Some(&theirs.head), note)
    }

    /// The chain head (one read).
    pub fn chain_head(&self) -> Result<Head> {
        self.sm.chain_head().map_err(unavailable)
    }

    /// Chain links from `from` on (to compare sites link by link).
    pub fn chain_links(&self, from: u64, limit: usize) -> Result<Vec<(u64, crate::chain::Link)>> {
        self.sm
            .chain_links(from, limit.clamp(1, crate::search::SEARCH_LIMIT_MAX))
            .map_err(unavailable)
    }
}
