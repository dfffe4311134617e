//! The `embed-index` handler: a batch of chunk messages in; per object only its newest S3 event
//! applied, chunks embedded (unless unchanged or carried) and written with compare-and-set,
//! deletions and sweeps applied, and every message that did not land either put back on the
//! queue (Elasticsearch unavailable) or named in the partial batch response.
//!
//! `handle_batch` reads top to bottom as its steps: parse → make sure the index exists → look up
//! what is stored → claim each object's marker → write chunks → check the markers again and
//! undo what a newer event overtook → remove → requeue what waits for Elasticsearch → answer.

mod index;
mod ordering;
mod requeue;
mod stats;
mod writes;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use tokio::sync::OnceCell;
use tracing::{error, info, warn};

use crate::config::EmbedIndexConfig;
use crate::embed::{Embedder, EmbeddingModel, Pacer};
use crate::es::bulk::{push_delete, push_index};
use crate::es::{EsError, StoredChunk, StoredMarker};
use crate::ids::{chunk_id, content_sha256, source_marker_id};
use crate::message::{CarriedVector, ChunkMessage, ChunkPayload, Operation, SourceRef};
use crate::queue::ChunkQueue;
use crate::retry::Deadline;

pub use index::SearchIndex;
pub use ordering::Decision;
pub use requeue::delay_secs as requeue_delay_secs;
pub use stats::{BatchStats, FailureReason, Failures};

use ordering::Claim;
use writes::{ChunkWork, Outcome, Sent, Writer, numbered_actions, send_with_retries};

/// Clients and settings, built once per container; the index check runs once too.
pub struct EmbedIndexDeps<E, I, Q> {
    pub embedder: E,
    pub index: I,
    /// The chunk queue, where work waits (delayed) while Elasticsearch is unavailable.
    pub requeue: Option<Q>,
    pub config: EmbedIndexConfig,
    pub index_ready: OnceCell<()>,
    /// How fast this container calls Bedrock; it learns across invocations.
    pub pacer: Pacer,
}

impl<E, I, Q> EmbedIndexDeps<E, I, Q> {
    pub fn new(embedder: E, index: I, requeue: Option<Q>, config: EmbedIndexConfig) -> Self {
        let pacer = if config.adaptive {
            Pacer::adaptive(config.concurrency)
        } else {
            Pacer::fixed(config.concurrency)
        };
        let pacer = match config.token_budget {
            Some(tokens_per_second) => pacer.with_token_budget(tokens_per_second),
            None => pacer,
        };
        Self {
            embedder,
            index,
            requeue,
            config,
            index_ready: OnceCell::new(),
            pacer,
        }
    }
}

/// Failing the whole invocation: nothing in the batch can be indexed (the index exists with
/// settings no retry can change).
#[derive(Debug, thiserror::Error)]
#[error("index {index} is not usable: {source}")]
pub struct IndexSetupError {
    pub index: String,
    #[source]
    pub source: EsError,
}

/// How one message ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fate {
    Done,
    /// Elasticsearch was unavailable: back on the queue, delayed.
    Wait,
    /// Reported in the partial batch response: SQS retries it, then dead-letters it.
    Fail,
}

impl Fate {
    /// The fate an Elasticsearch error gives its messages: a retryable one makes them wait, any
    /// other fails them.
    fn of(e: &EsError) -> Self {
        if e.is_retryable() {
            Fate::Wait
        } else {
            Fate::Fail
        }
    }
}

/// The batch's messages, parsed once; read by every step.
struct Batch {
    ids: Vec<String>,
    messages: Vec<(usize, ChunkMessage)>,
}

/// Each message's fate so far, by position in the batch.
struct Fates(Vec<Fate>);

impl Batch {
    fn parse(event: &SqsEvent) -> (Self, Fates) {
        let ids: Vec<String> = event
            .records
            .iter()
            .map(|m| m.message_id.clone().unwrap_or_default())
            .collect();
        let mut fates = vec![Fate::Done; ids.len()];
        let mut messages = Vec::new();
        for (i, record) in event.records.iter().enumerate() {
            match ChunkMessage::parse(record.body.as_deref().unwrap_or("")) {
                Ok(m) => messages.push((i, m)),
                Err(e) => {
                    error!(message_id = %ids[i], error = %e, "poison message: it will go to the dead-letter queue after its retries");
                    fates[i] = Fate::Fail;
                }
            }
        }
        (Self { ids, messages }, Fates(fates))
    }

