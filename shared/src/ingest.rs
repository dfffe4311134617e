//! The `ingest` handler: S3 notifications in, chunk messages out. Each object is streamed record
//! by record; a bad record is counted and logged, never the end of its object.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use crate::chunker::chunk_text;
use crate::config::IngestConfig;
use crate::message::{ChunkPayload, MessagePacker, SourceRef};
use crate::metrics::MetricSet;
use crate::queue::{BatchLimits, ChunkQueue, MAX_BATCH_ENTRIES, QueueError, send_all};
use crate::reader::{ReadError, open_records};
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
    /// Notifications that are not object creations (test events, deletions).
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
        if !record.event_name.starts_with("ObjectCreated:") {
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
            sequencer: record.s3.object.sequencer.clone(),
        };
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
    let source = SourceRef {
        etag: source.etag.or(opened.etag),
        version_id: source.version_id.or(opened.version_id),
        ..source
    };
    let mut records = open_records(opened.body, &source.key, cfg.max_record_bytes)
        .await
        .map_err(|e| ObjectFailure::Retry(e.to_string()))?;

    let limits = BatchLimits {
        max_payload_bytes: cfg.sqs_max_payload_bytes,
        max_attempts: 5,
    };
    let mut packer = MessagePacker::new(&source, cfg.message_max_bytes);
    let mut bodies: Vec<String> = Vec::new();
    loop {
        let raw = match records.next_record().await {
            Ok(Some(raw)) => raw,
            Ok(None) => break,
            Err(e @ ReadError::UnsupportedFormat(_)) => {
                return Err(ObjectFailure::Rejected(e.to_string()));
            }
            Err(e) => return Err(ObjectFailure::Retry(e.to_string())),
        };
        summary.records += 1;
        let position = raw.position;
        let reject = |reason: String, summary: &mut IngestSummary| {
            warn!(bucket = %source.bucket, key = %source.key, record = %position, %reason, "record rejected");
            summary.rejected += 1;
        };
        let value = match raw.value {
            Ok(v) => v,
            Err(e) => {
                reject(e.to_string(), summary);
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
            Err(e) => {
                reject(e.to_string(), summary);
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
            reject(e.to_string(), summary);
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
    let stats = send_all(&deps.queue, bodies, limits).await?;
    summary.messages += stats.messages;
    summary.sqs_requests += stats.batches;
    info!(bucket = %source.bucket, key = %source.key, bytes = records.bytes_read(), "object ingested");
    Ok(())
}
