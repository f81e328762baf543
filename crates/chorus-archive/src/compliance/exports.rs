//! Exports of a search or a hold: the matching archive positions come from
//! the search index in one pass (no offset paging); the verifiable export
//! package (`crate::package`) is built on disk from them; it is
//! audited with its record count and manifest hash before it is handed out.

use super::{Caller, Compliance, ComplianceError, Result, normalized_bare, unavailable};
use crate::package::{Format, Package, Request};
use crate::search::SearchQuery;
use chorus_core::jids;

/// Records an export may carry.
pub const EXPORT_RECORDS_MAX: usize = 1_000_000;

/// What to export.
#[derive(Clone, Debug)]
pub enum ExportSource {
    /// The records a search finds.
    Search(SearchQuery),
    /// The records a hold covers.
    Hold(String),
}

impl Compliance {
    /// The searches that find what a source covers.
    fn queries(&self, source: &ExportSource) -> Result<Vec<SearchQuery>> {
        match source {
            ExportSource::Search(q) => Ok(vec![SearchQuery {
                participants: jids::bare_all(&q.participants).map_err(ComplianceError::BadRequest)?,
                room: q.room.as_deref().map(normalized_bare).transpose()?,
                ..q.clone()
            }]),
            ExportSource::Hold(id) => {
                let hold = self
                    .sm
                    .holds()
                    .map_err(unavailable)?
                    .into_iter()
                    .find(|h| h.id == *id)
                    .ok_or_else(|| ComplianceError::NotFound(format!("no hold {id}")))?;
                let base = SearchQuery {
                    start_ms: hold.start_ms,
                    end_ms: hold.end_ms,
                    ..SearchQuery::default()
                };
                Ok(hold
                    .users
                    .iter()
                    .map(|u| SearchQuery {
                        participants: vec![u.clone()],
                        ..base.clone()
                    })
                    .chain(hold.rooms.iter().map(|r| SearchQuery {
                        room: Some(r.clone()),
                        ..base.clone()
                    }))
                    .collect())
            }
        }
    }

    /// The archive positions a source covers, oldest first (server time,
    /// then position).
    async fn positions(&self, source: &ExportSource, hold: super::HeavyPermit) -> Result<Vec<u64>> {
        let queries = self.queries(source)?;
        self.blocking(move |index, sm| {
            let _hold = hold;
            index.catch_up(sm).map_err(unavailable)?;
            let mut found: Vec<(u64, u64)> = Vec::new();
            for q in &queries {
                found.extend(
                    index
                        .positions(q, EXPORT_RECORDS_MAX)
                        .map_err(|e| ComplianceError::BadRequest(e.to_string()))?,
                );
                if found.len() > EXPORT_RECORDS_MAX {
                    return Err(ComplianceError::BadRequest(format!(
                        "more than {EXPORT_RECORDS_MAX} records; narrow the export"
                    )));
                }
            }
            found.sort_unstable();
            found.dedup();
            Ok(found.into_iter().map(|(_, pos)| pos).collect())
        })
        .await
    }

    /// Builds the export of a search or a hold on disk (bounded memory),
    /// audits it with its record count and its manifest's SHA-256, and
    /// returns it with the file name to offer and the heavy-operation
    /// permit, to be held until the download ends (the file counts
    /// against the node's disk until then).
    pub async fn export(
        &self,
        who: &Caller,
        source: ExportSource,
        format: Format,
    ) -> Result<(String, Package, super::HeavyPermit)> {
        let asked = match &source {
            ExportSource::Search(q) => serde_json::json!({ "search": q }),
            ExportSource::Hold(id) => serde_json::json!({ "hold": id }),
        };
        let permit = self.heavy.enter("export")?;
        let positions = self.positions(&source, permit.clone()).await?;
        let req = Request {
            asked: asked.clone(),
            by: who.name.clone(),
            role: format!("{:?}", who.role).to_lowercase(),
            addr: who.addr.clone(),
            node: self.node_id.clone(),
            domain: self.domain.clone(),
            format,
            created_ms: chorus_core::time::now_millis(),
        };
        let (dir, stamp) = (self.export_dir.clone(), req.created_ms);
        let files_dir = self.files_dir.clone();
        let pkg = self
            .blocking({
                let hold = permit.clone();
                move |_, sm| {
                    let _hold = hold;
                    sm.export_package_with_files(&positions, req, &dir, Some(&files_dir))
                        .map_err(unavailable)
                }
            })
            .await?;
        self.audit(
            who,
            "export",
            serde_json::json!({
                "source": asked, "format": format, "results": pkg.records,
                "bytes": pkg.bytes, "manifest_sha256": pkg.manifest_sha256,
            }),
        )
        .await?;
        let name = format!(
            "chorus-export-{stamp}-{}.tar",
            serde_json::json!(format).as_str().unwrap_or("x")
        );
        Ok((name, pkg, permit))
    }
}
