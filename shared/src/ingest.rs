//! The `ingest` handler: S3 notifications in, chunk messages out. Each object is streamed record
//! by record; a bad record is counted and logged, never the end of its object.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use crate::chunker::chunk_text;
use crate::config::IngestConfig;
use crate::ids::normalize_sequencer;
use crate::message::{ChunkMessage, ChunkPayload, MessagePacker, Operation, SourceRef};
use crate::metrics::MetricSet;
use crate::queue::{ChunkQueue, MAX_BATCH_ENTRIES, QueueError, send_all};
use crate::reader::{ReadError, RecordPosition, open_records_at};
use crate::record::RecordOrigin;
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
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the event is not an S3 notification: {0}")]
    BadEvent(String),
    #[error("{} object(s) failed and will be retried: {}", .0.len(), .0.join("; "))]
    Objects(Vec<String>),
}

/// Clients and settings, built once per container.
pub struct IngestDeps<S, Q> {
    pub store: S,
    pub queue: Q,
    pub config: IngestConfig,
}

/// Handles one S3 notification event.
pub async fn handle_event<S: ObjectStore, Q: ChunkQueue>(
    deps: &IngestDeps<S, Q>,
    event: Value,
) -> Result<IngestSummary, IngestError> {
    let notification: S3Notification =
        serde_json::from_value(event).map_err(|e| IngestError::BadEvent(e.to_string()))?;
    let mut summary = IngestSummary::default();
    if let Some(kind) = &notification.event {
        info!(event = %kind, "ignoring S3 test event");
        summary.ignored += 1;
    }

    let mut failures = Vec::new();
    for record in &notification.records {
        let removed = record.event_name.starts_with("ObjectRemoved:");
        if !record.event_name.starts_with("ObjectCreated:") && !removed {
            info!(event = %record.event_name, bucket = %record.s3.bucket.name, key = %record.s3.object.key, "ignoring event");
            summary.ignored += 1;
            continue;
        }
        let bucket = &record.s3.bucket.name;
        let key = match decode_key(&record.s3.object.key) {
            Ok(k) => k,
            Err(e) => {
                warn!(bucket = %bucket, error = %e, "object skipped");
                summary.rejected += 1;
                continue;
            }
        };
        if key.ends_with('/') {
            info!(bucket = %bucket, key = %key, "ignoring folder marker");
            summary.ignored += 1;
            continue;
        }
        if !deps.config.rejects_prefix.is_empty() && key.starts_with(&deps.config.rejects_prefix) {
            // ingest's own rejects: never data, and reading them would loop.
            info!(bucket = %bucket, key = %key, "ignoring rejects object");
            summary.ignored += 1;
            continue;
        }
        let source = SourceRef {
            bucket: bucket.clone(),
            key,
            version_id: record
                .s3
                .object
                .version_id
                .clone()
                .filter(|v| !v.is_empty()),
            etag: record.s3.object.etag.clone().filter(|e| !e.is_empty()),
            sequencer: record
                .s3
                .object
                .sequencer
                .as_deref()
                .map(normalize_sequencer),
        };
        if removed {
            let body = ChunkMessage::control(Operation::Delete, &source);
            match send_all(&deps.queue, vec![body], deps.config.batch_limits()).await {
                Ok(stats) => {
                    summary.deleted += 1;
                    summary.messages += stats.messages;
                    summary.sqs_requests += stats.batches;
                }
                Err(e) => failures.push(format!("s3://{}/{}: {e}", source.bucket, source.key)),
            }
            continue;
        }
        match ingest_object(deps, source.clone(), &mut summary).await {
            Ok(()) => summary.objects += 1,
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
        }
    }

    let mut metrics = MetricSet::new("ingest");
    metrics
        .count("ObjectsRead", summary.objects)
        .count("RecordsRead", summary.records)
        .count("RecordsRejected", summary.rejected)
        .count("ChunksQueued", summary.chunks)
        .count("MessagesSent", summary.messages)
        .count("ObjectsFailed", failures.len() as u64);
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
        Self { lines: Vec::new(), count: 0, dropped: 0 }
    }

    fn add(&mut self, source: &SourceRef, position: RecordPosition, reason: &str, raw: &str) {
        self.count += 1;
        let cut = raw.char_indices().nth(Self::MAX_RAW).map_or(raw.len(), |(i, _)| i);
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

    /// `<prefix><key>/<etag>.jsonl`: one rejects object per object version.
    fn key(prefix: &str, source: &SourceRef) -> String {
        format!("{prefix}{}/{}.jsonl", source.key, source.etag.as_deref().unwrap_or("unversioned"))
    }
}

