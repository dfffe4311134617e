//! Waiting out an Elasticsearch outage on the queue: work goes back as new, delayed messages
//! (carrying the vectors already paid for), never toward the dead-letter queue, with a delay that
//! doubles up to SQS's 15 minutes and a hop count that bounds the loop.
//!
//! Why new messages and not a failure with a longer visibility timeout: every failed receive
//! counts toward the queue's `maxReceiveCount`, so an outage longer than receives × visibility
//! would dead-letter the backlog. A message sent anew starts with no receives.
//! <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-dead-letter-queues.html>

use crate::config::EmbedIndexConfig;
use crate::message::{ChunkMessage, ChunkPayload, MessagePacker};
use crate::queue::{BatchLimits, ChunkQueue, QueueError, send_all};

/// The delay before the `requeues`-th return: `REQUEUE_DELAY_SECS` doubled each time, up to
/// `REQUEUE_MAX_DELAY_SECS` (at most SQS's 900 s).
pub fn delay_secs(cfg: &EmbedIndexConfig, requeues: u32) -> i32 {
    let doubled = i64::from(cfg.requeue_delay_secs.max(1)) << requeues.saturating_sub(1).min(20);
    doubled.min(i64::from(cfg.requeue_max_delay_secs)).min(900) as i32
}

/// Why a message could not go back on the queue.
#[derive(Debug, thiserror::Error)]
pub enum RequeueError {
    #[error("requeued {0} times without landing (MAX_REQUEUES); it goes to the dead-letter queue")]
    HopLimit(u32),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Puts `message` back with `chunks` (its unfinished chunks, with their vectors where known),
/// one hop further. Packs up to SQS's message size rather than the ingest budget, so a large
/// chunk with its vector always fits and is never embedded again.
pub async fn requeue<Q: ChunkQueue>(
    queue: &Q,
    message: &ChunkMessage,
    chunks: Vec<ChunkPayload>,
    cfg: &EmbedIndexConfig,
) -> Result<u64, RequeueError> {
    let requeues = message.requeues + 1;
    if requeues > cfg.max_requeues {
        return Err(RequeueError::HopLimit(message.requeues));
    }
    let budget = cfg.sqs_max_payload_bytes;
    let bodies = if message.chunks.is_empty() {
        let again = ChunkMessage {
            requeues,
            chunks: Vec::new(),
            ..message.clone()
        };
        vec![serde_json::to_string(&again).expect("a control message always serialises")]
    } else {
        let mut packer = MessagePacker::requeued(&message.source, message.scope, requeues, budget);
        let mut bodies = Vec::new();
        for chunk in &chunks {
            let encoded = MessagePacker::encode(chunk);
            match packer.push(&encoded) {
                Ok(closed) => bodies.extend(closed),
                Err(e) => {
                    return Err(QueueError::Refused {
                        code: "ChunkTooLarge".into(),
                        message: e.to_string(),
                    }
                    .into());
                }
            }
        }
        bodies.extend(packer.finish());
        bodies
    };
    let limits = BatchLimits {
        max_payload_bytes: budget,
        max_attempts: 3,
        delay_seconds: delay_secs(cfg, requeues),
    };
    send_all(queue, bodies, limits).await?;
    Ok(chunks.len() as u64)
}
