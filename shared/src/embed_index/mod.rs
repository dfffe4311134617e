//! The `embed-index` handler: a batch of chunk messages in; per object only its newest S3 event
//! applied, chunks embedded (unless unchanged or carried) and written with compare-and-set,
//! deletions and sweeps applied, and every message that did not land either put back on the
//! queue (out of time, Bedrock throttled, Elasticsearch unavailable, a sweep ahead of its
//! chunks: the cause is logged) or named in the partial batch response.
//!
//! `handle_batch` reads top to bottom as its steps: parse → hand back what the pace cannot embed
//! before the deadline (once a quota paces the container) → make sure the index exists → look up
//! what is stored → claim each object's marker → write chunks → check the markers again and
//! undo what a newer event overtook → remove → requeue what waits (for as long as its cause
//! needs: the pace, a fresh invocation, the cluster's schedule) → answer.

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
use crate::ids::{content_sha256, source_marker_id};
use crate::message::{CarriedVector, ChunkMessage, ChunkPayload, Operation, SourceRef};
use crate::queue::ChunkQueue;
use crate::retry::Deadline;

pub use index::SearchIndex;
pub use ordering::Decision;
pub use requeue::delay_secs as requeue_delay_secs;
pub use stats::{BatchStats, FailureReason, Failures, WaitCause, Waits};

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
    /// The function's time is compared with the configuration on the first invocation only.
    time_checked: std::sync::Once,
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
            time_checked: std::sync::Once::new(),
        }
    }

    /// On the container's first invocation, compares the function's time (its invocation's
    /// deadline, read at the start) with `ES_TIMEOUT_SECS` by the rule of
    /// [`EmbedIndexConfig::least_function_timeout`], and logs an error naming both settings when
    /// it cannot hold a batch: without `FUNCTION_TIMEOUT_SECS` this is where a short function
    /// shows. The batch still runs, doing what fits. Returns the problem, the first time only.
    pub fn check_function_time(&self, function_time: Duration) -> Option<String> {
        let mut found = None;
        self.time_checked.call_once(|| {
            // The invocation started a moment before the handler read its deadline.
            let timeout = Duration::from_secs(function_time.as_millis().div_ceil(1000) as u64);
            let setting = format!(
                "the function's timeout (about {} s by this invocation's deadline; FUNCTION_TIMEOUT_SECS / the template's Timeout)",
                timeout.as_secs()
            );
            found = EmbedIndexConfig::time_problem(timeout, self.config.es.timeout, &setting);
            if let Some(problem) = &found {
                error!(es_timeout_secs = self.config.es.timeout.as_secs(), function_timeout_secs = timeout.as_secs(), "{problem}");
            }
        });
        found
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
    /// Back on the queue, delayed: it needs time (a fresh invocation, Bedrock's quota,
    /// Elasticsearch, its own chunks), the cause kept beside it ([`Fates::wait`]).
    Wait,
    /// Reported in the partial batch response: SQS retries it, then dead-letters it.
    Fail,
}

/// The batch's messages, parsed once; read by every step.
struct Batch {
    ids: Vec<String>,
    messages: Vec<(usize, ChunkMessage)>,
}

/// Each message's fate so far, by position in the batch, and why a waiting one waits.
/// Each message's fate, what it waits for, and (a waiting sweep) the chunks it found indexed.
struct Fates(Vec<Fate>, Vec<Option<WaitCause>>, Vec<Option<u64>>);

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
        let causes = vec![None; fates.len()];
        let seen = vec![None; fates.len()];
        (Self { ids, messages }, Fates(fates, causes, seen))
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

    /// Makes message `i` wait for `cause`, unless it fails already; the first cause stays.
    fn wait(&mut self, i: usize, cause: WaitCause) {
        self.mark(i, Fate::Wait);
        if self.0[i] == Fate::Wait {
            self.1[i].get_or_insert(cause);
        }
    }

    fn wait_each(&mut self, positions: impl IntoIterator<Item = usize>, cause: WaitCause) {
        for i in positions {
            self.wait(i, cause);
        }
    }

    /// Marks each message at `positions` as an Elasticsearch error has it: a retryable one makes
    /// them wait (out of time, or for the cluster), any other fails them.
    fn mark_error(&mut self, positions: impl IntoIterator<Item = usize>, e: &EsError) {
        for i in positions {
            if e.is_retryable() {
                self.wait(i, WaitCause::of_es(e));
            } else {
                self.mark(i, Fate::Fail);
            }
        }
    }

    fn all(batch: &Batch) -> impl Iterator<Item = usize> + '_ {
        batch.messages.iter().map(|(i, _)| *i)
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
    let (response, stats, _) = handle_batch_finished(deps, &event, deadline).await?;
    Ok((response, stats))
}

