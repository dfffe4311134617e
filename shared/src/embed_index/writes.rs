//! Writing chunks: decide per chunk against what is stored (skip an older writer, keep an
//! unchanged vector, embed the rest), then `_bulk` with compare-and-set, resending what was
//! busy, splitting what was too large, and deciding again what another writer touched first.

use std::collections::HashMap;
use std::time::Duration;

use tracing::warn;

use super::stats::{BatchStats, FailureReason};
use crate::embed::EmbeddingModel;
use crate::embed::{EmbedError, EmbedPolicy, Embedder, InputPurpose, Pacer, embed_holding};
use crate::es::bulk::push_index;
use crate::es::document::SourceFields;
use crate::es::{
    BulkOutcome, ChunkDocument, DocVersion, EsError, Expect, ItemOutcome, StoredChunk,
};
use crate::message::{ChunkMessage, ChunkPayload, SourceRef};
use crate::retry::{Attempts, Deadline, RetryPolicy};

use super::{SearchIndex, lookup_in_time};

/// One distinct chunk of the batch, the event it is written as, and the messages carrying it.
pub(super) struct ChunkWork<'a> {
    /// The `_id` it is written under.
    pub id: String,
    /// Its id scoped by its object: the same as `id`, or (a bucket-wide record id) where it
    /// goes instead when another object holds that id.
    pub object_id: String,
    pub sha: String,
    pub chunk: &'a ChunkPayload,
    /// The message whose copy of the chunk is written (its scope names the document's ids).
    pub message: &'a ChunkMessage,
    pub source: &'a SourceRef,
    /// The effective sequencer of its event (empty for a first backfill).
    pub sequencer: String,
    pub messages: Vec<usize>,
    pub vector: Option<Vec<f32>>,
    /// The vector came with the message (paid for by an earlier attempt).
    pub carried: bool,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outcome {
    /// Not decided yet.
    Pending,
    /// A newer event of its object already wrote it: nothing to do.
    Superseded,
    /// Stored, at this version.
    Written {
        version: Option<DocVersion>,
        embedded: bool,
    },
    /// Did not land; `Some(reason)` when retrying cannot help.
    Failed {
        reason: FailureReason,
        detail: Option<String>,
    },
}

/// What to send for one chunk, given what is stored under its id. Every write replaces the
/// whole document, so a field the record no longer has never survives from an older version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Skip,
    /// Same text and model: written again whole with the stored vector.
    Reuse(Expect),
    /// A new vector is needed.
    Write(Expect),
}

/// One write of an object, for ordering: its event (effective sequencer), the content it holds
/// (eTag) and when ingest read it. Of the same content the later read is newer, since it was
/// cut under the settings in force later; of different contents, the newer event.
#[derive(Debug, Clone, Copy)]
pub(super) struct Writing<'w> {
    sequencer: &'w str,
    etag: &'w str,
    read_at: &'w str,
}

impl<'w> Writing<'w> {
    pub fn of(source: &'w SourceRef, sequencer: &'w str) -> Self {
        Self {
            sequencer,
            etag: source.etag.as_deref().unwrap_or_default(),
            read_at: source.read_at.as_deref().unwrap_or_default(),
        }
    }

    fn stored(s: &'w StoredChunk) -> Self {
        Self {
            sequencer: &s.sequencer,
            etag: &s.etag,
            read_at: &s.read_at,
        }
    }

    pub fn is_newer_than(&self, other: &Writing) -> bool {
        if !self.etag.is_empty() && self.etag == other.etag {
            self.read_at > other.read_at
        } else {
            self.sequencer > other.sequencer
        }
    }
}

impl ChunkWork<'_> {
    /// This chunk's write, for ordering.
    fn writing(&self) -> Writing<'_> {
        Writing::of(self.source, &self.sequencer)
    }
}

/// Whether the stored chunk `s` holds its object over `work`: the same object, written by a
/// newer event or a later read of the same content.
fn holds_over(s: &StoredChunk, work: &ChunkWork) -> bool {
    s.bucket == work.source.bucket
        && s.key == work.source.key
        && Writing::stored(s).is_newer_than(&work.writing())
}