async fn ingest_object<S: ObjectStore, Q: ChunkQueue>(
    deps: &IngestDeps<S, Q>,
    source: SourceRef,
    summary: &mut IngestSummary,
) -> Result<(), ObjectFailure> {
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
    let source = SourceRef { etag: source.etag.or(opened.etag), version_id: source.version_id.or(opened.version_id), ..source };
    let mut records = open_records_at(opened.body, &source.key, cfg.max_record_bytes, &cfg.records_path)
        .await
        .map_err(|e| ObjectFailure::Retry(e.to_string()))?;

    let limits = cfg.batch_limits();
    let mut packer = MessagePacker::new(&source, cfg.message_max_bytes);
    let mut bodies: Vec<String> = Vec::new();
    let mut rejects = Rejects::new();
    loop {
        let raw = match records.next_record().await {
            Ok(Some(raw)) => raw,
            Ok(None) => break,
            Err(e @ (ReadError::UnsupportedFormat(_) | ReadError::RecordsPathNotFound(_))) => {
                rejects.add(&source, RecordPosition::Index(0), &e.to_string(), "");
                write_rejects(deps, &source, &rejects).await?;
                return Err(ObjectFailure::Rejected(e.to_string()));
            }
            Err(e) => return Err(ObjectFailure::Retry(e.to_string())),
        };
        summary.records += 1;
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
        let origin = RecordOrigin { bucket: &source.bucket, key: &source.key, record: position.number() };
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
                })
            })
            .collect();
        // All of a record's chunks go, or none: check the largest before packing any.
        if let Some(largest) = encoded.iter().map(String::len).max()
            && let Err(e) = packer.fits(largest)
        {
            let mut record = doc.metadata.clone();
            record.insert("text".into(), doc.text.clone().into());
            reject(e.to_string(), &serde_json::Value::Object(record).to_string(), summary);
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
        }
    }
    bodies.extend(packer.finish());
    if source.sequencer.is_some() {
        // Sent last; whenever it is processed, it removes only chunks of older versions.
        bodies.push(ChunkMessage::control(Operation::Sweep, &source));
    }
    let stats = send_all(&deps.queue, bodies, limits).await?;
    summary.messages += stats.messages;
    summary.sqs_requests += stats.batches;
    write_rejects(deps, &source, &rejects).await?;
    info!(bucket = %source.bucket, key = %source.key, bytes = records.bytes_read(), rejected = rejects.count, "object ingested");
    Ok(())
}

