//! What one batch did: counts, failures by reason, and their EMF metrics.

use crate::embed::{EmbedStats, EmbeddingModel};
pub use crate::failure::FailureReason;
use crate::metrics::MetricSet;

/// Counts for one invocation, logged and emitted as metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    pub messages: u64,
    /// Elasticsearch requests sent again on a fresh connection: the pooled one had been dropped
    /// on the path while idle.
    pub stale_connections: u64,
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
    /// Chunks whose text the index already held embedded by the model (under another id, or
    /// another record's): indexed with that vector, without calling Bedrock.
    pub reused_by_content: u64,
    /// Chunks of record ids that another object holds too (`ID_SCOPE=bucket`): written under
    /// their own object's id instead, so neither object loses its record.
    pub id_collisions: u64,
    /// Chunks sent back to the queue with their vectors because Elasticsearch stayed unavailable.
    pub requeued: u64,
    /// Messages put back on the queue, delayed, because Elasticsearch was unavailable.
    pub messages_requeued: u64,
    /// Those messages by what they wait for (out of time, throttled, Elasticsearch, a sweep).
    pub waiting: Waits,
    /// Messages handed back for another container to take now: at the start, unopened, because
    /// the pace could not embed them before the deadline (or within the time a container holds
    /// work), or with what they had once that time was up.
    pub handed_back: u64,
    /// Chunks not sent to Bedrock because the container had held its work as long as it holds
    /// work at the pace: their messages go back at once, for another container.
    pub held_back: u64,
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

/// Why a message waits on the queue rather than landing in this invocation; the first three
/// are the [`FailureReason`]s that wait, under the same labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCause {
    /// The invocation's time ran short (Bedrock's retries or pace, or too little left for an
    /// Elasticsearch request).
    OutOfTime,
    /// Bedrock was still throttling when the retries ran out.
    Throttled,
    /// Elasticsearch unreachable, or 429 / 5xx past the retries.
    EsUnavailable,
    /// A sweep came before its version's chunks were all indexed (`SweepsWaiting`).
    SweepWaiting,
    /// The container held the batch as long as it holds work at the pace; another takes the
    /// rest now.
    Held,
}

impl WaitCause {
    pub const ALL: [WaitCause; 5] = [
        WaitCause::OutOfTime,
        WaitCause::Throttled,
        WaitCause::EsUnavailable,
        WaitCause::SweepWaiting,
        WaitCause::Held,
    ];

    pub fn label(self) -> &'static str {
        match self {
            WaitCause::OutOfTime => FailureReason::OutOfTime.label(),
            WaitCause::Throttled => FailureReason::Throttled.label(),
            WaitCause::EsUnavailable => FailureReason::EsUnavailable.label(),
            WaitCause::SweepWaiting => "sweep_waiting",
            WaitCause::Held => "held",
        }
    }

    /// The cause as the requeue's log line names it: "<this>: the work waits on the queue".
    pub fn describe(self) -> &'static str {
        match self {
            WaitCause::OutOfTime => "out of time",
            WaitCause::Throttled => "Bedrock throttled",
            WaitCause::EsUnavailable => "Elasticsearch unavailable",
            WaitCause::SweepWaiting => "sweep before its version's chunks are indexed",
            WaitCause::Held => {
                "held as long as a container holds work at the pace (handed back for another container)"
            }
        }
    }

    /// The wait of a chunk that failed for `reason` (one of those that [`FailureReason::waits`]).
    pub fn of_failure(reason: FailureReason) -> Self {
        match reason {
            FailureReason::OutOfTime => WaitCause::OutOfTime,
            FailureReason::Throttled => WaitCause::Throttled,
            _ => WaitCause::EsUnavailable,
        }
    }

    /// The wait a retryable Elasticsearch error gives: the invocation's time, or the cluster.
    pub fn of_es(error: &crate::es::EsError) -> Self {
        match error {
            crate::es::EsError::OutOfTime { .. } => WaitCause::OutOfTime,
            _ => WaitCause::EsUnavailable,
        }
    }
}

/// Requeued messages counted by [`WaitCause`].
#[derive(Default, Clone, Copy, PartialEq, Eq)]
pub struct Waits([u64; WaitCause::ALL.len()]);

/// The causes that occurred, by label (`{out_of_time: 2}`), as the batch log shows them.
impl std::fmt::Debug for Waits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nonzero = WaitCause::ALL.into_iter().map(|c| (c.label(), self.get(c)));
        f.debug_map()
            .entries(nonzero.filter(|(_, n)| *n > 0))
            .finish()
    }
}

impl Waits {
    pub fn add(&mut self, cause: WaitCause) {
        self.0[cause as usize] += 1;
    }

    pub fn get(&self, cause: WaitCause) -> u64 {
        self.0[cause as usize]
    }
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
        .count("ChunksReusedByContent", stats.reused_by_content)
        .count("IdCollisions", stats.id_collisions)
        .count("ChunksRequeued", stats.requeued)
        .count("MessagesRequeued", stats.messages_requeued)
        .count("MessagesHandedBack", stats.handed_back)
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
        .count("EsStaleConnections", stats.stale_connections)
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
