//! The full-text search index (tantivy) over the committed archive. It is
//! derived data: every node builds its own from the records its state
//! machine applied, remembers in the commit payload how far it got (and
//! for which snapshot generation), and rebuilds from scratch after a
//! snapshot replaced the archive. Results are always re-read from the
//! state machine, so a record purged a moment ago never comes back.

use crate::state_machine::ArchiveStateMachine;
use chorus_core::archive::{Record, RecordKind};
use serde::{Deserialize, Serialize};
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery, TermQuery};
use tantivy::schema::{Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TEXT, Value};
use tantivy::{Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term};

/// Records indexed per commit while catching up.
const INDEX_BATCH: usize = 20_000;
/// The index writer's memory budget, in bytes.
const WRITER_MEMORY: usize = 64 * 1024 * 1024;
/// The largest page a search returns.
pub const SEARCH_LIMIT_MAX: usize = 1000;
/// The largest offset a search accepts (deeper pages: narrow or export).
pub const SEARCH_OFFSET_MAX: usize = 100_000;

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query text could not be parsed.
    #[error("bad search query: {0}")]
    BadQuery(String),
    /// The index or the archive could not be read or written.
    #[error("search index error: {0}")]
    Index(String),
}

fn ierr(e: impl std::fmt::Display) -> SearchError {
    SearchError::Index(e.to_string())
}

/// A compliance search: every given participant took part, in the room if
/// given, all the words in the body, within the date range.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchQuery {
    /// Bare JIDs that must all be among the record's participants.
    #[serde(default)]
    pub participants: Vec<String>,
    /// The room's bare JID.
    #[serde(default)]
    pub room: Option<String>,
    /// Words (tantivy query syntax; all words must match by default).
    #[serde(default)]
    pub words: Option<String>,
    /// The site (office) whose node accepted the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Records at or after this time (ms).
    #[serde(default)]
    pub start_ms: Option<u64>,
    /// Records at or before this time (ms).
    #[serde(default)]
    pub end_ms: Option<u64>,
    /// Results to skip.
    #[serde(default)]
    pub offset: usize,
    /// Results to return (at most [`SEARCH_LIMIT_MAX`]).
    #[serde(default)]
    pub limit: usize,
}

/// One page of search results, oldest first.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SearchPage {
    /// How many records match in all.
    pub total: usize,
    /// This page.
    pub records: Vec<Record>,
}

/// How far the index got: records by position, tombstones by chain link.
#[derive(Default, Serialize, Deserialize)]
struct Progress {
    next: u64,
    generation: u64,
    /// The next chain link to look at for tombstones.
    #[serde(default)]
    chain_next: u64,
}

struct Fields {
    id: Field,
    pos: Field,
    stamp: Field,
    party: Field,
    room: Field,
    body: Field,
    kind: Field,
    site: Field,
}

/// A node's search index.
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    f: Fields,
}

impl SearchIndex {
    /// Opens (creating) the index in `dir`.
    pub fn open(dir: &Path) -> Result<SearchIndex, SearchError> {
        std::fs::create_dir_all(dir).map_err(ierr)?;
        let mut sb = Schema::builder();
        let f = Fields {
            id: sb.add_text_field("id", STRING | STORED),
            pos: sb.add_u64_field("pos", INDEXED | STORED),
            stamp: sb.add_u64_field("stamp", INDEXED | tantivy::schema::FAST),
            party: sb.add_text_field("party", STRING),
            room: sb.add_text_field("room", STRING),
            body: sb.add_text_field("body", TEXT),
            kind: sb.add_text_field("kind", STRING),
            site: sb.add_text_field("site", STRING),
        };
        let schema = sb.build();
        let directory = tantivy::directory::MmapDirectory::open(dir).map_err(ierr)?;
        let index = match Index::open_or_create(directory, schema.clone()) {
            Ok(index) => index,
            Err(tantivy::TantivyError::SchemaError(e)) => {
                // An index built by an older version (another schema): it is
                // derived data, so it is rebuilt from the archive.
                tracing::warn!(error = %e, dir = %dir.display(), "search index schema changed: rebuilding it");
                std::fs::remove_dir_all(dir).map_err(ierr)?;
                std::fs::create_dir_all(dir).map_err(ierr)?;
                let directory = tantivy::directory::MmapDirectory::open(dir).map_err(ierr)?;
                Index::open_or_create(directory, schema).map_err(ierr)?
            }
            Err(e) => return Err(ierr(e)),
        };
        let writer = index.writer(WRITER_MEMORY).map_err(ierr)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(ierr)?;
        Ok(SearchIndex {
            index,
            reader,
            writer: Mutex::new(writer),
            f,
        })
    }

