//! Fakes of the seams, written once for this crate's tests and, with the `test-util` feature,
//! for the other crates' tests. Faults come from a wrapper, in the manner of mountpoint-s3's
//! `FailureClient`, instead of flags inside each fake: [`FailingQueue`] makes any queue fail on
//! a plan.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

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
}