/// [`handle_batch`], and the ids of the messages it finished here: neither failed nor put back
/// on the queue (handed back, or waiting) — the ones a second index may be written from.
pub async fn handle_batch_finished<E: Embedder, I: SearchIndex, Q: ChunkQueue>(
    deps: &EmbedIndexDeps<E, I, Q>,
    event: &SqsEvent,
    deadline: Deadline,
) -> Result<(SqsBatchResponse, BatchStats, Vec<String>), IndexSetupError> {
    let (mut batch, mut fates) = Batch::parse(event);
    let stale_before = deps.index.stale_connections();
    let mut stats = BatchStats {
        messages: batch.ids.len() as u64,
        ..Default::default()
    };
    hand_back_beyond_pace(deps, &mut batch, deadline, &mut stats).await;
    // Every Elasticsearch request of the batch ends before the deadline, shorter near it.
    let work = apply(deps, &batch, &mut fates, deadline, &mut stats);
    let works = crate::es::within_deadline(deadline, work).await?;
    settle(&mut fates, &works, &mut stats);
    requeue_waiting(deps, &batch, &mut fates, &works, &mut stats).await;

    stats.messages_failed = fates.0.iter().filter(|f| **f == Fate::Fail).count() as u64;
    stats.stale_connections = deps.index.stale_connections() - stale_before;
    let mut response = SqsBatchResponse::default();
    for (i, fate) in fates.0.iter().enumerate() {
        if *fate == Fate::Fail {
            response.add_failure(batch.ids[i].clone());
        }
    }
    // Done without a wait (a wait's cause stays recorded once it is requeued), and still in
    // the batch (not handed back unopened).
    let finished = batch
        .messages
        .iter()
        .filter(|(i, _)| fates.0[*i] == Fate::Done && fates.1[*i].is_none())
        .map(|(i, _)| batch.ids[*i].clone())
        .collect();
    let pace = deps.pacer.report();
    stats::emit(&stats, &deps.config.model, pace);
    info!(?stats, concurrency = pace.concurrency, rate = ?pace.rate, token_rate = ?pace.token_rate, "batch finished");
    Ok((response, stats, finished))
}

/// A batch while the alias's index migrates to another model (`es::migration`): written to the
/// current index by `current`, then, of the messages it finished, to the new index by `target`
/// (the new model's embedder and index, nothing requeued: what it cannot finish fails, and SQS
/// brings the message back to both, the current index finding it unchanged). A message is done
/// only when both indices hold it. The current index has the first half of the time.
pub async fn handle_migrating_batch<E: Embedder, I: SearchIndex, Q: ChunkQueue>(
    current: &EmbedIndexDeps<E, I, Q>,
    target: &EmbedIndexDeps<E, I, Q>,
    event: SqsEvent,
    deadline: Deadline,
) -> Result<(SqsBatchResponse, BatchStats), IndexSetupError> {
    let first = Deadline::after(deadline.remaining() / 2);
    let (mut response, stats, finished) = handle_batch_finished(current, &event, first).await?;
    let mut second = event;
    second.records.retain(|r| {
        r.message_id
            .as_ref()
            .is_some_and(|id| finished.contains(id))
    });
    match handle_batch_finished(target, &second, deadline).await {
        Ok((target_response, _, _)) => {
            response
                .batch_item_failures
                .extend(target_response.batch_item_failures);
        }
        Err(e) => {
            // The new index cannot be written (its setup failed): every message waits for it.
            warn!(error = %e, "the migration's new index could not be written; the batch is retried");
            for id in finished {
                response.add_failure(id);
            }
        }
    }
    Ok((response, stats))
}

/// How long a batch may embed: the deadline less what its writes need after (the cluster's
/// timeout and a margin, at most a third of the time).
fn embed_time(cfg: &EmbedIndexConfig, deadline: Deadline) -> Duration {
    let reserve = (cfg.es.timeout + Duration::from_secs(2)).min(deadline.remaining() / 3);
    deadline.remaining().saturating_sub(reserve)
}

