//! The `embed-index` handler: a batch of chunk messages in; chunks embedded (unless unchanged),
//! bulk-indexed, and every message whose chunks did not all land named in the partial batch
//! response.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use tokio::sync::OnceCell;
use tracing::{error, info, warn};

use crate::config::EmbedIndexConfig;
use crate::embed::{EmbedPolicy, EmbedStats, Embedder, EmbeddingModel, InputPurpose, embed_all};
use crate::es::bulk::{push_index, push_update};
use crate::es::document::SourceFields;
use crate::es::{BulkOutcome, ChunkDocument, EsClient, EsError, ItemOutcome, VectorSettings};
use crate::ids::{chunk_id, content_sha256};
use crate::message::{ChunkMessage, ChunkPayload, SourceRef};
use crate::metrics::MetricSet;
use crate::retry::{Backoff, Deadline};

/// Where chunks are stored and looked up.
pub trait SearchIndex: Send + Sync {
    fn index_name(&self) -> &str;

    /// Creates the index if needed and checks its vector size.
    fn ensure_index(
        &self,
        model: &EmbeddingModel,
        vectors: &VectorSettings,
    ) -> impl Future<Output = Result<(), EsError>> + Send;

    /// `(id, content_sha256, model_id)` of the chunks among `ids` that are stored.
    fn fingerprints(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<(String, String, String)>, EsError>> + Send;

    fn bulk(
        &self,
        body: Vec<u8>,
        actions: usize,
    ) -> impl Future<Output = Result<BulkOutcome, EsError>> + Send;
}

impl SearchIndex for EsClient {
    fn index_name(&self) -> &str {
        &self.index
    }

    async fn ensure_index(
        &self,
        model: &EmbeddingModel,
        vectors: &VectorSettings,
    ) -> Result<(), EsError> {
        EsClient::ensure_index(self, model.dimensions, vectors, &model.id).await
    }

    async fn fingerprints(&self, ids: &[String]) -> Result<Vec<(String, String, String)>, EsError> {
        self.stored_fingerprints(ids).await
    }

    async fn bulk(&self, body: Vec<u8>, actions: usize) -> Result<BulkOutcome, EsError> {
        EsClient::bulk(self, body, actions).await
    }
}

/// Clients and settings, built once per container; the index check runs once too.
pub struct EmbedIndexDeps<E, I> {
    pub embedder: E,
    pub index: I,
    pub config: EmbedIndexConfig,
    pub index_ready: OnceCell<()>,
}

impl<E, I> EmbedIndexDeps<E, I> {
    pub fn new(embedder: E, index: I, config: EmbedIndexConfig) -> Self {
        Self {
            embedder,
            index,
            config,
            index_ready: OnceCell::new(),
        }
    }
}

/// Failing the whole invocation: nothing in the batch can be indexed (the index cannot be set up).
#[derive(Debug, thiserror::Error)]
#[error("index {index} is not usable: {source}")]
pub struct IndexSetupError {
    pub index: String,
    #[source]
    pub source: EsError,
}

/// Counts for one invocation, logged and emitted as metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    pub messages: u64,
    pub messages_failed: u64,
    pub chunks: u64,
    pub unchanged: u64,
    pub embedded: u64,
    pub indexed: u64,
    pub failed_embedding: u64,
    pub failed_indexing: u64,
    pub bulk_requests: u64,
    pub bulk_bytes: u64,
    pub embed: EmbedStats,
}

/// One distinct chunk of the batch and the messages that carry it.
struct Work<'a> {
    id: String,
    sha: String,
    chunk: &'a ChunkPayload,
    source: &'a SourceRef,
    messages: Vec<usize>,
}

