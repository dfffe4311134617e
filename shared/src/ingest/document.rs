//! Step 1 for documents: an object that is not JSON records (PDF, Word, Excel, CSV, HTML,
//! Markdown, plain text) read into its sections ([`crate::documents`]), each section a record
//! of its own with the citation of where it came from, chunked and queued like any record.
//!
//! - **Ids.** A table row mapped with an id column keeps that id; any other section's id is
//!   derived from its object, its text and its citation, so an unchanged section keeps its id
//!   (and is never embedded again) and two identical paragraphs in different places are two.
//! - **Paragraphs of plain text** are gathered into one section while they fit in a chunk
//!   (`CHUNK_MAX_CHARS`), cited by their first and last line.
//! - **The metadata file** `<key>.metadata.json` gives every chunk its fields; a row's own
//!   metadata columns win over it.
//! - **Parts.** A document read past the deadline pauses after a section; the next part
//!   extracts it again and skips the sections already queued (a resume point's `index`).
//! - **A document no extractor can read** (unsupported, encrypted, image-only, damaged, a zip
//!   bomb) is skipped once, with one log line and a metric naming the reason and a record under
//!   `<REJECTS_PREFIX>skipped/` that `sakuin status` lists; its older chunks are swept as for
//!   any new version. Never a retry, never a dead letter.

use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::io::AsyncReadExt;
use tracing::{info, warn};

use crate::documents::{
    self, AsyncBody, Citation, Detection, ExtractError, Format, Section, SectionStream,
};
use crate::ids::derived_doc_id;
use crate::message::SourceRef;
use crate::metrics::MetricSet;
use crate::queue::{ChunkQueue, MAX_BATCH_ENTRIES, send_all};
use crate::reader::{RecordPosition, ResumePoint};
use crate::record::Document;
use crate::retry::Deadline;
use crate::store::{ObjectRef, ObjectStore, StoreError};

use super::continuation::Continuation;
use super::read::{ObjectAt, ObjectFailure, ObjectProgress, retry};
use super::send::{Outbox, Rejects};
use super::{IngestDeps, IngestSummary};

/// Where `<REJECTS_PREFIX>` keeps the record of each skipped document:
/// `<REJECTS_PREFIX>skipped/<key>.json`.
pub const SKIPPED_DIR: &str = "skipped/";

/// The key of the record of a skipped document.
pub fn skipped_key(rejects_prefix: &str, key: &str) -> String {
    format!("{rejects_prefix}{SKIPPED_DIR}{key}.json")
}

/// What a document object is, once its first bytes were looked at.
pub(super) enum Kind {
    Document(Detection),
    /// No extractor reads it; the reason names what it is.
    Unsupported(String),
}

/// A document object opened for reading: its source as stored, what it is, its body.
pub(super) struct OpenedDocument {
    pub(super) source: SourceRef,
    pub(super) kind: Kind,
    pub(super) body: AsyncBody,
}

/// Reads a document (or its next part) into chunk messages.
pub(super) async fn ingest_document<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    opened: OpenedDocument,
    at: ObjectAt,
    deadline: Deadline,
    made_progress: bool,
    summary: &mut IngestSummary,
) -> Result<ObjectProgress, ObjectFailure> {
    let OpenedDocument { source, kind, body } = opened;
    let mut out = Outbox::new(&deps.config, &source, at.queued);
    let (format, ended) = match kind {
        Kind::Unsupported(reason) => (None, Ended::Skipped("unsupported", reason)),
        Kind::Document(detection) => {
            info!(bucket = %source.bucket, key = %source.key, format = %detection.format, why = %detection.reason, part = at.part, "reading a document");
            let attributes = metadata_of(deps, &source, &mut out.rejects).await?;
            let reading = Reading {
                source: &source,
                format: detection.format,
                attributes,
                out: &mut out,
                summary,
                packed: 0,
            };
            let ended = reading.run(deps, body, at, deadline, made_progress).await?;
            (Some(detection.format), ended)
        }
    };
    let paused = match &ended {
        Ended::Paused(point) => Some(*point),
        _ => None,
    };
    let queued = out.queued;
    out.flush(deps, &source, at.part, paused.is_none(), summary)
        .await?;
    if let Ended::Skipped(kind, reason) = ended {
        skipped(deps, &source, format, kind, &reason, summary).await?;
    }
    Ok(match paused {
        Some(point) => ObjectProgress::Paused {
            source,
            point,
            queued,
        },
        None => ObjectProgress::Done,
    })
}

