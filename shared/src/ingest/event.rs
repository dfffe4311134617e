//! What an event asks ingest to do: S3 notifications read leniently, continuations and backfill
//! requests, each turned into a [`Job`] of units of [`Work`].

use std::collections::VecDeque;

use aws_lambda_events::event::sqs::SqsMessage;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use crate::config::IngestConfig;
use crate::ids::normalize_sequencer;
use crate::message::SourceRef;
use crate::reader::ResumePoint;
use crate::s3key::decode_key;

use super::{IngestError, IngestSummary};

/// An S3 event notification, read leniently: only the fields ingest uses are required. (The
/// `s3:TestEvent` S3 sends when a notification is configured has no `Records`, and
/// `aws_lambda_events`' `S3Event` requires them, and `eventTime`, `userIdentity` and
/// `requestParameters` in each record, none of which ingest uses.)
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

/// One unit of ingest work. A continuation carries the units not done yet.
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
        /// Chunks the earlier parts queued: the object's sweep tells embed-index how many to
        /// expect before it removes anything older.
        #[serde(default, skip_serializing_if = "is_zero")]
        queued: u64,
    },
    /// The key, or one version of it, was removed or expired: read its current version again if
    /// it has one, else queue the deletion of its chunks. (`delete` is how continuations queued
    /// before this check existed name it.)
    #[serde(alias = "delete")]
    Removed { source: SourceRef },
    /// Ingest every object under a prefix, in key order, after `start_after`.
    Backfill {
        bucket: String,
        #[serde(default)]
        prefix: String,
        #[serde(default)]
        start_after: Option<String>,
        /// The backfill's chain of pages: the intake message id of its request. Each page
        /// claims the next one under this name before handing it over, so a page received twice
        /// never starts a second chain.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chain: Option<String>,
    },
}

impl Work {
    /// The unit as an operator reads it in a log line.
    pub(super) fn describe(&self) -> String {
        match self {
            Work::Object {
                source,
                resume,
                part,
                ..
            } => match resume {
                None => format!("s3://{}/{}", source.bucket, source.key),
                Some(r) => format!(
                    "s3://{}/{} from byte {} (part {part})",
                    source.bucket, source.key, r.offset
                ),
            },
            Work::Removed { source } => {
                format!("removal of s3://{}/{}", source.bucket, source.key)
            }
            Work::Backfill {
                bucket,
                prefix,
                start_after,
                ..
            } => format!(
                "backfill of s3://{bucket}/{prefix} after {}",
                start_after.as_deref().unwrap_or("the start")
            ),
        }
    }
}

pub(super) fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The work one event or intake message asks for, and how many times it was handed over.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) work: VecDeque<Work>,
    pub(super) hops: u32,
    /// This invocation finished a unit or read further into one.
    pub(super) advanced: bool,
    /// The intake message it came in (none when invoked directly).
    pub(super) origin: Option<String>,
}

impl Job {
    pub(super) fn new(work: VecDeque<Work>, hops: u32) -> Self {
        Self {
            work,
            hops,
            advanced: false,
            origin: None,
        }
    }

    /// The hop count of the hand-over of what is left: the count goes on only while nothing
    /// moved forward.
    pub(super) fn next_hops(&self) -> u32 {
        if self.advanced { 1 } else { self.hops + 1 }
    }
}

