//! The `embed-index` handler: a batch of chunk messages in; chunks embedded (unless unchanged),
//! bulk-indexed, deletions and sweeps applied in S3 event order, and every message whose work did
//! not all land named in the partial batch response.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use serde_json::json;
use tokio::sync::OnceCell;
use tracing::{error, info, warn};

use crate::config::EmbedIndexConfig;
use crate::embed::{
    EmbedError, EmbedPolicy, EmbedStats, Embedder, EmbeddingModel, InputPurpose, embed_all,
};
use crate::es::bulk::{push_index, push_update};
use crate::es::document::SourceFields;
use crate::es::{
    BulkOutcome, ChunkDocument, EsClient, EsError, ItemOutcome, Stored, VectorSettings,
};
use crate::ids::{chunk_id, content_sha256, source_marker_id};
use crate::message::{
    CarriedVector, ChunkMessage, ChunkPayload, MessagePacker, Operation, SourceRef,
};
use crate::metrics::MetricSet;
use crate::queue::{BatchLimits, ChunkQueue, QueueError, send_all};
use crate::retry::{Backoff, Deadline};

/// Where chunks are stored and looked up.
pub trait SearchIndex: Send + Sync {
    fn index_name(&self) -> &str;

    /// Creates the index (and the source-marker index) if needed and checks its vector size.
    fn ensure_index(
        &self,
        model: &EmbeddingModel,
        vectors: &VectorSettings,
    ) -> impl Future<Output = Result<(), EsError>> + Send;

    /// What a batch needs to know before it embeds, in one round trip: the stored fingerprints
    /// of the chunks among `chunk_ids`, and the newest sequencer applied per marker among
    /// `marker_ids`.
    fn lookup(
        &self,
        chunk_ids: &[String],
        marker_ids: &[String],
    ) -> impl Future<Output = Result<Stored, EsError>> + Send;

    fn bulk(
        &self,
        body: Vec<u8>,
        actions: usize,
    ) -> impl Future<Output = Result<BulkOutcome, EsError>> + Send;

    /// Records the newest event applied for some source objects.
    fn set_markers(
        &self,
        markers: &[SourceMarker],
    ) -> impl Future<Output = Result<(), EsError>> + Send;

    /// Deletes a source object's chunks written before `sequencer` (`inclusive`: up to and
    /// including it); chunks written without a sequencer count as older. Returns the count.
    fn delete_chunks(
        &self,
        source: &SourceRef,
        sequencer: &str,
        inclusive: bool,
    ) -> impl Future<Output = Result<u64, EsError>> + Send;
}

/// The newest S3 event applied to one source object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceMarker {
    #[serde(skip)]
    pub id: String,
    pub bucket: String,
    pub key: String,
    pub sequencer: String,
    pub deleted: bool,
    pub updated_at: String,
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
        EsClient::ensure_index(self, model.dimensions, vectors, &model.id).await?;
        self.ensure_marker_index().await
    }

    async fn lookup(&self, chunk_ids: &[String], marker_ids: &[String]) -> Result<Stored, EsError> {
        EsClient::lookup(self, chunk_ids, marker_ids).await
    }

    async fn bulk(&self, body: Vec<u8>, actions: usize) -> Result<BulkOutcome, EsError> {
        EsClient::bulk(self, body, actions).await
    }

    async fn set_markers(&self, markers: &[SourceMarker]) -> Result<(), EsError> {
        if markers.is_empty() {
            return Ok(());
        }
        let index = self.marker_index();
        let mut body = Vec::new();
        for m in markers {
            push_index(&mut body, &index, &m.id, m);
        }
        let outcome = EsClient::bulk(self, body, markers.len()).await?;
        match outcome
            .items
            .into_iter()
            .find(|(_, o)| *o != ItemOutcome::Stored)
        {
            Some((
                _,
                ItemOutcome::Retry {
                    status,
                    kind,
                    reason,
                }
                | ItemOutcome::Reject {
                    status,
                    kind,
                    reason,
                },
            )) => Err(EsError::Status {
                what: format!("writing markers to {index}"),
                status,
                kind,
                reason,
            }),
            _ => Ok(()),
        }
    }

    async fn delete_chunks(
        &self,
        source: &SourceRef,
        sequencer: &str,
        inclusive: bool,
    ) -> Result<u64, EsError> {
        let bound = if inclusive { "gt" } else { "gte" };
        let query = json!({"bool": {
            "filter": [{"term": {"source.bucket": source.bucket}}, {"term": {"source.key": source.key}}],
            "must_not": [{"range": {"source.sequencer": {bound: sequencer}}}]
        }});
        self.delete_by_query(&query).await
    }
}