/// The most of its pace's work a container keeps from one batch: at a quota's share a batch of
/// ten messages can be a minute or more, and the last batches of a backfill would then keep one
/// or two containers busy while the others, done, leave their share of the quota unused.
/// Holding this much at most, the containers finish within about this long of one another.
const HOLD_AT_MOST: Duration = Duration::from_secs(20);

/// Step 0: once this container's pace is known (a quota has throttled it, or `BEDROCK_TPM`),
/// the messages it could not embed before the deadline, or within [`HOLD_AT_MOST`], go back on
/// the queue at once, unopened, for a container with room to take now, rather than waiting out
/// this invocation first. The first message that needs embedding always stays, so every batch
/// moves forward. Order across containers is the markers' business, as for any two messages.
async fn hand_back_beyond_pace<E: Embedder, I: SearchIndex, Q: ChunkQueue>(
    deps: &EmbedIndexDeps<E, I, Q>,
    batch: &mut Batch,
    deadline: Deadline,
    stats: &mut BatchStats,
) {
    let Some(queue) = &deps.requeue else {
        return;
    };
    let beyond = beyond_pace(
        &deps.pacer,
        &deps.config.model,
        batch,
        embed_time(&deps.config, deadline).min(HOLD_AT_MOST),
    );
    if beyond.is_empty() {
        return;
    }
    let mut kept = Vec::new();
    for (i, message) in std::mem::take(&mut batch.messages) {
        if !beyond.contains(&i) {
            kept.push((i, message));
            continue;
        }
        // Unopened, and moving only to a container with room: no hop toward MAX_REQUEUES.
        let ret = requeue::Return::after(Duration::ZERO, true);
        match requeue::requeue(queue, &message, message.chunks.clone(), &deps.config, ret).await {
            Ok(_) => {
                stats.handed_back += 1;
                info!(message_id = %batch.ids[i], chunks = message.chunks.len(), "beyond what the pace embeds in the time a container holds work: handed back for another container");
            }
            // Kept: this invocation does what it can of it.
            Err(e) => {
                warn!(message_id = %batch.ids[i], error = %e, "could not hand the message back; it stays in this batch");
                kept.push((i, message));
            }
        }
    }
    batch.messages = kept;
}

/// The positions of the messages past what `pacer` can embed in `time`, in batch order (none
/// while it paces nothing). Texts that carry their vector cost nothing.
fn beyond_pace(
    pacer: &crate::embed::Pacer,
    model: &EmbeddingModel,
    batch: &Batch,
    time: Duration,
) -> Vec<usize> {
    let (mut chars, mut calls, mut kept_one) = (0, 0, false);
    let mut beyond = Vec::new();
    for (i, message) in &batch.messages {
        let texts: Vec<&str> = message
            .chunks
            .iter()
            .filter(|c| c.vector.is_none())
            .map(|c| c.text.as_str())
            .collect();
        if texts.is_empty() {
            continue;
        }
        chars += texts.iter().map(|t| t.len()).sum::<usize>();
        calls += texts
            .len()
            .div_ceil(pacer.texts_per_call(model.max_batch(), &texts));
        let Some(needs) = pacer.time_for(chars, calls) else {
            return Vec::new();
        };
        if kept_one && (needs > time || !beyond.is_empty()) {
            beyond.push(*i);
        }
        kept_one = true;
    }
    beyond
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
    let budget = (deadline, deps.config.es.timeout);
    let Some(stored) = look_up(deps, batch, fates, budget).await else {
        return Ok(Vec::new());
    };
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
            let cause = WaitCause::of_es(&e);
            warn!(error = %e, cause = cause.label(), "{} at the index check: the batch waits on the queue", cause.describe());
            fates.wait_each(Fates::all(batch), cause);
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
    budget: Budget,
) -> Option<crate::es::Stored> {
    let marker_ids = distinct(batch.messages.iter().map(|(_, m)| marker_id(&m.source)));
    // Each chunk, and per document its first chunk (which tells whether a later read holds the
    // document) and the one past its end (where the tail of a longer, older cut starts).
    let chunk_ids = distinct(batch.messages.iter().flat_map(|(_, m)| {
        m.chunks.iter().flat_map(move |c| {
            [c.chunk_index, 0, c.chunk_count]
                .into_iter()
                .flat_map(move |i| m.candidate_ids(&c.doc_id, i))
        })
    }));
    match lookup_in_time(&deps.index, &chunk_ids, &marker_ids, budget).await {
        Ok(stored) => Some(stored),
        Err(e) => {
            warn!(error = %e, retryable = e.is_retryable(), "could not read stored chunks and source markers");
            fates.mark_error(Fates::all(batch), &e);
            None
        }
    }
}