    fn message(&self, i: usize) -> &ChunkMessage {
        &self
            .messages
            .iter()
            .find(|(j, _)| *j == i)
            .expect("a parsed message")
            .1
    }

    /// The messages at `positions`, in batch order.
    fn among(&self, positions: &[usize]) -> Vec<(usize, &ChunkMessage)> {
        self.messages
            .iter()
            .filter(|(i, _)| positions.contains(i))
            .map(|(i, m)| (*i, m))
            .collect()
    }
}

impl Fates {
    /// Marks message `i` (a worse fate wins: a failure is never downgraded to a wait).
    fn mark(&mut self, i: usize, fate: Fate) {
        self.0[i] = self.0[i].max(fate);
    }

    /// Marks each message at `positions`.
    fn mark_each(&mut self, positions: impl IntoIterator<Item = usize>, fate: Fate) {
        for i in positions {
            self.mark(i, fate);
        }
    }

    fn mark_all(&mut self, batch: &Batch, fate: Fate) {
        self.mark_each(batch.messages.iter().map(|(i, _)| *i), fate);
    }

    fn is_live(&self, i: usize) -> bool {
        self.0[i] == Fate::Done
    }
}

/// The id of the marker of `source`'s object.
fn marker_id(source: &SourceRef) -> String {
    source_marker_id(&source.bucket, &source.key)
}

/// The distinct ids among `ids`, sorted.
fn distinct(ids: impl Iterator<Item = String>) -> Vec<String> {
    ids.collect::<BTreeSet<_>>().into_iter().collect()
}

/// Handles one SQS batch. Messages are never failed wholesale: each one that did not fully land
/// is requeued or reported by id, so Lambda retries only those (and the DLQ collects the
/// poisonous ones).
pub async fn handle_batch<E: Embedder, I: SearchIndex, Q: ChunkQueue>(
    deps: &EmbedIndexDeps<E, I, Q>,
    event: SqsEvent,
    deadline: Deadline,
) -> Result<(SqsBatchResponse, BatchStats), IndexSetupError> {
    let (batch, mut fates) = Batch::parse(&event);
    let mut stats = BatchStats {
        messages: batch.ids.len() as u64,
        ..Default::default()
    };
    let works = apply(deps, &batch, &mut fates, deadline, &mut stats).await?;
    settle(&mut fates, &works, &mut stats);
    requeue_waiting(deps, &batch, &mut fates, &works, &mut stats).await;

    stats.messages_failed = fates.0.iter().filter(|f| **f == Fate::Fail).count() as u64;
    let mut response = SqsBatchResponse::default();
    for (i, fate) in fates.0.iter().enumerate() {
        if *fate == Fate::Fail {
            response.add_failure(batch.ids[i].clone());
        }
    }
    let pace = deps.pacer.report();
    stats::emit(&stats, &deps.config.model, pace);
    info!(?stats, concurrency = pace.concurrency, rate = ?pace.rate, token_rate = ?pace.token_rate, "batch finished");
    Ok((response, stats))
}

/// Steps 1 to 7; returns the chunks and how each ended.
async fn apply<'b, E: Embedder, I: SearchIndex, Q: ChunkQueue>(
    deps: &EmbedIndexDeps<E, I, Q>,
    batch: &'b Batch,
    fates: &mut Fates,
    deadline: Deadline,
    stats: &mut BatchStats,
) -> Result<Vec<ChunkWork<'b>>, IndexSetupError> {
    if !index_ready(deps, batch, fates).await? {
        return Ok(Vec::new());
    }
    let Some(stored) = look_up(deps, batch, fates).await else {
        return Ok(Vec::new());
    };
    let budget = (deadline, deps.config.es.timeout);
    let decisions = claim_markers(deps, batch, fates, stored.markers.clone(), budget).await;
    let mut works = chunk_works(deps, batch, fates, &decisions, stats);
    write_chunks(deps, &mut works, &stored.chunks, deadline, stats).await;
    let stale = stale_survivors(batch, &decisions, &stored);
    undo_overtaken(deps, fates, &works, stale, budget, stats).await;
    remove(deps, batch, fates, &decisions, budget, stats).await;
    Ok(works)
}

