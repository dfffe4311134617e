//! Embedding texts: the `Embedder` seam, concurrent batched calls with deadline-aware retries,
//! and the Bedrock adapter.

pub mod bedrock;
pub mod model;
pub mod pace;

use std::future::Future;
use std::time::Duration;

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

/// Embeds every text, in calls of the model's batch size (fewer once a tokens quota paces the
/// container: [`Pacer::texts_per_call`]), run as the `pacer` allows. Each call takes the next
/// texts at the size the pace asks for at that moment, so a throttle shrinks the calls after it.
/// Under adaptive pacing a throttled call's texts go back to the front of the work and are
/// tried again at the pace's turn, as many times as the deadline allows; transient faults are
/// retried with jittered backoff. Once the deadline passes no new call starts, and what is left
/// is reported `Throttled` (if it was) or `OutOfTime`. Results come back in the order of `texts`.
pub async fn embed_all<E: Embedder>(
    embedder: &E,
    texts: &[&str],
    purpose: InputPurpose,
    policy: EmbedPolicy,
    pacer: &Pacer,
    deadline: Deadline,
) -> (Vec<Result<Vec<f32>, EmbedError>>, EmbedStats) {
    embed_holding(embedder, texts, purpose, policy, pacer, deadline, None).await
}

/// [`embed_all`] for work that other containers could take: while the pace paces this
/// container (a quota has throttled it, or `BEDROCK_TPM`), no call starts later than `hold`
/// after the start. The texts not sent by then come back `OutOfTime` before the deadline (or
/// `Throttled`, if their last call was), for the caller to hand back.
pub async fn embed_holding<E: Embedder>(
    embedder: &E,
    texts: &[&str],
    purpose: InputPurpose,
    policy: EmbedPolicy,
    pacer: &Pacer,
    deadline: Deadline,
    hold: Option<Duration>,
) -> (Vec<Result<Vec<f32>, EmbedError>>, EmbedStats) {
    let work = Work::new(texts.len());
    let held_from = hold.map(|hold| tokio::time::Instant::now() + hold);
    let worker = || async {
        let mut stats = EmbedStats::default();
        loop {
            if held_from.is_some_and(|at| tokio::time::Instant::now() >= at) && pacer.paces() {
                work.stop();
                break;
            }
            let Some(range) = work.take(pacer, embedder.model().max_batch(), texts).await else {
                break;
            };
            let group = &texts[range.clone()];
            // A call still waiting for the pace when the hold comes is not made.
            let start_by = match held_from {
                Some(at) if pacer.paces() => deadline.or_sooner(at),
                _ => deadline,
            };
            let (result, call) =
                call_with_retries(embedder, group, purpose, policy, pacer, deadline, start_by)
                    .await;
            stats.add(call);
            match result {
                Ok(out) => work.done(range, out.vectors.into_iter().map(Ok)),
                // Tried again at the pace's turn, in calls of the size it asks for then.
                Err(EmbedError::Throttled(message)) if pacer.is_adaptive() => {
                    work.give_back(range, Some(message))
                }
                // The deadline came while waiting for the pace or Bedrock: the texts keep what
                // they last met (a throttle, or only the clock).
                Err(EmbedError::OutOfTime) => work.give_back(range, None),
                Err(e) => {
                    let n = range.len();
                    work.done(range, std::iter::repeat_n(Err(e), n));
                }
            }
        }
        stats
    };
    let workers = (0..pacer.ceiling().min(texts.len()).max(1)).map(|_| worker());
    let mut total = EmbedStats::default();
    for stats in futures::future::join_all(workers).await {
        total.add(stats);
    }
    (work.finish(), total)
}

/// The texts of one `embed_all`: which are still to be sent (from `next` on, and the ranges
/// given back, first), the results so far, and the calls in flight.
struct Work {
    state: std::sync::Mutex<WorkState>,
    changed: tokio::sync::Notify,
}

struct WorkState {
    next: usize,
    len: usize,
    given_back: std::collections::VecDeque<std::ops::Range<usize>>,
    in_flight: usize,
    /// When the deadline passed: no more calls.
    stopped: bool,
    results: Vec<Option<Result<Vec<f32>, EmbedError>>>,
    /// The last throttle of each text's call, while it has no result.
    throttled: Vec<Option<String>>,
}