/// Turns an event into work: an S3 notification, `{"backfill": {"bucket", "prefix"}}`, or a
/// continuation `{"work": [...], "hops": N}`.
pub(super) fn plan(
    event: Value,
    config: &IngestConfig,
    summary: &mut IngestSummary,
) -> Result<Job, IngestError> {
    if let Some(work) = event.get("work") {
        return continuation_job(work, event.get("hops"));
    }
    if let Some(backfill) = event.get("backfill") {
        return backfill_job(backfill);
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
    let work = notification
        .records
        .into_iter()
        .filter_map(|record| notification_work(record, config, summary))
        .collect();
    Ok(Job::new(work, 0))
}

/// The work a continuation carries on, and how many hops its chain has made.
pub(super) fn continuation_job(work: &Value, hops: Option<&Value>) -> Result<Job, IngestError> {
    let work = serde_json::from_value(work.clone())
        .map_err(|e| IngestError::BadEvent(format!("continuation: {e}")))?;
    let hops = match hops {
        None | Some(Value::Null) => 0,
        Some(h) => h
            .as_u64()
            .map(|h| u32::try_from(h).unwrap_or(u32::MAX))
            .ok_or_else(|| {
                IngestError::BadEvent(format!("continuation: hops is not a count: {h}"))
            })?,
    };
    Ok(Job::new(work, hops))
}

/// `{"backfill": {"bucket", "prefix"}}`: the listing's first page.
pub(super) fn backfill_job(backfill: &Value) -> Result<Job, IngestError> {
    let bucket = backfill
        .get("bucket")
        .and_then(Value::as_str)
        .ok_or_else(|| IngestError::BadEvent("backfill needs a bucket".into()))?;
    let prefix = backfill
        .get("prefix")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(Job::new(
        VecDeque::from([Work::Backfill {
            bucket: bucket.into(),
            prefix: prefix.into(),
            start_after: None,
            chain: None,
        }]),
        0,
    ))
}

/// The work one notification record asks for: an object to read, a removal to settle, or
/// nothing (other event types, folder markers and rejects objects, undecodable keys).
pub(super) fn notification_work(
    record: S3Record,
    config: &IngestConfig,
    summary: &mut IngestSummary,
) -> Option<Work> {
    // A removed version is not a removed object, and lifecycle expirations have their own
    // event types: both are settled by the key's current state when the unit runs.
    // https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-how-to-event-types-and-destinations.html
    let removed = record.event_name.starts_with("ObjectRemoved:")
        || record.event_name.starts_with("LifecycleExpiration:");
    if !record.event_name.starts_with("ObjectCreated:") && !removed {
        info!(event = %record.event_name, bucket = %record.s3.bucket.name, key = %record.s3.object.key, "ignoring event");
        summary.ignored += 1;
        return None;
    }
    let bucket = record.s3.bucket.name;
    let key = match decode_key(&record.s3.object.key) {
        Ok(k) => k,
        Err(e) => {
            warn!(bucket = %bucket, error = %e, "object skipped");
            summary.rejected += 1;
            return None;
        }
    };
    if let Some(document) = crate::documents::described_key(&key)
        && is_data_key(document, &config.rejects_prefix)
    {
        // A metadata file changed or went: its document is read again as it is now (like a
        // backfill, ordered by the content it finds), and its chunks are written again with
        // the new fields. Their text is unchanged, so nothing is embedded again.
        info!(bucket = %bucket, key = %key, document, "metadata file changed: reading its document again");
        let source = SourceRef {
            bucket,
            key: document.to_owned(),
            version_id: None,
            etag: None,
            sequencer: None,
            read_at: None,
        };
        return Some(Work::Object {
            source,
            resume: None,
            part: 0,
            queued: 0,
        });
    }
    if !is_data_key(&key, &config.rejects_prefix) {
        info!(bucket = %bucket, key = %key, "ignoring folder marker or rejects object");
        summary.ignored += 1;
        return None;
    }
    let object = record.s3.object;
    let source = SourceRef {
        bucket,
        key,
        version_id: object.version_id.filter(|v| !v.is_empty()),
        etag: object.etag.filter(|e| !e.is_empty()),
        sequencer: object.sequencer.as_deref().map(normalize_sequencer),
        read_at: None,
    };
    Some(if removed {
        Work::Removed { source }
    } else {
        Work::Object {
            source,
            resume: None,
            part: 0,
            queued: 0,
        }
    })
}

/// Folder markers, ingest's own rejects and documents' metadata files
/// (`<key>.metadata.json`) are never data (reading the rejects would loop; a metadata file is
/// read with its document).
pub fn is_data_key(key: &str, rejects_prefix: &str) -> bool {
    !key.ends_with('/')
        && (rejects_prefix.is_empty() || !key.starts_with(rejects_prefix))
        && crate::documents::described_key(key).is_none()
}

pub(super) fn truncate(text: &str, max: usize) -> &str {
    text.char_indices()
        .nth(max)
        .map_or(text, |(i, _)| &text[..i])
}

/// The units of a job, for an error or a log line.
pub(super) fn describe_units<'a>(work: impl IntoIterator<Item = &'a Work>) -> String {
    let units: Vec<String> = work.into_iter().map(Work::describe).collect();
    match units.len() {
        0 => "no work".into(),
        1..=3 => units.join(", "),
        n => format!("{} and {} more unit(s)", units[..3].join(", "), n - 3),
    }
}

/// The SQS messages of an event, when it is one (`Records[*].eventSource == "aws:sqs"`).
pub(super) fn sqs_messages(event: &Value) -> Option<Result<Vec<SqsMessage>, IngestError>> {
    let records = event.get("Records")?.as_array()?;
    let from_sqs = !records.is_empty()
        && records
            .iter()
            .all(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs"));
    if !from_sqs {
        return None;
    }
    let messages: Result<Vec<SqsMessage>, _> =
        serde_json::from_value(Value::Array(records.clone()));
    Some(match messages {
        Err(e) => Err(IngestError::BadEvent(format!("SQS event: {e}"))),
        Ok(m) if m.iter().any(|m| m.message_id.is_none()) => Err(IngestError::BadEvent(
            "SQS event: a record without a messageId".into(),
        )),
        Ok(m) => Ok(m),
    })
}
