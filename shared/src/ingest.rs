//! The `ingest` handler: S3 notifications in, chunk messages out. Each object is streamed record
//! by record; a bad record is counted and logged, never the end of its object.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use crate::chunker::chunk_text;
use crate::config::IngestConfig;
use crate::ids::normalize_sequencer;
use crate::message::{ChunkMessage, ChunkPayload, MessagePacker, Operation, SourceRef};
use crate::metrics::MetricSet;
use crate::queue::{ChunkQueue, MAX_BATCH_ENTRIES, QueueError, send_all};
use crate::reader::{ReadError, RecordPosition, ResumePoint, open_records_from};
use crate::record::RecordOrigin;
use crate::retry::Deadline;
use crate::s3key::decode_key;
use crate::store::{ObjectRef, ObjectStore, StoreError};

/// An S3 event notification, read leniently: only the fields ingest uses are required.
#[derive(Debug, Deserialize)]
pub struct S3Notification {
    #[serde(rename = "Records", default)]
    pub records: Vec<S3Record>,
    /// Set on the `s3:TestEvent` S3 sends when a notification is configured.
    #[serde(rename = "Event", default)]
    pub event: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct S3Record {
    #[serde(rename = "eventName", default)]
    pub event_name: String,
    pub s3: S3Entity,
}

#[derive(Debug, Deserialize)]
pub struct S3Entity {
    pub bucket: S3Bucket,
    pub object: S3Object,
}

#[derive(Debug, Deserialize)]
pub struct S3Bucket {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct S3Object {
    pub key: String,
    #[serde(default)]
    pub size: Option<i64>,
    #[serde(rename = "eTag", default)]
    pub etag: Option<String>,
    #[serde(rename = "versionId", default)]
    pub version_id: Option<String>,
    #[serde(default)]
    pub sequencer: Option<String>,
}

/// What one invocation did; the function's response.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestSummary {
    pub objects: u64,
    pub records: u64,
    pub chunks: u64,
    pub messages: u64,
    /// SendMessageBatch requests made, retries included.
    #[serde(default)]
    pub sqs_requests: u64,
    pub rejected: u64,
    /// Objects gone or overwritten since their event; their newer event covers them.
    pub skipped: u64,
    /// Objects removed: their chunks are queued for deletion.
    #[serde(default)]
    pub deleted: u64,
    /// Notifications that carry no data (test events, folder markers, ingest's own rejects).
    pub ignored: u64,
    /// Objects a backfill listed in this invocation.
    #[serde(default)]
    pub listed: u64,
    /// Where a fresh invocation takes over, when this one ran short of time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continued: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the event is not an S3 notification, a backfill request or a continuation: {0}")]
    BadEvent(String),
    #[error("{} object(s) failed and will be retried: {}", .0.len(), .0.join("; "))]
    Objects(Vec<String>),
}

/// One unit of ingest work. A continuation event carries the units not done yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// Read an object (from `resume`, when an earlier invocation got that far).
    Object {
        source: SourceRef,
        #[serde(default)]
        resume: Option<ResumePoint>,
        #[serde(default)]
        part: u32,
    },
    /// Queue the deletion of a removed object's chunks.
    Delete { source: SourceRef },
    /// Ingest every object under a prefix, in key order, after `start_after`.
    Backfill {
        bucket: String,
        #[serde(default)]
        prefix: String,
        #[serde(default)]
        start_after: Option<String>,
    },
}

/// Hands the rest of an invocation's work to a fresh invocation of the same function.
pub trait Continuation: Send + Sync {
    fn hand_over(&self, event: Value) -> impl Future<Output = Result<(), String>> + Send;
}

/// Continues by invoking this function asynchronously (`InvocationType=Event`).
pub struct LambdaContinuation {
    client: aws_sdk_lambda::Client,
    function_name: String,
}

impl LambdaContinuation {
    pub fn new(client: aws_sdk_lambda::Client, function_name: impl Into<String>) -> Self {
        Self {
            client,
            function_name: function_name.into(),
        }
    }
}

impl Continuation for LambdaContinuation {
    async fn hand_over(&self, event: Value) -> Result<(), String> {
        let payload = serde_json::to_vec(&event).expect("work always serialises");
        self.client
            .invoke()
            .function_name(&self.function_name)
            .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
            .payload(aws_sdk_lambda::primitives::Blob::new(payload))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "invoking {} to continue: {}",
                    self.function_name,
                    crate::embed::bedrock::error_chain(&e.into_service_error())
                )
            })
    }
}

