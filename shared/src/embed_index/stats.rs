//! What one batch did: counts, failures by reason, and their EMF metrics.

use crate::embed::{EmbedStats, EmbeddingModel};
pub use crate::failure::FailureReason;
use crate::metrics::MetricSet;

/// Counts for one invocation, logged and emitted as metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    pub messages: u64,
    pub messages_failed: u64,
    pub chunks: u64,
    pub unchanged: u64,
    pub embedded: u64,
    pub indexed: u64,
    /// Chunks of an older version of their object than one already applied: dropped.
    pub superseded: u64,
    /// Chunks removed by deletions and sweeps.
    pub deleted: u64,
    /// Chunks whose message carried their vector: indexed without calling Bedrock.
    pub reused: u64,
    /// Chunks sent back to the queue with their vectors because Elasticsearch stayed unavailable.
    pub requeued: u64,
    /// Messages put back on the queue, delayed, because Elasticsearch was unavailable.
    pub messages_requeued: u64,
    /// Sweeps that came before their version's chunks were all indexed, and wait.
    pub sweeps_waiting: u64,
    /// Chunk writes that lost a compare-and-set race and were decided again.
    pub conflicts: u64,
    /// Chunks removed after the fact because a newer event for their object won the race.
    pub compensated: u64,
    pub failed_embedding: u64,
    pub failed_indexing: u64,
    /// The failed chunks (embedding and indexing) by reason.
    pub failures: Failures,
    pub bulk_requests: u64,
    /// Bulk items answered 429 or 5xx (or in a request that failed transiently) and resent.
    pub bulk_retries: u64,
    pub bulk_bytes: u64,
    pub embed: EmbedStats,
    /// Wall time spent embedding, and writing to Elasticsearch.
    pub embed_ms: u64,
    pub index_ms: u64,
}

/// Failed chunks counted by [`FailureReason`].
#[derive(Default, Clone, Copy, PartialEq, Eq)]
pub struct Failures([u64; FailureReason::ALL.len()]);

/// The reasons that occurred, by label (`{es_unavailable: 5}`), as the batch log shows them.
impl std::fmt::Debug for Failures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.nonzero().map(|(r, n)| (r.label(), n)))
            .finish()
    }
}

impl Failures {
    pub fn add(&mut self, reason: FailureReason) {
        self.0[reason as usize] += 1;
    }

    pub fn get(&self, reason: FailureReason) -> u64 {
        self.0[reason as usize]
    }

    /// The reasons with at least one failure, and their counts.
    pub fn nonzero(&self) -> impl Iterator<Item = (FailureReason, u64)> + '_ {
        FailureReason::ALL
            .into_iter()
            .map(|r| (r, self.get(r)))
            .filter(|(_, n)| *n > 0)
    }
}

pub(super) fn emit(stats: &BatchStats, model: &EmbeddingModel, pace: crate::embed::PaceReport) {
    let mut m = MetricSet::new("embed-index").dimension("Model", &model.id);
    m.count("Messages", stats.messages)
        .count("MessagesFailed", stats.messages_failed)
        .count("ChunksIn", stats.chunks)
        .count("ChunksUnchanged", stats.unchanged)
        .count("ChunksEmbedded", stats.embedded)
        .count("ChunksIndexed", stats.indexed)
        .count("ChunksSuperseded", stats.superseded)
        .count("ChunksDeleted", stats.deleted)
        .count("ChunksReused", stats.reused)
        .count("ChunksRequeued", stats.requeued)
        .count("MessagesRequeued", stats.messages_requeued)
        .count("WriteConflicts", stats.conflicts)
        .count("SweepsWaiting", stats.sweeps_waiting)
        .count("ChunksCompensated", stats.compensated)
        .count("ChunksFailedEmbedding", stats.failed_embedding)
        .count("ChunksFailedIndexing", stats.failed_indexing)
        .count("BedrockCalls", stats.embed.calls)
        .count("BedrockThrottles", stats.embed.throttles)
        .count("BedrockRetries", stats.embed.retries)
        .count("InputTokens", stats.embed.input_tokens)
        .count("BulkRequests", stats.bulk_requests)
        .count("BulkRetries", stats.bulk_retries)
        .value("EmbedMillis", stats.embed_ms as f64, "Milliseconds")
        .value("IndexMillis", stats.index_ms as f64, "Milliseconds")
        .value("BulkBytes", stats.bulk_bytes as f64, "Bytes")
        // Where this container's pacing stands after the batch (a gauge: graph its average).
        .value("EmbedConcurrency", pace.concurrency as f64, "Count");
    if let Some(rate) = pace.rate {
        m.value("EmbedCallsPerSecond", rate, "Count/Second");
    }
    if let Some(rate) = pace.token_rate {
        m.value("EmbedTokensPerSecond", rate, "Count/Second");
    }
    m.emit();
    // One line per reason that occurred: `ChunksFailed` by `Reason`, graphable side by side.
    for (reason, n) in stats.failures.nonzero() {
        let mut f = MetricSet::new("embed-index")
            .dimension("Model", &model.id)
            .dimension("Reason", reason.label());
        f.count("ChunksFailed", n);
        f.emit();
    }
}