/// The invocation's deadline, and the longest one Elasticsearch request may take
/// (`ES_TIMEOUT_SECS`). A step starts a request while the least useful time for it is left
/// ([`Deadline::request_timeout`]: the request is then shorter, ending a margin before the
/// deadline, as [`crate::es::within_deadline`] makes the client do), and otherwise lets its
/// messages wait, out of time.
type Budget = (Deadline, Duration);

/// The error of a request that was not sent for lack of time.
fn out_of_time(what: &str, deadline: Deadline) -> EsError {
    EsError::OutOfTime {
        what: what.to_owned(),
        detail: format!(
            "{} ms left in this invocation: not sent",
            deadline.remaining().as_millis()
        ),
    }
}

async fn lookup_in_time<I: SearchIndex>(
    index: &I,
    chunk_ids: &[String],
    marker_ids: &[String],
    (deadline, request_time): Budget,
) -> Result<crate::es::Stored, EsError> {
    if deadline.request_timeout(request_time).is_none() {
        return Err(out_of_time("_mget", deadline));
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
            fates.wait_each(again, WaitCause::of_es(&e));
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
    /// Why the objects whose messages wait do.
    wait_for: HashMap<String, WaitCause>,
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
            wait_for: HashMap::new(),
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
                    round
                        .wait_for
                        .insert(claim.id.clone(), WaitCause::EsUnavailable);
                }
                Sent::OutOfTime => {
                    round.fate_of.insert(claim.id.clone(), Fate::Wait);
                    round
                        .wait_for
                        .insert(claim.id.clone(), WaitCause::OutOfTime);
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
            } else if let Some(cause) = self.wait_for.get(&object) {
                fates.wait(i, *cause);
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
    // By object-scoped id: a chunk of one object queued twice is one write, while the same
    // bucket-wide record id in two objects is two (their sequencers cannot be compared).
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for (i, message) in &batch.messages {
        if !fates.is_live(*i) {
            continue;
        }
        let Some(sequencer) = indexed_as(message, decisions.get(i), stats) else {
            continue;
        };
        for chunk in &message.chunks {
            let object_id = message.object_chunk_id(chunk);
            let carried = carried_vector(chunk, model);
            match by_id.get(&object_id) {
                Some(&w) => works[w].join(*i, message, chunk, sequencer, carried),
                None => {
                    by_id.insert(object_id, works.len());
                    let work = ChunkWork::first(*i, message, chunk, sequencer, carried);
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
        i: usize,
        message: &'a ChunkMessage,
        chunk: &'a ChunkPayload,
        sequencer: &str,
        carried: Option<Vec<f32>>,
    ) -> Self {
        Self {
            id: message.chunk_id(chunk),
            object_id: message.object_chunk_id(chunk),
            sha: content_sha256(&chunk.text),
            chunk,
            message,
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
        let theirs = writes::Writing::of(&message.source, sequencer);
        if theirs.is_newer_than(&writes::Writing::of(self.source, &self.sequencer)) {
            self.chunk = chunk;
            self.message = message;
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
    let indexed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let writer = Writer {
        embedder: &deps.embedder,
        index: &deps.index,
        policy: crate::embed::EMBED_RETRIES,
        pacer: &deps.pacer,
        embed_deadline: Deadline::after(embed_time(cfg, deadline)),
        hold: HOLD_AT_MOST,
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
        let Some(marker) = stored.markers.get(&marker_id(&message.source)) else {
            continue;
        };
        for chunk in &message.chunks {
            for id in message.candidate_ids(&chunk.doc_id, chunk.chunk_index) {
                if let Some(s) = stored.chunks.get(&id)
                    && s.bucket == message.source.bucket
                    && s.key == message.source.key
                    && written_by(message, &s.sequencer)
                    && left_behind(message, &s.sequencer, marker)
                {
                    undo.push((vec![*i], id, s.version));
                }
            }
        }
    }
    undo
}

/// Whether a chunk stored as `applied` was written by `message`'s event.
fn written_by(message: &ChunkMessage, applied: &str) -> bool {
    applied == message.source.sequencer.as_deref().unwrap_or_default()
}

/// Whether a chunk a superseded message wrote as `applied` is left behind for good. A deleted
/// object keeps nothing of older events; after a newer event's sweep ran, nothing else removes
/// it (its writer's container crashed before checking the marker again). A requeued message
/// may be the replay of an undo that failed: what it wrote, if still there, is stale too. (A
/// fresh duplicate of an old event is otherwise left alone: the newer version rewrites or
/// sweeps those chunks, and deleting them early would only make it embed them again.) A newer
/// event of the same content (eTag) keeps it: of one content, the latest read holds the object.
fn left_behind(message: &ChunkMessage, applied: &str, marker: &StoredMarker) -> bool {
    let m = &marker.marker;
    m.sequencer.as_str() > applied
        && m.etag != message.source.etag
        && (m.deleted || m.swept || message.requeues > 0)
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
                fates.wait_each(messages, WaitCause::of_es(&e));
                return;
            }
        }
    }
    delete_unless_changed(&deps.index, fates, &undo, budget, stats).await;
}

/// Reads the markers of the written chunks' objects again; returns the writes a newer event of
/// their object has claimed it since (of another content: a newer event of the same content
/// keeps them, as its sweep does).
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
            && m.marker.etag != w.source.etag
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
                let messages = undo[action.work].0.iter().copied();
                fates.wait_each(messages, WaitCause::EsUnavailable);
            }
            Sent::OutOfTime => {
                let messages = undo[action.work].0.iter().copied();
                fates.wait_each(messages, WaitCause::OutOfTime);
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
    let waits = SWEEP_WAITS.min(deps.config.max_requeues);
    let removals = removals(batch, fates, decisions);
    if removals.is_empty() || !refresh_for(&deps.index, fates, &removals, budget).await {
        return;
    }
    let (deadline, request_time) = budget;
    for removal in removals {
        if deadline.request_timeout(request_time).is_none() {
            fates.wait(removal.message, WaitCause::OutOfTime);
            continue;
        }
        let message = batch.message(removal.message);
        if !sweep_waits(&deps.index, message, &removal, waits, fates, stats).await {
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
/// Without the least useful time for a refresh and a removal they wait, out of time (each
/// request is shorter near the deadline, not refused for lacking `ES_TIMEOUT_SECS` twice); when
/// the refresh fails they wait (or fail).
async fn refresh_for<I: SearchIndex>(
    index: &I,
    fates: &mut Fates,
    removals: &[Removal],
    (deadline, request_time): Budget,
) -> bool {
    let messages = removals.iter().map(|r| r.message);
    if !deadline.fits_requests(2, request_time) {
        fates.wait_each(messages, WaitCause::OutOfTime);
        return false;
    }
    if let Err(e) = index.refresh().await {
        warn!(error = %e, "refresh before removing chunks failed; the removals wait");
        fates.mark_error(messages, &e);
        return false;
    }
    true
}

/// Whether a sweep waits because its version's chunks are not all indexed yet (at most `waits`
/// times: `SWEEP_WAITS`, fewer when `MAX_REQUEUES` allows fewer requeues, so a waiting sweep
/// never goes to the dead-letter queue), or because counting them failed; its message is
/// marked when so.
async fn sweep_waits<I: SearchIndex>(
    index: &I,
    message: &ChunkMessage,
    removal: &Removal,
    waits: u32,
    fates: &mut Fates,
    stats: &mut BatchStats,
) -> bool {
    let Some(expected) = message.chunks_expected else {
        return false;
    };
    if removal.inclusive || message.requeues >= waits {
        return false;
    }
    let source = &message.source;
    match index.count_chunks(source, &removal.sequencer).await {
        Ok(n) if n < expected => {
            info!(bucket = %source.bucket, key = %source.key, indexed = n, expected, "sweep before its version is indexed: it waits");
            stats.sweeps_waiting += 1;
            fates.wait(removal.message, WaitCause::SweepWaiting);
            fates.2[removal.message] = Some(n);
            true
        }
        Ok(_) => false,
        Err(e) => {
            warn!(bucket = %source.bucket, key = %source.key, error = %e, "counting the version's chunks failed");
            fates.mark_error([removal.message], &e);
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
            if !inclusive {
                mark_swept(index, source, sequencer).await;
            }
        }
        Err(e) => {
            warn!(bucket = %source.bucket, key = %source.key, error = %e, "removing chunks failed");
            fates.mark_error([removal.message], &e);
        }
    }
}

/// Records on the object's marker that its event's sweep ran, if the marker is still that
/// event's: from then on nothing else removes an older writer's chunk, so a superseded message
/// that finds one it wrote (its container crashed before checking the marker again) removes
/// it itself. Best effort: without the mark such a chunk waits for the object's next version.
async fn mark_swept<I: SearchIndex>(index: &I, source: &SourceRef, sequencer: &str) {
    let id = marker_id(source);
    let marker = match index.lookup(&[], std::slice::from_ref(&id)).await {
        Ok(mut stored) => stored.markers.remove(&id),
        Err(e) => {
            warn!(bucket = %source.bucket, key = %source.key, error = %e, "could not read the marker to record its sweep");
            return;
        }
    };
    let Some(StoredMarker {
        mut marker,
        version,
    }) = marker
    else {
        return;
    };
    if marker.sequencer != sequencer || marker.swept {
        return;
    }
    marker.swept = true;
    let mut body = Vec::new();
    push_index(
        &mut body,
        &index.marker_index(),
        &id,
        crate::es::Expect::Version(version),
        &marker,
    );
    // A conflict means a newer event claimed the marker: its own sweep will be recorded.
    if let Err(e) = index.bulk(body, 1).await {
        warn!(bucket = %source.bucket, key = %source.key, error = %e, "could not record the sweep on the marker");
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
                for &i in &work.messages {
                    if reason.waits() {
                        fates.wait(i, WaitCause::of_failure(*reason));
                    } else {
                        fates.mark(i, Fate::Fail);
                    }
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

/// A message that fails (one of its chunks can never land: SQS retries it, then dead-letters
/// it) may also hold chunks that only waited and whose vectors this invocation paid for: those
/// go back on the queue with their vectors, so the retry, or the dead-letter queue, does not
/// throw them away. The retry then finds them written and embeds none of them again.
async fn keep_paid_vectors<E: Embedder, I: SearchIndex, Q: ChunkQueue>(
    deps: &EmbedIndexDeps<E, I, Q>,
    batch: &Batch,
    i: usize,
    message: &ChunkMessage,
    by_id: &HashMap<&str, &ChunkWork<'_>>,
    stats: &mut BatchStats,
) {
    let Some(queue) = &deps.requeue else {
        return;
    };
    let model_id = &deps.config.model.id;
    let paid: Vec<ChunkPayload> = message
        .chunks
        .iter()
        .filter_map(|chunk| {
            let work = by_id.get(message.object_chunk_id(chunk).as_str())?;
            let waits = match &work.outcome {
                Outcome::Failed { reason, .. } => reason.waits(),
                Outcome::Pending => true,
                Outcome::Written { .. } | Outcome::Superseded => false,
            };
            let vector = work.vector.as_deref().filter(|_| waits && !work.carried)?;
            (work.sha == content_sha256(&chunk.text)).then(|| ChunkPayload {
                vector: Some(CarriedVector::new(model_id, vector)),
                ..chunk.clone()
            })
        })
        .collect();
    if paid.is_empty() {
        return;
    }
    let ret = requeue::Return::scheduled(&deps.config, message);
    match requeue::requeue(queue, message, paid, &deps.config, ret).await {
        Ok(chunks) => {
            stats.requeued += chunks;
            stats.messages_requeued += 1;
            info!(message_id = %batch.ids[i], chunks, "the message fails; its embedded chunks wait on the queue with their vectors");
        }
        Err(e) => {
            warn!(message_id = %batch.ids[i], error = %e, "could not keep the embedded chunks of a failing message");
        }
    }
}

/// What of `message` goes back on the queue: its chunks not written yet, each with the vector
/// this invocation paid for or the one it carried (all of them, for a message without chunks).
fn unfinished(
    message: &ChunkMessage,
    by_id: &HashMap<&str, &ChunkWork<'_>>,
    model_id: &str,
) -> Vec<ChunkPayload> {
    let mut carry: Vec<ChunkPayload> = Vec::new();
    for chunk in &message.chunks {
        let work = by_id.get(message.object_chunk_id(chunk).as_str());
        if work.is_some_and(|w| matches!(w.outcome, Outcome::Written { .. } | Outcome::Superseded))
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
    carry
}

/// How long `message`, going back with `carry`, waits for `cause`, and whether the return
/// counts toward `MAX_REQUEUES` ([`requeue::Return`]); a waiting sweep that found `seen` chunks
/// of its version indexed.
fn return_for<E: Embedder, I: SearchIndex, Q: ChunkQueue>(
    deps: &EmbedIndexDeps<E, I, Q>,
    cause: WaitCause,
    message: &ChunkMessage,
    carry: &[ChunkPayload],
    seen: Option<u64>,
) -> requeue::Return {
    let paid = |chunks: &[ChunkPayload]| chunks.iter().filter(|c| c.vector.is_some()).count();
    let progressed = carry.len() < message.chunks.len() || paid(carry) > paid(&message.chunks);
    match cause {
        WaitCause::Throttled => requeue::Return::after(deps.pacer.capacity_in(), progressed),
        // Held as long as a container holds work: another takes the rest at once. Not a wait
        // that counts: the work is only moving to a container with room.
        WaitCause::Held => requeue::Return::after(Duration::ZERO, true),
        // Out of time with the work moving: the next invocation goes on at once. Without
        // progress the time went to a slow cluster, whose schedule it follows.
        WaitCause::OutOfTime if progressed => requeue::Return::after(Duration::ZERO, true),
        // A sweep whose chunks are arriving (more indexed than at its last look) looks again
        // after the first delay, without counting a wait: its chunks are moving, not lost.
        WaitCause::SweepWaiting
            if seen.is_some_and(|n| message.indexed_seen.is_some_and(|before| n > before)) =>
        {
            let first = Duration::from_secs(requeue::delay_secs(&deps.config, 1) as u64);
            requeue::Return::after(first, true)
        }
        WaitCause::OutOfTime | WaitCause::EsUnavailable | WaitCause::SweepWaiting => {
            requeue::Return::scheduled(&deps.config, message)
        }
    }
}

/// Step 9: messages that wait (for time, Bedrock, Elasticsearch, their chunks) go back on the
/// queue with what they still need (their unfinished chunks, with every vector already paid
/// for), delayed; the log names the cause.
async fn requeue_waiting<E: Embedder, I: SearchIndex, Q: ChunkQueue>(
    deps: &EmbedIndexDeps<E, I, Q>,
    batch: &Batch,
    fates: &mut Fates,
    works: &[ChunkWork<'_>],
    stats: &mut BatchStats,
) {
    let by_id: HashMap<&str, &ChunkWork> =
        works.iter().map(|w| (w.object_id.as_str(), w)).collect();
    let model_id = &deps.config.model.id;
    for (i, message) in &batch.messages {
        let i = *i;
        if fates.0[i] == Fate::Fail {
            keep_paid_vectors(deps, batch, i, message, &by_id, stats).await;
        }
        if fates.0[i] != Fate::Wait {
            continue;
        }
        let Some(queue) = &deps.requeue else {
            fates.0[i] = Fate::Fail;
            continue;
        };
        let carry = unfinished(message, &by_id, model_id);
        // Every wait records its cause; one marked without (none today) is the cluster's.
        let cause = match fates.1[i].unwrap_or(WaitCause::EsUnavailable) {
            // Out of time before the deadline: the embedding stopped at the hold.
            WaitCause::OutOfTime if stats.held_back > 0 => WaitCause::Held,
            cause => cause,
        };
        let seen = fates.2[i];
        let ret = return_for(deps, cause, message, &carry, seen);
        let looked;
        let message = match seen {
            Some(n) => {
                looked = ChunkMessage {
                    indexed_seen: Some(n),
                    ..message.clone()
                };
                &looked
            }
            None => message,
        };
        match requeue::requeue(queue, message, carry, &deps.config, ret).await {
            Ok(chunks) => {
                stats.requeued += chunks;
                stats.messages_requeued += 1;
                stats.waiting.add(cause);
                stats.handed_back += u64::from(cause == WaitCause::Held);
                fates.0[i] = Fate::Done;
                warn!(message_id = %batch.ids[i], cause = cause.label(), chunks, requeues = message.requeues + u32::from(ret.hop), delay_secs = ret.delay_secs, "{}: the work waits on the queue", cause.describe());
            }
            Err(e) => {
                error!(message_id = %batch.ids[i], cause = cause.label(), error = %e, "could not put the work back on the queue; the message will be retried");
                fates.0[i] = Fate::Fail;
            }
        }
    }
}