/// Clients and settings, built once per container.
pub struct IngestDeps<S, Q, C> {
    pub store: S,
    pub queue: Q,
    pub continuation: C,
    pub config: IngestConfig,
}

/// Turns an event into work: an S3 notification, `{"backfill": {"bucket", "prefix"}}`, or a
/// continuation `{"work": [...]}`.
fn plan(
    event: Value,
    config: &IngestConfig,
    summary: &mut IngestSummary,
) -> Result<VecDeque<Work>, IngestError> {
    if let Some(work) = event.get("work") {
        return serde_json::from_value(work.clone())
            .map_err(|e| IngestError::BadEvent(format!("continuation: {e}")));
    }
    if let Some(backfill) = event.get("backfill") {
        let bucket = backfill
            .get("bucket")
            .and_then(Value::as_str)
            .ok_or_else(|| IngestError::BadEvent("backfill needs a bucket".into()))?;
        let prefix = backfill
            .get("prefix")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Ok(VecDeque::from([Work::Backfill {
            bucket: bucket.into(),
            prefix: prefix.into(),
            start_after: None,
        }]));
    }
    if event.get("Records").is_none() && event.get("Event").is_none() {
        return Err(IngestError::BadEvent(format!(
            "no Records in {}",
            truncate(&event.to_string(), 200)
        )));
    }
    let notification: S3Notification =
        serde_json::from_value(event).map_err(|e| IngestError::BadEvent(e.to_string()))?;
    if let Some(kind) = &notification.event {
        info!(event = %kind, "ignoring S3 test event");
        summary.ignored += 1;
    }
    let mut work = VecDeque::new();
    for record in notification.records {
        let removed = record.event_name.starts_with("ObjectRemoved:");
        if !record.event_name.starts_with("ObjectCreated:") && !removed {
            info!(event = %record.event_name, bucket = %record.s3.bucket.name, key = %record.s3.object.key, "ignoring event");
            summary.ignored += 1;
            continue;
        }
        let bucket = record.s3.bucket.name;
        let key = match decode_key(&record.s3.object.key) {
            Ok(k) => k,
            Err(e) => {
                warn!(bucket = %bucket, error = %e, "object skipped");
                summary.rejected += 1;
                continue;
            }
        };
        if !is_data_key(&key, config) {
            info!(bucket = %bucket, key = %key, "ignoring folder marker or rejects object");
            summary.ignored += 1;
            continue;
        }
        let source = SourceRef {
            bucket,
            key,
            version_id: record.s3.object.version_id.filter(|v| !v.is_empty()),
            etag: record.s3.object.etag.filter(|e| !e.is_empty()),
            sequencer: record
                .s3
                .object
                .sequencer
                .as_deref()
                .map(normalize_sequencer),
        };
        work.push_back(if removed {
            Work::Delete { source }
        } else {
            Work::Object {
                source,
                resume: None,
                part: 0,
            }
        });
    }
    Ok(work)
}

/// Folder markers and ingest's own rejects are never data (reading the rejects would loop).
fn is_data_key(key: &str, config: &IngestConfig) -> bool {
    !key.ends_with('/')
        && (config.rejects_prefix.is_empty() || !key.starts_with(&config.rejects_prefix))
}

fn truncate(text: &str, max: usize) -> &str {
    text.char_indices()
        .nth(max)
        .map_or(text, |(i, _)| &text[..i])
}