impl Work {
    fn new(len: usize) -> Self {
        Self {
            state: std::sync::Mutex::new(WorkState {
                next: 0,
                len,
                given_back: Default::default(),
                in_flight: 0,
                stopped: false,
                results: vec![None; len],
                throttled: vec![None; len],
            }),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// The texts of the next call, sized by the pace now; waits while calls in flight may
    /// still give texts back; `None` when nothing is left.
    async fn take(
        &self,
        pacer: &Pacer,
        most: usize,
        texts: &[&str],
    ) -> Option<std::ops::Range<usize>> {
        loop {
            let changed = self.changed.notified();
            {
                let mut state = self.state.lock().unwrap();
                if state.stopped {
                    return None;
                }
                let from = match state.given_back.pop_front() {
                    Some(range) => Some(range),
                    None if state.next < state.len => {
                        let range = state.next..state.len;
                        Some(range)
                    }
                    None => None,
                };
                if let Some(range) = from {
                    // The size from the texts about to go (a model batch of them).
                    let ahead = &texts[range.start..range.end.min(range.start + most)];
                    let n = pacer.texts_per_call(most, ahead).min(range.len());
                    let taken = range.start..range.start + n;
                    if range.start == state.next {
                        state.next = taken.end;
                    } else if taken.end < range.end {
                        state.given_back.push_front(taken.end..range.end);
                    }
                    state.in_flight += 1;
                    return Some(taken);
                }
                if state.in_flight == 0 {
                    return None;
                }
            }
            changed.await;
        }
    }

    /// No call starts any more; the calls in flight finish.
    fn stop(&self) {
        self.state.lock().unwrap().stopped = true;
        self.changed.notify_waiters();
    }

    /// A call's texts go back to the front (`throttled` with Bedrock's message), or, with
    /// `None`, the deadline passed before the call was made: no call starts any more.
    fn give_back(&self, range: std::ops::Range<usize>, throttled: Option<String>) {
        {
            let mut state = self.state.lock().unwrap();
            state.in_flight -= 1;
            match throttled {
                Some(message) => {
                    for i in range.clone() {
                        state.throttled[i] = Some(message.clone());
                    }
                }
                None => state.stopped = true,
            }
            state.given_back.push_front(range);
        }
        self.changed.notify_waiters();
    }

    fn done(
        &self,
        range: std::ops::Range<usize>,
        results: impl Iterator<Item = Result<Vec<f32>, EmbedError>>,
    ) {
        {
            let mut state = self.state.lock().unwrap();
            state.in_flight -= 1;
            for (i, result) in range.zip(results) {
                state.results[i] = Some(result);
            }
        }
        self.changed.notify_waiters();
    }

    /// Every text's result; one never sent in time is `Throttled` if its last call was, and
    /// `OutOfTime` otherwise.
    fn finish(self) -> Vec<Result<Vec<f32>, EmbedError>> {
        let state = self.state.into_inner().unwrap();
        state
            .results
            .into_iter()
            .zip(state.throttled)
            .map(|(result, throttled)| {
                result.unwrap_or(Err(match throttled {
                    Some(message) => EmbedError::Throttled(message),
                    None => EmbedError::OutOfTime,
                }))
            })
            .collect()
    }
}

/// One call, retried on transient faults with backoff while the deadline allows; no attempt
/// starts (nor waits for the pace) past `start_by`, the deadline or the hold. A throttle
/// under adaptive pacing is not retried here: the call's texts go back to [`embed_all`]'s work,
/// to be sent again at the pace's turn in calls of the size it asks for then. Without
/// adaptation a throttle is retried with backoff like a fault.
async fn call_with_retries<E: Embedder>(
    embedder: &E,
    texts: &[&str],
    purpose: InputPurpose,
    policy: EmbedPolicy,
    pacer: &Pacer,
    deadline: Deadline,
    start_by: Deadline,
) -> (Result<ModelOutput, EmbedError>, EmbedStats) {
    let mut stats = EmbedStats::default();
    let mut attempts = Attempts::new(policy, Some(deadline));
    loop {
        if !start_by.allows(Duration::ZERO) {
            return (Err(EmbedError::OutOfTime), stats);
        }
        let chars = texts.iter().map(|t| t.len()).sum();
        let Ok(permit) = tokio::time::timeout(start_by.remaining(), pacer.acquire(chars)).await
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
                if let EmbedError::Throttled(message) = &e {
                    stats.throttles += 1;
                    permit.throttled(Quota::of_message(message));
                    if pacer.is_adaptive() {
                        stats.retries += 1;
                        return (Err(e), stats);
                    }
                } else {
                    permit.failed();
                }
                let attempt = attempts.number();
                let Some(delay) = attempts.next_wait(None).filter(|_| e.is_retryable()) else {
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

    /// Throttles its first call as a tokens quota does, then answers, counting a token for
    /// every four characters; records each call's size.
    struct TokensQuota {
        model: EmbeddingModel,
        sizes: std::sync::Mutex<Vec<usize>>,
    }

    impl Embedder for TokensQuota {
        fn model(&self) -> &EmbeddingModel {
            &self.model
        }

        async fn invoke(&self, texts: &[&str], _: InputPurpose) -> Result<ModelOutput, EmbedError> {
            let first = {
                let mut sizes = self.sizes.lock().unwrap();
                sizes.push(texts.len());
                sizes.len() == 1
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
            if first {
                return Err(EmbedError::Throttled(
                    "Too many tokens, please wait before trying again.".into(),
                ));
            }
            let chars: usize = texts.iter().map(|t| t.len()).sum();
            Ok(ModelOutput {
                vectors: texts.iter().map(|t| vec![t.len() as f32]).collect(),
                input_tokens: Some((chars / 4) as u64),
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_tokens_throttle_shrinks_the_calls_after_it_and_its_own_retry() {
        let e = TokensQuota {
            model: EmbeddingModel::resolve("cohere.embed-multilingual-v3", None).unwrap(),
            sizes: Default::default(),
        };
        // 300 texts of 400 characters: about 100 tokens each, 9,600 in a call of 96.
        let owned: Vec<String> = (0..300).map(|i| format!("{i:0>400}")).collect();
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        let pacer = Pacer::adaptive(1);
        let (out, stats) = embed_all(
            &e,
            &refs,
            InputPurpose::Document,
            EMBED_RETRIES,
            &pacer,
            Deadline::after(Duration::from_secs(3600)),
        )
        .await;
        assert!(
            out.iter().all(Result::is_ok),
            "every text embedded in the end"
        );
        assert_eq!(stats.throttles, 1);
        let sizes = e.sizes.lock().unwrap().clone();
        assert_eq!(sizes[0], 96, "unpaced, the first call is a whole batch");
        assert!(
            sizes[1..].iter().all(|&n| n < 96),
            "after the throttle every call is sized to the pace, its retry too: {sizes:?}"
        );
        assert_eq!(sizes[1..].iter().sum::<usize>(), 300);
        for (i, v) in out.iter().enumerate() {
            assert_eq!(v.as_ref().unwrap()[0], owned[i].len() as f32, "in order");
        }
    }
}
