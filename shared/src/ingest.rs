//! The `ingest` handler: S3 notifications (directly or through the intake queue) in, chunk messages out.
//! Each object is streamed record by record; a bad record is counted and logged, never the end of its object.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsMessage};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{error, info, warn};

use crate::chunker::chunk_text;
use crate::config::IngestConfig;
use crate::ids::normalize_sequencer;
use crate::message::{ChunkMessage, ChunkPayload, MessagePacker, Operation, SourceRef};
use crate::metrics::MetricSet;
use crate::queue::{BatchLimits, ChunkQueue, MAX_BATCH_ENTRIES, QueueError, SqsQueue, send_all};
use crate::reader::{
    BoxedBufRead, ReadError, RecordPosition, RecordReader, Resume, ResumePoint,
    open_records_resumed,
};
use crate::record::RecordOrigin;
use crate::retry::Deadline;
use crate::s3key::decode_key;
use crate::store::{ListPage, ObjectRef, ObjectStore, StoreError};

/// Hand-overs in a row that moved nothing forward after which a chain of continuations is taken
/// for a runaway loop and stopped. Lambda's own recursive loop detection is off for ingest
/// (`RecursiveLoop: Allow`), so this is the bound. A hop that finished a unit or read further
/// into an object starts the count again: an object is finite, so a chain that always moves
/// forward ends by itself, however large the object (a gzip object, decompressed from its
/// start by every part, needs many parts).
pub const MAX_HOPS: u32 = 1000;

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
    /// Removals (or expirations) after which the key still had a current version: that version
    /// was read again, ordered by the removal's sequencer.
    #[serde(default)]
    pub reindexed: u64,
    /// Notifications that carry no data (test events, folder markers, ingest's own rejects,
    /// lifecycle transitions).
    pub ignored: u64,
    /// Objects a backfill listed in this invocation.
    #[serde(default)]
    pub listed: u64,
    /// Units of work that failed (a transient error) and are retried.
    #[serde(default)]
    pub failed: u64,
    /// Where a fresh invocation takes over, when this one ran short of time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continued: Option<String>,
    /// For an SQS event: the messages to be received again (the partial batch response).
    #[serde(
        rename = "batchItemFailures",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub batch_item_failures: Option<Vec<BatchItemFailure>>,
}

impl IngestSummary {
    /// Counts what one `send_all` sent.
    fn add_sent(&mut self, stats: crate::queue::SendStats) {
        self.messages += stats.messages;
        self.sqs_requests += stats.batches;
    }
}

impl IngestSummary {
    /// What the function answers: for an SQS event exactly the partial batch response Lambda
    /// reads (`{"batchItemFailures":[...]}`, nothing else, so no event source mapping can
    /// misread it; the summary is in the log), otherwise the summary.
    /// <https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html>
    pub fn into_response(self) -> Value {
        match self.batch_item_failures {
            Some(failures) => serde_json::json!({ "batchItemFailures": failures }),
            None => serde_json::to_value(self).expect("a summary always serialises"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the event is not an S3 notification, a backfill request or a continuation: {0}")]
    BadEvent(String),
    #[error("{} object(s) failed and will be retried: {}", .0.len(), .0.join("; "))]
    Objects(Vec<String>),
    #[error(
        "a continuation loop was stopped: {units} was handed over {hops} times (the limit is {MAX_HOPS})"
    )]
    LoopStopped { units: String, hops: u32 },
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
    fn describe(&self) -> String {
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

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Hands the rest of an invocation's work to a fresh invocation of the same function.
pub trait Continuation: Send + Sync {
    fn hand_over(&self, event: Value) -> impl Future<Output = Result<(), String>> + Send;

    /// Hands over several events, each its own continuation.
    fn hand_over_all(&self, events: Vec<Value>) -> impl Future<Output = Result<(), String>> + Send {
        async move {
            for event in events {
                self.hand_over(event).await?;
            }
            Ok(())
        }
    }

    /// Whether hand-overs land on a queue where each message is retried and dead-lettered on its
    /// own: a backfill page then becomes one message per object.
    fn is_queue(&self) -> bool {
        false
    }
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
                    crate::error::error_chain(&e.into_service_error())
                )
            })
    }
}

/// Continues through the intake queue (`INGEST_QUEUE_URL`): each hand-over is a message that
/// the event source mapping delivers, retries and finally dead-letters like an S3 notification.
pub struct QueueContinuation<Q> {
    queue: Q,
    limits: BatchLimits,
}

impl<Q: ChunkQueue> QueueContinuation<Q> {
    pub fn new(queue: Q, limits: BatchLimits) -> Self {
        Self { queue, limits }
    }
}

impl<Q: ChunkQueue> Continuation for QueueContinuation<Q> {
    async fn hand_over(&self, event: Value) -> Result<(), String> {
        self.hand_over_all(vec![event]).await
    }

    async fn hand_over_all(&self, events: Vec<Value>) -> Result<(), String> {
        let bodies = events.iter().map(Value::to_string).collect();
        send_all(&self.queue, bodies, self.limits)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                // QueueError speaks of the chunk queue; this is the intake queue.
                QueueError::Request(source) => {
                    format!("sending to the intake queue failed: {source}")
                }
                QueueError::Refused { code, message } => {
                    format!("the intake queue refused a message ({code}): {message}")
                }
                QueueError::GaveUp {
                    remaining,
                    attempts,
                    code,
                    message,
                } => format!(
                    "the intake queue still refused {remaining} message(s) after {attempts} attempts; last: {code}: {message}"
                ),
            })
    }

    fn is_queue(&self) -> bool {
        true
    }
}

/// The continuation the function is deployed with: the intake queue when `INGEST_QUEUE_URL` is
/// set, else an asynchronous invocation of itself.
pub enum IntakeContinuation {
    Queue(QueueContinuation<SqsQueue>),
    Invoke(LambdaContinuation),
}

// The SDK futures beneath are deeply nested; boxing them keeps the function binary's future
// within the compiler's layout depth.
impl Continuation for IntakeContinuation {
    async fn hand_over(&self, event: Value) -> Result<(), String> {
        match self {
            Self::Queue(q) => Box::pin(q.hand_over(event)).await,
            Self::Invoke(l) => Box::pin(l.hand_over(event)).await,
        }
    }

    async fn hand_over_all(&self, events: Vec<Value>) -> Result<(), String> {
        match self {
            Self::Queue(q) => Box::pin(q.hand_over_all(events)).await,
            Self::Invoke(l) => Box::pin(l.hand_over_all(events)).await,
        }
    }

    fn is_queue(&self) -> bool {
        matches!(self, Self::Queue(_))
    }
}

/// Clients and settings, built once per container.
pub struct IngestDeps<S, Q, C> {
    pub store: S,
    pub queue: Q,
    pub continuation: C,
    pub config: IngestConfig,
}

/// The work one event or intake message asks for, and how many times it was handed over.
#[derive(Debug)]
struct Job {
    work: VecDeque<Work>,
    hops: u32,
    /// This invocation finished a unit or read further into one.
    advanced: bool,
    /// The intake message it came in (none when invoked directly).
    origin: Option<String>,
}

impl Job {
    fn new(work: VecDeque<Work>, hops: u32) -> Self {
        Self {
            work,
            hops,
            advanced: false,
            origin: None,
        }
    }

    /// The hop count of the hand-over of what is left: the count goes on only while nothing
    /// moved forward.
    fn next_hops(&self) -> u32 {
        if self.advanced { 1 } else { self.hops + 1 }
    }
}