fn decide(work: &ChunkWork, stored: Option<&StoredChunk>, model: &EmbeddingModel) -> Plan {
    let Some(s) = stored else {
        return Plan::Write(Expect::Absent);
    };
    if holds_over(s, work) {
        return Plan::Skip;
    }
    let vector_fits = s
        .vector
        .as_ref()
        .is_some_and(|v| v.len() == model.dimensions);
    if s.content_sha256 == work.sha && s.model_id == model.id && vector_fits {
        Plan::Reuse(Expect::Version(s.version))
    } else {
        Plan::Write(Expect::Version(s.version))
    }
}

/// Settles under which `_id` a chunk with a bucket-wide record id is written: that id, unless
/// another object holds it (a collision: the chunk goes under its object's own id, so neither
/// object's record is lost, and deleting one never removes the other's) or this object already
/// holds the chunk under its own id from such a collision (it stays there, never in both).
/// Returns whether this is a newly seen collision.
fn settle_id(work: &mut ChunkWork, stored: &HashMap<String, StoredChunk>) -> bool {
    if work.id == work.object_id {
        return false;
    }
    let ours = |s: &StoredChunk| s.bucket == work.source.bucket && s.key == work.source.key;
    let held_here = stored.get(&work.object_id).is_some_and(ours);
    let holder = stored.get(&work.id).filter(|s| !ours(s));
    if let Some(other) = holder {
        warn!(doc_id = %work.chunk.doc_id, chunk = work.chunk.chunk_index, bucket = %work.source.bucket, key = %work.source.key, held_by = %other.key, "record id collision: two objects hold this record id (ID_SCOPE=bucket); each keeps its own document");
    }
    if held_here || holder.is_some() {
        work.id = work.object_id.clone();
    }
    holder.is_some()
}

/// The chunks among `which` whose document this batch also writes from a newer write (another
/// event, or a later read of the same content): a document is written from one cut only, or a
/// chunk past the newer cut's end would stay beside it.
fn outdated_in_batch(works: &[ChunkWork], which: &[usize]) -> std::collections::HashSet<usize> {
    let document = |w: &ChunkWork| {
        (
            w.source.bucket.clone(),
            w.source.key.clone(),
            w.chunk.doc_id.clone(),
        )
    };
    let mut newest: HashMap<_, usize> = HashMap::new();
    let newer = |a: usize, b: usize| works[a].writing().is_newer_than(&works[b].writing());
    for &w in which {
        let entry = newest.entry(document(&works[w])).or_insert(w);
        if newer(w, *entry) {
            *entry = w;
        }
    }
    which
        .iter()
        .copied()
        .filter(|&w| newer(newest[&document(&works[w])], w))
        .collect()
}

/// Whether the chunk's document is held by a newer write of its object: its first chunk (which
/// every cut has) was written by a newer event or a later read of the same content. Then none
/// of this write's chunks goes in, not even those past the newer cut's end.
fn document_held(work: &ChunkWork, stored: &HashMap<String, StoredChunk>) -> bool {
    work.message
        .candidate_ids(&work.chunk.doc_id, 0)
        .iter()
        .filter_map(|id| stored.get(id))
        .any(|s| holds_over(s, work))
}

/// The tail of one written document: the work that wrote it, the ids of the chunk one past its
/// end, and those from there to the far end.
struct Tail {
    work: usize,
    first: Vec<String>,
    rest: Vec<String>,
}

/// The most chunks past its end a document's tail is looked for (a longer one is removed in
/// several rounds, as its message comes back).
const MAX_TAIL: u32 = 2000;

/// The tails of the documents this batch wrote whose chunk one past the end is an older write
/// of the same object.
fn tails(works: &[ChunkWork], stored: &HashMap<String, StoredChunk>) -> Vec<Tail> {
    let mut seen = std::collections::HashSet::new();
    let mut tails = Vec::new();
    for (w, work) in works.iter().enumerate() {
        let (doc, end) = (&work.chunk.doc_id, work.chunk.chunk_count);
        if !matches!(work.outcome, Outcome::Written { .. })
            || !seen.insert((work.object_id.clone(), doc.clone(), end))
        {
            continue;
        }
        let past_end = work
            .message
            .candidate_ids(doc, end)
            .into_iter()
            .filter_map(|id| stored.get(&id))
            .find(|s| {
                s.bucket == work.source.bucket && s.key == work.source.key && !holds_over(s, work)
            });
        let Some(past_end) = past_end else {
            continue;
        };
        let far = past_end.chunk_count.clamp(end + 1, end + MAX_TAIL);
        let rest = (end + 1..far)
            .flat_map(|i| work.message.candidate_ids(doc, i))
            .collect();
        let first = work.message.candidate_ids(doc, end);
        tails.push(Tail {
            work: w,
            first,
            rest,
        });
    }
    tails
}