    fn progress(&self) -> Result<Progress, SearchError> {
        let metas = self.index.load_metas().map_err(ierr)?;
        Ok(metas
            .payload
            .and_then(|p| serde_json::from_str(&p).ok())
            .unwrap_or_default())
    }

    /// Indexes what the state machine applied since the last call and
    /// forgets purged records; returns how many records it indexed. Purges
    /// are read from the chain's tombstones and the progress is committed
    /// with the deletions, so a crash never leaves purged text behind; the
    /// segments holding deleted documents are then merged, which drops
    /// their text from disk.
    pub fn catch_up(&self, sm: &ArchiveStateMachine) -> Result<usize, SearchError> {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut progress = self.progress()?;
        let generation = sm.generation().map_err(ierr)?;
        let mut changed = false;
        if progress.generation != generation {
            writer.delete_all_documents().map_err(ierr)?;
            progress = Progress {
                next: 0,
                generation,
                chain_next: 0,
            };
            changed = true;
        }
        let chain_before = progress.chain_next;
        let deleted = self.forget_tombstoned(&writer, sm, &mut progress)?;
        changed |= progress.chain_next != chain_before;
        let mut total = 0;
        loop {
            let batch = sm.records_from(progress.next, INDEX_BATCH).map_err(ierr)?;
            let Some((last, _)) = batch.last() else { break };
            progress.next = last + 1;
            total += batch.len();
            for (pos, r) in &batch {
                writer.add_document(self.document(*pos, r)).map_err(ierr)?;
            }
            changed = true;
            if batch.len() < INDEX_BATCH {
                break;
            }
            self.commit(&mut writer, &progress)?;
        }
        if changed {
            self.commit(&mut writer, &progress)?;
        }
        if deleted > 0 {
            self.merge_deletes(&mut writer)?;
        }
        Ok(total)
    }

    /// Deletes the documents of every record a tombstone since the last
    /// call names; returns how many.
    fn forget_tombstoned(
        &self,
        writer: &IndexWriter,
        sm: &ArchiveStateMachine,
        progress: &mut Progress,
    ) -> Result<usize, SearchError> {
        let mut deleted = 0;
        loop {
            let links = sm.chain_links(progress.chain_next, INDEX_BATCH).map_err(ierr)?;
            let Some((last, _)) = links.last() else { break };
            progress.chain_next = last + 1;
            for (_, l) in &links {
                if l.kind == crate::chain::LinkKind::Tombstone {
                    writer.delete_term(Term::from_field_text(self.f.id, &l.id));
                    deleted += 1;
                }
            }
            if links.len() < INDEX_BATCH {
                break;
            }
        }
        Ok(deleted)
    }

    /// Merges the segments that hold deleted documents, so their text is
    /// gone from the files and not only hidden.
    fn merge_deletes(&self, writer: &mut IndexWriter) -> Result<(), SearchError> {
        let ids: Vec<tantivy::index::SegmentId> = self
            .index
            .searchable_segment_metas()
            .map_err(ierr)?
            .into_iter()
            .filter(|m| m.has_deletes())
            .map(|m| m.id())
            .collect();
        if !ids.is_empty() {
            writer.merge(&ids).wait().map_err(ierr)?;
            writer.garbage_collect_files().wait().map_err(ierr)?;
            self.reader.reload().map_err(ierr)?;
        }
        Ok(())
    }

    fn commit(&self, writer: &mut IndexWriter, progress: &Progress) -> Result<(), SearchError> {
        let mut prepared = writer.prepare_commit().map_err(ierr)?;
        prepared.set_payload(&serde_json::to_string(progress).map_err(ierr)?);
        prepared.commit().map_err(ierr)?;
        self.reader.reload().map_err(ierr)
    }

    fn document(&self, pos: u64, r: &Record) -> TantivyDocument {
        let mut d = TantivyDocument::default();
        d.add_text(self.f.id, &r.id);
        d.add_u64(self.f.pos, pos);
        d.add_u64(self.f.stamp, r.stamp_ms);
        // Occupants too: a search for a user finds what they received in rooms.
        for p in r.covered_users() {
            d.add_text(self.f.party, &p);
        }
        if let Some(room) = &r.room {
            d.add_text(self.f.room, room);
        }
        d.add_text(self.f.site, &r.site);
        if let Some(b) = &r.body {
            d.add_text(self.f.body, b);
        }
        let kind = match r.kind {
            RecordKind::Message => "message",
            RecordKind::Subscription => "subscription",
            RecordKind::Blocking => "blocking",
        };
        d.add_text(self.f.kind, kind);
        d
    }

