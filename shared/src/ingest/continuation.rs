//! Step 5, continue: work this invocation cannot finish goes on in another — on the intake queue
//! (through the event source mapping) or by invoking the function again — with the exact place
//! it stopped.

use std::future::Future;

use serde_json::Value;
use tracing::info;

use crate::queue::{BatchLimits, ChunkQueue, QueueError, SqsQueue, send_all};
use crate::store::ObjectStore;

use super::event::Work;
use super::{IngestDeps, IngestSummary};

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
    pub(super) client: aws_sdk_lambda::Client,
    pub(super) function_name: String,
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
    pub(super) queue: Q,
    pub(super) limits: BatchLimits,
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

/// Hands work to a fresh invocation as `{"work": [...], "hops": N}`, in as many events as keep
/// each under the message budget.
pub(super) async fn hand_over<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
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