/// Marks the chunks `which` unavailable, so their messages wait and come back.
fn mark_unavailable(works: &mut [ChunkWork], which: impl IntoIterator<Item = usize>) {
    for w in which {
        works[w].outcome = unavailable();
    }
}

/// Everything a write round needs besides the chunks.
pub(super) struct Writer<'a, E, I> {
    pub embedder: &'a E,
    pub index: &'a I,
    pub policy: EmbedPolicy,
    pub pacer: &'a Pacer,
    /// Embedding stops here, leaving time for the writes.
    pub embed_deadline: Deadline,
    /// While the pace paces the container, no call starts later than this into the embedding:
    /// the rest goes back for another container (`super::HOLD_AT_MOST`).
    pub hold: Duration,
    pub deadline: Deadline,
    /// The longest one Elasticsearch request may take (`ES_TIMEOUT_SECS`); near the deadline a
    /// request is shorter, and none starts without the least useful time.
    pub request_time: Duration,
    pub bulk_max_bytes: usize,
    pub indexed_at: &'a str,
}

/// How many times a chunk that lost a compare-and-set race is decided again in one invocation.
const MAX_ROUNDS: usize = 4;

impl<E: Embedder, I: SearchIndex> Writer<'_, E, I> {
    /// Writes every pending chunk; `stored` is what the batch's lookup found.
    pub async fn write(
        &self,
        works: &mut [ChunkWork<'_>],
        stored: &HashMap<String, StoredChunk>,
        stats: &mut BatchStats,
    ) {
        let pending: Vec<usize> = (0..works.len())
            .filter(|&w| works[w].outcome == Outcome::Pending)
            .collect();
        let mut plans = self.plan(works, pending, stored, stats);
        stats.unchanged += plans
            .iter()
            .filter(|(_, p)| matches!(p, Plan::Reuse(_)))
            .count() as u64;
        for round in 0..MAX_ROUNDS {
            self.embed_missing(works, &plans, stats).await;
            let conflicts = self.send(works, &plans, stats).await;
            if conflicts.is_empty() {
                break;
            }
            stats.conflicts += conflicts.len() as u64;
            let Some(again) = self.read_again(works, &conflicts).await else {
                break;
            };
            plans = self.plan(works, conflicts, &again, stats);
            if round + 1 == MAX_ROUNDS {
                for (w, _) in &plans {
                    works[*w].outcome = unavailable();
                }
            }
        }
        self.remove_tails(works, stored, stats).await;
    }

    /// Removes what an older, longer cut of a written document left past its end (chunk
    /// settings changed, or the text got shorter): those chunks would stay, with a count that
    /// disagrees. The batch's lookup read the chunk one past each document's end; when it is an
    /// older write of the same object, its count says how far the tail goes. The chunks beyond
    /// it go first; the chunk one past the end goes last, only once the rest is gone, so a tail
    /// removed in part is found again when the message comes back.
    async fn remove_tails(
        &self,
        works: &mut [ChunkWork<'_>],
        stored: &HashMap<String, StoredChunk>,
        stats: &mut BatchStats,
    ) {
        let tails = tails(works, stored);
        if tails.is_empty() {
            return;
        }
        let ids: Vec<String> = super::distinct(
            tails
                .iter()
                .flat_map(|t| t.first.iter().chain(&t.rest).cloned()),
        );
        let budget = (self.deadline, self.request_time);
        let found = match lookup_in_time(self.index, &ids, &[], budget).await {
            Ok(found) => found.chunks,
            Err(e) => {
                warn!(error = %e, "could not read the tails of shortened documents; their messages wait");
                mark_unavailable(works, tails.iter().map(|t| t.work));
                return;
            }
        };
        // The chunks beyond first; the chunk one past the end (each tail's first) in a second round.
        for last in [false, true] {
            let mut doomed: Vec<(usize, String, DocVersion)> = Vec::new();
            for tail in &tails {
                let work = &works[tail.work];
                let ids = if last { &tail.first } else { &tail.rest };
                for id in ids {
                    if let Some(s) = found.get(id).filter(|s| !holds_over(s, work))
                        && s.bucket == work.source.bucket
                        && s.key == work.source.key
                    {
                        doomed.push((tail.work, id.clone(), s.version));
                    }
                }
            }
            if !self.delete_tails(works, &doomed, stats).await {
                return;
            }
        }
    }

    /// Deletes each tail chunk if still as read; returns whether all are gone (a chunk changed
    /// since belongs to a newer writer). The documents of chunks not deleted wait.
    async fn delete_tails(
        &self,
        works: &mut [ChunkWork<'_>],
        doomed: &[(usize, String, DocVersion)],
        stats: &mut BatchStats,
    ) -> bool {
        if doomed.is_empty() {
            return true;
        }
        let index = self.index.index_name();
        let actions = numbered_actions(doomed, |bytes, (_, id, version)| {
            crate::es::bulk::push_delete(bytes, index, id, *version);
        });
        let budget = (self.deadline, self.request_time);
        let mut complete = true;
        for (action, sent) in
            send_with_retries(self.index, actions, usize::MAX, budget, stats).await
        {
            match sent {
                Sent::Stored(_) => stats.deleted += 1,
                Sent::Conflict => {}
                _ => {
                    complete = false;
                    mark_unavailable(works, [doomed[action.work].0]);
                }
            }
        }
        complete
    }

    /// Decides each of the chunks `which` against what is stored under its id; an unchanged
    /// chunk takes its stored vector.
    fn plan(
        &self,
        works: &mut [ChunkWork<'_>],
        which: impl IntoIterator<Item = usize>,
        stored: &HashMap<String, StoredChunk>,
        stats: &mut BatchStats,
    ) -> Vec<(usize, Plan)> {
        let model = self.embedder.model();
        let which: Vec<usize> = which.into_iter().collect();
        let outdated = outdated_in_batch(works, &which);
        which
            .into_iter()
            .map(|w| {
                if settle_id(&mut works[w], stored) {
                    stats.id_collisions += 1;
                }
                if outdated.contains(&w) || document_held(&works[w], stored) {
                    return (w, Plan::Skip);
                }
                let found = stored.get(&works[w].id);
                let plan = decide(&works[w], found, model);
                if let (Plan::Reuse(_), Some(s)) = (plan, found) {
                    works[w].vector = s.vector.clone();
                }
                (w, plan)
            })
            .collect()
    }

    /// Reads the chunks that lost a compare-and-set race again; when that fails (or no time is
    /// left for it) they are unavailable.
    async fn read_again(
        &self,
        works: &mut [ChunkWork<'_>],
        conflicts: &[usize],
    ) -> Option<HashMap<String, StoredChunk>> {
        let ids: Vec<String> = conflicts.iter().map(|&w| works[w].id.clone()).collect();
        let budget = (self.deadline, self.request_time);
        match lookup_in_time(self.index, &ids, &[], budget).await {
            Ok(found) => Some(found.chunks),
            Err(e) => {
                warn!(error = %e, "could not read chunks again after a write conflict");
                let timed_out = matches!(e, EsError::OutOfTime { .. });
                for &w in conflicts {
                    works[w].outcome = if timed_out {
                        out_of_time()
                    } else {
                        unavailable()
                    };
                }
                None
            }
        }
    }

    /// Embeds the chunks whose plan needs a vector they do not carry yet.
    async fn embed_missing(
        &self,
        works: &mut [ChunkWork<'_>],
        plans: &[(usize, Plan)],
        stats: &mut BatchStats,
    ) {
        let todo: Vec<usize> = plans
            .iter()
            .filter(|(w, p)| matches!(p, Plan::Write(_)) && works[*w].vector.is_none())
            .map(|(w, _)| *w)
            .collect();
        if todo.is_empty() {
            return;
        }
        let todo = self.found_by_content(works, todo, stats).await;
        if todo.is_empty() {
            return;
        }
        let texts: Vec<&str> = todo.iter().map(|&w| works[w].chunk.text.as_str()).collect();
        let started = std::time::Instant::now();
        let (vectors, embed_stats) = embed_holding(
            self.embedder,
            &texts,
            InputPurpose::Document,
            self.policy,
            self.pacer,
            self.embed_deadline,
            Some(self.hold),
        )
        .await;
        stats.embed.add(embed_stats);
        stats.embed_ms += started.elapsed().as_millis() as u64;
        // Texts out of time with the time still ahead were held back, not late.
        let held = self.embed_deadline.allows(Duration::ZERO);
        for (&w, result) in todo.iter().zip(vectors) {
            if held && result == Err(EmbedError::OutOfTime) {
                stats.held_back += 1;
            }
            match result {
                Ok(v) => {
                    works[w].vector = Some(v);
                    stats.embedded += 1;
                }
                Err(e) => {
                    stats.failed_embedding += 1;
                    if !e.is_retryable() {
                        tracing::error!(doc_id = %works[w].chunk.doc_id, chunk = works[w].chunk.chunk_index, error = %e, "chunk cannot be embedded");
                    }
                    works[w].outcome = Outcome::Failed {
                        reason: FailureReason::of_embedding(&e),
                        detail: Some(e.to_string()),
                    };
                }
            }
        }
    }

    /// Gives the chunks `todo` the vectors the index already holds for their text (a record
    /// that moved within its object, or one whose id changed, is not embedded again); returns
    /// the chunks still without one. A failed look-up only costs the embeddings.
    async fn found_by_content(
        &self,
        works: &mut [ChunkWork<'_>],
        todo: Vec<usize>,
        stats: &mut BatchStats,
    ) -> Vec<usize> {
        if !self
            .embed_deadline
            .allows(self.request_time.min(Duration::from_secs(5)))
        {
            return todo;
        }
        let model = self.embedder.model();
        let shas = super::distinct(todo.iter().map(|&w| works[w].sha.clone()));
        let found = match self.index.vectors_by_content(&shas, &model.id).await {
            Ok(found) => found,
            Err(e) => {
                warn!(error = %e, "could not look up stored vectors by content; those chunks are embedded");
                return todo;
            }
        };
        let mut rest = Vec::new();
        for w in todo {
            match found.get(&works[w].sha) {
                Some(v) if v.len() == model.dimensions => {
                    works[w].vector = Some(v.clone());
                    stats.reused_by_content += 1;
                }
                _ => rest.push(w),
            }
        }
        rest
    }

    /// Sends one action per planned chunk that is ready; returns the chunks that conflicted.
    async fn send(
        &self,
        works: &mut [ChunkWork<'_>],
        plans: &[(usize, Plan)],
        stats: &mut BatchStats,
    ) -> Vec<usize> {
        let actions = self.actions(works, plans, stats);
        let started = std::time::Instant::now();
        let results = send_with_retries(
            self.index,
            actions,
            self.bulk_max_bytes,
            (self.deadline, self.request_time),
            stats,
        )
        .await;
        stats.index_ms += started.elapsed().as_millis() as u64;
        let mut conflicts = Vec::new();
        for (action, result) in results {
            let work = &mut works[action.work];
            match result {
                Sent::Stored(version) => {
                    work.outcome = Outcome::Written {
                        version,
                        embedded: action.embedded,
                    };
                }
                Sent::Conflict => conflicts.push(action.work),
                Sent::Rejected(reason) => {
                    tracing::error!(doc_id = %work.chunk.doc_id, chunk = work.chunk.chunk_index, id = %work.id, %reason, "Elasticsearch rejected the chunk");
                    work.outcome = Outcome::Failed {
                        reason: FailureReason::EsRejected,
                        detail: Some(reason),
                    };
                }
                Sent::Unavailable => work.outcome = unavailable(),
                Sent::OutOfTime => work.outcome = out_of_time(),
            }
        }
        conflicts
    }

    /// The `_bulk` action of each planned chunk that did not fail; a skipped one is settled as
    /// superseded here.
    fn actions(
        &self,
        works: &mut [ChunkWork<'_>],
        plans: &[(usize, Plan)],
        stats: &mut BatchStats,
    ) -> Vec<Action> {
        let index = self.index.index_name();
        let mut actions = Vec::new();
        for &(w, plan) in plans {
            let work = &works[w];
            if matches!(work.outcome, Outcome::Failed { .. }) {
                continue;
            }
            let mut bytes = Vec::new();
            match plan {
                Plan::Skip => {
                    works[w].outcome = Outcome::Superseded;
                    stats.superseded += 1;
                    continue;
                }
                Plan::Reuse(expect) | Plan::Write(expect) => {
                    let vector = work.vector.as_deref().expect("embedded or failed above");
                    let doc = self.document(work, Some(vector));
                    push_index(&mut bytes, index, &work.id, expect, &doc)
                }
            }
            actions.push(Action {
                work: w,
                embedded: matches!(plan, Plan::Write(_)),
                bytes,
            });
        }
        actions
    }

    fn document<'w>(
        &'w self,
        work: &'w ChunkWork<'_>,
        embedding: Option<&'w [f32]>,
    ) -> ChunkDocument<'w> {
        ChunkDocument {
            doc_id: &work.chunk.doc_id,
            chunk_index: work.chunk.chunk_index,
            chunk_count: work.chunk.chunk_count,
            text: &work.chunk.text,
            embedding,
            source: SourceFields {
                bucket: &work.source.bucket,
                key: &work.source.key,
                version_id: work.source.version_id.as_deref(),
                etag: work.source.etag.as_deref(),
                sequencer: Some(work.sequencer.as_str()).filter(|s| !s.is_empty()),
                record: work.chunk.record,
                read_at: work.source.read_at.as_deref(),
            },
            metadata: &work.chunk.metadata,
            citation: work.chunk.citation.as_ref(),
            model_id: &self.embedder.model().id,
            content_sha256: &work.sha,
            indexed_at: self.indexed_at,
        }
    }
}

fn unavailable() -> Outcome {
    Outcome::Failed {
        reason: FailureReason::EsUnavailable,
        detail: None,
    }
}

fn out_of_time() -> Outcome {
    Outcome::Failed {
        reason: FailureReason::OutOfTime,
        detail: None,
    }
}

/// One encoded bulk action and the chunk it writes.
pub(super) struct Action {
    pub work: usize,
    pub embedded: bool,
    pub bytes: Vec<u8>,
}

/// One action per item, numbered in order and encoded by `encode`; none carries a new vector.
pub(super) fn numbered_actions<T>(items: &[T], encode: impl Fn(&mut Vec<u8>, &T)) -> Vec<Action> {
    items
        .iter()
        .enumerate()
        .map(|(n, item)| {
            let mut bytes = Vec::new();
            encode(&mut bytes, item);
            Action {
                work: n,
                embedded: false,
                bytes,
            }
        })
        .collect()
}

/// How one action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Sent {
    Stored(Option<DocVersion>),
    /// The document was not as the action expected: decide again.
    Conflict,
    /// Elasticsearch will never take it as it is.
    Rejected(String),
    /// Busy or unreachable past the retries and the time.
    Unavailable,
    /// Not sent, or cut short, because the invocation's time ran out.
    OutOfTime,
}

/// What one `_bulk` item's answer means for its action; `None`: send it again.
fn settle(item: ItemOutcome, stats: &mut BatchStats) -> Option<Sent> {
    match item {
        ItemOutcome::Stored { version } => Some(Sent::Stored(version)),
        ItemOutcome::Conflict { .. } => Some(Sent::Conflict),
        ItemOutcome::Retry {
            status,
            kind,
            reason,
        } => {
            warn!(status, %kind, %reason, "bulk item will be retried");
            stats.bulk_retries += 1;
            None
        }
        ItemOutcome::Reject {
            status,
            kind,
            reason,
        } => Some(Sent::Rejected(format!("{status} {kind}: {reason}"))),
    }
}

/// `_bulk` requests whose items the cluster asked to retry (429, 5xx) or that got no answer.
const BULK_RETRIES: RetryPolicy = RetryPolicy {
    max_attempts: 5,
    base_delay: Duration::from_millis(200),
    max_delay: Duration::from_secs(5),
};

/// Sends the actions in `_bulk` requests of at most `max_bytes`, resending items answered 429 /
/// 5xx (and requests that got no answer) with backoff while the deadline allows, and halving a
/// request the cluster answers 413 (larger than its `http.max_content_length`). A request starts
/// while the least useful time for it is left (then shorter than `request_time` near the
/// deadline: [`Deadline::request_timeout`]); what is left unsent, or cut short by the deadline,
/// is `OutOfTime` and waits on the queue, instead of a timeout failing the whole invocation.
pub(super) async fn send_with_retries<I: SearchIndex>(
    index: &I,
    mut pending: Vec<Action>,
    max_bytes: usize,
    (deadline, request_time): (Deadline, Duration),
    stats: &mut BatchStats,
) -> Vec<(Action, Sent)> {
    let mut attempts = Attempts::new(BULK_RETRIES, Some(deadline));
    let mut sending = Sending {
        max_bytes,
        ..Sending::default()
    };
    while !pending.is_empty() {
        let mut requests = split_by_size(pending, sending.max_bytes);
        while let Some(request) = requests.pop() {
            if deadline.request_timeout(request_time).is_some() {
                sending.send(index, request, &mut requests, stats).await;
            } else {
                sending.end_all(request, Sent::OutOfTime);
            }
        }
        pending = std::mem::take(&mut sending.retry);
        if pending.is_empty() || !attempts.wait().await {
            break;
        }
    }
    sending.end_all(pending, Sent::Unavailable);
    sending.results
}

/// Actions on their way through `_bulk`: how the ones that ended did, the ones to send again
/// after a backoff, and the largest request the cluster takes.
#[derive(Default)]
struct Sending {
    results: Vec<(Action, Sent)>,
    retry: Vec<Action>,
    max_bytes: usize,
}

impl Sending {
    /// Sends one `_bulk` request and sorts its actions by the answer: ended, to send again, or
    /// back in `requests` in halves when the request was too large.
    async fn send<I: SearchIndex>(
        &mut self,
        index: &I,
        request: Vec<Action>,
        requests: &mut Vec<Vec<Action>>,
        stats: &mut BatchStats,
    ) {
        let body: Vec<u8> = request
            .iter()
            .flat_map(|a| a.bytes.iter().copied())
            .collect();
        stats.bulk_requests += 1;
        stats.bulk_bytes += body.len() as u64;
        match index.bulk(body, request.len()).await {
            Ok(outcome) => self.read_items(request, outcome, stats),
            Err(EsError::Status { status: 413, .. }) if request.len() > 1 => {
                self.halve(request, requests);
            }
            // The deadline cut it short: resending would only be cut shorter.
            Err(e @ EsError::OutOfTime { .. }) => {
                warn!(error = %e, "bulk request out of time; its chunks wait on the queue");
                self.end_all(request, Sent::OutOfTime);
            }
            Err(e) if e.is_retryable() => {
                warn!(error = %e, "bulk request failed; will retry");
                stats.bulk_retries += request.len() as u64;
                self.retry.extend(request);
            }
            Err(e) => self.end_all(request, Sent::Rejected(e.to_string())),
        }
    }

    /// Ends each action as its item's answer says; an item the cluster asked to retry is sent
    /// again.
    fn read_items(&mut self, request: Vec<Action>, outcome: BulkOutcome, stats: &mut BatchStats) {
        let items = outcome.items.into_iter().map(|(_, item)| item);
        for (action, item) in request.into_iter().zip(items) {
            match settle(item, stats) {
                Some(sent) => self.results.push((action, sent)),
                None => self.retry.push(action),
            }
        }
    }

    /// Splits a request larger than the cluster's `http.max_content_length` (413): smaller
    /// requests from now on, and this one again, in halves, at once.
    fn halve(&mut self, mut request: Vec<Action>, requests: &mut Vec<Vec<Action>>) {
        self.max_bytes = (request.iter().map(|a| a.bytes.len()).sum::<usize>() / 2).max(1);
        warn!(
            actions = request.len(),
            max_bytes = self.max_bytes,
            "_bulk too large for the cluster (413): splitting"
        );
        let second = request.split_off(request.len() / 2);
        requests.push(second);
        requests.push(request);
    }

    /// Ends every one of `actions` with the same answer.
    fn end_all(&mut self, actions: Vec<Action>, sent: Sent) {
        self.results
            .extend(actions.into_iter().map(|a| (a, sent.clone())));
    }
}

/// Groups actions into requests of at most `max_bytes` (a single larger action goes alone).
pub(super) fn split_by_size(actions: Vec<Action>, max_bytes: usize) -> Vec<Vec<Action>> {
    let mut requests = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for action in actions {
        if !current.is_empty() && size + action.bytes.len() > max_bytes {
            requests.push(std::mem::take(&mut current));
            size = 0;
        }
        size += action.bytes.len();
        current.push(action);
    }
    if !current.is_empty() {
        requests.push(current);
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(w: usize, len: usize) -> Action {
        Action {
            work: w,
            embedded: false,
            bytes: vec![b'x'; len],
        }
    }

    #[test]
    fn splits_bulk_requests_by_size() {
        let actions: Vec<Action> = (0..5).map(|i| action(i, 40)).collect();
        let sizes: Vec<usize> = split_by_size(actions, 100).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        let big = vec![action(0, 500), action(1, 10)];
        assert_eq!(split_by_size(big, 100).len(), 2);
    }
}