/// Handles one event. When time runs short it hands the rest to a fresh invocation, after the
/// last record whose chunks are all queued: nothing is lost or sent twice across the seam.
pub async fn handle_event<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    event: Value,
    deadline: Deadline,
) -> Result<IngestSummary, IngestError> {
    let mut summary = IngestSummary::default();
    let mut work = plan(event, &deps.config, &mut summary)?;
    let mut failures = Vec::new();
    let mut done_any = false;

    while let Some(item) = work.pop_front() {
        // Every invocation makes progress on at least one unit before it may hand over.
        if done_any && !deadline.allows(Duration::ZERO) {
            work.push_front(item);
            break;
        }
        done_any = true;
        match item {
            Work::Delete { source } => {
                let body = ChunkMessage::control(Operation::Delete, &source);
                match send_all(&deps.queue, vec![body], deps.config.batch_limits()).await {
                    Ok(stats) => {
                        summary.deleted += 1;
                        summary.messages += stats.messages;
                        summary.sqs_requests += stats.batches;
                    }
                    Err(e) => failures.push(format!("s3://{}/{}: {e}", source.bucket, source.key)),
                }
            }
            Work::Backfill {
                bucket,
                prefix,
                start_after,
            } => match deps
                .store
                .list(&bucket, &prefix, start_after.as_deref())
                .await
            {
                Ok(page) => {
                    summary.listed += page.objects.len() as u64;
                    info!(%bucket, %prefix, after = ?start_after, listed = page.objects.len(), more = page.truncated, "backfill page");
                    let next = page.truncated.then(|| Work::Backfill {
                        bucket: bucket.clone(),
                        prefix: prefix.clone(),
                        start_after: page.objects.last().map(|(k, _)| k.clone()),
                    });
                    // In key order, each object before the cursor that follows it.
                    let mut pushed = 0;
                    for (key, etag) in page.objects.into_iter().rev() {
                        if is_data_key(&key, &deps.config) {
                            let source = SourceRef {
                                bucket: bucket.clone(),
                                key,
                                version_id: None,
                                etag,
                                sequencer: None,
                            };
                            work.push_front(Work::Object {
                                source,
                                resume: None,
                                part: 0,
                            });
                            pushed += 1;
                        }
                    }
                    if let Some(next) = next {
                        work.insert(pushed, next);
                    }
                }
                Err(e) => failures.push(format!("backfill of s3://{bucket}/{prefix}: {e}")),
            },
            Work::Object {
                source,
                resume,
                part,
            } => match ingest_object(deps, source.clone(), resume, part, deadline, &mut summary)
                .await
            {
                Ok(None) => summary.objects += 1,
                Ok(Some(point)) => {
                    work.push_front(Work::Object {
                        source,
                        resume: Some(point),
                        part: part + 1,
                    });
                    break;
                }
                Err(ObjectFailure::Skipped(reason)) => {
                    info!(bucket = %source.bucket, key = %source.key, %reason, "object skipped");
                    summary.skipped += 1;
                }
                Err(ObjectFailure::Rejected(reason)) => {
                    warn!(bucket = %source.bucket, key = %source.key, %reason, "object rejected");
                    summary.rejected += 1;
                }
                Err(ObjectFailure::Retry(reason)) => {
                    warn!(bucket = %source.bucket, key = %source.key, %reason, "object failed");
                    failures.push(format!("s3://{}/{}: {reason}", source.bucket, source.key));
                }
            },
        }
    }

    if let Some(next) = work.front() {
        let description = match next {
            Work::Object {
                source,
                resume,
                part,
            } => format!(
                "s3://{}/{} from byte {} (part {part})",
                source.bucket,
                source.key,
                resume.map_or(0, |r| r.offset)
            ),
            Work::Delete { source } => format!("deletion of s3://{}/{}", source.bucket, source.key),
            Work::Backfill {
                bucket,
                prefix,
                start_after,
            } => {
                format!(
                    "backfill of s3://{bucket}/{prefix} after {}",
                    start_after.as_deref().unwrap_or("the start")
                )
            }
        };
        let remaining: Vec<Work> = work.into_iter().collect();
        match deps
            .continuation
            .hand_over(serde_json::json!({ "work": remaining }))
            .await
        {
            Ok(()) => {
                info!(next = %description, units = remaining.len(), "time is short: a fresh invocation continues");
                summary.continued = Some(description);
            }
            Err(e) => failures.push(e),
        }
    }

    let mut metrics = MetricSet::new("ingest");
    metrics
        .count("ObjectsRead", summary.objects)
        .count("RecordsRead", summary.records)
        .count("RecordsRejected", summary.rejected)
        .count("ChunksQueued", summary.chunks)
        .count("MessagesSent", summary.messages)
        .count("SqsRequests", summary.sqs_requests)
        .count("ObjectsDeleted", summary.deleted)
        .count("ObjectsFailed", failures.len() as u64)
        .count("Continuations", u64::from(summary.continued.is_some()));
    metrics.emit();
    info!(?summary, failed = failures.len(), "ingest finished");

    if failures.is_empty() {
        Ok(summary)
    } else {
        Err(IngestError::Objects(failures))
    }
}

