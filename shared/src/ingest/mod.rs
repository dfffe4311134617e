//! The `ingest` handler: S3 notifications (directly or through the intake queue) in, chunk
//! messages out. Each object is streamed record by record; a bad record is counted and logged,
//! never the end of its object.
//!
//! An event becomes a [`Job`] of units of [`Work`] ([`event`]), run in order until the deadline:
//!
//! 1. [`read`] — an object streamed from where the last part stopped (a ranged GET), record by
//!    record, checking the deadline after each;
//! 2. [`split`] — each record's text into chunks, packed into chunk messages;
//! 3. [`send`] — the messages out ten to a `SendMessageBatch`, rejected records into the rejects;
//! 4. [`remove`] — a removed object (or a version ingest will not read) as a delete of its chunks;
//! 5. [`continuation`] — what is left handed over with the exact place it stopped.
//!
//! A backfill ([`backfill`]) lists a prefix a page at a time and queues each page's objects.

use std::collections::VecDeque;
use std::time::Duration;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsMessage};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{error, info, warn};

use crate::config::IngestConfig;
use crate::metrics::MetricSet;
use crate::queue::ChunkQueue;
use crate::retry::Deadline;
use crate::store::ObjectStore;

use backfill::{Page, run_backfill_page};
use continuation::hand_over;
use event::{Job, describe_units, plan, sqs_messages, truncate};
use read::{ObjectAt, read_object};
use remove::run_removed;

mod backfill;
mod continuation;
mod document;
mod event;
mod read;
mod remove;
mod send;
mod split;

#[cfg(test)]
mod document_tests;
#[cfg(test)]
mod tests;

pub use continuation::{Continuation, IntakeContinuation, LambdaContinuation, QueueContinuation};
pub use document::{SKIPPED_DIR, skipped_key};
pub use event::{S3Bucket, S3Entity, S3Notification, S3Object, S3Record, Work, is_data_key};

/// Hand-overs in a row that moved nothing forward after which a chain of continuations is taken
/// for a runaway loop and stopped. Lambda's own recursive loop detection is off for ingest
/// (`RecursiveLoop: Allow`), so this is the bound. A hop that finished a unit or read further
/// into an object starts the count again: an object is finite, so a chain that always moves
/// forward ends by itself, however large the object (a gzip object, decompressed from its
/// start by every part, needs many parts).
pub const MAX_HOPS: u32 = 1000;

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
    /// Documents no extractor could read (unsupported, encrypted, image-only, damaged): each
    /// logged once with its reason and listed by `sakuin status`.
    #[serde(default)]
    pub documents_skipped: u64,
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
    /// Adds the counts of another run of ingest (the staging of a batch backfill runs several).
    pub fn add(&mut self, other: &IngestSummary) {
        self.objects += other.objects;
        self.records += other.records;
        self.chunks += other.chunks;
        self.messages += other.messages;
        self.sqs_requests += other.sqs_requests;
        self.rejected += other.rejected;
        self.skipped += other.skipped;
        self.deleted += other.deleted;
        self.reindexed += other.reindexed;
        self.documents_skipped += other.documents_skipped;
        self.ignored += other.ignored;
        self.listed += other.listed;
        self.failed += other.failed;
    }

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

/// Clients and settings, built once per container.
pub struct IngestDeps<S, Q, C> {
    pub store: S,
    pub queue: Q,
    pub continuation: C,
    pub config: IngestConfig,
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
        .count("DocumentsSkipped", summary.documents_skipped)
        .count("IntakeMessagesFailed", failed_messages as u64)
        .count("Continuations", u64::from(summary.continued.is_some()));
    metrics.emit();
    info!(?summary, ok = result.is_ok(), "ingest finished");
    result.map(|()| summary)
}

/// Each message of a batch read into its job; the ids of those that cannot be read (or whose
/// chain of hand-overs ran away) fail, toward the intake dead-letter queue.
fn plan_messages<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    messages: Vec<SqsMessage>,
    summary: &mut IngestSummary,
) -> (Vec<(String, Job)>, Vec<String>) {
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
    (jobs, failures)
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
    let (jobs, mut failures) = plan_messages(deps, messages, summary);
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