/// Step 1: the index exists with the model's dimensions (once per container). While the
/// cluster is unreachable the batch waits on the queue: a cold start in an outage is no failure.
async fn index_ready<E: Embedder, I: SearchIndex, Q: ChunkQueue>(
    deps: &EmbedIndexDeps<E, I, Q>,
    batch: &Batch,
    fates: &mut Fates,
) -> Result<bool, IndexSetupError> {
    let cfg = &deps.config;
    match deps
        .index_ready
        .get_or_try_init(|| deps.index.ensure_index(&cfg.model, &cfg.vectors))
        .await
    {
        Ok(()) => Ok(true),
        Err(e) if e.is_retryable() => {
            warn!(error = %e, "Elasticsearch unavailable at the index check: the batch waits on the queue");
            fates.mark_all(batch, Fate::Wait);
            Ok(false)
        }
        Err(source) => Err(IndexSetupError {
            index: deps.index.index_name().to_owned(),
            source,
        }),
    }
}

/// Step 2: one round trip for the markers of the batch's objects and the chunks it carries.
/// Without them nothing can be decided safely: the batch waits (or is retried).
async fn look_up<E: Embedder, I: SearchIndex, Q: ChunkQueue>(
    deps: &EmbedIndexDeps<E, I, Q>,
    batch: &Batch,
    fates: &mut Fates,
) -> Option<crate::es::Stored> {
    let marker_ids = distinct(batch.messages.iter().map(|(_, m)| marker_id(&m.source)));
    let chunk_ids = distinct(
        batch
            .messages
            .iter()
            .flat_map(|(_, m)| &m.chunks)
            .map(|c| chunk_id(&c.doc_id, c.chunk_index)),
    );
    match deps.index.lookup(&chunk_ids, &marker_ids).await {
        Ok(stored) => Some(stored),
        Err(e) => {
            let fate = Fate::of(&e);
            warn!(error = %e, ?fate, "could not read stored chunks and source markers");
            fates.mark_all(batch, fate);
            None
        }
    }
}

/// The invocation's deadline, and the longest one Elasticsearch request may take: a step starts
/// a request only when that much time is left, and otherwise lets its messages wait.
type Budget = (Deadline, Duration);

async fn lookup_in_time<I: SearchIndex>(
    index: &I,
    chunk_ids: &[String],
    marker_ids: &[String],
    (deadline, request_time): Budget,
) -> Result<crate::es::Stored, EsError> {
    if !deadline.allows(request_time) {
        return Err(EsError::Unreachable {
            url: String::new(),
            detail: "no time left in this invocation".into(),
            timeout: true,
        });
    }
    index.lookup(chunk_ids, marker_ids).await
}

/// How often a marker that lost a compare-and-set race is read and claimed again.
const CLAIM_ROUNDS: usize = 4;

/// Step 3: decide per object which messages apply, and move each object's marker to its newest
/// event with compare-and-set before anything of it is written.
async fn claim_markers<E: Embedder, I: SearchIndex, Q: ChunkQueue>(
    deps: &EmbedIndexDeps<E, I, Q>,
    batch: &Batch,
    fates: &mut Fates,
    mut markers: HashMap<String, StoredMarker>,
    budget: Budget,
) -> HashMap<usize, Decision> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let marker_index = deps.index.marker_index();
    let mut decisions = HashMap::new();
    let mut pending: Vec<usize> = batch
        .messages
        .iter()
        .map(|(i, _)| *i)
        .filter(|i| fates.is_live(*i))
        .collect();
    for _ in 0..CLAIM_ROUNDS {
        let order = ordering::order(&batch.among(&pending), &markers, &now);
        let sent = write_claims(deps, &marker_index, &order.claims, budget).await;
        let round = ClaimRound::read(&order.claims, sent, &mut markers);
        let again = round.settle(batch, order.decisions, fates, &mut decisions);
        if again.is_empty() {
            return decisions;
        }
        if let Err(e) = read_markers_again(&deps.index, &round.lost, &mut markers, budget).await {
            warn!(error = %e, "could not read markers again after a lost claim");
            fates.mark_each(again, Fate::Wait);
            return decisions;
        }
        pending = again;
    }
    for i in pending {
        warn!(message_id = %batch.ids[i], "marker still contended after several claims; the message will be retried");
        fates.mark(i, Fate::Fail);
    }
    decisions
}