/// Turns an event into work: an S3 notification, `{"backfill": {"bucket", "prefix"}}`, or a
/// continuation `{"work": [...], "hops": N}`.
fn plan(
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
fn continuation_job(work: &Value, hops: Option<&Value>) -> Result<Job, IngestError> {
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
fn backfill_job(backfill: &Value) -> Result<Job, IngestError> {
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
fn notification_work(
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

/// Folder markers and ingest's own rejects are never data (reading the rejects would loop).
pub fn is_data_key(key: &str, rejects_prefix: &str) -> bool {
    !key.ends_with('/') && (rejects_prefix.is_empty() || !key.starts_with(rejects_prefix))
}

fn truncate(text: &str, max: usize) -> &str {
    text.char_indices()
        .nth(max)
        .map_or(text, |(i, _)| &text[..i])
}

/// The units of a job, for an error or a log line.
fn describe_units<'a>(work: impl IntoIterator<Item = &'a Work>) -> String {
    let units: Vec<String> = work.into_iter().map(Work::describe).collect();
    match units.len() {
        0 => "no work".into(),
        1..=3 => units.join(", "),
        n => format!("{} and {} more unit(s)", units[..3].join(", "), n - 3),
    }
}

/// The SQS messages of an event, when it is one (`Records[*].eventSource == "aws:sqs"`).
fn sqs_messages(event: &Value) -> Option<Result<Vec<SqsMessage>, IngestError>> {
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

/// Handles one event: an SQS batch from the intake queue (each message an S3 notification, a
/// continuation or a backfill request, answered with a partial batch response), or any of those
/// invoked directly. When time runs short the rest is handed to a fresh invocation, after the
/// last record whose chunks are all queued: nothing is lost or sent twice across the seam.
pub async fn handle_event<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    event: Value,
    deadline: Deadline,
) -> Result<IngestSummary, IngestError> {
    let mut summary = IngestSummary::default();
    let result = match sqs_messages(&event) {
        Some(messages) => {
            let failures = handle_batch(deps, messages?, deadline, &mut summary).await;
            summary.batch_item_failures = Some(failures);
            Ok(())
        }
        None => handle_direct(deps, event, deadline, &mut summary).await,
    };

    let failed_messages = summary.batch_item_failures.as_ref().map_or(0, Vec::len);
    let mut metrics = MetricSet::new("ingest");
    metrics
        .count("ObjectsRead", summary.objects)
        .count("RecordsRead", summary.records)
        .count("RecordsRejected", summary.rejected)
        .count("ChunksQueued", summary.chunks)
        .count("MessagesSent", summary.messages)
        .count("SqsRequests", summary.sqs_requests)
        .count("ObjectsDeleted", summary.deleted)
        .count("ObjectsReindexed", summary.reindexed)
        .count("ObjectsFailed", summary.failed)
        .count("IntakeMessagesFailed", failed_messages as u64)
        .count("Continuations", u64::from(summary.continued.is_some()));
    metrics.emit();
    info!(?summary, ok = result.is_ok(), "ingest finished");
    result.map(|()| summary)
}

/// An SQS batch: each message succeeds or fails on its own. A message whose unit failed is
/// received again and redone whole (ids are deterministic, so redoing is harmless); when time
/// runs short, the rest of the message at hand and the messages not started are handed over,
/// and succeed.
async fn handle_batch<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    messages: Vec<SqsMessage>,
    deadline: Deadline,
    summary: &mut IngestSummary,
) -> Vec<BatchItemFailure> {
    let mut failures = Vec::new();
    let mut jobs = Vec::with_capacity(messages.len());
    for message in messages {
        let id = message.message_id.unwrap_or_default();
        let body = message.body.unwrap_or_default();
        let planned = serde_json::from_str::<Value>(&body)
            .map_err(|e| IngestError::BadEvent(format!("the body is not JSON: {e}")))
            .and_then(|event| plan(event, &deps.config, summary));
        match planned {
            Ok(job) if job.hops > MAX_HOPS => {
                let e = IngestError::LoopStopped {
                    units: describe_units(&job.work),
                    hops: job.hops,
                };
                error!(message_id = %id, error = %e, "intake message failed: it goes to the dead-letter queue after its receives");
                failures.push(id);
            }
            Ok(mut job) => {
                job.origin = Some(id.clone());
                jobs.push((id, job));
            }
            Err(e) => {
                error!(message_id = %id, body = %truncate(&body, 200), error = %e, "intake message cannot be read: it goes to the dead-letter queue after its receives");
                failures.push(id);
            }
        }
    }

    let mut progress = false;
    let mut out_of_time = false;
    for (id, mut job) in jobs {
        if !out_of_time {
            let failed = run_job(deps, &mut job, deadline, &mut progress, true, summary).await;
            if let Some((_, reason)) = failed.first() {
                warn!(message_id = %id, error = %reason, "intake message failed: it will be received again");
                failures.push(id);
                continue;
            }
            if job.work.is_empty() {
                continue;
            }
            out_of_time = true;
        }
        let hops = job.next_hops();
        let work: Vec<Work> = job.work.into_iter().collect();
        if let Err(e) = hand_over(deps, &work, hops, summary).await {
            warn!(message_id = %id, error = %e, "could not hand the message's rest over: it will be received again");
            failures.push(id);
        }
    }
    let mut response = SqsBatchResponse::default();
    for id in failures {
        response.add_failure(id);
    }
    response.batch_item_failures
}

/// An event invoked directly (`sam local invoke`, a test, a continuation without the intake
/// queue). When the rest is handed over, failed units go with it, so a retry of the whole
/// event cannot start a second chain; with nothing handed over, failures fail the invocation.
async fn handle_direct<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    event: Value,
    deadline: Deadline,
    summary: &mut IngestSummary,
) -> Result<(), IngestError> {
    let mut job = plan(event, &deps.config, summary)?;
    if job.hops > MAX_HOPS {
        return Err(IngestError::LoopStopped {
            units: describe_units(&job.work),
            hops: job.hops,
        });
    }
    let mut progress = false;
    let failed = run_job(deps, &mut job, deadline, &mut progress, false, summary).await;
    let mut reasons: Vec<String> = failed.iter().map(|(_, r)| r.clone()).collect();
    if job.work.is_empty() {
        return if reasons.is_empty() {
            Ok(())
        } else {
            Err(IngestError::Objects(reasons))
        };
    }
    // Failed units first: they were first in the event.
    let mut rest: Vec<Work> = failed.into_iter().map(|(w, _)| w).collect();
    let retried = rest.len();
    let hops = job.next_hops();
    rest.extend(job.work);
    match hand_over(deps, &rest, hops, summary).await {
        Ok(()) => {
            if retried > 0 {
                warn!(
                    units = retried,
                    "failed units were handed over with the rest, to be tried again"
                );
            }
            Ok(())
        }
        Err(e) => {
            reasons.push(e);
            Err(IngestError::Objects(reasons))
        }
    }
}

/// Runs a job's units in order until they are done or the time is up (the rest stays in
/// `job.work`). Returns the units that failed, with the reason; with `stop_at_failure` the first
/// one ends the job (its message is redone whole).
async fn run_job<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    job: &mut Job,
    deadline: Deadline,
    progress: &mut bool,
    stop_at_failure: bool,
    summary: &mut IngestSummary,
) -> Vec<(Work, String)> {
    let mut failed = Vec::new();
    job.advanced = false;
    while let Some(item) = job.work.pop_front() {
        // Every invocation makes progress on at least one unit before it may hand over.
        if *progress && !deadline.allows(Duration::ZERO) {
            job.work.push_front(item);
            break;
        }
        let made_progress = std::mem::replace(progress, true);
        // Boxed: with the SDK futures beneath, the nested futures otherwise overflow the
        // compiler's layout depth in the function binary.
        let unit = Box::pin(run_unit(
            deps,
            item.clone(),
            &mut job.work,
            job.origin.as_deref(),
            deadline,
            made_progress,
            summary,
        ));
        match unit.await {
            Ok(None) => job.advanced = true,
            Ok(Some(rest)) => {
                job.advanced |= rest != item;
                job.work.push_front(rest);
                break;
            }
            Err(reason) => {
                summary.failed += 1;
                failed.push((item, reason));
                if stop_at_failure {
                    break;
                }
            }
        }
    }
    failed
}

