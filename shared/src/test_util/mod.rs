//! Fakes of the seams, written once for this crate's tests and, with the `test-util` feature,
//! for the other crates' tests. Faults come from wrappers, in the manner of mountpoint-s3's
//! `FailureClient`, instead of flags inside each fake: [`FailingQueue`] and
//! [`FailingEmbedder`] make any queue or embedder fail on a plan.

mod index;
mod store;

pub use index::{CHUNKS, Doc, Hook, MARKERS, MemoryIndex, merge};
pub use store::{MemoryStore, ObjectVersion, S3Event, VersionedStore};

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use crate::embed::{EmbedError, Embedder, EmbeddingModel, InputPurpose, ModelOutput};
use crate::queue::{ChunkQueue, EntryFailure, QueueEntry, QueueError};

/// A queue that keeps every entry it is sent, in order.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    sent: Mutex<Vec<QueueEntry>>,
}

impl MemoryQueue {
    /// The bodies sent so far.
    pub fn bodies(&self) -> Vec<String> {
        let sent = self.sent.lock().expect("not poisoned");
        sent.iter().map(|e| e.body.clone()).collect()
    }

    /// The entries sent since the last call, taken out.
    pub fn take(&self) -> Vec<QueueEntry> {
        std::mem::take(&mut *self.sent.lock().expect("not poisoned"))
    }
}

impl ChunkQueue for MemoryQueue {
    async fn send_batch(&self, entries: &[QueueEntry]) -> Result<Vec<EntryFailure>, QueueError> {
        let mut sent = self.sent.lock().expect("not poisoned");
        sent.extend_from_slice(entries);
        Ok(Vec::new())
    }
}

/// Wraps a queue and fails its requests as planned: all of them while down, or the next few.
#[derive(Debug, Default)]
pub struct FailingQueue<Q> {
    pub inner: Q,
    down: AtomicBool,
    fail_next: AtomicU32,
}

impl<Q> FailingQueue<Q> {
    pub fn new(inner: Q) -> Self {
        Self {
            inner,
            down: AtomicBool::new(false),
            fail_next: AtomicU32::new(0),
        }
    }