/// How a part of a document ended.
enum Ended {
    Done,
    Paused(ResumePoint),
    /// The document cannot be read (a [`ExtractError::kind`] and the reason); whatever
    /// sections came before it (a streamed CSV or text) stay queued.
    Skipped(&'static str, String),
}

/// One part of a document being read.
struct Reading<'a> {
    source: &'a SourceRef,
    format: Format,
    /// The metadata file's fields.
    attributes: Map<String, Value>,
    out: &'a mut Outbox,
    summary: &'a mut IngestSummary,
    /// Sections packed by this part.
    packed: u64,
}

impl Reading<'_> {
    /// Extracts the document and packs its sections until the end, a fatal error or the
    /// deadline.
    async fn run<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
        mut self,
        deps: &IngestDeps<S, Q, C>,
        body: AsyncBody,
        at: ObjectAt,
        deadline: Deadline,
        made_progress: bool,
    ) -> Result<Ended, ObjectFailure> {
        let cfg = &deps.config;
        // Items (sections and row errors) of the document before this part's first.
        let skip = at.resume.map_or(0, |r| r.index);
        let mut sections = SectionStream::spawn(self.format, body, cfg.documents.clone(), skip);
        let mut read = skip;
        let mut gathered: Option<Gathered> = None;
        loop {
            let item = if read == skip && made_progress {
                // A whole-read format yields nothing until it is parsed: an invocation that
                // already moved something forward hands the part over rather than outlast
                // its time waiting.
                match tokio::time::timeout(deadline.remaining(), sections.next()).await {
                    Ok(item) => item,
                    Err(_) => {
                        return Err(ObjectFailure::OutOfTime(format!(
                            "extracting the {} outlasted the time left",
                            self.format
                        )));
                    }
                }
            } else {
                sections.next().await
            };
            let Some(item) = item else { break };
            if !deadline.allows(Duration::ZERO) && read > skip {
                // This item is read again by the next part, and so are paragraphs gathered
                // but not packed, so the parts gather what one read would. A part that has
                // packed nothing yet finishes its group first: every part moves forward.
                match &gathered {
                    Some(g) if self.packed > 0 => {
                        return Ok(Ended::Paused(resume_point(g.record - 1)));
                    }
                    Some(_) => {}
                    None => return Ok(Ended::Paused(resume_point(read))),
                }
            }
            read += 1;
            match item {
                Ok(section) => self.take(cfg, section, read, &mut gathered),
                Err(ExtractError::Row { line, reason }) => {
                    warn!(bucket = %self.source.bucket, key = %self.source.key, line, %reason, "row rejected");
                    self.summary.records += 1;
                    self.summary.rejected += 1;
                    let position = RecordPosition::Line(line);
                    self.out.rejects.add(self.source, position, &reason, "");
                }
                Err(e) if e.is_permanent() => {
                    self.pack_gathered(cfg, gathered.take());
                    return Ok(Ended::Skipped(e.kind(), e.to_string()));
                }
                Err(e) => return Err(retry(e)),
            }
            if self.out.bodies.len() >= MAX_BATCH_ENTRIES {
                let sent = std::mem::take(&mut self.out.bodies);
                let stats = send_all(&deps.queue, sent, cfg.batch_limits()).await?;
                self.summary.add_sent(stats);
            }
        }
        self.pack_gathered(cfg, gathered.take());
        Ok(Ended::Done)
    }

    /// Takes the section at position `record` (1-based): paragraphs of plain text are gathered
    /// while they fit in one chunk; anything else is packed as it is.
    fn take(
        &mut self,
        cfg: &crate::config::IngestConfig,
        section: Section,
        record: u64,
        gathered: &mut Option<Gathered>,
    ) {
        let Citation::Lines { first, last } = section.citation else {
            self.pack_gathered(cfg, gathered.take());
            return self.pack(cfg, section, record);
        };
        let max = cfg.chunking.max_chars;
        if let Some(g) = gathered {
            if g.chars + 2 + section.text.chars().count() <= max {
                g.text.push_str("\n\n");
                g.text.push_str(&section.text);
                g.chars = g.text.chars().count();
                g.last = last;
                return;
            }
            self.pack_gathered(cfg, gathered.take());
        }
        *gathered = Some(Gathered {
            chars: section.text.chars().count(),
            text: section.text,
            first,
            last,
            record,
        });
    }

    fn pack_gathered(&mut self, cfg: &crate::config::IngestConfig, gathered: Option<Gathered>) {
        if let Some(g) = gathered {
            let citation = Citation::Lines {
                first: g.first,
                last: g.last,
            };
            let section = Section {
                text: g.text,
                citation,
                id: None,
                metadata: Map::new(),
            };
            self.pack(cfg, section, g.record);
        }
    }

    /// One section as a document of its own, chunked and packed.
    fn pack(&mut self, cfg: &crate::config::IngestConfig, section: Section, record: u64) {
        let citation = section.citation.fields(self.format);
        let doc_id = section.id.unwrap_or_else(|| {
            let content = json!({"citation": &citation, "text": &section.text});
            derived_doc_id(&self.source.bucket, &self.source.key, &content)
        });
        let mut metadata = self.attributes.clone();
        metadata.extend(section.metadata);
        let doc = Document {
            doc_id,
            text: section.text,
            metadata,
        };
        self.out
            .take_section(cfg, self.source, doc, record, citation, self.summary);
        self.packed += 1;
    }
}