/// Runs one unit. `Ok(Some(rest))`: the time ran out and `rest` continues it; `Err`: a
/// transient failure, with the reason naming the object.
async fn run_unit<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    item: Work,
    work: &mut VecDeque<Work>,
    origin: Option<&str>,
    deadline: Deadline,
    made_progress: bool,
    summary: &mut IngestSummary,
) -> Result<Option<Work>, String> {
    match item {
        Work::Object {
            source,
            resume,
            part,
            queued,
        } => {
            let at = ObjectAt {
                resume,
                part,
                queued,
            };
            read_object(deps, source, at, deadline, made_progress, summary).await
        }
        Work::Removed { source } => {
            run_removed(deps, source, deadline, made_progress, summary).await
        }
        Work::Backfill {
            bucket,
            prefix,
            start_after,
            chain,
        } => {
            let page = Page {
                bucket,
                prefix,
                start_after,
                chain,
            };
            run_backfill_page(deps, page, origin, work, summary).await
        }
    }
}

/// A removal (or expiration): the key's current version is read again where there still is
/// one; otherwise its chunks are queued for deletion.
async fn run_removed<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    source: SourceRef,
    deadline: Deadline,
    made_progress: bool,
    summary: &mut IngestSummary,
) -> Result<Option<Work>, String> {
    let name = format!("s3://{}/{}", source.bucket, source.key);
    match deps.store.head(&source.bucket, &source.key).await {
        Ok(Some(head)) => {
            info!(bucket = %source.bucket, key = %source.key, removed_version = ?source.version_id, current_version = ?head.version_id, "the key still has a current version: it is read again");
            summary.reindexed += 1;
            // Pinned to what is current now, ordered by the removal's sequencer so it
            // replaces whatever the removed version left.
            let current = SourceRef {
                version_id: head.version_id,
                etag: head.etag,
                ..source
            };
            read_object(
                deps,
                current,
                ObjectAt::default(),
                deadline,
                made_progress,
                summary,
            )
            .await
        }
        Ok(None) => {
            let body = ChunkMessage::control(Operation::Delete, &source);
            let stats = send_all(&deps.queue, vec![body], deps.config.batch_limits())
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            summary.deleted += 1;
            summary.add_sent(stats);
            Ok(None)
        }
        Err(e) => {
            warn!(bucket = %source.bucket, key = %source.key, error = %e, "could not look up the key's current version");
            Err(format!("{name}: {e}"))
        }
    }
}

/// One page of a backfill listing, and the chain it belongs to.
struct Page {
    bucket: String,
    prefix: String,
    start_after: Option<String>,
    chain: Option<String>,
}

/// One page of a backfill listing: its objects (and the next page) fanned out to the intake
/// queue, or put first in this invocation's work, in key order. `origin` is the intake message
/// the page came in.
async fn run_backfill_page<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    page: Page,
    origin: Option<&str>,
    work: &mut VecDeque<Work>,
    summary: &mut IngestSummary,
) -> Result<Option<Work>, String> {
    let Page {
        bucket,
        prefix,
        start_after,
        chain,
    } = page;
    let listed = deps
        .store
        .list(&bucket, &prefix, start_after.as_deref())
        .await
        .map_err(|e| format!("backfill of s3://{bucket}/{prefix}: {e}"))?;
    summary.listed += listed.objects.len() as u64;
    info!(%bucket, %prefix, after = ?start_after, listed = listed.objects.len(), more = listed.truncated, "backfill page");
    // The request's own message names the chain its pages belong to.
    let chain = chain.or_else(|| origin.map(str::to_owned));
    let mut next = next_page(&bucket, &prefix, start_after.as_deref(), &listed)?;
    if let Some(Work::Backfill { chain: c, .. }) = &mut next {
        c.clone_from(&chain);
    }
    let objects = listed
        .objects
        .into_iter()
        .filter(|o| is_data_key(&o.key, &deps.config.rejects_prefix))
        .map(|o| Work::Object {
            source: SourceRef {
                bucket: bucket.clone(),
                key: o.key,
                version_id: None,
                etag: o.etag,
                sequencer: None,
                read_at: None,
            },
            resume: None,
            part: 0,
            queued: 0,
        });
    if deps.continuation.is_queue() {
        let next = match (next, chain.as_deref(), origin) {
            (Some(next), Some(chain), Some(origin)) => {
                claim_next_page(deps, &bucket, chain, origin, next).await?
            }
            (next, ..) => next,
        };
        // One message per object, so each succeeds, retries and dead-letters on its
        // own; each starts its own chain (hops 0), and the page chain is bounded by the
        // listing, whose cursor only moves forward.
        let events: Vec<Value> = objects
            .chain(next)
            .map(|unit| serde_json::json!({ "work": [unit], "hops": 0 }))
            .collect();
        let count = events.len();
        deps.continuation
            .hand_over_all(events)
            .await
            .map_err(|e| format!("backfill of s3://{bucket}/{prefix}: {e}"))?;
        info!(%bucket, %prefix, messages = count, "backfill page fanned out to the intake queue");
    } else {
        // In key order, each object before the cursor that follows it.
        let units: Vec<Work> = objects.chain(next).collect();
        for unit in units.into_iter().rev() {
            work.push_front(unit);
        }
    }
    Ok(None)
}

/// Claims the next page of a backfill's chain for the intake message `origin` before it is
/// handed over: a small object under the rejects prefix, written only where none is (S3's
/// conditional write), holding the message id. A page received again (its invocation crashed
/// after handing the next page over) finds its own claim and hands the page over again (at
/// most one page listed twice); a second chain finds another message's claim and stops here.
/// Without a rejects prefix nothing can be written, and nothing is claimed.
async fn claim_next_page<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    bucket: &str,
    chain: &str,
    origin: &str,
    next: Work,
) -> Result<Option<Work>, String> {
    let rejects = &deps.config.rejects_prefix;
    let Work::Backfill {
        start_after: Some(after),
        ..
    } = &next
    else {
        return Ok(Some(next));
    };
    if rejects.is_empty() {
        return Ok(Some(next));
    }
    let page = crate::ids::content_sha256(after);
    let key = format!("{rejects}.backfill/{chain}/{}", &page[..16]);
    let held = deps
        .store
        .put_if_absent(bucket, &key, origin.as_bytes().to_vec())
        .await
        .map_err(|e| format!("claiming the backfill page after {after}: {e}"))?;
    match held {
        Some(claimant) if claimant != origin.as_bytes() => {
            info!(%bucket, %chain, after = %after, claim = %key, "another message of this backfill already handed this page over: this chain stops here");
            Ok(None)
        }
        _ => Ok(Some(next)),
    }
}

/// The work that lists the page after `page`, if the listing is truncated.
fn next_page(
    bucket: &str,
    prefix: &str,
    start_after: Option<&str>,
    page: &ListPage,
) -> Result<Option<Work>, String> {
    if !page.truncated {
        return Ok(None);
    }
    // The cursor must move on, or the same page would be listed forever.
    match page.objects.last().map(|o| o.key.clone()) {
        Some(last) if start_after.is_none_or(|a| last.as_str() > a) => Ok(Some(Work::Backfill {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            start_after: Some(last),
            chain: None,
        })),
        _ => Err(format!(
            "backfill of s3://{bucket}/{prefix}: the listing after {} is truncated but does not move on",
            start_after.unwrap_or("the start")
        )),
    }
}

/// Where a read of an object starts: its resume point, part number and the chunks the earlier
/// parts queued.
#[derive(Debug, Clone, Copy, Default)]
struct ObjectAt {
    resume: Option<ResumePoint>,
    part: u32,
    queued: u64,
}

/// Reads an object (or its next part) and says what is left of it.
async fn read_object<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
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