    /// Every request fails (a connection refused) until `set_down(false)`.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The next `n` requests fail.
    pub fn fail_next(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    fn should_fail(&self) -> bool {
        let planned = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        planned || self.down.load(Ordering::SeqCst)
    }
}

impl<Q: ChunkQueue> ChunkQueue for FailingQueue<Q> {
    async fn send_batch(&self, entries: &[QueueEntry]) -> Result<Vec<EntryFailure>, QueueError> {
        if self.should_fail() {
            return Err(QueueError::Request("connection refused (injected)".into()));
        }
        self.inner.send_batch(entries).await
    }
}

/// An embedder that answers every text with a vector of its model's size whose first
/// component is the text's length (so answers can be told apart and their order checked) and
/// the rest 0.5. It records each call, can take time (`with_latency`), and tracks how many calls
/// were in flight at most.
#[derive(Debug)]
pub struct MemoryEmbedder {
    model: EmbeddingModel,
    latency: Duration,
    calls: Mutex<Vec<(Vec<String>, InputPurpose)>>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

impl MemoryEmbedder {
    pub fn new(model: EmbeddingModel) -> Self {
        Self {
            model,
            latency: Duration::ZERO,
            calls: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Each call takes `latency` (on Tokio's clock).
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Each call's texts and purpose, in the order they came.
    pub fn calls(&self) -> Vec<(Vec<String>, InputPurpose)> {
        self.calls.lock().expect("not poisoned").clone()
    }

    /// How many texts all calls held.
    pub fn texts(&self) -> usize {
        let calls = self.calls.lock().expect("not poisoned");
        calls.iter().map(|(texts, _)| texts.len()).sum()
    }

    /// The most calls that were in flight at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

impl Embedder for MemoryEmbedder {
    fn model(&self) -> &EmbeddingModel {
        &self.model
    }

    async fn invoke(
        &self,
        texts: &[&str],
        purpose: InputPurpose,
    ) -> Result<ModelOutput, EmbedError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let owned = texts.iter().map(|t| t.to_string()).collect();
        self.calls
            .lock()
            .expect("not poisoned")
            .push((owned, purpose));
        let vector = |text: &str| {
            let mut v = vec![0.5; self.model.dimensions];
            v[0] = text.len() as f32;
            v
        };
        Ok(ModelOutput {
            vectors: texts.iter().map(|t| vector(t)).collect(),
            input_tokens: Some(texts.len() as u64),
        })
    }
}

/// Wraps an embedder and fails calls as planned: throttled while `set_throttled`, or every n-th
/// call; refused (`ValidationException`) when a call holds a given text. Counts every attempt.
#[derive(Debug)]
pub struct FailingEmbedder<E> {
    pub inner: E,
    attempts: AtomicUsize,
    throttled: AtomicBool,
    throttle_every: usize,
    reject: Option<String>,
}

impl<E> FailingEmbedder<E> {
    pub fn new(inner: E) -> Self {
        Self {
            inner,
            attempts: AtomicUsize::new(0),
            throttled: AtomicBool::new(false),
            throttle_every: 0,
            reject: None,
        }
    }

    /// Every `n`-th call is throttled.
    pub fn throttle_every(mut self, n: usize) -> Self {
        self.throttle_every = n;
        self
    }

    /// Calls that hold `text` are refused, as Bedrock refuses an input it cannot take.
    pub fn reject(mut self, text: &str) -> Self {
        self.reject = Some(text.to_owned());
        self
    }

    /// Every call is throttled until `set_throttled(false)`.
    pub fn set_throttled(&self, throttled: bool) {
        self.throttled.store(throttled, Ordering::SeqCst);
    }

    /// Calls made, failed ones included.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

impl<E: Embedder> Embedder for FailingEmbedder<E> {
    fn model(&self) -> &EmbeddingModel {
        self.inner.model()
    }

    async fn invoke(
        &self,
        texts: &[&str],
        purpose: InputPurpose,
    ) -> Result<ModelOutput, EmbedError> {
        let n = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        let every = self.throttle_every > 0 && n.is_multiple_of(self.throttle_every);
        if every || self.throttled.load(Ordering::SeqCst) {
            return Err(EmbedError::Throttled("Too many requests (injected)".into()));
        }
        if let Some(bad) = &self.reject
            && texts.contains(&bad.as_str())
        {
            return Err(EmbedError::Permanent {
                code: "ValidationException".into(),
                message: "the input is refused (injected)".into(),
            });
        }
        self.inner.invoke(texts, purpose).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> QueueEntry {
        QueueEntry {
            id: id.into(),
            body: format!("body {id}"),
            delay_seconds: 0,
        }
    }

    #[tokio::test]
    async fn the_wrapper_fails_as_planned_and_passes_the_rest_through() {
        let queue = FailingQueue::new(MemoryQueue::default());
        queue.fail_next(2);
        assert!(queue.send_batch(&[entry("a")]).await.is_err());
        assert!(queue.send_batch(&[entry("b")]).await.is_err());
        assert!(queue.send_batch(&[entry("c")]).await.unwrap().is_empty());
        queue.set_down(true);
        assert!(queue.send_batch(&[entry("d")]).await.is_err());
        queue.set_down(false);
        queue.send_batch(&[entry("e")]).await.unwrap();
        assert_eq!(queue.inner.bodies(), ["body c", "body e"]);
        assert_eq!(queue.inner.take().len(), 2);
        assert!(queue.inner.bodies().is_empty());
    }

    #[tokio::test]
    async fn the_embedder_wrapper_fails_as_planned_and_passes_the_rest_through() {
        let model = EmbeddingModel::resolve("amazon.titan-embed-text-v2:0", Some(256)).unwrap();
        let e = FailingEmbedder::new(MemoryEmbedder::new(model))
            .throttle_every(3)
            .reject("bad");
        let doc = InputPurpose::Document;
        let out = e.invoke(&["ab", "c"], doc).await.unwrap();
        assert_eq!(
            (out.vectors[0][0], out.vectors[1][0], out.vectors[1][1]),
            (2.0, 1.0, 0.5)
        );
        assert!(matches!(
            e.invoke(&["bad"], doc).await,
            Err(EmbedError::Permanent { .. })
        ));
        assert!(matches!(
            e.invoke(&["x"], doc).await,
            Err(EmbedError::Throttled(_))
        ));
        e.set_throttled(true);
        assert!(e.invoke(&["y"], doc).await.is_err());
        e.set_throttled(false);
        e.invoke(&["z"], InputPurpose::Query).await.unwrap();
        assert_eq!(e.attempts(), 5);
        assert_eq!(e.inner.texts(), 3);
        assert_eq!(
            e.inner.calls()[1],
            (vec!["z".to_owned()], InputPurpose::Query)
        );
    }
}