    /// Documents the index holds and, of them, deleted ones whose text is
    /// still in its files (zero once their segments are merged).
    pub fn documents(&self) -> (u64, u64) {
        let searcher = self.reader.searcher();
        let live = searcher.num_docs();
        let deleted = searcher
            .segment_readers()
            .iter()
            .map(|r| u64::from(r.num_deleted_docs()))
            .sum();
        (live, deleted)
    }

    /// Runs a compliance search; records come from the state machine. The
    /// offset is bounded ([`SEARCH_OFFSET_MAX`]): the index collects
    /// offset + limit hits, so a caller's number must not size that.
    pub fn search(&self, sm: &ArchiveStateMachine, q: &SearchQuery) -> Result<SearchPage, SearchError> {
        if q.offset > SEARCH_OFFSET_MAX {
            return Err(SearchError::BadQuery(format!(
                "offset {} is over {SEARCH_OFFSET_MAX}: narrow the search (dates, participants) or export it",
                q.offset
            )));
        }
        let query = self.query(q)?;
        let limit = q.limit.clamp(1, SEARCH_LIMIT_MAX);
        let searcher = self.reader.searcher();
        let top = TopDocs::with_limit(limit)
            .and_offset(q.offset)
            .order_by_u64_field("stamp", Order::Asc);
        let (hits, total) = searcher.search(&query, &(top, Count)).map_err(ierr)?;
        let mut records = Vec::with_capacity(hits.len());
        for (_, addr) in hits {
            let doc: TantivyDocument = searcher.doc(addr).map_err(ierr)?;
            let Some(pos) = doc.get_first(self.f.pos).and_then(|v| v.as_u64()) else {
                continue;
            };
            if let Some(r) = sm.record_at(pos).map_err(ierr)? {
                records.push(r);
            }
        }
        Ok(SearchPage { total, records })
    }

    /// The (server time, archive position) of every record matching `q`
    /// (offset and limit ignored), oldest first; an error past `max`
    /// matches. Exports read the records by position, in bounded batches.
    pub fn positions(&self, q: &SearchQuery, max: usize) -> Result<Vec<(u64, u64)>, SearchError> {
        let query = self.query(q)?;
        let searcher = self.reader.searcher();
        let total = searcher.search(&query, &Count).map_err(ierr)?;
        if total > max {
            return Err(SearchError::BadQuery(format!(
                "{total} records match, more than {max}: narrow the export"
            )));
        }
        let docs = searcher
            .search(&query, &tantivy::collector::DocSetCollector)
            .map_err(ierr)?;
        let mut out = Vec::with_capacity(docs.len());
        for addr in docs {
            let stamps = searcher
                .segment_reader(addr.segment_ord)
                .fast_fields()
                .u64("stamp")
                .map_err(ierr)?;
            let doc: TantivyDocument = searcher.doc(addr).map_err(ierr)?;
            if let (Some(pos), Some(stamp)) = (
                doc.get_first(self.f.pos).and_then(|v| v.as_u64()),
                stamps.first(addr.doc_id),
            ) {
                out.push((stamp, pos));
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn query(&self, q: &SearchQuery) -> Result<Box<dyn Query>, SearchError> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let term = |field: Field, text: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, text),
                IndexRecordOption::Basic,
            ))
        };
        for p in &q.participants {
            clauses.push((Occur::Must, term(self.f.party, p)));
        }
        if let Some(room) = &q.room {
            clauses.push((Occur::Must, term(self.f.room, room)));
        }
        if let Some(site) = &q.site {
            clauses.push((Occur::Must, term(self.f.site, site)));
        }
        if let Some(words) = q.words.as_deref().filter(|w| !w.trim().is_empty()) {
            let mut parser = QueryParser::for_index(&self.index, vec![self.f.body]);
            parser.set_conjunction_by_default();
            let parsed = parser
                .parse_query(words)
                .map_err(|e| SearchError::BadQuery(e.to_string()))?;
            clauses.push((Occur::Must, parsed));
        }
        if q.start_ms.is_some() || q.end_ms.is_some() {
            let bound = |v: Option<u64>| match v {
                Some(v) => Bound::Included(Term::from_field_u64(self.f.stamp, v)),
                None => Bound::Unbounded,
            };
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(bound(q.start_ms), bound(q.end_ms))),
            ));
        }
        Ok(if clauses.is_empty() {
            Box::new(AllQuery)
        } else {
            Box::new(BooleanQuery::new(clauses))
        })
    }
}
