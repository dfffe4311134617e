//! Work that waits goes back on the queue as new, delayed messages (carrying the vectors already
//! paid for), never toward the dead-letter queue. How long it waits depends on what it waits for
//! ([`Return`]): an Elasticsearch outage (or a sweep waiting for its chunks) on a schedule that
//! doubles up to SQS's 15 minutes; Bedrock's quota only as long as the pace says capacity needs
//! to return; a fresh invocation not at all. A hop count bounds the loop.
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

/// How long a message handed back waits, and whether the hand-over counts toward
/// `MAX_REQUEUES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Return {
    pub delay_secs: i32,
    pub hop: bool,
}

impl Return {
    /// The outage's schedule: [`delay_secs`] for the next return, each return counted.
    pub fn scheduled(cfg: &EmbedIndexConfig, message: &ChunkMessage) -> Self {
        Self {
            delay_secs: delay_secs(cfg, message.requeues + 1),
            hop: true,
        }
    }

    /// Work that waits only for capacity (the pace's `wait`, rounded up; zero for a fresh
    /// invocation): counted only when the message `progressed` nothing in this invocation (no
    /// chunk landed, no vector was paid for), so a throttled backlog moving forward never
    /// nears the hop limit, while one that never moves still ends in the dead-letter queue.
    pub fn after(wait: std::time::Duration, progressed: bool) -> Self {
        Self {
            delay_secs: wait.as_secs_f64().ceil().min(900.0) as i32,
            hop: !progressed,
        }
    }
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
/// one hop further if `ret` counts one, after `ret`'s delay. Packs up to SQS's message size rather than the ingest budget, so a large
/// chunk with its vector always fits and is never embedded again.
pub async fn requeue<Q: ChunkQueue>(
    queue: &Q,
    message: &ChunkMessage,
    chunks: Vec<ChunkPayload>,
    cfg: &EmbedIndexConfig,
    ret: Return,
) -> Result<u64, RequeueError> {
    let requeues = message.requeues + u32::from(ret.hop);
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
        delay_seconds: ret.delay_secs,
    };
    send_all(queue, bodies, limits).await?;
    Ok(chunks.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_pace_wait_is_rounded_up_and_counts_a_hop_only_without_progress() {
        let moving = Return::after(Duration::from_millis(2_300), true);
        assert_eq!((moving.delay_secs, moving.hop), (3, false));
        let stuck = Return::after(Duration::ZERO, false);
        assert_eq!((stuck.delay_secs, stuck.hop), (0, true));
        let long = Return::after(Duration::from_secs(5_000), true);
        assert_eq!(long.delay_secs, 900, "SQS's longest delay");
    }
}