/// How one round's marker claims ended, by marker id: lost to another writer (read and claimed
/// again), or making their objects' messages wait or fail.
struct ClaimRound {
    lost: Vec<String>,
    fate_of: HashMap<String, Fate>,
}

impl ClaimRound {
    /// Reads each claim's answer; a claim that was stored becomes its object's known marker.
    fn read(
        claims: &[Claim],
        sent: Vec<Sent>,
        markers: &mut HashMap<String, StoredMarker>,
    ) -> Self {
        let mut round = Self {
            lost: Vec::new(),
            fate_of: HashMap::new(),
        };
        for (claim, sent) in claims.iter().zip(sent) {
            match sent {
                Sent::Stored(Some(version)) => {
                    markers.insert(
                        claim.id.clone(),
                        StoredMarker {
                            marker: claim.marker.clone(),
                            version,
                        },
                    );
                }
                Sent::Stored(None) | Sent::Unavailable => {
                    round.fate_of.insert(claim.id.clone(), Fate::Wait);
                }
                Sent::Conflict => round.lost.push(claim.id.clone()),
                Sent::Rejected(reason) => {
                    error!(bucket = %claim.marker.bucket, key = %claim.marker.key, %reason, "marker write refused");
                    round.fate_of.insert(claim.id.clone(), Fate::Fail);
                }
            }
        }
        round
    }

    /// Settles each decided message by its object's claim: it keeps its decision, waits or
    /// fails with the claim, or (a lost claim) is returned to be decided again.
    fn settle(
        &self,
        batch: &Batch,
        decided: HashMap<usize, Decision>,
        fates: &mut Fates,
        decisions: &mut HashMap<usize, Decision>,
    ) -> Vec<usize> {
        let mut again = Vec::new();
        for (i, decision) in decided {
            let object = marker_id(&batch.message(i).source);
            if self.lost.contains(&object) {
                again.push(i);
            } else if let Some(fate) = self.fate_of.get(&object) {
                fates.mark(i, *fate);
            } else {
                decisions.insert(i, decision);
            }
        }
        again
    }
}

/// Reads the markers of the objects whose claim was lost again, in place of the ones known.
async fn read_markers_again<I: SearchIndex>(
    index: &I,
    lost: &[String],
    markers: &mut HashMap<String, StoredMarker>,
    budget: Budget,
) -> Result<(), EsError> {
    let found = lookup_in_time(index, &[], lost, budget).await?;
    for id in lost {
        markers.remove(id);
    }
    markers.extend(found.markers);
    Ok(())
}

async fn write_claims<E: Embedder, I: SearchIndex, Q: ChunkQueue>(
    deps: &EmbedIndexDeps<E, I, Q>,
    marker_index: &str,
    claims: &[Claim],
    budget: Budget,
) -> Vec<Sent> {
    if claims.is_empty() {
        return Vec::new();
    }
    let actions = numbered_actions(claims, |bytes, c| {
        push_index(bytes, marker_index, &c.id, c.expect, &c.marker);
    });
    let mut scratch = BatchStats::default();
    let mut results =
        send_with_retries(&deps.index, actions, usize::MAX, budget, &mut scratch).await;
    results.sort_by_key(|(a, _)| a.work);
    results.into_iter().map(|(_, sent)| sent).collect()
}

/// Step 4: the distinct chunks of the messages that apply. A chunk queued twice (duplicate S3
/// events) is written once, as the newest event among them.
fn chunk_works<'a, E: Embedder, I: SearchIndex, Q: ChunkQueue>(
    deps: &EmbedIndexDeps<E, I, Q>,
    batch: &'a Batch,
    fates: &Fates,
    decisions: &HashMap<usize, Decision>,
    stats: &mut BatchStats,
) -> Vec<ChunkWork<'a>> {
    let model = &deps.config.model;
    let mut works: Vec<ChunkWork> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for (i, message) in &batch.messages {
        if !fates.is_live(*i) {
            continue;
        }
        let Some(sequencer) = indexed_as(message, decisions.get(i), stats) else {
            continue;
        };
        for chunk in &message.chunks {
            let id = chunk_id(&chunk.doc_id, chunk.chunk_index);
            let carried = carried_vector(chunk, model);
            match by_id.get(&id) {
                Some(&w) => works[w].join(*i, message, chunk, sequencer, carried),
                None => {
                    by_id.insert(id.clone(), works.len());
                    let work = ChunkWork::first(id, *i, message, chunk, sequencer, carried);
                    works.push(work);
                }
            }
        }
    }
    stats.chunks = works.len() as u64;
    stats.reused = works.iter().filter(|w| w.vector.is_some()).count() as u64;
    works
}