/// Hands work to a fresh invocation as `{"work": [...], "hops": N}`, in as many events as keep
/// each under the message budget.
async fn hand_over<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    work: &[Work],
    hops: u32,
    summary: &mut IngestSummary,
) -> Result<(), String> {
    let Some(first) = work.first() else {
        return Ok(());
    };
    let budget = deps.config.message_max_bytes;
    let mut events = Vec::new();
    let mut group: Vec<Value> = Vec::new();
    let mut size = 0;
    for unit in work {
        let unit = serde_json::to_value(unit).expect("work always serialises");
        let len = unit.to_string().len() + 1;
        if !group.is_empty() && size + len + 32 > budget {
            events.push(serde_json::json!({ "work": std::mem::take(&mut group), "hops": hops }));
            size = 0;
        }
        size += len;
        group.push(unit);
    }
    events.push(serde_json::json!({ "work": group, "hops": hops }));
    let description = first.describe();
    let count = events.len();
    deps.continuation.hand_over_all(events).await?;
    info!(next = %description, units = work.len(), events = count, hops, "time is short: a fresh invocation continues");
    summary.continued.get_or_insert(description);
    Ok(())
}

/// How far one call got through an object.
enum ObjectProgress {
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

enum ObjectFailure {
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

/// Reads one object from `resume` on. Pauses after the first record at which the deadline has
/// passed (everything before it is queued); an invocation that made no progress yet skips to
/// the resume point whatever the time, so every invocation moves on.
async fn ingest_object<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    source: SourceRef,
    at: ObjectAt,
    deadline: Deadline,
    made_progress: bool,
    summary: &mut IngestSummary,
) -> Result<ObjectProgress, ObjectFailure> {
    let (source, mut records) = open_object(deps, source, at, deadline, made_progress).await?;
    let mut out = Outbox {
        packer: MessagePacker::new(
            &source,
            deps.config.fields.id_scope,
            deps.config.message_max_bytes,
        ),
        bodies: Vec::new(),
        rejects: Rejects::new(),
        queued: at.queued,
    };
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
async fn unreadable<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
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

/// What reading an object has produced and not yet sent: packed chunk messages, rejects, and
/// the count of chunks queued for it so far (the sweep's).
struct Outbox {
    packer: MessagePacker,
    bodies: Vec<String>,
    rejects: Rejects,
    queued: u64,
}

impl Outbox {
    /// Packs one record's chunks, or counts and keeps it as a reject.
    fn take(
        &mut self,
        cfg: &IngestConfig,
        source: &SourceRef,
        raw: crate::reader::RawRecord,
        summary: &mut IngestSummary,
    ) {
        summary.records += 1;
        let position = raw.position;
        match pack_record(cfg, source, raw, &mut self.packer, &mut self.bodies) {
            Ok(chunks) => {
                summary.chunks += u64::from(chunks);
                self.queued += u64::from(chunks);
            }
            Err((reason, raw)) => {
                warn!(bucket = %source.bucket, key = %source.key, record = %position, %reason, "record rejected");
                summary.rejected += 1;
                self.rejects.add(source, position, &reason, &raw);
            }
        }
    }

    /// Sends what is left (with the sweep of older versions once the object is read to its
    /// end) and writes the rejects; the count of rejected records.
    async fn flush<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
        mut self,
        deps: &IngestDeps<S, Q, C>,
        source: &SourceRef,
        part: u32,
        whole: bool,
        summary: &mut IngestSummary,
    ) -> Result<u64, ObjectFailure> {
        let mut bodies = self.bodies;
        bodies.extend(self.packer.finish());
        if whole && source.sequencer.is_some() {
            // Sent last; whenever it is processed, it removes only chunks of older versions, and
            // only once the version's chunks are indexed (so none of them is embedded again).
            bodies.push(ChunkMessage::sweep(source, self.queued));
        }
        summary.add_sent(send_all(&deps.queue, bodies, deps.config.batch_limits()).await?);
        let rejected = self.rejects.count;
        write_rejects(deps, source, part, self.rejects).await?;
        Ok(rejected)
    }
}

fn retry(e: impl std::fmt::Display) -> ObjectFailure {
    ObjectFailure::Retry(e.to_string())
}

/// Opens the object (from where the last part stopped, when it can be read from there) and its
/// record stream; the source as stored, with the eTag and version the read returned.
async fn open_object<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    source: SourceRef,
    at: ObjectAt,
    deadline: Deadline,
    made_progress: bool,
) -> Result<(SourceRef, RecordReader<BoxedBufRead>), ObjectFailure> {
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
    let resume = at.resume.map(|point| Resume {
        point,
        body_offset: opened.offset,
        skip_deadline: made_progress.then_some(deadline),
    });
    let path = &cfg.records_path;
    let opened = open_records_resumed(opened.body, &source.key, cfg.max_record_bytes, path, resume);
    match opened.await {
        Ok(records) => Ok((source, records)),
        Err(e @ ReadError::OutOfTime { .. }) => Err(ObjectFailure::OutOfTime(e.to_string())),
        Err(e) => Err(retry(e)),
    }
}

/// In a versioned bucket, a notification names a version that may no longer be current when it
/// arrives (S3 delivers late): reading it would index an old version, which only the object's
/// next event would correct. It is skipped; the current version's own event (or the removal
/// that made it current) indexes that one. Unversioned reads are pinned by eTag instead.
async fn still_current<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
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