enum ObjectFailure {
    /// Nothing to do: the object is gone or superseded.
    Skipped(String),
    /// The object can never be read (not JSON); retrying cannot help.
    Rejected(String),
    /// A transient failure: the invocation fails so Lambda retries it.
    Retry(String),
}

impl From<QueueError> for ObjectFailure {
    fn from(e: QueueError) -> Self {
        ObjectFailure::Retry(e.to_string())
    }
}

/// Rejected records of one object, kept as JSON Lines for an operator to read and replay.
struct Rejects {
    lines: Vec<u8>,
    count: u64,
    dropped: u64,
}

impl Rejects {
    /// Room for rejects per object; past it they are counted, not kept.
    const MAX_BYTES: usize = 8 * 1024 * 1024;
    /// The raw text kept per rejected record.
    const MAX_RAW: usize = 64 * 1024;

    fn new() -> Self {
        Self {
            lines: Vec::new(),
            count: 0,
            dropped: 0,
        }
    }

    fn add(&mut self, source: &SourceRef, position: RecordPosition, reason: &str, raw: &str) {
        self.count += 1;
        let cut = raw
            .char_indices()
            .nth(Self::MAX_RAW)
            .map_or(raw.len(), |(i, _)| i);
        let line = serde_json::json!({
            "bucket": source.bucket, "key": source.key, "etag": source.etag,
            "record": position.number(), "position": position.to_string(),
            "reason": reason, "raw": &raw[..cut], "raw_truncated": cut < raw.len(),
        });
        let line = line.to_string();
        if self.lines.len() + line.len() + 1 > Self::MAX_BYTES {
            self.dropped += 1;
            return;
        }
        self.lines.extend_from_slice(line.as_bytes());
        self.lines.push(b'\n');
    }

    /// `<prefix><key>/<etag>.jsonl` (`<etag>.part<N>.jsonl` for continued parts): one rejects
    /// object per object version.
    fn key(prefix: &str, source: &SourceRef, part: u32) -> String {
        let etag = source.etag.as_deref().unwrap_or("unversioned");
        match part {
            0 => format!("{prefix}{}/{etag}.jsonl", source.key),
            n => format!("{prefix}{}/{etag}.part{n}.jsonl", source.key),
        }
    }
}

