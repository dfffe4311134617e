//! Step 1, read: an object streamed record by record from where the last part stopped, each
//! record into chunks and messages, and what to do when the time or the object runs out.

use std::time::Duration;

use tracing::{info, warn};

use crate::documents::{self, AsyncBody, DetectError, Format};
use crate::message::SourceRef;
use crate::queue::{ChunkQueue, MAX_BATCH_ENTRIES, QueueError, send_all};
use crate::reader::{
    BoxedBufRead, ReadError, RecordPosition, RecordReader, Resume, ResumePoint,
    open_records_resumed,
};
use crate::retry::Deadline;
use crate::store::{ObjectRef, ObjectStore, StoreError};

use super::continuation::Continuation;
use super::document::{Kind, OpenedDocument, ingest_document};
use super::event::Work;
use super::send::{Outbox, Rejects, write_rejects};
use super::{IngestDeps, IngestSummary};

/// Where a read of an object starts: its resume point, part number and the chunks the earlier
/// parts queued.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ObjectAt {
    pub(super) resume: Option<ResumePoint>,
    pub(super) part: u32,
    pub(super) queued: u64,
}

/// Reads an object (or its next part) and says what is left of it.
pub(super) async fn read_object<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    source: SourceRef,
    at: ObjectAt,
    deadline: Deadline,
    made_progress: bool,
    summary: &mut IngestSummary,
) -> Result<Option<Work>, String> {
    let name = format!("s3://{}/{}", source.bucket, source.key);
    let ObjectAt {
        resume,
        part,
        queued,
    } = at;
    match ingest_object(deps, source.clone(), at, deadline, made_progress, summary).await {
        Ok(ObjectProgress::Done) => {
            summary.objects += 1;
            Ok(None)
        }
        Ok(ObjectProgress::Paused {
            source,
            point,
            queued,
        }) => Ok(Some(Work::Object {
            source,
            resume: Some(point),
            part: part + 1,
            queued,
        })),
        Err(ObjectFailure::OutOfTime(reason)) => {
            // Nothing of this part was read: it is handed over as it came.
            info!(bucket = %source.bucket, key = %source.key, part, %reason, "handing the part over unread");
            Ok(Some(Work::Object {
                source,
                resume,
                part,
                queued,
            }))
        }
        Err(ObjectFailure::Skipped(reason)) => {
            info!(bucket = %source.bucket, key = %source.key, %reason, "object skipped");
            summary.skipped += 1;
            Ok(None)
        }
        Err(ObjectFailure::Rejected(reason)) => {
            warn!(bucket = %source.bucket, key = %source.key, %reason, "object rejected");
            summary.rejected += 1;
            Ok(None)
        }
        Err(ObjectFailure::Retry(reason)) => {
            warn!(bucket = %source.bucket, key = %source.key, %reason, "object failed");
            Err(format!("{name}: {reason}"))
        }
    }
}

/// How far one call got through an object.
pub(super) enum ObjectProgress {
    Done,
    /// The deadline came first: everything before `point` is queued; `source` is pinned to the
    /// version read.
    Paused {
        source: SourceRef,
        point: ResumePoint,
        /// Chunks queued for the object so far, this part included.
        queued: u64,
    },
}

pub(super) enum ObjectFailure {
    /// Nothing to do: the object is gone or superseded.
    Skipped(String),
    /// The object can never be read (not JSON); retrying cannot help.
    Rejected(String),
    /// A transient failure: the unit is retried.
    Retry(String),
    /// The time ran out before this part read anything; it is handed over unchanged.
    OutOfTime(String),
}

impl From<QueueError> for ObjectFailure {
    fn from(e: QueueError) -> Self {
        ObjectFailure::Retry(e.to_string())
    }
}

/// Reads one object from `resume` on. Pauses after the first record at which the deadline has
/// passed (everything before it is queued); an invocation that made no progress yet skips to
/// the resume point whatever the time, so every invocation moves on.
pub(super) async fn ingest_object<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    source: SourceRef,
    at: ObjectAt,
    deadline: Deadline,
    made_progress: bool,
    summary: &mut IngestSummary,
) -> Result<ObjectProgress, ObjectFailure> {
    let opened = open_object(deps, source, at, deadline, made_progress).await?;
    let (source, mut records) = match opened {
        Opened::Records(source, records) => (source, *records),
        Opened::Document(document) => {
            let reading = ingest_document(deps, document, at, deadline, made_progress, summary);
            return Box::pin(reading).await;
        }
    };
    let mut out = Outbox::new(&deps.config, &source, at.queued);
    let mut paused = None;
    loop {
        // The error path is its own step, awaited only when taken: the loop's per-record
        // future stays small.
        let raw = match records.next_record().await {
            Ok(Some(raw)) => raw,
            Ok(None) => break,
            Err(e) => return Err(unreadable(deps, &source, at.part, out.rejects, e).await),
        };
        let resume_after = raw.resume;
        out.take(&deps.config, &source, raw, summary);
        if out.bodies.len() >= MAX_BATCH_ENTRIES {
            let sent = std::mem::take(&mut out.bodies);
            summary.add_sent(send_all(&deps.queue, sent, deps.config.batch_limits()).await?);
        }
        // After every record, rejected ones too: an object of bad records or a slow part
        // hands over instead of running into the Lambda timeout. (At the end of the object
        // there is nothing to hand over.)
        if !deadline.allows(Duration::ZERO) && !records.is_done().await.map_err(retry)? {
            paused = Some(resume_after);
            break;
        }
    }
    let queued = out.queued;
    let rejected = out
        .flush(deps, &source, at.part, paused.is_none(), summary)
        .await?;
    info!(bucket = %source.bucket, key = %source.key, part = at.part, bytes = records.bytes_read(), rejected, paused = paused.is_some(), "object read");
    Ok(match paused {
        Some(point) => ObjectProgress::Paused {
            source,
            point,
            queued,
        },
        None => ObjectProgress::Done,
    })
}