/// Paragraphs of plain text gathered into one section.
struct Gathered {
    text: String,
    chars: usize,
    first: u64,
    last: u64,
    /// The position of its first paragraph.
    record: u64,
}

/// Where the next part of a document starts: after `read` items. A document is extracted
/// again from its first byte (a PDF or a zip cannot be entered in the middle), so only the
/// count matters; `compressed: None` keeps the next part from a ranged read.
fn resume_point(read: u64) -> ResumePoint {
    ResumePoint {
        offset: 0,
        line: 0,
        index: read,
        values: false,
        in_array: false,
        compressed: None,
    }
}

/// The fields of the document's metadata file, `<key>.metadata.json`, as it is now (none
/// when there is no such file). A file that cannot be used is reported with the rejects and
/// the document is read without it.
async fn metadata_of<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    source: &SourceRef,
    rejects: &mut Rejects,
) -> Result<Map<String, Value>, ObjectFailure> {
    let key = documents::metadata_key(&source.key);
    let object = ObjectRef {
        bucket: source.bucket.clone(),
        key: key.clone(),
        version_id: None,
        etag: None,
        range_start: None,
    };
    let opened = match deps.store.open(&object).await {
        Ok(opened) => opened,
        Err(StoreError::NotFound { .. }) => return Ok(Map::new()),
        Err(e) => return Err(retry(e)),
    };
    let mut bytes = Vec::new();
    let limit = documents::metadata::MAX_METADATA_BYTES as u64 + 1;
    opened
        .body
        .take(limit)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| retry(format!("reading s3://{}/{key}: {e}", source.bucket)))?;
    match documents::parse_metadata(&bytes) {
        Ok(fields) => Ok(fields),
        Err(e) => {
            let reason = format!(
                "the metadata file s3://{}/{key} is not used: {e}",
                source.bucket
            );
            warn!(bucket = %source.bucket, key = %source.key, metadata = %key, error = %e, "metadata file not used");
            let raw = String::from_utf8_lossy(&bytes);
            rejects.add(source, RecordPosition::Index(0), &reason, &raw);
            Ok(Map::new())
        }
    }
}

/// A document skipped for good: one log line, a metric by reason (the object as a property,
/// not a dimension), and its record under `<REJECTS_PREFIX>skipped/` for `sakuin status`.
async fn skipped<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    source: &SourceRef,
    format: Option<Format>,
    kind: &'static str,
    reason: &str,
    summary: &mut IngestSummary,
) -> Result<(), ObjectFailure> {
    let object = format!("s3://{}/{}", source.bucket, source.key);
    let format_name = format.map_or("unknown", Format::name);
    warn!(bucket = %source.bucket, key = %source.key, format = format_name, kind, %reason, "document skipped: it yields no text to index");
    summary.documents_skipped += 1;
    MetricSet::new("ingest")
        .dimension("Reason", kind)
        .property("Object", object)
        .count("DocumentsSkipped", 1)
        .emit();
    let prefix = &deps.config.rejects_prefix;
    if prefix.is_empty() {
        return Ok(());
    }
    let record = json!({
        "bucket": source.bucket, "key": source.key, "version_id": source.version_id,
        "etag": source.etag, "format": format.map(Format::name), "kind": kind, "reason": reason,
        "skipped_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    let key = skipped_key(prefix, &source.key);
    deps.store
        .put(&source.bucket, &key, record.to_string().into_bytes())
        .await
        .map_err(|e| ObjectFailure::Retry(format!("writing {key}: {e}")))
}