/// Clients and settings, built once per container; the index check runs once too.
pub struct EmbedIndexDeps<E, I, Q> {
    pub embedder: E,
    pub index: I,
    /// The chunk queue, for chunks that carry their vectors back while Elasticsearch is down.
    pub requeue: Option<Q>,
    pub config: EmbedIndexConfig,
    pub index_ready: OnceCell<()>,
}

impl<E, I, Q> EmbedIndexDeps<E, I, Q> {
    pub fn new(embedder: E, index: I, requeue: Option<Q>, config: EmbedIndexConfig) -> Self {
        Self {
            embedder,
            index,
            requeue,
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
    /// Chunks of an older version of their object than one already applied: dropped.
    pub superseded: u64,
    /// Chunks removed by deletions and sweeps.
    pub deleted: u64,
    /// Chunks whose message carried their vector: indexed without calling Bedrock.
    pub reused: u64,
    /// Chunks sent back to the queue with their vectors because Elasticsearch stayed unavailable.
    pub requeued: u64,
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

/// Why a chunk did not land in an invocation: the `Reason` dimension of `ChunksFailed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// Bedrock was still throttling when the retries or the time ran out.
    Throttled,
    /// Bedrock 5xx, timeouts or connection errors past the retries.
    BedrockError,
    /// Not embedded because the invocation's time ran short.
    OutOfTime,
    /// Bedrock refused the input (`ValidationException` and other permanent errors).
    ModelRejected,
    /// `AccessDeniedException`: the role's policy or the account's model access.
    AccessDenied,
    /// Elasticsearch rejected the document (mapping, size): permanent for its message.
    EsRejected,
    /// Elasticsearch unreachable, or 429 / 5xx past the retries.
    EsUnavailable,
}

impl FailureReason {
    pub const ALL: [FailureReason; 7] = [
        FailureReason::Throttled,
        FailureReason::BedrockError,
        FailureReason::OutOfTime,
        FailureReason::ModelRejected,
        FailureReason::AccessDenied,
        FailureReason::EsRejected,
        FailureReason::EsUnavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FailureReason::Throttled => "throttled",
            FailureReason::BedrockError => "bedrock_error",
            FailureReason::OutOfTime => "out_of_time",
            FailureReason::ModelRejected => "model_rejected",
            FailureReason::AccessDenied => "access_denied",
            FailureReason::EsRejected => "es_rejected",
            FailureReason::EsUnavailable => "es_unavailable",
        }
    }

    fn of_embedding(error: &EmbedError) -> Self {
        match error {
            EmbedError::Throttled(_) => FailureReason::Throttled,
            EmbedError::Transient(_) => FailureReason::BedrockError,
            EmbedError::OutOfTime => FailureReason::OutOfTime,
            EmbedError::Permanent { .. } if error.is_access_denied() => FailureReason::AccessDenied,
            EmbedError::Permanent { .. } => FailureReason::ModelRejected,
        }
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

/// One distinct chunk of the batch and the messages that carry it.
struct Work<'a> {
    id: String,
    sha: String,
    chunk: &'a ChunkPayload,
    source: &'a SourceRef,
    messages: Vec<usize>,
}

/// A deletion (`inclusive`) or sweep to run after the batch's chunks are written.
struct Removal<'a> {
    message: usize,
    source: &'a SourceRef,
    sequencer: String,
    inclusive: bool,
}

/// Sorts the batch's messages by S3 event order per object: messages older than the newest event
/// already applied to their object are dropped; the rest are split into chunk work and removals.
/// Returns the live index messages, the removals, and the markers to record.
fn order_by_sequencer<'a>(
    messages: &'a [(usize, ChunkMessage)],
    applied: &HashMap<String, String>,
    stats: &mut BatchStats,
) -> (
    Vec<&'a (usize, ChunkMessage)>,
    Vec<Removal<'a>>,
    Vec<SourceMarker>,
) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut live = Vec::new();
    let mut removals = Vec::new();
    let mut newest: HashMap<String, SourceMarker> = HashMap::new();
    for entry in messages {
        let (i, m) = entry;
        let marker_id = source_marker_id(&m.source.bucket, &m.source.key);
        let seq = m.source.sequencer.as_deref();
        if let (Some(s), Some(current)) = (seq, applied.get(&marker_id))
            && s < current.as_str()
        {
            info!(bucket = %m.source.bucket, key = %m.source.key, sequencer = s, newest = %current, op = ?m.op, "older event for this object: skipped");
            stats.superseded += m.chunks.len() as u64;
            continue;
        }
        if let Some(s) = seq {
            let deleted = m.op == Operation::Delete;
            let replace = newest
                .get(&marker_id)
                .is_none_or(|n| s > n.sequencer.as_str() || (s == n.sequencer && deleted));
            if replace && m.op != Operation::Sweep {
                newest.insert(
                    marker_id.clone(),
                    SourceMarker {
                        id: marker_id,
                        bucket: m.source.bucket.clone(),
                        key: m.source.key.clone(),
                        sequencer: s.to_owned(),
                        deleted,
                        updated_at: now.clone(),
                    },
                );
            }
        }
        match (m.op, seq) {
            (Operation::Index, _) => live.push(entry),
            // A removal without a sequencer (a hand-made event) removes everything of the object.
            (Operation::Delete, _) => removals.push(Removal {
                message: *i,
                source: &m.source,
                sequencer: seq.map_or_else(|| "~".repeat(32), str::to_owned),
                inclusive: true,
            }),
            (Operation::Sweep, Some(s)) => removals.push(Removal {
                message: *i,
                source: &m.source,
                sequencer: s.to_owned(),
                inclusive: false,
            }),
            (Operation::Sweep, None) => {}
        }
    }
    (live, removals, newest.into_values().collect())
}