/// Reads one object from `resume` on. Returns the point to continue from when the deadline
/// came first (everything before it is queued), `None` when the object is done.
async fn ingest_object<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    source: SourceRef,
    resume: Option<ResumePoint>,
    part: u32,
    deadline: Deadline,
    summary: &mut IngestSummary,
) -> Result<Option<ResumePoint>, ObjectFailure> {
    let cfg = &deps.config;
    let object = ObjectRef {
        bucket: source.bucket.clone(),
        key: source.key.clone(),
        version_id: source.version_id.clone(),
        etag: source.etag.clone(),
    };
    let opened = match deps.store.open(&object).await {
        Ok(o) => o,
        Err(e @ (StoreError::NotFound { .. } | StoreError::Superseded { .. })) => {
            return Err(ObjectFailure::Skipped(e.to_string()));
        }
        Err(e) => return Err(ObjectFailure::Retry(e.to_string())),
    };
    let source = SourceRef {
        etag: source.etag.or(opened.etag),
        version_id: source.version_id.or(opened.version_id),
        ..source
    };
    let mut records = open_records_from(
        opened.body,
        &source.key,
        cfg.max_record_bytes,
        &cfg.records_path,
        resume,
    )
    .await
    .map_err(|e| ObjectFailure::Retry(e.to_string()))?;

    let limits = cfg.batch_limits();
    let mut packer = MessagePacker::new(&source, cfg.message_max_bytes);
    let mut bodies: Vec<String> = Vec::new();
    let mut rejects = Rejects::new();
    let mut paused = None;
    loop {
        let raw = match records.next_record().await {
            Ok(Some(raw)) => raw,
            Ok(None) => break,
            Err(e @ (ReadError::UnsupportedFormat(_) | ReadError::RecordsPathNotFound(_))) => {
                rejects.add(&source, RecordPosition::Index(0), &e.to_string(), "");
                write_rejects(deps, &source, part, rejects).await?;
                return Err(ObjectFailure::Rejected(e.to_string()));
            }
            Err(e) => return Err(ObjectFailure::Retry(e.to_string())),
        };
        summary.records += 1;
        let resume_after = raw.resume;
        let position = raw.position;
        let mut reject = |reason: String, raw: &str, summary: &mut IngestSummary| {
            warn!(bucket = %source.bucket, key = %source.key, record = %position, %reason, "record rejected");
            summary.rejected += 1;
            rejects.add(&source, position, &reason, raw);
        };
        let value = match raw.value {
            Ok(v) => v,
            Err(e) => {
                reject(e.to_string(), &String::from_utf8_lossy(&raw.raw), summary);
                continue;
            }
        };
        let origin = RecordOrigin {
            bucket: &source.bucket,
            key: &source.key,
            record: position.number(),
        };
        let doc = match cfg.fields.document(value, origin) {
            Ok(d) => d,
            Err((e, record)) => {
                reject(e.to_string(), &record.to_string(), summary);
                continue;
            }
        };
        let texts = chunk_text(&doc.text, &cfg.chunking);
        let chunk_count = texts.len() as u32;
        let encoded: Vec<String> = texts
            .into_iter()
            .enumerate()
            .map(|(i, text)| {
                MessagePacker::encode(&ChunkPayload {
                    doc_id: doc.doc_id.clone(),
                    chunk_index: i as u32,
                    chunk_count,
                    record: position.number(),
                    text,
                    metadata: doc.metadata.clone(),
                    vector: None,
                })
            })
            .collect();
        // All of a record's chunks go, or none: check the largest before packing any.
        if let Some(largest) = encoded.iter().map(String::len).max()
            && let Err(e) = packer.fits(largest)
        {
            let mut record = doc.metadata.clone();
            record.insert("text".into(), doc.text.clone().into());
            reject(
                e.to_string(),
                &serde_json::Value::Object(record).to_string(),
                summary,
            );
            continue;
        }
        for chunk in &encoded {
            if let Some(body) = packer.push(chunk).expect("size checked above") {
                bodies.push(body);
            }
        }
        summary.chunks += u64::from(chunk_count);
        if bodies.len() >= MAX_BATCH_ENTRIES {
            let stats = send_all(&deps.queue, std::mem::take(&mut bodies), limits).await?;
            summary.messages += stats.messages;
            summary.sqs_requests += stats.batches;
            if !deadline.allows(Duration::ZERO) {
                paused = Some(resume_after);
                break;
            }
        }
    }
    bodies.extend(packer.finish());
    if paused.is_none() && source.sequencer.is_some() {
        // Sent last; whenever it is processed, it removes only chunks of older versions.
        bodies.push(ChunkMessage::control(Operation::Sweep, &source));
    }
    let stats = send_all(&deps.queue, bodies, limits).await?;
    summary.messages += stats.messages;
    summary.sqs_requests += stats.batches;
    let rejected = rejects.count;
    write_rejects(deps, &source, part, rejects).await?;
    info!(bucket = %source.bucket, key = %source.key, part, bytes = records.bytes_read(), rejected, paused = paused.is_some(), "object read");
    Ok(paused)
}