/// The event an index message is written as, when its decision applies it; a superseded
/// message is logged and its chunks counted as superseded.
fn indexed_as<'d>(
    message: &ChunkMessage,
    decision: Option<&'d Decision>,
    stats: &mut BatchStats,
) -> Option<&'d str> {
    match decision {
        Some(Decision::Apply { sequencer }) if message.op == Operation::Index => {
            Some(sequencer.as_str())
        }
        Some(Decision::Superseded) => {
            info!(bucket = %message.source.bucket, key = %message.source.key, sequencer = ?message.source.sequencer, op = ?message.op, "older event for this object: skipped");
            stats.superseded += message.chunks.len() as u64;
            None
        }
        _ => None,
    }
}

/// The vector a chunk carries, decoded, when it is the model's.
fn carried_vector(chunk: &ChunkPayload, model: &EmbeddingModel) -> Option<Vec<f32>> {
    chunk
        .vector
        .as_ref()
        .filter(|c| c.model_id == model.id)
        .and_then(|c| c.decode(model.dimensions))
}

impl<'a> ChunkWork<'a> {
    /// The first copy of a chunk in the batch, carried by message `i` of event `sequencer`.
    fn first(
        id: String,
        i: usize,
        message: &'a ChunkMessage,
        chunk: &'a ChunkPayload,
        sequencer: &str,
        carried: Option<Vec<f32>>,
    ) -> Self {
        Self {
            id,
            sha: content_sha256(&chunk.text),
            chunk,
            source: &message.source,
            sequencer: sequencer.to_owned(),
            messages: vec![i],
            carried: carried.is_some(),
            vector: carried,
            outcome: Outcome::Pending,
        }
    }

    /// Another copy of the chunk, carried by message `i` of event `sequencer`: a newer event's
    /// copy is written instead; an older (or the same) event's fills in its vector when the
    /// text is the same and none is known yet.
    fn join(
        &mut self,
        i: usize,
        message: &'a ChunkMessage,
        chunk: &'a ChunkPayload,
        sequencer: &str,
        carried: Option<Vec<f32>>,
    ) {
        self.messages.push(i);
        if sequencer > self.sequencer.as_str() {
            self.chunk = chunk;
            self.source = &message.source;
            self.sha = content_sha256(&chunk.text);
            self.sequencer = sequencer.to_owned();
            self.carried = carried.is_some();
            self.vector = carried;
        } else if self.vector.is_none() && self.sha == content_sha256(&chunk.text) {
            self.carried = carried.is_some();
            self.vector = carried;
        }
    }
}