/// Handles one SQS batch. Messages are never failed wholesale: each one that did not fully land
/// is reported by id, so Lambda retries only those (and the DLQ collects the poisonous ones).
pub async fn handle_batch<E: Embedder, I: SearchIndex>(
    deps: &EmbedIndexDeps<E, I>,
    event: SqsEvent,
    deadline: Deadline,
) -> Result<(SqsBatchResponse, BatchStats), IndexSetupError> {
    let cfg = &deps.config;
    let model = &cfg.model;
    deps.index_ready
        .get_or_try_init(|| deps.index.ensure_index(model, &cfg.vectors))
        .await
        .map_err(|source| IndexSetupError {
            index: deps.index.index_name().to_owned(),
            source,
        })?;

    let mut stats = BatchStats {
        messages: event.records.len() as u64,
        ..Default::default()
    };
    let mut failed: BTreeSet<usize> = BTreeSet::new();
    let ids: Vec<String> = event
        .records
        .iter()
        .map(|m| m.message_id.clone().unwrap_or_default())
        .collect();

    // Parse; a poison message fails alone.
    let mut messages: Vec<(usize, ChunkMessage)> = Vec::new();
    for (i, record) in event.records.iter().enumerate() {
        match ChunkMessage::parse(record.body.as_deref().unwrap_or("")) {
            Ok(m) => messages.push((i, m)),
            Err(e) => {
                error!(message_id = %ids[i], error = %e, "poison message: it will go to the dead-letter queue after its retries");
                failed.insert(i);
            }
        }
    }

    // Distinct chunks: a chunk queued twice (duplicate S3 events) is embedded and indexed once.
    let mut work: Vec<Work> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for (i, message) in &messages {
        for chunk in &message.chunks {
            let id = chunk_id(&chunk.doc_id, chunk.chunk_index);
            match by_id.get(&id) {
                Some(&w) => work[w].messages.push(*i),
                None => {
                    by_id.insert(id.clone(), work.len());
                    work.push(Work {
                        id,
                        sha: content_sha256(&chunk.text),
                        chunk,
                        source: &message.source,
                        messages: vec![*i],
                    });
                }
            }
        }
    }
    stats.chunks = work.len() as u64;

    // Chunks whose text and model are unchanged keep their stored vector.
    let ids_to_check: Vec<String> = work.iter().map(|w| w.id.clone()).collect();
    let stored: HashMap<String, (String, String)> =
        match deps.index.fingerprints(&ids_to_check).await {
            Ok(found) => found
                .into_iter()
                .map(|(id, sha, m)| (id, (sha, m)))
                .collect(),
            Err(e) => {
                warn!(error = %e, "could not look up stored chunks; embedding all of them");
                HashMap::new()
            }
        };
    let unchanged: Vec<bool> = work
        .iter()
        .map(|w| {
            stored
                .get(&w.id)
                .is_some_and(|(sha, m)| *sha == w.sha && *m == model.id)
        })
        .collect();
    stats.unchanged = unchanged.iter().filter(|u| **u).count() as u64;

    let to_embed: Vec<usize> = (0..work.len()).filter(|&w| !unchanged[w]).collect();
    let texts: Vec<&str> = to_embed
        .iter()
        .map(|&w| work[w].chunk.text.as_str())
        .collect();
    let policy = EmbedPolicy {
        concurrency: cfg.concurrency,
        ..EmbedPolicy::default()
    };
    let (vectors, embed_stats) = embed_all(
        &deps.embedder,
        &texts,
        InputPurpose::Document,
        policy,
        deadline,
    )
    .await;
    stats.embed = embed_stats;
    let mut vector_of: HashMap<usize, Vec<f32>> = HashMap::new();
    for (&w, result) in to_embed.iter().zip(vectors) {
        match result {
            Ok(v) => {
                vector_of.insert(w, v);
            }
            Err(e) => {
                stats.failed_embedding += 1;
                if !e.is_retryable() {
                    error!(doc_id = %work[w].chunk.doc_id, chunk = work[w].chunk.chunk_index, error = %e, "chunk cannot be embedded");
                }
                failed.extend(&work[w].messages);
            }
        }
    }
    stats.embedded = vector_of.len() as u64;

    // One encoded action per chunk that is ready, so retries resend only what did not land.
    let indexed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let index = deps.index.index_name();
    let mut actions: Vec<(usize, Vec<u8>)> = Vec::new();
    for (w, item) in work.iter().enumerate() {
        let embedding = match (unchanged[w], vector_of.get(&w)) {
            (true, _) => None,
            (false, Some(v)) => Some(v.as_slice()),
            (false, None) => continue,
        };
        let doc = ChunkDocument {
            doc_id: &item.chunk.doc_id,
            chunk_index: item.chunk.chunk_index,
            chunk_count: item.chunk.chunk_count,
            text: &item.chunk.text,
            embedding,
            source: SourceFields {
                bucket: &item.source.bucket,
                key: &item.source.key,
                version_id: item.source.version_id.as_deref(),
                etag: item.source.etag.as_deref(),
                sequencer: item.source.sequencer.as_deref(),
                record: item.chunk.record,
            },
            metadata: &item.chunk.metadata,
            model_id: &model.id,
            content_sha256: &item.sha,
            indexed_at: &indexed_at,
        };
        let mut bytes = Vec::new();
        if embedding.is_some() {
            push_index(&mut bytes, index, &item.id, &doc);
        } else {
            push_update(&mut bytes, index, &item.id, &doc);
        }
        actions.push((w, bytes));
    }

    let outcome = index_with_retries(
        &deps.index,
        actions,
        cfg.bulk_max_bytes,
        deadline,
        &mut stats,
    )
    .await;
    for (w, result) in outcome {
        match result {
            Ok(()) => stats.indexed += 1,
            Err(reason) => {
                stats.failed_indexing += 1;
                let item = &work[w];
                if let Some(reason) = reason {
                    error!(doc_id = %item.chunk.doc_id, chunk = item.chunk.chunk_index, id = %item.id, %reason, "Elasticsearch rejected the chunk");
                }
                failed.extend(&item.messages);
            }
        }
    }

    stats.messages_failed = failed.len() as u64;
    let mut response = SqsBatchResponse::default();
    for i in &failed {
        response.add_failure(ids[*i].clone());
    }
    emit(&stats, model);
    info!(?stats, "batch finished");
    Ok((response, stats))
}