/// Handles one SQS batch. Messages are never failed wholesale: each one that did not fully land
/// is reported by id, so Lambda retries only those (and the DLQ collects the poisonous ones).
pub async fn handle_batch<E: Embedder, I: SearchIndex, Q: ChunkQueue>(
    deps: &EmbedIndexDeps<E, I, Q>,
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
    // Every message that must be retried, and those failed for a reason other than Elasticsearch
    // being unavailable (which a requeue with vectors cannot help).
    let mut failed: BTreeSet<usize> = BTreeSet::new();
    let mut hard: BTreeSet<usize> = BTreeSet::new();
    let mut unavailable: BTreeSet<usize> = BTreeSet::new();
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
                hard.insert(i);
            }
        }
    }

    // One round trip for the markers of what was already applied (S3 event order per object)
    // and the fingerprints of the chunks already stored (those unchanged are not re-embedded).
    let marker_ids: Vec<String> = messages
        .iter()
        .filter(|(_, m)| m.source.sequencer.is_some())
        .map(|(_, m)| source_marker_id(&m.source.bucket, &m.source.key))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let chunk_ids: Vec<String> = messages
        .iter()
        .flat_map(|(_, m)| &m.chunks)
        .map(|c| chunk_id(&c.doc_id, c.chunk_index))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let Stored {
        fingerprints: stored,
        markers: applied,
    } = match deps.index.lookup(&chunk_ids, &marker_ids).await {
        Ok(found) => found,
        Err(e) => {
            // Without the markers, removals could undo a newer write: they wait for a retry.
            warn!(error = %e, "could not look up stored chunks and source markers; embedding every chunk, and deletions and sweeps in this batch will be retried");
            for (i, m) in &messages {
                if m.op != Operation::Index {
                    failed.insert(*i);
                    hard.insert(*i);
                }
            }
            Stored::default()
        }
    };
    let ordered: Vec<(usize, ChunkMessage)> = messages
        .into_iter()
        .filter(|(i, _)| !failed.contains(i))
        .collect();
    let (live, removals, markers) = order_by_sequencer(&ordered, &applied, &mut stats);

    // Distinct chunks: a chunk queued twice (duplicate S3 events) is embedded and indexed once,
    // from the newest version of its object in the batch.
    let mut work: Vec<Work> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for (i, message) in live {
        for chunk in &message.chunks {
            let id = chunk_id(&chunk.doc_id, chunk.chunk_index);
            match by_id.get(&id) {
                Some(&w) => {
                    let item = &mut work[w];
                    item.messages.push(*i);
                    if message.source.sequencer > item.source.sequencer {
                        item.chunk = chunk;
                        item.source = &message.source;
                        item.sha = content_sha256(&chunk.text);
                    }
                }
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
    let unchanged: Vec<bool> = work
        .iter()
        .map(|w| {
            stored
                .get(&w.id)
                .is_some_and(|(sha, m)| *sha == w.sha && *m == model.id)
        })
        .collect();
    stats.unchanged = unchanged.iter().filter(|u| **u).count() as u64;

    // Vectors already paid for (carried back while Elasticsearch was down) are used as they are.
    let mut vector_of: HashMap<usize, Vec<f32>> = HashMap::new();
    for (w, item) in work.iter().enumerate() {
        if let Some(carried) = &item.chunk.vector
            && !unchanged[w]
            && carried.model_id == model.id
            && let Some(v) = carried.decode(model.dimensions)
        {
            vector_of.insert(w, v);
        }
    }
    stats.reused = vector_of.len() as u64;
    let to_embed: Vec<usize> = (0..work.len())
        .filter(|&w| !unchanged[w] && !vector_of.contains_key(&w))
        .collect();
    let texts: Vec<&str> = to_embed
        .iter()
        .map(|&w| work[w].chunk.text.as_str())
        .collect();
    let policy = EmbedPolicy {
        concurrency: cfg.concurrency,
        ..EmbedPolicy::default()
    };
    let embed_started = std::time::Instant::now();
    let (vectors, embed_stats) = embed_all(
        &deps.embedder,
        &texts,
        InputPurpose::Document,
        policy,
        deadline,
    )
    .await;
    stats.embed = embed_stats;
    stats.embed_ms = embed_started.elapsed().as_millis() as u64;
    for (&w, result) in to_embed.iter().zip(vectors) {
        match result {
            Ok(v) => {
                vector_of.insert(w, v);
            }
            Err(e) => {
                stats.failed_embedding += 1;
                stats.failures.add(FailureReason::of_embedding(&e));
                if !e.is_retryable() {
                    error!(doc_id = %work[w].chunk.doc_id, chunk = work[w].chunk.chunk_index, error = %e, "chunk cannot be embedded");
                }
                failed.extend(&work[w].messages);
                hard.extend(&work[w].messages);
            }
        }
    }
    stats.embedded = vector_of.len() as u64 - stats.reused;

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

    let index_started = std::time::Instant::now();
    let outcome = index_with_retries(
        &deps.index,
        actions,
        cfg.bulk_max_bytes,
        deadline,
        &mut stats,
    )
    .await;
    stats.index_ms = index_started.elapsed().as_millis() as u64;
    for (w, result) in outcome {
        match result {
            Ok(()) => stats.indexed += 1,
            Err(reason) => {
                stats.failed_indexing += 1;
                let item = &work[w];
                if let Some(reason) = reason {
                    error!(doc_id = %item.chunk.doc_id, chunk = item.chunk.chunk_index, id = %item.id, %reason, "Elasticsearch rejected the chunk");
                    stats.failures.add(FailureReason::EsRejected);
                    hard.extend(&item.messages);
                } else {
                    stats.failures.add(FailureReason::EsUnavailable);
                    unavailable.extend(&item.messages);
                }
                failed.extend(&item.messages);
            }
        }
    }

    // Removals run after the writes, so a sweep never races the chunks it must keep.
    for r in &removals {
        match deps
            .index
            .delete_chunks(r.source, &r.sequencer, r.inclusive)
            .await
        {
            Ok(n) => {
                stats.deleted += n;
                info!(bucket = %r.source.bucket, key = %r.source.key, deleted = n, op = if r.inclusive { "delete" } else { "sweep" }, "removed chunks");
            }
            Err(e) => {
                warn!(bucket = %r.source.bucket, key = %r.source.key, error = %e, "removing chunks failed; the message will be retried");
                failed.insert(r.message);
                hard.insert(r.message);
            }
        }
    }
    // Embeddings are never paid for twice: a message that failed only because Elasticsearch
    // stayed unavailable goes back on the queue, delayed, carrying its vectors.
    if let Some(queue) = &deps.requeue {
        for &i in unavailable.difference(&hard) {
            let Some((_, message)) = ordered.iter().find(|(m, _)| *m == i) else {
                continue;
            };
            if message.chunks.iter().any(|c| c.vector.is_some()) {
                continue; // already carried once: fail it, SQS backs off and the DLQ keeps it
            }
            let mut payloads = Vec::with_capacity(message.chunks.len());
            for chunk in &message.chunks {
                let w = by_id[&chunk_id(&chunk.doc_id, chunk.chunk_index)];
                let vector = match (vector_of.get(&w), unchanged[w]) {
                    (Some(v), _) => Some(CarriedVector::new(&model.id, v)),
                    (None, true) => None,
                    (None, false) => break,
                };
                payloads.push(ChunkPayload {
                    vector,
                    ..chunk.clone()
                });
            }
            if payloads.len() != message.chunks.len() {
                continue;
            }
            match requeue_with_vectors(queue, &message.source, &payloads, cfg).await {
                Ok(()) => {
                    failed.remove(&i);
                    stats.requeued += payloads.len() as u64;
                    warn!(message_id = %ids[i], chunks = payloads.len(), "Elasticsearch unavailable: chunks requeued with their vectors");
                }
                Err(e) => {
                    warn!(message_id = %ids[i], error = %e, "could not requeue with vectors; the message will be retried")
                }
            }
        }
    }

    if let Err(e) = deps.index.set_markers(&markers).await {
        warn!(error = %e, "could not record the newest events applied; ordering falls back to chunk overwrites");
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

async fn requeue_with_vectors<Q: ChunkQueue>(
    queue: &Q,
    source: &SourceRef,
    chunks: &[ChunkPayload],
    cfg: &EmbedIndexConfig,
) -> Result<(), QueueError> {
    let mut packer = MessagePacker::new(source, cfg.message_max_bytes);
    let mut bodies = Vec::new();
    for chunk in chunks {
        let encoded = MessagePacker::encode(chunk);
        match packer.push(&encoded) {
            Ok(Some(body)) => bodies.push(body),
            Ok(None) => {}
            Err(e) => {
                return Err(QueueError::Refused {
                    code: "ChunkTooLarge".into(),
                    message: e.to_string(),
                });
            }
        }
    }
    bodies.extend(packer.finish());
    let limits = BatchLimits {
        max_payload_bytes: cfg.sqs_max_payload_bytes,
        max_attempts: 3,
        delay_seconds: cfg.requeue_delay_secs,
    };
    send_all(queue, bodies, limits).await.map(|_| ())
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
                                stats.bulk_retries += 1;
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
                    stats.bulk_retries += request.len() as u64;
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
        .count("ChunksSuperseded", stats.superseded)
        .count("ChunksDeleted", stats.deleted)
        .count("ChunksReused", stats.reused)
        .count("ChunksRequeued", stats.requeued)
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
        .value("BulkBytes", stats.bulk_bytes as f64, "Bytes");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::ModelOutput;
    use crate::es::bulk::parse_bulk_answer;
    use crate::es::{EsSettings, VectorSettings};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

    #[test]
    fn splits_bulk_requests_by_size() {
        let actions: Vec<(usize, Vec<u8>)> = (0..5).map(|i| (i, vec![b'x'; 40])).collect();
        let sizes: Vec<usize> = split_by_size(actions, 100).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        let big = vec![(0, vec![b'x'; 500]), (1, vec![b'x'; 10])];
        assert_eq!(split_by_size(big, 100).len(), 2);
    }

    /// Embeds every text as a constant vector; counts calls.
    struct CountingEmbedder {
        model: EmbeddingModel,
        calls: AtomicUsize,
        texts: AtomicUsize,
        reject: Option<&'static str>,
    }

    impl Embedder for CountingEmbedder {
        fn model(&self) -> &EmbeddingModel {
            &self.model
        }

        async fn invoke(&self, texts: &[&str], _: InputPurpose) -> Result<ModelOutput, EmbedError> {
            self.calls.fetch_add(1, AtomicOrdering::SeqCst);
            self.texts.fetch_add(texts.len(), AtomicOrdering::SeqCst);
            if self.reject.is_some_and(|r| texts.contains(&r)) {
                return Err(EmbedError::Permanent {
                    code: "ValidationException".into(),
                    message: "bad".into(),
                });
            }
            Ok(ModelOutput {
                vectors: texts
                    .iter()
                    .map(|_| vec![0.5; self.model.dimensions])
                    .collect(),
                input_tokens: None,
            })
        }
    }

    /// An in-memory index: stores bulk documents by id, answers scripted item statuses first.
    #[derive(Default)]
    struct MemoryIndex {
        docs: Mutex<HashMap<String, serde_json::Value>>,
        markers: Mutex<HashMap<String, String>>,
        /// Statuses for the next bulk items, in order (then 201).
        script: Mutex<Vec<u16>>,
        bulk_calls: AtomicUsize,
    }

    impl SearchIndex for MemoryIndex {
        fn index_name(&self) -> &str {
            "docs"
        }

        async fn ensure_index(
            &self,
            _: &EmbeddingModel,
            _: &VectorSettings,
        ) -> Result<(), EsError> {
            Ok(())
        }

        async fn lookup(
            &self,
            chunk_ids: &[String],
            marker_ids: &[String],
        ) -> Result<Stored, EsError> {
            let docs = self.docs.lock().unwrap();
            let markers = self.markers.lock().unwrap();
            let text = |d: &serde_json::Value, k: &str| Some(d[k].as_str()?.to_owned());
            Ok(Stored {
                fingerprints: chunk_ids
                    .iter()
                    .filter_map(|id| {
                        let d = docs.get(id)?;
                        Some((
                            id.clone(),
                            (text(d, "content_sha256")?, text(d, "model_id")?),
                        ))
                    })
                    .collect(),
                markers: marker_ids
                    .iter()
                    .filter_map(|id| Some((id.clone(), markers.get(id)?.clone())))
                    .collect(),
            })
        }

        async fn bulk(&self, body: Vec<u8>, actions: usize) -> Result<BulkOutcome, EsError> {
            self.bulk_calls.fetch_add(1, AtomicOrdering::SeqCst);
            let text = String::from_utf8(body).unwrap();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let mut items = Vec::new();
            for pair in lines.chunks(2) {
                let (action, meta) = pair[0].as_object().unwrap().iter().next().unwrap();
                let id = meta["_id"].as_str().unwrap().to_owned();
                let status = {
                    let mut script = self.script.lock().unwrap();
                    if script.is_empty() {
                        201
                    } else {
                        script.remove(0)
                    }
                };
                if status < 300 {
                    let mut docs = self.docs.lock().unwrap();
                    if action == "update" {
                        let doc = docs.get_mut(&id).expect("update of a stored doc");
                        for (k, v) in pair[1]["doc"].as_object().unwrap() {
                            doc[k] = v.clone();
                        }
                    } else {
                        docs.insert(id.clone(), pair[1].clone());
                    }
                    items.push(json!({action: {"_id": id, "status": status}}));
                } else {
                    items.push(json!({action: {"_id": id, "status": status, "error": {"type": if status == 429 { "es_rejected_execution_exception" } else { "document_parsing_exception" }, "reason": "scripted"}}}));
                }
            }
            let answer = json!({"errors": true, "items": items});
            Ok(parse_bulk_answer(answer.to_string().as_bytes(), actions).unwrap())
        }

        async fn set_markers(&self, markers: &[SourceMarker]) -> Result<(), EsError> {
            let mut stored = self.markers.lock().unwrap();
            for m in markers {
                stored.insert(m.id.clone(), m.sequencer.clone());
            }
            Ok(())
        }

        async fn delete_chunks(
            &self,
            source: &SourceRef,
            sequencer: &str,
            inclusive: bool,
        ) -> Result<u64, EsError> {
            let mut docs = self.docs.lock().unwrap();
            let before = docs.len();
            docs.retain(|_, d| {
                let same = d["source"]["key"] == source.key.as_str()
                    && d["source"]["bucket"] == source.bucket.as_str();
                let seq = d["source"]["sequencer"].as_str().unwrap_or("");
                let older = if inclusive {
                    seq <= sequencer
                } else {
                    seq < sequencer
                };
                !(same && older)
            });
            Ok((before - docs.len()) as u64)
        }
    }

    /// Collects requeued message bodies.
    #[derive(Default)]
    struct MemoryQueue {
        bodies: Mutex<Vec<(String, i32)>>,
    }

    impl ChunkQueue for MemoryQueue {
        async fn send_batch(
            &self,
            entries: &[crate::queue::QueueEntry],
        ) -> Result<Vec<crate::queue::EntryFailure>, QueueError> {
            self.bodies
                .lock()
                .unwrap()
                .extend(entries.iter().map(|e| (e.body.clone(), e.delay_seconds)));
            Ok(Vec::new())
        }
    }

    type Deps = EmbedIndexDeps<CountingEmbedder, MemoryIndex, MemoryQueue>;

    fn deps(reject: Option<&'static str>) -> Deps {
        let model = EmbeddingModel::resolve("amazon.titan-embed-text-v2:0", Some(256)).unwrap();
        let es = EsSettings {
            host: "h".into(),
            port: 9200,
            use_ssl: false,
            verify_certs: true,
            ca_cert_pem: None,
            auth: None,
            index: "docs".into(),
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        };
        let config = EmbedIndexConfig {
            es,
            es_secret_id: None,
            model: model.clone(),
            vectors: VectorSettings {
                similarity: "cosine".into(),
                index_type: "hnsw".into(),
            },
            concurrency: 4,
            bulk_max_bytes: 1 << 20,
            requeue_url: Some("q".into()),
            requeue_delay_secs: 60,
            message_max_bytes: 64 * 1024,
            sqs_max_payload_bytes: 256 * 1024,
        };
        let embedder = CountingEmbedder {
            model,
            calls: AtomicUsize::new(0),
            texts: AtomicUsize::new(0),
            reject,
        };
        EmbedIndexDeps::new(
            embedder,
            MemoryIndex::default(),
            Some(MemoryQueue::default()),
            config,
        )
    }

    fn message(op: &str, key: &str, seq: Option<&str>, docs: &[(&str, &str)]) -> String {
        let chunks: Vec<serde_json::Value> = docs
            .iter()
            .map(|(id, text)| json!({"doc_id": id, "chunk_index": 0, "chunk_count": 1, "record": 1, "text": text, "metadata": {"k": key}}))
            .collect();
        json!({"v": 1, "op": op, "source": {"bucket": "b", "key": key, "sequencer": seq.map(crate::ids::normalize_sequencer)}, "chunks": chunks}).to_string()
    }

    fn event(bodies: &[String]) -> SqsEvent {
        let records: Vec<serde_json::Value> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| json!({"messageId": format!("m{i}"), "receiptHandle": "r", "body": b, "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs"}))
            .collect();
        serde_json::from_value(json!({"Records": records})).unwrap()
    }

    fn failures(r: &SqsBatchResponse) -> Vec<String> {
        serde_json::to_value(r).unwrap()["batchItemFailures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn run(d: &Deps, bodies: &[String]) -> (Vec<String>, BatchStats) {
        let (r, stats) = handle_batch(d, event(bodies), Deadline::after(Duration::from_secs(30)))
            .await
            .unwrap();
        (failures(&r), stats)
    }

    #[tokio::test(start_paused = true)]
    async fn a_poison_message_fails_alone() {
        let d = deps(None);
        let bodies = vec![
            message("index", "k", None, &[("a", "alpha")]),
            "{\"v\":1,".into(),
            message("index", "k", None, &[("b", "beta")]),
        ];
        let (failed, stats) = run(&d, &bodies).await;
        assert_eq!(failed, vec!["m1"]);
        assert_eq!(stats.indexed, 2);
        assert_eq!(d.index.docs.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn duplicates_and_unchanged_chunks_cost_no_embedding() {
        let d = deps(None);
        let body = message("index", "k", None, &[("a", "alpha"), ("b", "beta")]);
        let (failed, stats) = run(&d, &[body.clone(), body.clone()]).await;
        assert!(failed.is_empty());
        assert_eq!((stats.chunks, stats.embedded), (2, 2));
        let (_, stats) = run(&d, &[body]).await;
        assert_eq!((stats.unchanged, stats.embedded, stats.indexed), (2, 0, 2));
        assert_eq!(d.embedder.texts.load(AtomicOrdering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn rejected_items_fail_their_message_and_busy_items_are_retried() {
        let d = deps(None);
        *d.index.script.lock().unwrap() = vec![429, 400, 503];
        let bodies = vec![
            message("index", "k", None, &[("a", "alpha")]),
            message("index", "k", None, &[("b", "beta")]),
            message("index", "k", None, &[("c", "gamma")]),
        ];
        let (failed, stats) = run(&d, &bodies).await;
        assert_eq!(failed, vec!["m1"], "{stats:?}");
        assert_eq!(stats.indexed, 2);
        assert!(d.index.bulk_calls.load(AtomicOrdering::SeqCst) >= 2);
        assert_eq!(stats.bulk_retries, 2, "the 429 and the 503 are resent");
        assert_eq!(
            stats.failures.nonzero().collect::<Vec<_>>(),
            vec![(FailureReason::EsRejected, 1)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunk_bedrock_refuses_fails_only_its_message() {
        let d = deps(Some("poisoned text"));
        let bodies = vec![
            message("index", "k", None, &[("a", "fine")]),
            message("index", "k", None, &[("b", "poisoned text")]),
        ];
        let (failed, stats) = run(&d, &bodies).await;
        assert_eq!(failed, vec!["m1"]);
        assert_eq!(stats.failed_embedding, 1);
        assert_eq!(
            stats.failures.nonzero().collect::<Vec<_>>(),
            vec![(FailureReason::ModelRejected, 1)]
        );
    }

    #[test]
    fn embedding_errors_are_counted_by_reason() {
        let permanent = |code: &str| EmbedError::Permanent {
            code: code.into(),
            message: "m".into(),
        };
        let cases = [
            (EmbedError::Throttled("t".into()), "throttled"),
            (EmbedError::Transient("503".into()), "bedrock_error"),
            (EmbedError::OutOfTime, "out_of_time"),
            (permanent("ValidationException"), "model_rejected"),
            (permanent("AccessDeniedException"), "access_denied"),
        ];
        let mut failures = Failures::default();
        for (error, label) in &cases {
            let reason = FailureReason::of_embedding(error);
            assert_eq!(reason.label(), *label);
            failures.add(reason);
        }
        failures.add(FailureReason::Throttled);
        assert_eq!(
            format!("{failures:?}"),
            r#"{"throttled": 2, "bedrock_error": 1, "out_of_time": 1, "model_rejected": 1, "access_denied": 1}"#
        );
        let counted: Vec<(&str, u64)> = failures.nonzero().map(|(r, n)| (r.label(), n)).collect();
        assert_eq!(
            counted,
            vec![
                ("throttled", 2),
                ("bedrock_error", 1),
                ("out_of_time", 1),
                ("model_rejected", 1),
                ("access_denied", 1)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_older_event_never_wins_over_a_newer_one() {
        let d = deps(None);
        run(
            &d,
            &[message("index", "k", Some("0B"), &[("a", "new text")])],
        )
        .await;
        let (failed, stats) = run(
            &d,
            &[message(
                "index",
                "k",
                Some("0A"),
                &[("a", "old text"), ("stale", "old only")],
            )],
        )
        .await;
        assert!(failed.is_empty());
        assert_eq!(stats.superseded, 2);
        let docs = d.index.docs.lock().unwrap();
        assert_eq!(docs[&chunk_id("a", 0)]["text"], "new text");
        assert!(!docs.contains_key(&chunk_id("stale", 0)));
    }

    #[tokio::test(start_paused = true)]
    async fn overwrite_sweeps_stale_chunks_and_delete_removes_the_rest() {
        let d = deps(None);
        run(
            &d,
            &[message(
                "index",
                "k",
                Some("01"),
                &[("a", "one"), ("b", "two"), ("c", "three")],
            )],
        )
        .await;
        run(
            &d,
            &[message(
                "index",
                "other",
                Some("01"),
                &[("z", "other object")],
            )],
        )
        .await;
        // The new version has fewer records; its sweep may even arrive before its chunks.
        let (failed, _) = run(
            &d,
            &[
                message("sweep", "k", Some("02"), &[]),
                message("index", "k", Some("02"), &[("a", "one v2")]),
            ],
        )
        .await;
        assert!(failed.is_empty());
        {
            let docs = d.index.docs.lock().unwrap();
            assert!(
                docs.contains_key(&chunk_id("a", 0))
                    && !docs.contains_key(&chunk_id("b", 0))
                    && !docs.contains_key(&chunk_id("c", 0))
            );
        }
        // A late, older delete changes nothing; the real delete removes the object's chunks only.
        let (_, stats) = run(&d, &[message("delete", "k", Some("01"), &[])]).await;
        assert_eq!(stats.deleted, 0);
        let (_, stats) = run(&d, &[message("delete", "k", Some("03"), &[])]).await;
        assert_eq!(stats.deleted, 1);
        let docs = d.index.docs.lock().unwrap();
        assert_eq!(docs.len(), 1);
        assert!(docs.contains_key(&chunk_id("z", 0)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_sends_vectors_back_instead_of_paying_for_them_twice() {
        let d = deps(None);
        // Elasticsearch answers 503 to every attempt of the first batch.
        *d.index.script.lock().unwrap() = vec![503; 20];
        let body = message("index", "k", None, &[("a", "alpha"), ("b", "beta")]);
        let (failed, stats) = run(&d, &[body]).await;
        assert!(
            failed.is_empty(),
            "the message is done: its chunks travel on with their vectors"
        );
        assert_eq!((stats.embedded, stats.requeued), (2, 2));
        assert_eq!(stats.failures.get(FailureReason::EsUnavailable), 2);
        let requeued: Vec<(String, i32)> =
            d.requeue.as_ref().unwrap().bodies.lock().unwrap().clone();
        assert_eq!(requeued.len(), 1);
        assert_eq!(requeued[0].1, 60);

        // The cluster is back: the requeued message indexes without any Bedrock call.
        d.index.script.lock().unwrap().clear();
        let calls = d.embedder.calls.load(AtomicOrdering::SeqCst);
        let (failed, stats) = run(&d, &[requeued[0].0.clone()]).await;
        assert!(failed.is_empty());
        assert_eq!((stats.reused, stats.embedded, stats.indexed), (2, 0, 2));
        assert_eq!(d.embedder.calls.load(AtomicOrdering::SeqCst), calls);
        assert_eq!(
            d.index.docs.lock().unwrap()[&chunk_id("a", 0)]["embedding"]
                .as_array()
                .unwrap()
                .len(),
            256
        );

        // Still down when it comes back: it fails (SQS backs off, the DLQ keeps the vectors).
        *d.index.script.lock().unwrap() = vec![503; 20];
        d.index.docs.lock().unwrap().clear();
        let (failed, stats) = run(&d, &[requeued[0].0.clone()]).await;
        assert_eq!((failed.len(), stats.requeued), (1, 0));
    }
}
