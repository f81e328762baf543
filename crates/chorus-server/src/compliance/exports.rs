//! Exports of a search or a hold: the matching archive positions come from
//! the search index in one pass (no offset paging), the records from the
//! state machine in position order; the export is audited with its record
//! count before it is handed out.

use super::{Caller, Compliance, ComplianceError, Result, normalized_bare, unavailable};
use chorus_archive::export;
use chorus_archive::search::SearchQuery;
use chorus_archive::types::Record;
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

/// An export's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// JSON Lines.
    Jsonl,
    /// A tar of RFC 5322 `.eml` files, one per conversation and day.
    Eml,
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

    /// Every record a source covers, oldest first (server time, then
    /// archive position).
    async fn collect(&self, source: &ExportSource) -> Result<Vec<Record>> {
        let queries = self.queries(source)?;
        self.blocking(move |index, sm| {
            index.catch_up(sm).map_err(unavailable)?;
            let mut positions: Vec<u64> = Vec::new();
            for q in &queries {
                positions.extend(
                    index
                        .positions(q, EXPORT_RECORDS_MAX)
                        .map_err(|e| ComplianceError::BadRequest(e.to_string()))?,
                );
                if positions.len() > EXPORT_RECORDS_MAX {
                    return Err(ComplianceError::BadRequest(format!(
                        "more than {EXPORT_RECORDS_MAX} records; narrow the export"
                    )));
                }
            }
            positions.sort_unstable();
            positions.dedup();
            let mut out: Vec<(u64, Record)> = Vec::with_capacity(positions.len());
            for pos in positions {
                if let Some(r) = sm.record_at(pos).map_err(unavailable)? {
                    out.push((pos, r));
                }
            }
            out.sort_by_key(|(pos, r)| (r.stamp_ms, *pos));
            Ok(out.into_iter().map(|(_, r)| r).collect())
        })
        .await
    }

    /// Exports a search or a hold; returns (content type, file name, bytes).
    pub async fn export(
        &self,
        who: &Caller,
        source: ExportSource,
        format: ExportFormat,
    ) -> Result<(&'static str, String, Vec<u8>)> {
        let what = match &source {
            ExportSource::Search(q) => serde_json::json!({ "search": q }),
            ExportSource::Hold(id) => serde_json::json!({ "hold": id }),
        };
        let records = self.collect(&source).await?;
        self.audit(
            who,
            "export",
            serde_json::json!({
                "source": what, "format": format!("{format:?}").to_lowercase(), "results": records.len(),
            }),
        )
        .await?;
        let stamp = chorus_core::time::now_millis();
        Ok(match format {
            ExportFormat::Jsonl => (
                "application/x-ndjson",
                format!("chorus-export-{stamp}.jsonl"),
                export::jsonl(&records).into_bytes(),
            ),
            ExportFormat::Eml => (
                "application/x-tar",
                format!("chorus-export-{stamp}.tar"),
                export::tar(&export::eml_files(&records, &self.domain), stamp / 1000),
            ),
        })
    }
}
