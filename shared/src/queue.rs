//! Sending chunk messages: the `ChunkQueue` seam, its SQS adapter, and batching with per-entry
//! retries (a 200 from SendMessageBatch can still hold failed entries).

use std::future::Future;
use std::time::Duration;

use tracing::warn;

use crate::retry::{Attempts, RetryPolicy};

/// SendMessageBatch takes at most this many entries.
pub const MAX_BATCH_ENTRIES: usize = 10;

/// One message of a batch; `id` is unique within the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub id: String,
    pub body: String,
    /// Seconds before the message becomes visible (0 to 900).
    pub delay_seconds: i32,
}

/// An entry the queue did not accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFailure {
    pub id: String,
    pub code: String,
    pub message: String,
    /// The sender's fault (a bad message): retrying the same body cannot help.
    pub sender_fault: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("sending to the chunk queue failed: {0}")]
    Request(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the chunk queue refused a message ({code}): {message}")]
    Refused { code: String, message: String },
    #[error(
        "the chunk queue still refused {remaining} message(s) after {attempts} attempts; last: {code}: {message}"
    )]
    GaveUp {
        remaining: usize,
        attempts: u32,
        code: String,
        message: String,
    },
}

/// Where chunk messages go.
pub trait ChunkQueue: Send + Sync {
    /// Sends up to ten entries; returns the entries that failed.
    fn send_batch(
        &self,
        entries: &[QueueEntry],
    ) -> impl Future<Output = Result<Vec<EntryFailure>, QueueError>> + Send;
}

/// Counts for one `send_all`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendStats {
    pub messages: u64,
    pub batches: u64,
    pub retried_entries: u64,
}

/// Limits a batch by entry count and total payload bytes.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_payload_bytes: usize,
    pub max_attempts: u32,
    /// Delivery delay of the messages sent.
    pub delay_seconds: i32,
}

/// Sends every body, ten (or fewer, to stay under the payload limit) per request, retrying the
/// entries the queue failed until they land or the attempts run out.
pub async fn send_all<Q: ChunkQueue>(
    queue: &Q,
    bodies: Vec<String>,
    limits: BatchLimits,
) -> Result<SendStats, QueueError> {
    let mut stats = SendStats::default();
    let mut batch: Vec<QueueEntry> = Vec::with_capacity(MAX_BATCH_ENTRIES);
    let mut batch_bytes = 0;
    for body in bodies {
        if !batch.is_empty()
            && (batch.len() == MAX_BATCH_ENTRIES
                || batch_bytes + body.len() > limits.max_payload_bytes)
        {
            send_batch_with_retries(queue, std::mem::take(&mut batch), limits, &mut stats).await?;
            batch_bytes = 0;
        }
        batch_bytes += body.len();
        batch.push(QueueEntry {
            id: batch.len().to_string(),
            body,
            delay_seconds: limits.delay_seconds,
        });
    }
    if !batch.is_empty() {
        send_batch_with_retries(queue, batch, limits, &mut stats).await?;
    }
    Ok(stats)
}

async fn send_batch_with_retries<Q: ChunkQueue>(
    queue: &Q,
    mut pending: Vec<QueueEntry>,
    limits: BatchLimits,
    stats: &mut SendStats,
) -> Result<(), QueueError> {
    let policy = RetryPolicy {
        max_attempts: limits.max_attempts,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_secs(2),
    };
    let mut attempts = Attempts::new(policy, None);
    let total = pending.len() as u64;
    loop {
        let attempt = attempts.number();
        stats.batches += 1;
        let failures = queue.send_batch(&pending).await?;
        if failures.is_empty() {
            stats.messages += total;
            return Ok(());
        }
        if let Some(f) = failures.iter().find(|f| f.sender_fault) {
            return Err(QueueError::Refused {
                code: f.code.clone(),
                message: f.message.clone(),
            });
        }
        let last = failures.last().cloned().expect("failures is not empty");
        warn!(failed = failures.len(), attempt, code = %last.code, "chunk queue failed some entries; retrying them");
        pending.retain(|e| failures.iter().any(|f| f.id == e.id));
        stats.retried_entries += pending.len() as u64;
        if !attempts.wait().await {
            return Err(QueueError::GaveUp {
                remaining: pending.len(),
                attempts: attempt,
                code: last.code,
                message: last.message,
            });
        }
    }
}

/// Amazon SQS through the AWS SDK.
#[derive(Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }
}