/// Sends the actions in `_bulk` requests of at most `max_bytes`, resending items answered with
/// 429 / 5xx (and whole requests that got no answer) with backoff while the deadline allows.
/// Returns each chunk's result: `Err(Some(reason))` for a permanent rejection, `Err(None)` for
/// one that ran out of attempts or time.
async fn index_with_retries<I: SearchIndex>(
    index: &I,
    mut pending: Vec<(usize, Vec<u8>)>,
    max_bytes: usize,
    deadline: Deadline,
    stats: &mut BatchStats,
) -> Vec<(usize, Result<(), Option<String>>)> {
    let mut results = Vec::new();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let max_attempts = 5;
    for attempt in 1..=max_attempts {
        if pending.is_empty() {
            break;
        }
        let mut retry = Vec::new();
        for request in split_by_size(pending, max_bytes) {
            let body: Vec<u8> = request
                .iter()
                .flat_map(|(_, b)| b.iter().copied())
                .collect();
            stats.bulk_requests += 1;
            stats.bulk_bytes += body.len() as u64;
            match index.bulk(body, request.len()).await {
                Ok(outcome) => {
                    for ((w, bytes), (_, item)) in request.into_iter().zip(outcome.items) {
                        match item {
                            ItemOutcome::Stored => results.push((w, Ok(()))),
                            ItemOutcome::Retry {
                                status,
                                kind,
                                reason,
                            } => {
                                warn!(status, %kind, %reason, "bulk item will be retried");
                                retry.push((w, bytes));
                            }
                            ItemOutcome::Reject {
                                status,
                                kind,
                                reason,
                            } => {
                                results.push((w, Err(Some(format!("{status} {kind}: {reason}")))));
                            }
                        }
                    }
                }
                Err(e) if e.is_retryable() => {
                    warn!(error = %e, "bulk request failed; will retry");
                    retry.extend(request);
                }
                Err(e) => {
                    let reason = e.to_string();
                    results.extend(
                        request
                            .into_iter()
                            .map(|(w, _)| (w, Err(Some(reason.clone())))),
                    );
                }
            }
        }
        pending = retry;
        let delay = backoff.next_delay();
        if pending.is_empty() || attempt == max_attempts || !deadline.allows(delay) {
            break;
        }
        tokio::time::sleep(delay).await;
    }
    results.extend(pending.into_iter().map(|(w, _)| (w, Err(None))));
    results
}

/// Groups encoded actions into requests of at most `max_bytes` (a single larger action goes
/// alone).
fn split_by_size(actions: Vec<(usize, Vec<u8>)>, max_bytes: usize) -> Vec<Vec<(usize, Vec<u8>)>> {
    let mut requests = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for action in actions {
        if !current.is_empty() && size + action.1.len() > max_bytes {
            requests.push(std::mem::take(&mut current));
            size = 0;
        }
        size += action.1.len();
        current.push(action);
    }
    if !current.is_empty() {
        requests.push(current);
    }
    requests
}

fn emit(stats: &BatchStats, model: &EmbeddingModel) {
    let mut m = MetricSet::new("embed-index").dimension("Model", &model.id);
    m.count("Messages", stats.messages)
        .count("MessagesFailed", stats.messages_failed)
        .count("ChunksIn", stats.chunks)
        .count("ChunksUnchanged", stats.unchanged)
        .count("ChunksEmbedded", stats.embedded)
        .count("ChunksIndexed", stats.indexed)
        .count("ChunksFailedEmbedding", stats.failed_embedding)
        .count("ChunksFailedIndexing", stats.failed_indexing)
        .count("BedrockCalls", stats.embed.calls)
        .count("BedrockThrottles", stats.embed.throttles)
        .count("BedrockRetries", stats.embed.retries)
        .count("InputTokens", stats.embed.input_tokens)
        .count("BulkRequests", stats.bulk_requests)
        .value("BulkBytes", stats.bulk_bytes as f64, "Bytes");
    m.emit();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_bulk_requests_by_size() {
        let actions: Vec<(usize, Vec<u8>)> = (0..5).map(|i| (i, vec![b'x'; 40])).collect();
        let sizes: Vec<usize> = split_by_size(actions, 100).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        let big = vec![(0, vec![b'x'; 500]), (1, vec![b'x'; 10])];
        assert_eq!(split_by_size(big, 100).len(), 2);
    }
}
