//! Embedding texts: the `Embedder` seam, concurrent batched calls with deadline-aware retries,
//! and the Bedrock adapter.

pub mod bedrock;
pub mod model;
pub mod pace;

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use tracing::warn;

pub use model::{EmbeddingModel, InputPurpose, ModelError, ModelFamily, ModelOutput};
pub use pace::{PaceReport, Pacer, Quota};

use crate::retry::{Attempts, Deadline, RetryPolicy};

/// Why a call to the embedding model did not give vectors.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EmbedError {
    #[error("Bedrock throttled the call: {0}")]
    Throttled(String),
    #[error("Bedrock failed transiently: {0}")]
    Transient(String),
    #[error("Bedrock refused the call ({code}): {message}")]
    Permanent { code: String, message: String },
    #[error("out of time before Bedrock answered")]
    OutOfTime,
}

impl EmbedError {
    /// Whether the same call may succeed later (in this invocation or a retried one).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, EmbedError::Permanent { .. })
    }

    /// The error with what to do about it, where Bedrock's own message does not say: a model id
    /// this Region serves only through an inference profile names the profile ids to use.
    pub fn explained(self, model_id: &str) -> Self {
        match self {
            EmbedError::Permanent { code, message }
                if code == "ValidationException" && message.contains("on-demand throughput") =>
            {
                let base = model::profile_base(model_id).unwrap_or(model_id);
                let message = format!(
                    "{message} This Region serves {base} only through a cross-Region inference \
                     profile: set EMBEDDING_MODEL_ID to one of {} (the template's IAM policy \
                     follows the id).",
                    model::profile_ids(base).join(", ")
                );
                EmbedError::Permanent { code, message }
            }
            other => other,
        }
    }

    /// Whether the refusal is about permissions (the role, or model access) rather than input.
    pub fn is_access_denied(&self) -> bool {
        matches!(self, EmbedError::Permanent { code, .. } if code == "AccessDeniedException")
    }
}

/// Calls one embedding model.
pub trait Embedder: Send + Sync {
    fn model(&self) -> &EmbeddingModel;

    /// One InvokeModel call for at most `model().max_batch()` texts.
    fn invoke(
        &self,
        texts: &[&str],
        purpose: InputPurpose,
    ) -> impl Future<Output = Result<ModelOutput, EmbedError>> + Send;
}

/// How long to keep trying a Bedrock call (how hard to push is the [`Pacer`]'s).
pub type EmbedPolicy = RetryPolicy;

/// The Bedrock calls' policy: six attempts, 0.2 s doubling to 10 s.
pub const EMBED_RETRIES: EmbedPolicy = RetryPolicy {
    max_attempts: 6,
    base_delay: Duration::from_millis(200),
    max_delay: Duration::from_secs(10),
};

/// What one `embed_all` cost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EmbedStats {
    pub calls: u64,
    pub throttles: u64,
    pub retries: u64,
    pub input_tokens: u64,
}

impl EmbedStats {
    pub fn add(&mut self, other: EmbedStats) {
        self.calls += other.calls;
        self.throttles += other.throttles;
        self.retries += other.retries;
        self.input_tokens += other.input_tokens;
    }
}

/// Embeds every text, grouped into calls of the model's batch size and run as the `pacer`
/// allows. Throttling and transient faults are retried with jittered backoff while the
/// deadline allows; once it does not, no new call starts and the rest is reported `OutOfTime`.
/// Results come back in the order of `texts`.
pub async fn embed_all<E: Embedder>(
    embedder: &E,
    texts: &[&str],
    purpose: InputPurpose,
    policy: EmbedPolicy,
    pacer: &Pacer,
    deadline: Deadline,
) -> (Vec<Result<Vec<f32>, EmbedError>>, EmbedStats) {
    let batch = pacer.texts_per_call(embedder.model().max_batch(), texts);
    let calls = texts
        .chunks(batch)
        .enumerate()
        .map(|(i, group)| async move {
            let (result, stats) =
                call_with_retries(embedder, group, purpose, policy, pacer, deadline).await;
            (i, group.len(), result, stats)
        });
    let mut done: Vec<_> = futures::stream::iter(calls)
        .buffer_unordered(pacer.ceiling())
        .collect()
        .await;
    done.sort_by_key(|(i, ..)| *i);

    let mut results = Vec::with_capacity(texts.len());
    let mut total = EmbedStats::default();
    for (_, n, result, stats) in done {
        total.add(stats);
        match result {
            Ok(out) => results.extend(out.vectors.into_iter().map(Ok)),
            Err(e) => results.extend(std::iter::repeat_n(Err(e), n)),
        }
    }
    (results, total)
}