impl ChunkQueue for SqsQueue {
    async fn send_batch(&self, entries: &[QueueEntry]) -> Result<Vec<EntryFailure>, QueueError> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

        let mut request = self.client.send_message_batch().queue_url(&self.url);
        for e in entries {
            let entry = SendMessageBatchRequestEntry::builder()
                .id(&e.id)
                .message_body(&e.body)
                .set_delay_seconds((e.delay_seconds > 0).then_some(e.delay_seconds))
                .build()
                .map_err(|err| QueueError::Request(Box::new(err)))?;
            request = request.entries(entry);
        }
        let out = request
            .send()
            .await
            .map_err(|err| QueueError::Request(Box::new(err.into_service_error())))?;
        Ok(out
            .failed
            .into_iter()
            .map(|f| EntryFailure {
                id: f.id,
                code: f.code,
                message: f.message.unwrap_or_default(),
                sender_fault: f.sender_fault,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Fails the first `flaky` entries it sees once each, and records every batch.
    #[derive(Default)]
    struct FlakyQueue {
        flaky: Mutex<usize>,
        sender_fault: bool,
        batches: Mutex<Vec<Vec<String>>>,
        delivered: Mutex<Vec<String>>,
    }

    impl ChunkQueue for FlakyQueue {
        async fn send_batch(
            &self,
            entries: &[QueueEntry],
        ) -> Result<Vec<EntryFailure>, QueueError> {
            assert!(entries.len() <= MAX_BATCH_ENTRIES);
            self.batches
                .lock()
                .unwrap()
                .push(entries.iter().map(|e| e.body.clone()).collect());
            let mut failures = Vec::new();
            for e in entries {
                let mut flaky = self.flaky.lock().unwrap();
                if *flaky > 0 {
                    *flaky -= 1;
                    failures.push(EntryFailure {
                        id: e.id.clone(),
                        code: "InternalError".into(),
                        message: "try again".into(),
                        sender_fault: self.sender_fault,
                    });
                } else {
                    self.delivered.lock().unwrap().push(e.body.clone());
                }
            }
            Ok(failures)
        }
    }

    const LIMITS: BatchLimits = BatchLimits {
        max_payload_bytes: 1 << 20,
        max_attempts: 4,
        delay_seconds: 0,
    };

    fn bodies(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("m{i}")).collect()
    }

    #[tokio::test]
    async fn ten_per_batch() {
        let q = FlakyQueue::default();
        let stats = send_all(&q, bodies(25), LIMITS).await.unwrap();
        assert_eq!(stats.messages, 25);
        let sizes: Vec<_> = q.batches.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![10, 10, 5]);
    }

    #[tokio::test]
    async fn payload_limit_splits_batches() {
        let q = FlakyQueue::default();
        let big: Vec<String> = (0..5).map(|i| format!("{i}{}", "x".repeat(99))).collect();
        send_all(
            &q,
            big,
            BatchLimits {
                max_payload_bytes: 250,
                max_attempts: 1,
                delay_seconds: 0,
            },
        )
        .await
        .unwrap();
        let sizes: Vec<_> = q.batches.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_entries_are_retried_alone_and_nothing_is_lost_or_doubled() {
        let q = FlakyQueue {
            flaky: Mutex::new(3),
            ..Default::default()
        };
        let stats = send_all(&q, bodies(12), LIMITS).await.unwrap();
        assert_eq!(stats.retried_entries, 3);
        let mut delivered = q.delivered.lock().unwrap().clone();
        delivered.sort();
        let mut expected = bodies(12);
        expected.sort();
        assert_eq!(delivered, expected);
        assert_eq!(q.batches.lock().unwrap()[1].len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_attempts_with_the_reason() {
        let q = FlakyQueue {
            flaky: Mutex::new(100),
            ..Default::default()
        };
        let err = send_all(&q, bodies(2), LIMITS).await.unwrap_err();
        assert!(
            err.to_string().contains("after 4 attempts")
                && err.to_string().contains("InternalError"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn sender_faults_are_not_retried() {
        let q = FlakyQueue {
            flaky: Mutex::new(1),
            sender_fault: true,
            ..Default::default()
        };
        let err = send_all(&q, bodies(2), LIMITS).await.unwrap_err();
        assert!(matches!(err, QueueError::Refused { .. }));
        assert_eq!(q.batches.lock().unwrap().len(), 1);
    }
}