/// Writes the object's rejects (if any) under the rejects prefix of its bucket.
async fn write_rejects<S: ObjectStore, Q: ChunkQueue>(deps: &IngestDeps<S, Q>, source: &SourceRef, rejects: &Rejects) -> Result<(), ObjectFailure> {
    if rejects.count == 0 || deps.config.rejects_prefix.is_empty() {
        return Ok(());
    }
    let key = Rejects::key(&deps.config.rejects_prefix, source);
    deps.store
        .put(&source.bucket, &key, rejects.lines.clone())
        .await
        .map_err(|e| ObjectFailure::Retry(format!("writing rejects: {e}")))?;
    warn!(bucket = %source.bucket, key = %source.key, rejects = %key, count = rejects.count, not_kept = rejects.dropped, "rejected records written");
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
                .ok_or(StoreError::NotFound { bucket: object.bucket.clone(), key: object.key.clone() })?;
            Ok(OpenedObject { size: Some(body.len() as i64), body: Box::pin(std::io::Cursor::new(body)), etag: Some("e1".into()), version_id: None })
        }

        async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
            self.objects.lock().unwrap().insert((bucket.into(), key.into()), body);
            Ok(())
        }
    }

    #[derive(Default)]
    struct MemoryQueue {
        bodies: Mutex<Vec<String>>,
        down: bool,
    }

    impl ChunkQueue for MemoryQueue {
        async fn send_batch(&self, entries: &[QueueEntry]) -> Result<Vec<EntryFailure>, QueueError> {
            if self.down {
                return Err(QueueError::Request("connection refused".into()));
            }
            self.bodies.lock().unwrap().extend(entries.iter().map(|e| e.body.clone()));
            Ok(Vec::new())
        }
    }

    fn deps(objects: &[(&str, &str)], down: bool) -> IngestDeps<MemoryStore, MemoryQueue> {
        let store = MemoryStore::default();
        for (key, body) in objects {
            store.objects.lock().unwrap().insert(("b".into(), key.to_string()), body.as_bytes().to_vec());
        }
        let vars = [("CHUNK_QUEUE_URL", "q")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let config = IngestConfig::from_env(&mut Env::from_map(vars)).unwrap();
        IngestDeps { store, queue: MemoryQueue { down, ..Default::default() }, config }
    }

    fn record(event: &str, key: &str, sequencer: Option<&str>) -> serde_json::Value {
        json!({"eventName": event, "eventTime": "2026-11-22T00:00:00.000Z", "s3": {"bucket": {"name": "b"}, "object": {"key": key, "sequencer": sequencer}}})
    }

    fn messages(d: &IngestDeps<MemoryStore, MemoryQueue>) -> Vec<ChunkMessage> {
        d.queue.bodies.lock().unwrap().iter().map(|b| ChunkMessage::parse(b).unwrap()).collect()
    }

    #[tokio::test]
    async fn every_record_of_a_multi_record_event_and_nothing_else() {
        let d = deps(&[("a b+.jsonl", "{\"id\":1,\"text\":\"one\"}\n{\"id\":2,\"text\":\"two\"}\n"), ("c.json", "[{\"text\":\"three\"}]")], false);
        let event = json!({"Records": [
            record("ObjectCreated:Put", "a+b%2B.jsonl", Some("0A")),
            record("ObjectCreated:CompleteMultipartUpload", "c.json", None),
            record("ObjectCreated:Put", "folder/", None),
            record("ObjectCreated:Put", "rejects/a.jsonl/e1.jsonl", None),
            record("ObjectRestore:Completed", "c.json", None),
        ]});
        let summary = handle_event(&d, event).await.unwrap();
        assert_eq!((summary.objects, summary.records, summary.chunks, summary.rejected, summary.ignored), (2, 3, 3, 0, 3));
        let msgs = messages(&d);
        let texts: Vec<&str> = msgs.iter().flat_map(|m| m.chunks.iter().map(|c| c.text.as_str())).collect();
        assert_eq!(texts, vec!["one", "two", "three"]);
        assert_eq!(msgs[0].source.key, "a b+.jsonl");
        assert_eq!(msgs[0].source.sequencer.as_deref(), Some(crate::ids::normalize_sequencer("0A").as_str()));
        // The sweep for the sequenced object goes after its chunks; the unsequenced one has none.
        let ops: Vec<Operation> = msgs.iter().map(|m| m.op).collect();
        assert_eq!(ops, vec![Operation::Index, Operation::Sweep, Operation::Index]);
    }

    #[tokio::test]
    async fn a_test_event_and_a_removal() {
        let d = deps(&[], false);
        let test_event = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"});
        assert_eq!(handle_event(&d, test_event).await.unwrap().ignored, 1);
        let summary = handle_event(&d, json!({"Records": [record("ObjectRemoved:Delete", "gone.jsonl", Some("0F"))]})).await.unwrap();
        assert_eq!(summary.deleted, 1);
        let msgs = messages(&d);
        assert_eq!((msgs[0].op, msgs[0].source.key.as_str()), (Operation::Delete, "gone.jsonl"));
    }

    #[tokio::test]
    async fn bad_records_are_kept_for_replay_and_the_rest_goes_on() {
        let body = "{\"id\":1,\"text\":\"good\"}\n{\"id\":2,\"text\":\n[1,2]\n{\"id\":4,\"title\":\"no text\"}\n{\"id\":5,\"text\":\"also good\"}\n";
        let d = deps(&[("in.jsonl", body)], false);
        let summary = handle_event(&d, json!({"Records": [record("ObjectCreated:Put", "in.jsonl", None)]})).await.unwrap();
        assert_eq!((summary.records, summary.rejected, summary.chunks), (5, 3, 2));
        let objects = d.store.objects.lock().unwrap();
        let rejects = String::from_utf8(objects[&("b".to_string(), "rejects/in.jsonl/e1.jsonl".to_string())].clone()).unwrap();
        let lines: Vec<serde_json::Value> = rejects.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!((lines[0]["record"].as_u64(), lines[0]["raw"].as_str()), (Some(2), Some("{\"id\":2,\"text\":")));
        assert!(lines[0]["reason"].as_str().unwrap().contains("invalid JSON"));
        assert!(lines[1]["reason"].as_str().unwrap().contains("not an object"));
        assert_eq!(lines[2]["raw"], "{\"id\":4,\"title\":\"no text\"}");
    }

    #[tokio::test]
    async fn not_json_is_rejected_whole_and_a_missing_object_is_skipped() {
        let d = deps(&[("x.csv", "id,text\n1,hello\n")], false);
        let event = json!({"Records": [record("ObjectCreated:Put", "x.csv", None), record("ObjectCreated:Put", "gone.json", None)]});
        let summary = handle_event(&d, event).await.unwrap();
        assert_eq!((summary.rejected, summary.skipped, summary.objects), (1, 1, 0));
        assert!(d.store.objects.lock().unwrap().contains_key(&("b".to_string(), "rejects/x.csv/e1.jsonl".to_string())));
    }

    #[tokio::test]
    async fn a_queue_outage_fails_the_invocation_naming_the_object() {
        let d = deps(&[("in.jsonl", "{\"text\":\"t\"}\n")], true);
        let err = handle_event(&d, json!({"Records": [record("ObjectCreated:Put", "in.jsonl", None)]})).await.unwrap_err();
        assert!(err.to_string().contains("s3://b/in.jsonl") && err.to_string().contains("connection refused"), "{err}");
    }
}