/// Step 5: embed what needs it, then write with compare-and-set. Embedding stops early enough
/// to leave the writes their time.
async fn write_chunks<E: Embedder, I: SearchIndex, Q: ChunkQueue>(
    deps: &EmbedIndexDeps<E, I, Q>,
    works: &mut [ChunkWork<'_>],
    stored: &HashMap<String, StoredChunk>,
    deadline: Deadline,
    stats: &mut BatchStats,
) {
    if works.is_empty() {
        return;
    }
    let cfg = &deps.config;
    let reserve = (cfg.es.timeout + Duration::from_secs(2)).min(deadline.remaining() / 3);
    let indexed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let writer = Writer {
        embedder: &deps.embedder,
        index: &deps.index,
        policy: crate::embed::EMBED_RETRIES,
        pacer: &deps.pacer,
        embed_deadline: Deadline::after(deadline.remaining().saturating_sub(reserve)),
        deadline,
        request_time: cfg.es.timeout,
        bulk_max_bytes: cfg.bulk_max_bytes,
        indexed_at: &indexed_at,
    };
    writer.write(works, stored, stats).await;
}

/// A chunk to delete if it is still at `version`, and the messages that wrote it.
type Undo = (Vec<usize>, String, crate::es::DocVersion);

/// Chunks superseded messages left behind that nothing else will remove.
fn stale_survivors(
    batch: &Batch,
    decisions: &HashMap<usize, Decision>,
    stored: &crate::es::Stored,
) -> Vec<Undo> {
    let mut undo = Vec::new();
    for (i, message) in &batch.messages {
        if decisions.get(i) != Some(&Decision::Superseded) || message.op != Operation::Index {
            continue;
        }
        let seq = message.source.sequencer.clone().unwrap_or_default();
        let marker = stored.markers.get(&marker_id(&message.source));
        // A deleted object keeps nothing of older events. A requeued message may be the replay
        // of an undo that failed: what it wrote, if still there, is stale too. (A fresh duplicate
        // of an old event is left alone: the newer version rewrites or sweeps those chunks, and
        // deleting them early would only make it embed them again.)
        if !marker
            .is_some_and(|m| m.marker.sequencer > seq && (m.marker.deleted || message.requeues > 0))
        {
            continue;
        }
        for chunk in &message.chunks {
            let id = chunk_id(&chunk.doc_id, chunk.chunk_index);
            if let Some(s) = stored.chunks.get(&id)
                && s.sequencer == seq
                && s.bucket == message.source.bucket
                && s.key == message.source.key
            {
                undo.push((vec![*i], id, s.version));
            }
        }
    }
    undo
}

/// Step 6: a writer that raced a newer event of its object can land after that event's sweep
/// or deletion looked. Reading the markers again after writing closes the race: if a newer
/// event has claimed the object since, what this batch wrote is deleted again (only if still
/// as written). Chunks a superseded message left behind for a deleted object (an earlier
/// attempt of this undo failed) are removed the same way.
async fn undo_overtaken<E: Embedder, I: SearchIndex, Q: ChunkQueue>(
    deps: &EmbedIndexDeps<E, I, Q>,
    fates: &mut Fates,
    works: &[ChunkWork<'_>],
    mut undo: Vec<Undo>,
    budget: Budget,
    stats: &mut BatchStats,
) {
    let written: Vec<&ChunkWork> = works
        .iter()
        .filter(|w| matches!(w.outcome, Outcome::Written { .. }))
        .collect();
    if !written.is_empty() {
        match overtaken(&deps.index, &written, budget).await {
            Ok(overtaken) => undo.extend(overtaken),
            Err(e) => {
                warn!(error = %e, "could not read markers again after writing; the batch's messages wait and are checked again");
                let messages = written.iter().flat_map(|w| w.messages.iter().copied());
                fates.mark_each(messages, Fate::Wait);
                return;
            }
        }
    }
    delete_unless_changed(&deps.index, fates, &undo, budget, stats).await;
}

/// Reads the markers of the written chunks' objects again; returns the writes a newer event of
/// their object has claimed it since.
async fn overtaken<I: SearchIndex>(
    index: &I,
    written: &[&ChunkWork<'_>],
    budget: Budget,
) -> Result<Vec<Undo>, EsError> {
    let ids = distinct(written.iter().map(|w| marker_id(w.source)));
    let markers = lookup_in_time(index, &[], &ids, budget).await?.markers;
    let mut undo = Vec::new();
    for w in written {
        let marker = markers.get(&marker_id(w.source));
        if let (
            Some(m),
            Outcome::Written {
                version: Some(v), ..
            },
        ) = (marker, &w.outcome)
            && m.marker.sequencer > w.sequencer
        {
            info!(bucket = %w.source.bucket, key = %w.source.key, sequencer = %w.sequencer, newer = %m.marker.sequencer, "a newer event overtook this write: undoing it");
            undo.push((w.messages.clone(), w.id.clone(), *v));
        }
    }
    Ok(undo)
}

/// Deletes each chunk to undo if it is still at the version written; one changed since belongs
/// to a newer writer. The messages of a chunk whose deletion did not land wait.
async fn delete_unless_changed<I: SearchIndex>(
    index: &I,
    fates: &mut Fates,
    undo: &[Undo],
    budget: Budget,
    stats: &mut BatchStats,
) {
    if undo.is_empty() {
        return;
    }
    let index_name = index.index_name();
    let actions = numbered_actions(undo, |bytes, (_, id, version)| {
        push_delete(bytes, index_name, id, *version);
    });
    for (action, sent) in send_with_retries(index, actions, usize::MAX, budget, stats).await {
        match sent {
            Sent::Stored(_) => stats.compensated += 1,
            // Changed since: a newer writer owns it now.
            Sent::Conflict => {}
            Sent::Rejected(_) | Sent::Unavailable => {
                fates.mark_each(undo[action.work].0.iter().copied(), Fate::Wait);
            }
        }
    }
}

/// Step 7: deletions and sweeps that apply. A refresh first, because `_delete_by_query` only
/// sees refreshed documents and a chunk written a moment ago must not escape it.
/// <https://www.elastic.co/guide/en/elasticsearch/reference/current/docs-delete-by-query.html>
async fn remove<E: Embedder, I: SearchIndex, Q: ChunkQueue>(
    deps: &EmbedIndexDeps<E, I, Q>,
    batch: &Batch,
    fates: &mut Fates,
    decisions: &HashMap<usize, Decision>,
    budget: Budget,
    stats: &mut BatchStats,
) {
    let removals = removals(batch, fates, decisions);
    if removals.is_empty() || !refresh_for(&deps.index, fates, &removals, budget).await {
        return;
    }
    let (deadline, request_time) = budget;
    for removal in removals {
        if !deadline.allows(request_time) {
            fates.mark(removal.message, Fate::Wait);
            continue;
        }
        let message = batch.message(removal.message);
        if !sweep_waits(&deps.index, message, &removal, fates, stats).await {
            remove_chunks(&deps.index, &message.source, &removal, fates, stats).await;
        }
    }
}

/// A deletion or sweep that applies: its message, the event it applies as, and whether that
/// event's own chunks go too (a deletion) or only older ones (a sweep).
struct Removal {
    message: usize,
    sequencer: String,
    inclusive: bool,
}

/// The deletions and sweeps among the live messages whose event applies.
fn removals(batch: &Batch, fates: &Fates, decisions: &HashMap<usize, Decision>) -> Vec<Removal> {
    batch
        .messages
        .iter()
        .filter(|(i, m)| fates.is_live(*i) && m.op != Operation::Index)
        .filter_map(|(i, m)| match decisions.get(i) {
            Some(Decision::Apply { sequencer }) => Some(Removal {
                message: *i,
                sequencer: sequencer.clone(),
                inclusive: m.op == Operation::Delete,
            }),
            _ => None,
        })
        .collect()
}

/// Refreshes the index so the removals see every chunk written; returns whether they go ahead.
/// Without time for a refresh and a removal they wait; when the refresh fails they wait (or
/// fail).
async fn refresh_for<I: SearchIndex>(
    index: &I,
    fates: &mut Fates,
    removals: &[Removal],
    (deadline, request_time): Budget,
) -> bool {
    let messages = removals.iter().map(|r| r.message);
    if !deadline.allows(request_time * 2) {
        fates.mark_each(messages, Fate::Wait);
        return false;
    }
    if let Err(e) = index.refresh().await {
        warn!(error = %e, "refresh before removing chunks failed; the removals wait");
        fates.mark_each(messages, Fate::of(&e));
        return false;
    }
    true
}

/// Whether a sweep waits because its version's chunks are not all indexed yet (at most
/// `SWEEP_WAITS` times), or because counting them failed; its message is marked when so.
async fn sweep_waits<I: SearchIndex>(
    index: &I,
    message: &ChunkMessage,
    removal: &Removal,
    fates: &mut Fates,
    stats: &mut BatchStats,
) -> bool {
    let Some(expected) = message.chunks_expected else {
        return false;
    };
    if removal.inclusive || message.requeues >= SWEEP_WAITS {
        return false;
    }
    let source = &message.source;
    match index.count_chunks(source, &removal.sequencer).await {
        Ok(n) if n < expected => {
            info!(bucket = %source.bucket, key = %source.key, indexed = n, expected, "sweep before its version is indexed: it waits");
            stats.sweeps_waiting += 1;
            fates.mark(removal.message, Fate::Wait);
            true
        }
        Ok(_) => false,
        Err(e) => {
            warn!(bucket = %source.bucket, key = %source.key, error = %e, "counting the version's chunks failed");
            fates.mark(removal.message, Fate::of(&e));
            true
        }
    }
}

/// Deletes the object's chunks older than the removal's event (a sweep), or up to and including
/// it (a deletion); when that fails the message waits (or fails).
async fn remove_chunks<I: SearchIndex>(
    index: &I,
    source: &SourceRef,
    removal: &Removal,
    fates: &mut Fates,
    stats: &mut BatchStats,
) {
    let (sequencer, inclusive) = (&removal.sequencer, removal.inclusive);
    match index.delete_chunks(source, sequencer, inclusive).await {
        Ok(n) => {
            stats.deleted += n;
            info!(bucket = %source.bucket, key = %source.key, deleted = n, op = if inclusive { "delete" } else { "sweep" }, "removed chunks");
        }
        Err(e) => {
            warn!(bucket = %source.bucket, key = %source.key, error = %e, "removing chunks failed");
            fates.mark(removal.message, Fate::of(&e));
        }
    }
}

/// How many times a sweep waits for its version's chunks before it runs anyway (a chunk that
/// Elasticsearch rejected, or a record id two objects share, never arrives): with the default
/// delays about half an hour.
const SWEEP_WAITS: u32 = 5;

/// Step 8: each message's fate from its chunks: a chunk that failed for good fails its message;
/// one that waits for Elasticsearch makes its message wait.
fn settle(fates: &mut Fates, works: &[ChunkWork<'_>], stats: &mut BatchStats) {
    for work in works {
        match &work.outcome {
            Outcome::Written { .. } => stats.indexed += 1,
            Outcome::Failed { reason, .. } => {
                stats.failures.add(*reason);
                if matches!(
                    reason,
                    FailureReason::EsRejected | FailureReason::EsUnavailable
                ) {
                    stats.failed_indexing += 1;
                }
                // Work that only needs time (Elasticsearch back, Bedrock's quota free, a fresh
                // invocation) waits on the queue; it does not count toward the DLQ.
                let fate = if reason.waits() {
                    Fate::Wait
                } else {
                    Fate::Fail
                };
                for &i in &work.messages {
                    fates.mark(i, fate);
                }
            }
            Outcome::Pending | Outcome::Superseded => {}
        }
    }
    stats.reused = works
        .iter()
        .filter(|w| w.carried && matches!(w.outcome, Outcome::Written { embedded: true, .. }))
        .count() as u64;
}

/// Step 9: messages that wait for Elasticsearch go back on the queue with what they still need
/// (their unfinished chunks, with every vector already paid for), delayed.
async fn requeue_waiting<E: Embedder, I: SearchIndex, Q: ChunkQueue>(
    deps: &EmbedIndexDeps<E, I, Q>,
    batch: &Batch,
    fates: &mut Fates,
    works: &[ChunkWork<'_>],
    stats: &mut BatchStats,
) {
    let by_id: HashMap<&str, &ChunkWork> = works.iter().map(|w| (w.id.as_str(), w)).collect();
    let model_id = &deps.config.model.id;
    for (i, message) in &batch.messages {
        let i = *i;
        if fates.0[i] != Fate::Wait {
            continue;
        }
        let Some(queue) = &deps.requeue else {
            fates.0[i] = Fate::Fail;
            continue;
        };
        let mut carry: Vec<ChunkPayload> = Vec::new();
        for chunk in &message.chunks {
            let work = by_id.get(chunk_id(&chunk.doc_id, chunk.chunk_index).as_str());
            if work
                .is_some_and(|w| matches!(w.outcome, Outcome::Written { .. } | Outcome::Superseded))
            {
                continue;
            }
            let vector = work
                .filter(|w| w.sha == content_sha256(&chunk.text))
                .and_then(|w| w.vector.as_deref())
                .map(|v| CarriedVector::new(model_id, v))
                .or_else(|| chunk.vector.clone());
            carry.push(ChunkPayload {
                vector,
                ..chunk.clone()
            });
        }
        if carry.is_empty() {
            carry = message.chunks.clone();
        }
        match requeue::requeue(queue, message, carry, &deps.config).await {
            Ok(chunks) => {
                stats.requeued += chunks;
                stats.messages_requeued += 1;
                fates.0[i] = Fate::Done;
                warn!(message_id = %batch.ids[i], chunks, requeues = message.requeues + 1, delay_secs = requeue::delay_secs(&deps.config, message.requeues + 1), "Elasticsearch unavailable: the work waits on the queue");
            }
            Err(e) => {
                error!(message_id = %batch.ids[i], error = %e, "could not put the work back on the queue; the message will be retried");
                fates.0[i] = Fate::Fail;
            }
        }
    }
}