/// Writes the object's rejects (if any) under the rejects prefix of its bucket.
async fn write_rejects<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    source: &SourceRef,
    part: u32,
    rejects: Rejects,
) -> Result<(), ObjectFailure> {
    if rejects.count == 0 || deps.config.rejects_prefix.is_empty() {
        return Ok(());
    }
    let key = Rejects::key(&deps.config.rejects_prefix, source, part);
    let (count, not_kept) = (rejects.count, rejects.dropped);
    deps.store
        .put(&source.bucket, &key, rejects.lines)
        .await
        .map_err(|e| ObjectFailure::Retry(format!("writing rejects: {e}")))?;
    warn!(bucket = %source.bucket, key = %source.key, rejects = %key, count, not_kept, "rejected records written");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Env, IngestConfig};
    use crate::queue::{EntryFailure, QueueEntry};
    use crate::store::OpenedObject;
    use serde_json::json;
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    struct MemoryStore {
        objects: Mutex<HashMap<(String, String), Vec<u8>>>,
    }

    impl ObjectStore for MemoryStore {
        async fn open(&self, object: &ObjectRef) -> Result<OpenedObject, StoreError> {
            let objects = self.objects.lock().unwrap();
            let body = objects
                .get(&(object.bucket.clone(), object.key.clone()))
                .cloned()
                .ok_or(StoreError::NotFound {
                    bucket: object.bucket.clone(),
                    key: object.key.clone(),
                })?;
            Ok(OpenedObject {
                size: Some(body.len() as i64),
                body: Box::pin(std::io::Cursor::new(body)),
                etag: Some("e1".into()),
                version_id: None,
            })
        }

        async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
            self.objects
                .lock()
                .unwrap()
                .insert((bucket.into(), key.into()), body);
            Ok(())
        }

        /// Pages of two, so backfills cross page boundaries.
        async fn list(
            &self,
            bucket: &str,
            prefix: &str,
            start_after: Option<&str>,
        ) -> Result<crate::store::ListPage, StoreError> {
            let mut keys: Vec<String> = self
                .objects
                .lock()
                .unwrap()
                .keys()
                .filter(|(b, k)| {
                    b == bucket
                        && k.starts_with(prefix)
                        && start_after.is_none_or(|a| k.as_str() > a)
                })
                .map(|(_, k)| k.clone())
                .collect();
            keys.sort();
            let truncated = keys.len() > 2;
            keys.truncate(2);
            Ok(crate::store::ListPage {
                objects: keys.into_iter().map(|k| (k, Some("e1".into()))).collect(),
                truncated,
            })
        }
    }

    #[derive(Default)]
    struct MemoryQueue {
        bodies: Mutex<Vec<String>>,
        down: bool,
    }

    impl ChunkQueue for MemoryQueue {
        async fn send_batch(
            &self,
            entries: &[QueueEntry],
        ) -> Result<Vec<EntryFailure>, QueueError> {
            if self.down {
                return Err(QueueError::Request("connection refused".into()));
            }
            self.bodies
                .lock()
                .unwrap()
                .extend(entries.iter().map(|e| e.body.clone()));
            Ok(Vec::new())
        }
    }

    /// Records the work handed over instead of invoking anything.
    #[derive(Default)]
    struct Handover {
        events: Mutex<Vec<Value>>,
    }

    impl Continuation for Handover {
        async fn hand_over(&self, event: Value) -> Result<(), String> {
            self.events.lock().unwrap().push(event);
            Ok(())
        }
    }

    type Deps = IngestDeps<MemoryStore, MemoryQueue, Handover>;

    fn later() -> Deadline {
        Deadline::after(Duration::from_secs(600))
    }

    fn deps(objects: &[(&str, &str)], down: bool) -> Deps {
        let store = MemoryStore::default();
        for (key, body) in objects {
            store
                .objects
                .lock()
                .unwrap()
                .insert(("b".into(), key.to_string()), body.as_bytes().to_vec());
        }
        let vars = [("CHUNK_QUEUE_URL", "q")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = IngestConfig::from_env(&mut Env::from_map(vars)).unwrap();
        IngestDeps {
            store,
            queue: MemoryQueue {
                down,
                ..Default::default()
            },
            continuation: Handover::default(),
            config,
        }
    }

    fn record(event: &str, key: &str, sequencer: Option<&str>) -> serde_json::Value {
        json!({"eventName": event, "eventTime": "2026-11-22T00:00:00.000Z", "s3": {"bucket": {"name": "b"}, "object": {"key": key, "sequencer": sequencer}}})
    }

    fn messages(d: &Deps) -> Vec<ChunkMessage> {
        d.queue
            .bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| ChunkMessage::parse(b).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn every_record_of_a_multi_record_event_and_nothing_else() {
        let d = deps(
            &[
                (
                    "a b+.jsonl",
                    "{\"id\":1,\"text\":\"one\"}\n{\"id\":2,\"text\":\"two\"}\n",
                ),
                ("c.json", "[{\"text\":\"three\"}]"),
            ],
            false,
        );
        let event = json!({"Records": [
            record("ObjectCreated:Put", "a+b%2B.jsonl", Some("0A")),
            record("ObjectCreated:CompleteMultipartUpload", "c.json", None),
            record("ObjectCreated:Put", "folder/", None),
            record("ObjectCreated:Put", "rejects/a.jsonl/e1.jsonl", None),
            record("ObjectRestore:Completed", "c.json", None),
        ]});
        let summary = handle_event(&d, event, later()).await.unwrap();
        assert_eq!(
            (
                summary.objects,
                summary.records,
                summary.chunks,
                summary.rejected,
                summary.ignored
            ),
            (2, 3, 3, 0, 3)
        );
        let msgs = messages(&d);
        let texts: Vec<&str> = msgs
            .iter()
            .flat_map(|m| m.chunks.iter().map(|c| c.text.as_str()))
            .collect();
        assert_eq!(texts, vec!["one", "two", "three"]);
        assert_eq!(msgs[0].source.key, "a b+.jsonl");
        assert_eq!(
            msgs[0].source.sequencer.as_deref(),
            Some(crate::ids::normalize_sequencer("0A").as_str())
        );
        // The sweep for the sequenced object goes after its chunks; the unsequenced one has none.
        let ops: Vec<Operation> = msgs.iter().map(|m| m.op).collect();
        assert_eq!(
            ops,
            vec![Operation::Index, Operation::Sweep, Operation::Index]
        );
    }

    #[tokio::test]
    async fn a_test_event_and_a_removal() {
        let d = deps(&[], false);
        let test_event = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"});
        assert_eq!(
            handle_event(&d, test_event, later()).await.unwrap().ignored,
            1
        );
        let summary = handle_event(
            &d,
            json!({"Records": [record("ObjectRemoved:Delete", "gone.jsonl", Some("0F"))]}),
            later(),
        )
        .await
        .unwrap();
        assert_eq!(summary.deleted, 1);
        let msgs = messages(&d);
        assert_eq!(
            (msgs[0].op, msgs[0].source.key.as_str()),
            (Operation::Delete, "gone.jsonl")
        );
    }

    #[tokio::test]
    async fn bad_records_are_kept_for_replay_and_the_rest_goes_on() {
        let body = "{\"id\":1,\"text\":\"good\"}\n{\"id\":2,\"text\":\n[1,2]\n{\"id\":4,\"title\":\"no text\"}\n{\"id\":5,\"text\":\"also good\"}\n";
        let d = deps(&[("in.jsonl", body)], false);
        let summary = handle_event(
            &d,
            json!({"Records": [record("ObjectCreated:Put", "in.jsonl", None)]}),
            later(),
        )
        .await
        .unwrap();
        assert_eq!(
            (summary.records, summary.rejected, summary.chunks),
            (5, 3, 2)
        );
        let objects = d.store.objects.lock().unwrap();
        let rejects = String::from_utf8(
            objects[&("b".to_string(), "rejects/in.jsonl/e1.jsonl".to_string())].clone(),
        )
        .unwrap();
        let lines: Vec<serde_json::Value> = rejects
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            (lines[0]["record"].as_u64(), lines[0]["raw"].as_str()),
            (Some(2), Some("{\"id\":2,\"text\":"))
        );
        assert!(
            lines[0]["reason"]
                .as_str()
                .unwrap()
                .contains("invalid JSON")
        );
        assert!(
            lines[1]["reason"]
                .as_str()
                .unwrap()
                .contains("not an object")
        );
        assert_eq!(lines[2]["raw"], "{\"id\":4,\"title\":\"no text\"}");
    }

    #[tokio::test]
    async fn not_json_is_rejected_whole_and_a_missing_object_is_skipped() {
        let d = deps(&[("x.csv", "id,text\n1,hello\n")], false);
        let event = json!({"Records": [record("ObjectCreated:Put", "x.csv", None), record("ObjectCreated:Put", "gone.json", None)]});
        let summary = handle_event(&d, event, later()).await.unwrap();
        assert_eq!(
            (summary.rejected, summary.skipped, summary.objects),
            (1, 1, 0)
        );
        assert!(
            d.store
                .objects
                .lock()
                .unwrap()
                .contains_key(&("b".to_string(), "rejects/x.csv/e1.jsonl".to_string()))
        );
    }

    #[tokio::test]
    async fn a_queue_outage_fails_the_invocation_naming_the_object() {
        let d = deps(&[("in.jsonl", "{\"text\":\"t\"}\n")], true);
        let err = handle_event(
            &d,
            json!({"Records": [record("ObjectCreated:Put", "in.jsonl", None)]}),
            later(),
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("s3://b/in.jsonl")
                && err.to_string().contains("connection refused"),
            "{err}"
        );
    }

    /// Runs an event, then every continuation it hands over, each with a deadline already
    /// past (so every invocation stops at its first chance); returns the invocations' summaries.
    async fn run_to_completion(d: &Deps, event: Value) -> Vec<IngestSummary> {
        let mut summaries = vec![
            handle_event(d, event, Deadline::after(Duration::ZERO))
                .await
                .unwrap(),
        ];
        loop {
            let next = d.continuation.events.lock().unwrap().pop();
            let Some(next) = next else { break };
            // The handed-over work survives a round trip through JSON, as it does through Lambda.
            let next: Value = serde_json::from_str(&next.to_string()).unwrap();
            summaries.push(
                handle_event(d, next, Deadline::after(Duration::ZERO))
                    .await
                    .unwrap(),
            );
            assert!(summaries.len() < 1000, "continuations never end");
        }
        summaries
    }

    fn queued_doc_ids(d: &Deps) -> Vec<String> {
        messages(d)
            .iter()
            .flat_map(|m| m.chunks.iter().map(|c| c.doc_id.clone()))
            .collect()
    }

    #[tokio::test]
    async fn a_short_deadline_continues_in_fresh_invocations_without_loss_or_duplication() {
        let body: String = (0..2000)
            .map(|i| {
                json!({"id": format!("d{i:04}"), "text": format!("record {i} with some text")})
                    .to_string()
                    + "\n"
            })
            .collect();
        let mut d = deps(&[("big.jsonl", &body)], false);
        d.config.message_max_bytes = 4096;
        let summaries = run_to_completion(
            &d,
            json!({"Records": [record("ObjectCreated:Put", "big.jsonl", Some("0C"))]}),
        )
        .await;
        assert!(
            summaries.len() > 2,
            "the object took several invocations: {}",
            summaries.len()
        );
        assert!(
            summaries[0]
                .continued
                .as_deref()
                .unwrap()
                .contains("big.jsonl from byte")
        );
        let ids = queued_doc_ids(&d);
        let expected: Vec<String> = (0..2000).map(|i| format!("d{i:04}")).collect();
        assert_eq!(ids, expected, "every record queued once, in order");
        assert_eq!(summaries.iter().map(|s| s.records).sum::<u64>(), 2000);
        // Only the invocation that finished the object sends its sweep.
        let sweeps = messages(&d)
            .iter()
            .filter(|m| m.op == Operation::Sweep)
            .count();
        assert_eq!(sweeps, 1);
        assert_eq!(messages(&d).last().unwrap().op, Operation::Sweep);
    }

    #[tokio::test]
    async fn a_backfill_reads_every_object_under_the_prefix_across_pages_and_seams() {
        let lines = |p: &str, n: usize| -> String {
            (0..n)
                .map(|i| json!({"id": format!("{p}{i}"), "text": "t"}).to_string() + "\n")
                .collect()
        };
        let array = serde_json::to_string(
            &(0..30)
                .map(|i| json!({"id": format!("arr{i}"), "text": "t"}))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let objects = [
            ("in/a.jsonl", lines("a", 40)),
            ("in/b.json", array),
            ("in/c.jsonl", lines("c", 5)),
            ("in/folder/", String::new()),
            ("rejects/in/x.jsonl/e1.jsonl", lines("never", 3)),
            ("other/z.jsonl", lines("never", 3)),
        ];
        let refs: Vec<(&str, &str)> = objects.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut d = deps(&refs, false);
        d.config.message_max_bytes = 4096;
        let summaries =
            run_to_completion(&d, json!({"backfill": {"bucket": "b", "prefix": "in/"}})).await;
        let mut ids = queued_doc_ids(&d);
        let total = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), total, "no duplicates");
        assert_eq!(total, 75);
        assert!(ids.iter().all(|id| !id.starts_with("never")));
        assert_eq!(summaries.iter().map(|s| s.objects).sum::<u64>(), 3);
        assert_eq!(summaries.iter().map(|s| s.listed).sum::<u64>(), 4);
    }

    #[tokio::test]
    async fn unknown_events_are_refused_clearly() {
        let d = deps(&[], false);
        let err = handle_event(&d, json!({"backfil": {"bucket": "b"}}), later())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("backfil"), "{err}");
        let err = handle_event(&d, json!({"backfill": {"prefix": "x"}}), later())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("bucket"), "{err}");
    }
}