/// Packs one record's chunks; returns how many, or why it was rejected with the text to keep.
fn pack_record(
    cfg: &IngestConfig,
    source: &SourceRef,
    raw: crate::reader::RawRecord,
    packer: &mut MessagePacker,
    bodies: &mut Vec<String>,
) -> Result<u32, (String, String)> {
    let position = raw.position;
    let value = raw.value.map_err(|e| {
        (
            e.to_string(),
            String::from_utf8_lossy(&raw.raw).into_owned(),
        )
    })?;
    let origin = RecordOrigin {
        bucket: &source.bucket,
        key: &source.key,
    };
    let doc = cfg
        .fields
        .document(value, origin)
        .map_err(|(e, record)| (e.to_string(), record.to_string()))?;
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
        return Err((e.to_string(), Value::Object(record).to_string()));
    }
    for chunk in &encoded {
        if let Some(body) = packer.push(chunk).expect("size checked above") {
            bodies.push(body);
        }
    }
    Ok(chunk_count)
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
    use crate::test_util::{FailingQueue, MemoryQueue, MemoryStore};
    use serde_json::json;
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    /// Records the work handed over instead of invoking anything; `queue` makes it behave as
    /// the intake queue (backfill pages fan out).
    #[derive(Default)]
    struct Handover {
        events: Mutex<Vec<Value>>,
        queue: bool,
    }

    impl Continuation for Handover {
        async fn hand_over(&self, event: Value) -> Result<(), String> {
            self.events.lock().unwrap().push(event);
            Ok(())
        }

        fn is_queue(&self) -> bool {
            self.queue
        }
    }

    type Deps = IngestDeps<MemoryStore, FailingQueue<MemoryQueue>, Handover>;

    fn later() -> Deadline {
        Deadline::after(Duration::from_secs(600))
    }

    fn now() -> Deadline {
        Deadline::after(Duration::ZERO)
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
            queue: {
                let queue = FailingQueue::new(MemoryQueue::default());
                queue.set_down(down);
                queue
            },
            continuation: Handover::default(),
            config,
        }
    }

    fn record(event: &str, key: &str, sequencer: Option<&str>) -> Value {
        json!({"eventName": event, "eventTime": "2026-11-22T00:00:00.000Z", "s3": {"bucket": {"name": "b"}, "object": {"key": key, "sequencer": sequencer}}})
    }

    /// An SQS event of the intake queue with these bodies, message ids `m0`, `m1`, ...
    fn sqs_event(bodies: &[String]) -> Value {
        let records: Vec<Value> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| json!({"messageId": format!("m{i}"), "receiptHandle": "r", "body": b, "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:ap-northeast-1:123456789012:sakuin-intake"}))
            .collect();
        json!({ "Records": records })
    }

    #[test]
    fn an_sqs_record_without_a_message_id_is_a_bad_event() {
        let mut event = sqs_event(&["{}".into(), "{}".into()]);
        event["Records"][1]
            .as_object_mut()
            .unwrap()
            .remove("messageId");
        let Some(Err(IngestError::BadEvent(e))) = sqs_messages(&event) else {
            panic!("a record without an id must be refused");
        };
        assert!(e.contains("without a messageId"), "{e}");
        let ids: Vec<_> = sqs_messages(&sqs_event(&["{}".into()]))
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|m| m.message_id)
            .collect();
        assert_eq!(ids, [Some("m0".to_string())]);
    }

    fn failed_ids(summary: &IngestSummary) -> Vec<String> {
        let mut ids: Vec<String> = summary
            .batch_item_failures
            .as_ref()
            .expect("an SQS event is answered with a partial batch response")
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        ids.sort();
        ids
    }

    fn lines(prefix: &str, n: usize) -> String {
        (0..n)
            .map(|i| {
                json!({"id": format!("{prefix}{i}"), "text": format!("text {i}")}).to_string()
                    + "\n"
            })
            .collect()
    }

    fn messages(d: &Deps) -> Vec<ChunkMessage> {
        d.queue
            .inner
            .bodies()
            .iter()
            .map(|b| ChunkMessage::parse(b).unwrap())
            .collect()
    }

    fn handed_over(d: &Deps) -> Vec<Value> {
        d.continuation.events.lock().unwrap().clone()
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
        assert_eq!(summary.batch_item_failures, None, "not an SQS event");
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
        assert_eq!((summary.deleted, summary.reindexed), (1, 0));
        let msgs = messages(&d);
        assert_eq!(
            (msgs[0].op, msgs[0].source.key.as_str()),
            (Operation::Delete, "gone.jsonl")
        );
    }

    #[tokio::test]
    async fn a_removed_version_of_a_key_that_still_has_one_reads_the_current_version_again() {
        let d = deps(&[("docs/faq.jsonl", &lines("faq", 3))], false);
        d.store
            .versions
            .lock()
            .unwrap()
            .insert("docs/faq.jsonl".into(), "v-current".into());
        // Real-shaped: ObjectRemoved:Delete naming a noncurrent version.
        let mut event: Value =
            serde_json::from_str(include_str!("../../events/s3-removed-version.json")).unwrap();
        event["Records"][0]["s3"]["bucket"]["name"] = json!("b");
        let removed_version = event["Records"][0]["s3"]["object"]["versionId"]
            .as_str()
            .unwrap()
            .to_owned();
        let summary = handle_event(&d, event, later()).await.unwrap();
        assert_eq!(
            (summary.reindexed, summary.objects, summary.deleted),
            (1, 1, 0)
        );
        let msgs = messages(&d);
        assert!(msgs.len() >= 2);
        for m in &msgs {
            // Pinned to the current version, ordered by the removal's sequencer.
            assert_eq!(m.source.version_id.as_deref(), Some("v-current"));
            assert_ne!(
                m.source.version_id.as_deref(),
                Some(removed_version.as_str())
            );
            assert_eq!(m.source.etag.as_deref(), Some("e2"));
            assert_eq!(
                m.source.sequencer.as_deref(),
                Some(crate::ids::normalize_sequencer("0065F1F3A9B8C7D6E5").as_str())
            );
        }
        let ops: Vec<Operation> = msgs.iter().map(|m| m.op).collect();
        assert_eq!(ops.last(), Some(&Operation::Sweep));
        assert!(
            ops[..ops.len() - 1]
                .iter()
                .all(|op| *op == Operation::Index)
        );
        let read = d.store.opened.lock().unwrap();
        assert_eq!(read[0].version_id.as_deref(), Some("v-current"));
    }

    #[tokio::test]
    async fn expirations_and_delete_markers_delete_what_has_no_current_version() {
        let d = deps(&[("kept.jsonl", &lines("k", 1))], false);
        let mut expired: Value =
            serde_json::from_str(include_str!("../../events/s3-lifecycle-expiration.json"))
                .unwrap();
        expired["Records"][0]["s3"]["bucket"]["name"] = json!("b");
        let summary = handle_event(&d, expired, later()).await.unwrap();
        assert_eq!((summary.deleted, summary.ignored), (1, 0));
        let summary = handle_event(
            &d,
            json!({"Records": [
                record("ObjectRemoved:DeleteMarkerCreated", "marked.jsonl", Some("10")),
                record("LifecycleExpiration:DeleteMarkerCreated", "expired.jsonl", Some("11")),
                record("LifecycleTransition", "kept.jsonl", Some("12")),
                // An expired noncurrent version of a key that is still there.
                record("LifecycleExpiration:Delete", "kept.jsonl", Some("13")),
            ]}),
            later(),
        )
        .await
        .unwrap();
        assert_eq!(
            (summary.deleted, summary.ignored, summary.reindexed),
            (2, 1, 1)
        );
        let deletes: Vec<(String, Option<String>)> = messages(&d)
            .into_iter()
            .filter(|m| m.op == Operation::Delete)
            .map(|m| (m.source.key, m.source.sequencer))
            .collect();
        let seq = |s: &str| Some(crate::ids::normalize_sequencer(s));
        assert_eq!(
            deletes,
            vec![
                (
                    "docs/archive/2025-q1.jsonl".to_string(),
                    seq("0065F20A11C4D3E2F1")
                ),
                ("marked.jsonl".to_string(), seq("10")),
                ("expired.jsonl".to_string(), seq("11")),
            ]
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
        let lines: Vec<Value> = rejects
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
    async fn a_json_lines_object_whose_first_line_is_not_an_object_loses_only_that_line() {
        let header = "id,text\n{\"id\":1,\"text\":\"one\"}\n{\"id\":2,\"text\":\"two\"}\n";
        let number = "42\n{\"id\":3,\"text\":\"three\"}\n";
        // No JSON Lines extension: the object line after the header says it.
        let unnamed = "\"export v2\"\n{\"id\":4,\"text\":\"four\"}\n";
        let d = deps(
            &[
                ("h.jsonl", header),
                ("n.ndjson", number),
                ("u.json", unnamed),
            ],
            false,
        );
        let summary = handle_event(
            &d,
            json!({"Records": [
                record("ObjectCreated:Put", "h.jsonl", None),
                record("ObjectCreated:Put", "n.ndjson", None),
                record("ObjectCreated:Put", "u.json", None),
            ]}),
            later(),
        )
        .await
        .unwrap();
        assert_eq!(
            (
                summary.objects,
                summary.records,
                summary.rejected,
                summary.chunks
            ),
            (3, 7, 3, 4)
        );
        let ids: Vec<String> = messages(&d)
            .iter()
            .flat_map(|m| m.chunks.iter().map(|c| c.doc_id.clone()))
            .collect();
        assert_eq!(ids, vec!["1", "2", "3", "4"]);
        let objects = d.store.objects.lock().unwrap();
        let rejects = String::from_utf8(
            objects[&("b".to_string(), "rejects/h.jsonl/e1.jsonl".to_string())].clone(),
        )
        .unwrap();
        let line: Value = serde_json::from_str(rejects.trim()).unwrap();
        assert_eq!(
            (line["position"].as_str(), line["raw"].as_str()),
            (Some("line 1"), Some("id,text"))
        );
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
        assert!(handed_over(&d).is_empty());
    }

    #[tokio::test]
    async fn an_sqs_batch_reports_only_the_messages_that_failed() {
        let d = deps(
            &[
                ("ok.jsonl", &lines("ok", 2)),
                ("part.jsonl", &lines("p", 4)),
            ],
            false,
        );
        d.store.failing.lock().unwrap().insert("flaky.jsonl".into());
        let notification = |key: &str| {
            json!({"Records": [record("ObjectCreated:Put", key, Some("0A"))]}).to_string()
        };
        // A continuation of part.jsonl from its third line, as an earlier invocation left it.
        let point = ResumePoint {
            offset: lines("p", 2).len() as u64,
            line: 3,
            index: 0,
            values: false,
            in_array: false,
            compressed: Some(false),
        };
        let continuation = json!({"work": [{"kind": "object", "source": {"bucket": "b", "key": "part.jsonl", "etag": "e1"}, "resume": point, "part": 1}], "hops": 2}).to_string();
        let event = sqs_event(&[
            notification("ok.jsonl"),
            notification("flaky.jsonl"),
            "{\"Records\": [".into(),
            continuation,
            json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"}).to_string(),
        ]);
        let summary = handle_event(&d, event, later()).await.unwrap();
        assert_eq!(failed_ids(&summary), vec!["m1", "m2"]);
        assert_eq!(
            (
                summary.objects,
                summary.records,
                summary.failed,
                summary.ignored
            ),
            (2, 4, 1, 1)
        );
        let ids: Vec<String> = messages(&d)
            .iter()
            .flat_map(|m| m.chunks.iter().map(|c| c.doc_id.clone()))
            .collect();
        assert_eq!(ids, vec!["ok0", "ok1", "p2", "p3"]);
        assert!(handed_over(&d).is_empty());
        // The answer is exactly what the event source mapping reads.
        assert!(summary.records > 0);
        assert_eq!(
            summary.into_response(),
            json!({"batchItemFailures": [{"itemIdentifier": "m2"}, {"itemIdentifier": "m1"}]})
        );

        // Nothing failed: an empty list, never a missing one.
        let summary = handle_event(&d, sqs_event(&[notification("ok.jsonl")]), later())
            .await
            .unwrap();
        assert_eq!(summary.into_response(), json!({"batchItemFailures": []}));
    }

    /// The S3 notifications of `events/` (what `sam local invoke` and the README use), invoked
    /// directly as S3 would: each is read, decoded and queued as the demo bucket would have it.
    #[tokio::test]
    async fn the_s3_events_of_the_events_folder() {
        let event = |text: &str| serde_json::from_str::<Value>(text).unwrap();
        let d = deps(&[], false);
        for (key, body) in [
            ("docs/faq.jsonl", lines("faq", 3)),
            // `+` is a space and %2B a plus in a notification's key.
            ("docs/2024 annual report+q4日本.jsonl", lines("report", 2)),
            (
                "docs/articles.json",
                json!([{"id": "a1", "text": "An article."}]).to_string(),
            ),
        ] {
            d.store
                .objects
                .lock()
                .unwrap()
                .insert(("sakuin-demo".into(), key.into()), body.into_bytes());
        }
        let run = async |text: &str| handle_event(&d, event(text), later()).await.unwrap();

        let put = run(include_str!("../../events/s3-put.json")).await;
        assert_eq!((put.objects, put.records), (1, 3));
        let encoded = run(include_str!("../../events/s3-put-encoded-key.json")).await;
        assert_eq!((encoded.objects, encoded.records), (1, 2));
        let multi = run(include_str!("../../events/s3-put-multi.json")).await;
        assert_eq!((multi.objects, multi.records), (2, 4));
        let keys: BTreeSet<String> = messages(&d).into_iter().map(|m| m.source.key).collect();
        assert_eq!(
            keys,
            [
                "docs/2024 annual report+q4日本.jsonl",
                "docs/articles.json",
                "docs/faq.jsonl"
            ]
            .map(String::from)
            .into()
        );

        // The test event S3 sends when notifications are configured: nothing to do.
        let test = run(include_str!("../../events/s3-test-event.json")).await;
        assert_eq!((test.objects, test.deleted), (0, 0));
        // The removal of a key that is gone: its chunks are queued for deletion.
        d.store.objects.lock().unwrap().clear();
        let removed = run(include_str!("../../events/s3-removed.json")).await;
        assert_eq!(removed.deleted, 1);
        let last = messages(&d).pop().unwrap();
        assert_eq!(
            (last.op, last.source.key.as_str()),
            (Operation::Delete, "docs/faq.jsonl")
        );
    }

    #[tokio::test]
    async fn real_shaped_intake_events() {
        let d = deps(&[], false);
        let body = lines("faq", 3);
        d.store.objects.lock().unwrap().insert(
            ("sakuin-demo".into(), "docs/faq.jsonl".into()),
            body.into_bytes(),
        );
        let event: Value =
            serde_json::from_str(include_str!("../../events/sqs-intake-s3-put.json")).unwrap();
        let summary = handle_event(&d, event, later()).await.unwrap();
        assert_eq!(failed_ids(&summary), Vec::<String>::new());
        assert_eq!(
            (summary.objects, summary.records, summary.ignored),
            (1, 3, 1)
        );
        assert_eq!(
            messages(&d)[0].source.etag.as_deref(),
            Some("cb032eccdfba5b600a2445455bb19df9")
        );

        // The continuation resumes docs/large.jsonl at byte 1048576, line 4121.
        let event: Value =
            serde_json::from_str(include_str!("../../events/sqs-intake-continuation.json"))
                .unwrap();
        let mut large = vec![b' '; 1_048_575];
        large.push(b'\n');
        large.extend_from_slice(lines("large", 2).as_bytes());
        d.store
            .objects
            .lock()
            .unwrap()
            .insert(("sakuin-demo".into(), "docs/large.jsonl".into()), large);
        let summary = handle_event(&d, event, later()).await.unwrap();
        assert_eq!(failed_ids(&summary), Vec::<String>::new());
        assert_eq!((summary.objects, summary.records), (1, 2));
        let last = d.store.opened.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            last.range_start,
            Some(1_048_576),
            "a ranged read, not byte 0"
        );
        let records: Vec<u64> = messages(&d)
            .iter()
            .filter(|m| m.source.key == "docs/large.jsonl")
            .flat_map(|m| m.chunks.iter().map(|c| c.record))
            .collect();
        assert_eq!(records, vec![4121, 4122]);
    }

    #[tokio::test]
    async fn a_continuation_loop_is_stopped_at_the_hop_limit() {
        let d = deps(&[("loop.jsonl", &lines("l", 2))], false);
        let work = json!([{"kind": "object", "source": {"bucket": "b", "key": "loop.jsonl"}}]);
        let over = json!({"work": work, "hops": MAX_HOPS + 1});
        let summary = handle_event(&d, sqs_event(&[over.to_string()]), later())
            .await
            .unwrap();
        assert_eq!(failed_ids(&summary), vec!["m0"]);
        assert_eq!(summary.records, 0, "nothing of it is read");
        let err = handle_event(&d, over, later()).await.unwrap_err();
        assert!(
            err.to_string().contains("continuation loop was stopped")
                && err.to_string().contains("s3://b/loop.jsonl"),
            "{err}"
        );
        // At the limit it still runs; it reads further into the object, so what it hands over
        // starts the count again: a chain that moves forward ends by itself.
        let at = json!({"work": work, "hops": MAX_HOPS});
        let summary = handle_event(&d, sqs_event(&[at.to_string()]), now())
            .await
            .unwrap();
        assert_eq!(failed_ids(&summary), Vec::<String>::new());
        assert_eq!(handed_over(&d)[0]["hops"], 1);
    }

    #[tokio::test]
    async fn when_time_runs_short_a_batch_hands_over_the_rest_and_succeeds() {
        let d = deps(
            &[
                ("a.jsonl", &lines("a", 3)),
                ("b.jsonl", &lines("b", 1)),
                ("c.jsonl", &lines("c", 1)),
            ],
            false,
        );
        let notification = |key: &str| {
            json!({"Records": [record("ObjectCreated:Put", key, Some("0A"))]}).to_string()
        };
        let continuation = json!({"work": [{"kind": "object", "source": {"bucket": "b", "key": "c.jsonl"}}], "hops": 7}).to_string();
        let event = sqs_event(&[
            notification("a.jsonl"),
            notification("b.jsonl"),
            continuation,
        ]);
        let summary = handle_event(&d, event, now()).await.unwrap();
        assert_eq!(failed_ids(&summary), Vec::<String>::new());
        assert_eq!(summary.records, 1, "one record, then the deadline");
        let events = handed_over(&d);
        assert_eq!(events.len(), 3, "{events:?}");
        // The rest of a.jsonl, from its second line; b.jsonl whole; c.jsonl one hop further.
        assert_eq!(events[0]["hops"], 1);
        assert_eq!(events[0]["work"][0]["part"], 1);
        assert_eq!(events[0]["work"][0]["resume"]["line"], 2);
        assert_eq!(events[1]["hops"], 1);
        assert_eq!(events[1]["work"][0]["source"]["key"], "b.jsonl");
        assert_eq!(events[2]["hops"], 8);
        assert!(
            summary
                .continued
                .as_deref()
                .unwrap()
                .contains("a.jsonl from byte")
        );
    }

    #[tokio::test]
    async fn a_direct_event_hands_failed_units_over_with_the_rest() {
        let d = deps(
            &[
                ("flaky.jsonl", &lines("f", 1)),
                ("big.jsonl", &lines("g", 3)),
            ],
            false,
        );
        d.store.failing.lock().unwrap().insert("flaky.jsonl".into());
        let event = json!({"Records": [
            record("ObjectCreated:Put", "flaky.jsonl", Some("01")),
            record("ObjectCreated:Put", "big.jsonl", Some("02")),
        ]});
        // The failed unit takes the invocation's turn; the deadline has passed, so the rest is
        // handed over, and the failed unit with it instead of an error.
        let summary = handle_event(&d, event.clone(), now()).await.unwrap();
        assert_eq!(summary.failed, 1);
        let events = handed_over(&d);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["hops"], 1);
        let keys: Vec<&str> = events[0]["work"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["source"]["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, vec!["flaky.jsonl", "big.jsonl"]);

        // With time enough nothing is handed over, and the failure fails the invocation.
        let err = handle_event(&d, event, later()).await.unwrap_err();
        assert!(err.to_string().contains("s3://b/flaky.jsonl"), "{err}");
        assert_eq!(handed_over(&d).len(), 1);
    }

    #[tokio::test]
    async fn an_object_of_rejected_records_hands_over_at_the_deadline() {
        let body: String = (0..40).map(|i| format!("{{\"id\":{i}}}\n")).collect();
        let d = deps(&[("notext.jsonl", &body)], false);
        let summaries = run_to_completion(
            &d,
            json!({"Records": [record("ObjectCreated:Put", "notext.jsonl", Some("0B"))]}),
        )
        .await;
        assert_eq!(summaries.len(), 40, "one record per invocation");
        assert!(summaries[0].continued.is_some());
        assert_eq!(summaries.iter().map(|s| s.rejected).sum::<u64>(), 40);
        assert_eq!(summaries.iter().map(|s| s.objects).sum::<u64>(), 1);
        let msgs = messages(&d);
        assert_eq!(msgs.len(), 1, "only the sweep");
        assert_eq!(msgs[0].op, Operation::Sweep);
    }

    /// Runs an event, then every continuation it hands over, each with a deadline already
    /// past (so every invocation stops at its first chance); returns the invocations' summaries.
    async fn run_to_completion(d: &Deps, event: Value) -> Vec<IngestSummary> {
        let mut summaries = vec![handle_event(d, event, now()).await.unwrap()];
        loop {
            let next = d.continuation.events.lock().unwrap().pop();
            let Some(next) = next else { break };
            // The handed-over work survives a round trip through JSON, as it does through
            // Lambda or SQS; through the intake queue it arrives as a message body.
            let next = if d.continuation.queue {
                sqs_event(&[next.to_string()])
            } else {
                serde_json::from_str(&next.to_string()).unwrap()
            };
            let summary = handle_event(d, next, now()).await.unwrap();
            if let Some(failures) = &summary.batch_item_failures {
                assert!(failures.is_empty(), "{failures:?}");
            }
            summaries.push(summary);
            assert!(summaries.len() < 2000, "continuations never end");
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
        let body: String = (0..300)
            .map(|i| {
                json!({"id": format!("d{i:04}"), "text": format!("record {i} with some text")})
                    .to_string()
                    + "\n"
            })
            .collect();
        let gz = gzip(body.as_bytes());
        for (key, content) in [("big.jsonl", body.into_bytes()), ("big.jsonl.gz", gz)] {
            let mut d = deps(&[], false);
            d.store
                .objects
                .lock()
                .unwrap()
                .insert(("b".into(), key.into()), content);
            d.config.message_max_bytes = 4096;
            let summaries = run_to_completion(
                &d,
                json!({"Records": [record("ObjectCreated:Put", key, Some("0C"))]}),
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
                    .contains(&format!("{key} from byte"))
            );
            let ids = queued_doc_ids(&d);
            let expected: Vec<String> = (0..300).map(|i| format!("d{i:04}")).collect();
            assert_eq!(ids, expected, "{key}: every record queued once, in order");
            assert_eq!(summaries.iter().map(|s| s.records).sum::<u64>(), 300);
            // Only the invocation that finished the object sends its sweep.
            let sweeps = messages(&d)
                .iter()
                .filter(|m| m.op == Operation::Sweep)
                .count();
            assert_eq!(sweeps, 1);
            let sweep = messages(&d).last().unwrap().clone();
            assert_eq!(sweep.op, Operation::Sweep);
            assert_eq!(
                sweep.chunks_expected,
                Some(300),
                "the sweep counts the chunks of every part"
            );
            // Later parts of plain content read from where the last part stopped; gzip content
            // is read from its start every time.
            let opened = d.store.opened.lock().unwrap();
            assert_eq!(opened[0].range_start, None);
            let ranged = opened[1..]
                .iter()
                .filter(|o| o.range_start.is_some())
                .count();
            if key.ends_with(".gz") {
                assert_eq!(ranged, 0);
            } else {
                assert_eq!(ranged, opened.len() - 1);
                assert!(
                    opened
                        .windows(2)
                        .all(|w| w[0].range_start < w[1].range_start)
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_gzip_part_that_cannot_skip_in_time_is_handed_over_unread() {
        let body = lines("z", 6);
        let gz = gzip(body.as_bytes());
        // Where an earlier invocation stopped: after the third record.
        let mut reader =
            crate::reader::open_records(std::io::Cursor::new(gz.clone()), "z.jsonl.gz", 1024)
                .await
                .unwrap();
        let mut point = None;
        for _ in 0..3 {
            point = Some(reader.next_record().await.unwrap().unwrap().resume);
        }
        let point = point.unwrap();
        assert_eq!(point.compressed, Some(true));
        let d = deps(&[("first.jsonl", &lines("f", 1))], false);
        d.store
            .objects
            .lock()
            .unwrap()
            .insert(("b".into(), "z.jsonl.gz".into()), gz);
        // Opening the gzip object takes longer than the time left.
        d.store
            .slow
            .lock()
            .unwrap()
            .insert("z.jsonl.gz".into(), Duration::from_secs(10));
        let gz_unit = json!({"kind": "object", "source": {"bucket": "b", "key": "z.jsonl.gz", "etag": "e1"}, "resume": point, "part": 1});
        let event = json!({"work": [
            {"kind": "object", "source": {"bucket": "b", "key": "first.jsonl"}},
            gz_unit,
        ], "hops": 4});
        let summary = handle_event(&d, event, Deadline::after(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!((summary.objects, summary.records), (1, 1));
        let events = handed_over(&d);
        assert_eq!(events.len(), 1);
        let unit: Work = serde_json::from_value(events[0]["work"][0].clone()).unwrap();
        assert_eq!(
            unit,
            serde_json::from_value(gz_unit).unwrap(),
            "handed over as it came"
        );
        assert_eq!(
            events[0]["hops"], 1,
            "the first unit moved the chain forward"
        );
        // A fresh invocation gets through: the skip is its first unit.
        d.store.slow.lock().unwrap().clear();
        let summary = handle_event(
            &d,
            events[0].clone(),
            Deadline::after(Duration::from_secs(5)),
        )
        .await
        .unwrap();
        assert_eq!((summary.objects, summary.records), (1, 3));
        let ids = queued_doc_ids(&d);
        assert_eq!(ids, vec!["f0", "z3", "z4", "z5"]);
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use async_compression::tokio::write::GzipEncoder;
        use tokio::io::AsyncWriteExt;
        let data = data.to_vec();
        // Its own thread and runtime: the tests calling this already run inside one.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut enc = GzipEncoder::new(Vec::new());
                enc.write_all(&data).await.unwrap();
                enc.shutdown().await.unwrap();
                enc.into_inner()
            })
        })
        .join()
        .unwrap()
    }

    #[tokio::test]
    async fn a_backfill_reads_every_object_under_the_prefix_across_pages_and_seams() {
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
        // Without the intake queue the pages are read in line; with it they fan out.
        for queue in [false, true] {
            let mut d = deps(&refs, false);
            d.config.message_max_bytes = 4096;
            d.continuation.queue = queue;
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
    }

    #[tokio::test]
    async fn a_backfill_page_fans_out_one_message_per_object() {
        let d = deps(
            &[
                ("in/a.jsonl", &lines("a", 1)),
                ("in/b.jsonl", &lines("b", 1)),
                ("in/c.jsonl", &lines("c", 1)),
            ],
            false,
        );
        let d = Deps {
            continuation: Handover {
                queue: true,
                ..Default::default()
            },
            ..d
        };
        let summary = handle_event(
            &d,
            sqs_event(&[json!({"backfill": {"bucket": "b", "prefix": "in/"}}).to_string()]),
            later(),
        )
        .await
        .unwrap();
        assert_eq!((summary.listed, summary.records), (2, 0));
        let events = handed_over(&d);
        let units: Vec<Work> = events
            .iter()
            .map(|e| {
                assert_eq!(e["hops"], 0);
                let work = e["work"].as_array().unwrap();
                assert_eq!(work.len(), 1, "one unit per message");
                serde_json::from_value(work[0].clone()).unwrap()
            })
            .collect();
        let source = |key: &str| SourceRef {
            bucket: "b".into(),
            key: key.into(),
            version_id: None,
            etag: Some("e1".into()),
            sequencer: None,
            read_at: None,
        };
        assert_eq!(
            units,
            vec![
                Work::Object {
                    source: source("in/a.jsonl"),
                    resume: None,
                    part: 0,
                    queued: 0
                },
                Work::Object {
                    source: source("in/b.jsonl"),
                    resume: None,
                    part: 0,
                    queued: 0
                },
                Work::Backfill {
                    bucket: "b".into(),
                    prefix: "in/".into(),
                    start_after: Some("in/b.jsonl".into()),
                    chain: Some("m0".into()),
                },
            ]
        );
    }

    /// A late `ObjectCreated` in a versioned bucket names a version that is no longer current:
    /// it is skipped (the current version's own event indexes that one), not read and indexed.
    #[tokio::test]
    async fn a_late_notification_of_a_version_no_longer_current_reads_nothing() {
        let d = deps(&[("v.jsonl", &lines("v", 2))], false);
        d.store
            .versions
            .lock()
            .unwrap()
            .insert("v.jsonl".into(), "version-2".into());
        let mut late = record("ObjectCreated:Put", "v.jsonl", Some("0A"));
        late["s3"]["object"]["versionId"] = json!("version-1");
        let summary = handle_event(&d, json!({"Records": [late]}), later())
            .await
            .unwrap();
        assert_eq!((summary.skipped, summary.records), (1, 0));
        assert!(
            messages(&d).is_empty(),
            "nothing of the old version is queued"
        );
        // The current version's own notification is read.
        let mut current = record("ObjectCreated:Put", "v.jsonl", Some("0B"));
        current["s3"]["object"]["versionId"] = json!("version-2");
        let summary = handle_event(&d, json!({"Records": [current]}), later())
            .await
            .unwrap();
        assert_eq!(summary.records, 2);
    }

    /// A backfill page received twice never starts a second chain: each page claims the next
    /// one (a conditional write under the rejects prefix) before handing it over; the message
    /// that made the claim may hand it over again, any other stops.
    #[tokio::test]
    async fn a_backfill_page_received_twice_starts_no_second_chain() {
        let keys: Vec<String> = (0..5).map(|i| format!("in/{i}.jsonl")).collect();
        let objects: Vec<(&str, String)> =
            keys.iter().map(|k| (k.as_str(), lines("x", 1))).collect();
        let objects: Vec<(&str, &str)> = objects.iter().map(|(k, b)| (*k, b.as_str())).collect();
        let d = deps(&objects, false);
        let d = Deps {
            continuation: Handover {
                queue: true,
                ..Default::default()
            },
            ..d
        };
        let pages = |d: &Deps| -> Vec<Value> {
            let pages = handed_over(d)
                .into_iter()
                .filter(|e| e["work"][0]["kind"] == "backfill")
                .collect();
            d.continuation.events.lock().unwrap().clear();
            pages
        };
        let request = json!({"backfill": {"bucket": "b", "prefix": "in/"}}).to_string();
        handle_event(&d, sqs_event(&[request]), later())
            .await
            .unwrap();
        let first = pages(&d);
        assert_eq!(first.len(), 1);
        assert_eq!(
            first[0]["work"][0]["chain"], "m0",
            "the request's message names the chain"
        );
        let page = first[0].to_string();

        // The second page, handed over twice (as two messages): the first to run claims the
        // third page, the other stops; the claimant received again hands it over again.
        handle_event(&d, sqs_event(&["{}".into(), page.clone()]), later())
            .await
            .unwrap();
        assert_eq!(
            pages(&d).len(),
            1,
            "the claimant (m1) hands the third page over"
        );
        handle_event(&d, sqs_event(std::slice::from_ref(&page)), later())
            .await
            .unwrap();
        assert_eq!(
            pages(&d).len(),
            0,
            "another message (m0) stops: no second chain"
        );
        handle_event(&d, sqs_event(&["{}".into(), page]), later())
            .await
            .unwrap();
        assert_eq!(pages(&d).len(), 1, "m1 received again hands it over again");
        let claims: Vec<String> = d
            .store
            .objects
            .lock()
            .unwrap()
            .keys()
            .filter(|(_, k)| k.starts_with("rejects/.backfill/m0/"))
            .map(|(_, k)| k.clone())
            .collect();
        assert_eq!(claims.len(), 2, "{claims:?}");
    }

    #[tokio::test]
    async fn continuations_queued_before_the_removal_check_still_read() {
        let d = deps(&[("still.jsonl", &lines("s", 1))], false);
        let old = json!({"work": [{"kind": "delete", "source": {"bucket": "b", "key": "still.jsonl", "sequencer": "0000000000000000000000000000000A"}}]});
        let summary = handle_event(&d, old, later()).await.unwrap();
        assert_eq!((summary.reindexed, summary.deleted), (1, 0));
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

    #[test]
    fn the_intake_queue_is_optional() {
        let vars = |pairs: &[(&str, &str)]| {
            Env::from_map(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let cfg = IngestConfig::from_env(&mut vars(&[("CHUNK_QUEUE_URL", "q")])).unwrap();
        assert_eq!(cfg.intake_queue_url, None);
        let cfg = IngestConfig::from_env(&mut vars(&[
            ("CHUNK_QUEUE_URL", "q"),
            ("INGEST_QUEUE_URL", "https://sqs/intake"),
        ]))
        .unwrap();
        assert_eq!(cfg.intake_queue_url.as_deref(), Some("https://sqs/intake"));
    }
}