async fn call_with_retries<E: Embedder>(
    embedder: &E,
    texts: &[&str],
    purpose: InputPurpose,
    policy: EmbedPolicy,
    pacer: &Pacer,
    deadline: Deadline,
) -> (Result<ModelOutput, EmbedError>, EmbedStats) {
    let mut stats = EmbedStats::default();
    let mut attempts = Attempts::new(policy, Some(deadline));
    loop {
        if !deadline.allows(Duration::ZERO) {
            return (Err(EmbedError::OutOfTime), stats);
        }
        let chars = texts.iter().map(|t| t.len()).sum();
        let Ok(permit) = tokio::time::timeout(deadline.remaining(), pacer.acquire(chars)).await
        else {
            return (Err(EmbedError::OutOfTime), stats);
        };
        stats.calls += 1;
        let result =
            match tokio::time::timeout(deadline.remaining(), embedder.invoke(texts, purpose)).await
            {
                Ok(r) => r,
                Err(_) => Err(EmbedError::OutOfTime),
            };
        match result {
            Ok(out) => {
                permit.succeeded(out.input_tokens);
                stats.input_tokens += out.input_tokens.unwrap_or(0);
                return (Ok(out), stats);
            }
            Err(e) => {
                let throttled = if let EmbedError::Throttled(message) = &e {
                    stats.throttles += 1;
                    permit.throttled(Quota::of_message(message));
                    true
                } else {
                    permit.failed();
                    false
                };
                // A throttled call waits for the pacer's turn, which is its backoff; without
                // adaptation (and for faults) the backoff is the caller's.
                let pacer_wait = (throttled && pacer.is_adaptive()).then_some(Duration::ZERO);
                let attempt = attempts.number();
                let Some(delay) = attempts.next_wait(pacer_wait).filter(|_| e.is_retryable())
                else {
                    return (Err(e), stats);
                };
                warn!(model = %embedder.model().id, attempt, error = %e, delay_ms = delay.as_millis() as u64, "embedding call failed; retrying");
                stats.retries += 1;
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{FailingEmbedder, MemoryEmbedder};

    /// The shared fake, answering after 10 ms so that concurrency shows.
    fn fake(model_id: &str) -> MemoryEmbedder {
        let model = EmbeddingModel::resolve(model_id, None).unwrap();
        MemoryEmbedder::new(model).with_latency(Duration::from_millis(10))
    }

    fn texts(n: usize) -> Vec<String> {
        (0..n).map(|i| "x".repeat(i + 1)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn cohere_batches_of_96_in_order() {
        let e = fake("cohere.embed-english-v3");
        let owned = texts(97);
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        let (out, stats) = embed_all(
            &e,
            &refs,
            InputPurpose::Document,
            EMBED_RETRIES,
            &Pacer::fixed(8),
            Deadline::after(Duration::from_secs(60)),
        )
        .await;
        assert_eq!(stats.calls, 2);
        let mut seen: Vec<usize> = e.calls().iter().map(|(texts, _)| texts.len()).collect();
        seen.sort();
        assert_eq!(seen, vec![1, 96]);
        for (i, v) in out.iter().enumerate() {
            assert_eq!(v.as_ref().unwrap()[0], (i + 1) as f32);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn titan_runs_up_to_the_concurrency_limit() {
        let e = fake("amazon.titan-embed-text-v2:0");
        let owned = texts(40);
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        let (out, stats) = embed_all(
            &e,
            &refs,
            InputPurpose::Document,
            EMBED_RETRIES,
            &Pacer::fixed(5),
            Deadline::after(Duration::from_secs(60)),
        )
        .await;
        assert!(out.iter().all(Result::is_ok));
        assert_eq!(stats.calls, 40);
        assert_eq!(e.peak(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn throttles_are_retried_and_counted() {
        let e = FailingEmbedder::new(fake("amazon.titan-embed-text-v2:0")).throttle_every(3);
        let owned = texts(30);
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        let (out, stats) = embed_all(
            &e,
            &refs,
            InputPurpose::Document,
            EMBED_RETRIES,
            &Pacer::fixed(8),
            Deadline::after(Duration::from_secs(600)),
        )
        .await;
        assert!(out.iter().all(Result::is_ok));
        assert!(
            stats.throttles >= 10 && stats.retries == stats.throttles,
            "{stats:?}"
        );
        assert_eq!(stats.calls, 30 + stats.retries);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_fail_only_their_batch() {
        let e = FailingEmbedder::new(fake("amazon.titan-embed-text-v2:0")).reject("xxx");
        let owned = texts(5);
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        let (out, stats) = embed_all(
            &e,
            &refs,
            InputPurpose::Document,
            EMBED_RETRIES,
            &Pacer::fixed(8),
            Deadline::after(Duration::from_secs(60)),
        )
        .await;
        assert_eq!(stats.retries, 0);
        assert!(matches!(out[2], Err(EmbedError::Permanent { .. })));
        assert_eq!(out.iter().filter(|r| r.is_ok()).count(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn no_new_calls_once_time_is_up() {
        let model = EmbeddingModel::resolve("amazon.titan-embed-text-v2:0", None).unwrap();
        let slow = MemoryEmbedder::new(model).with_latency(Duration::from_millis(100));
        let e = FailingEmbedder::new(slow);
        let owned = texts(50);
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        let (out, _) = embed_all(
            &e,
            &refs,
            InputPurpose::Document,
            EMBED_RETRIES,
            &Pacer::fixed(2),
            Deadline::after(Duration::from_millis(1050)),
        )
        .await;
        let ok = out.iter().filter(|r| r.is_ok()).count();
        assert!((18..=22).contains(&ok), "{ok} finished");
        assert!(
            out.iter()
                .filter(|r| r.is_err())
                .all(|r| matches!(r, Err(EmbedError::OutOfTime)))
        );
        assert!(e.attempts() <= 22);
    }
}