/// A read error ends the object: a format the reader cannot take rejects it whole (written
/// with the rejects), any other error is retried.
pub(super) async fn unreadable<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    source: &SourceRef,
    part: u32,
    mut rejects: Rejects,
    error: ReadError,
) -> ObjectFailure {
    match error {
        e @ (ReadError::UnsupportedFormat(_) | ReadError::RecordsPathNotFound(_)) => {
            rejects.add(source, RecordPosition::Index(0), &e.to_string(), "");
            match write_rejects(deps, source, part, rejects).await {
                Ok(()) => ObjectFailure::Rejected(e.to_string()),
                Err(failure) => failure,
            }
        }
        e => ObjectFailure::Retry(e.to_string()),
    }
}

pub(super) fn retry(e: impl std::fmt::Display) -> ObjectFailure {
    ObjectFailure::Retry(e.to_string())
}

/// An object opened for reading, with its source as stored (the eTag and version the read
/// returned).
pub(super) enum Opened {
    /// JSON or JSON Lines: its record stream.
    Records(SourceRef, Box<RecordReader<BoxedBufRead>>),
    /// Any other format: a document, read by [`ingest_document`].
    Document(OpenedDocument),
}

/// Opens the object (from where the last part stopped, when it can be read from there): its
/// format decided from its first bytes, its stored type and its key, then its record stream
/// or its body as a document.
pub(super) async fn open_object<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    source: SourceRef,
    at: ObjectAt,
    deadline: Deadline,
    made_progress: bool,
) -> Result<Opened, ObjectFailure> {
    let cfg = &deps.config;
    if at.resume.is_none() {
        still_current(deps, &source).await?;
    }
    // Plain content is read from where the last part stopped; gzip (or content whose kind an
    // older resume point did not record) has to be decompressed from its start.
    let range_start = at
        .resume
        .filter(|r| r.compressed == Some(false) && r.offset > 0)
        .map(|r| r.offset);
    let object = ObjectRef {
        bucket: source.bucket.clone(),
        key: source.key.clone(),
        version_id: source.version_id.clone(),
        etag: source.etag.clone(),
        range_start,
    };
    let opened = match deps.store.open(&object).await {
        Ok(o) => o,
        Err(e @ (StoreError::NotFound { .. } | StoreError::Superseded { .. })) => {
            return Err(ObjectFailure::Skipped(e.to_string()));
        }
        Err(e) => return Err(retry(e)),
    };
    // The first part's read stamps the whole read: of two reads of the same content, the later
    // one (under the settings in force later) holds the object.
    let read_at = source
        .read_at
        .or_else(|| Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)));
    let source = SourceRef {
        etag: source.etag.or(opened.etag),
        version_id: source.version_id.or(opened.version_id),
        read_at,
        ..source
    };
    // A ranged read continues JSON records where the last part stopped; a whole body is
    // looked at first.
    let mut body = opened.body;
    if opened.offset == 0 {
        match documents::detect_body(&source.key, opened.content_type.as_deref(), body).await {
            Ok((detection, whole)) if detection.format == Format::Records => body = whole,
            Ok((detection, whole)) => {
                let kind = Kind::Document(detection);
                return Ok(Opened::Document(OpenedDocument {
                    source,
                    kind,
                    body: whole,
                }));
            }
            Err(DetectError::Unsupported(e)) => {
                let kind = Kind::Unsupported(e.reason);
                let body: AsyncBody = Box::pin(tokio::io::empty());
                return Ok(Opened::Document(OpenedDocument { source, kind, body }));
            }
            Err(DetectError::Io(e)) => return Err(retry(e)),
        }
    }
    let resume = at.resume.map(|point| Resume {
        point,
        body_offset: opened.offset,
        skip_deadline: made_progress.then_some(deadline),
    });
    let path = &cfg.records_path;
    let opened = open_records_resumed(body, &source.key, cfg.max_record_bytes, path, resume);
    match opened.await {
        Ok(records) => Ok(Opened::Records(source, Box::new(records))),
        Err(e @ ReadError::OutOfTime { .. }) => Err(ObjectFailure::OutOfTime(e.to_string())),
        Err(e) => Err(retry(e)),
    }
}

/// In a versioned bucket, a notification names a version that may no longer be current when it
/// arrives (S3 delivers late): reading it would index an old version, which only the object's
/// next event would correct. It is skipped; the current version's own event (or the removal
/// that made it current) indexes that one. Unversioned reads are pinned by eTag instead.
pub(super) async fn still_current<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    source: &SourceRef,
) -> Result<(), ObjectFailure> {
    let Some(version) = &source.version_id else {
        return Ok(());
    };
    let head = deps
        .store
        .head(&source.bucket, &source.key)
        .await
        .map_err(retry)?;
    match head {
        Some(h) if h.version_id.as_ref() == Some(version) => Ok(()),
        Some(h) => Err(ObjectFailure::Skipped(format!(
            "s3://{}/{} version {version} is no longer current (now {}): its own event indexes that one",
            source.bucket,
            source.key,
            h.version_id.as_deref().unwrap_or("null")
        ))),
        None => Err(ObjectFailure::Skipped(format!(
            "s3://{}/{} version {version} is no longer current (the key has none)",
            source.bucket, source.key
        ))),
    }
}
