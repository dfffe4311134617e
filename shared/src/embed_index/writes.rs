//! Writing chunks: decide per chunk against what is stored (skip an older writer, keep an
//! unchanged vector, embed the rest), then `_bulk` with compare-and-set, resending what was
//! busy, splitting what was too large, and deciding again what another writer touched first.

use std::collections::HashMap;
use std::time::Duration;

use tracing::warn;

use super::stats::{BatchStats, FailureReason};
use crate::embed::{EmbedPolicy, Embedder, InputPurpose, Pacer, embed_all};
use crate::es::bulk::{push_index, push_update};
use crate::es::document::SourceFields;
use crate::es::{
    BulkOutcome, ChunkDocument, DocVersion, EsError, Expect, ItemOutcome, StoredChunk,
};
use crate::message::{ChunkPayload, SourceRef};
use crate::retry::{Attempts, Deadline, RetryPolicy};

use super::{SearchIndex, lookup_in_time};

/// One distinct chunk of the batch, the event it is written as, and the messages carrying it.
pub(super) struct ChunkWork<'a> {
    pub id: String,
    pub sha: String,
    pub chunk: &'a ChunkPayload,
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

/// What to send for one chunk, given what is stored under its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Skip,
    /// Same text and model: refresh every field but the stored vector.
    Update(Expect),
    /// A new vector is needed.
    Write(Expect),
}

fn decide(work: &ChunkWork, stored: Option<&StoredChunk>, model_id: &str) -> Plan {
    let Some(s) = stored else {
        return Plan::Write(Expect::Absent);
    };
    let same_object = s.bucket == work.source.bucket && s.key == work.source.key;
    if same_object && s.sequencer > work.sequencer {
        return Plan::Skip;
    }
    if s.content_sha256 == work.sha && s.model_id == model_id {
        Plan::Update(Expect::Version(s.version))
    } else {
        Plan::Write(Expect::Version(s.version))
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
    pub deadline: Deadline,
    /// The longest one Elasticsearch request may take: none starts without that much time.
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
        let pending = (0..works.len()).filter(|&w| works[w].outcome == Outcome::Pending);
        let mut plans = self.plan(works, pending, stored);
        stats.unchanged += plans
            .iter()
            .filter(|(_, p)| matches!(p, Plan::Update(_)))
            .count() as u64;
        for round in 0..MAX_ROUNDS {
            self.embed_missing(works, &plans, stats).await;
            let conflicts = self.send(works, &plans, stats).await;
            if conflicts.is_empty() {
                return;
            }
            stats.conflicts += conflicts.len() as u64;
            let Some(again) = self.read_again(works, &conflicts).await else {
                return;
            };
            plans = self.plan(works, conflicts, &again);
            if round + 1 == MAX_ROUNDS {
                for (w, _) in &plans {
                    works[*w].outcome = unavailable();
                }
            }
        }
    }

    /// Decides each of the chunks `which` against what is stored under its id.
    fn plan(
        &self,
        works: &[ChunkWork<'_>],
        which: impl IntoIterator<Item = usize>,
        stored: &HashMap<String, StoredChunk>,
    ) -> Vec<(usize, Plan)> {
        let model_id = &self.embedder.model().id;
        which
            .into_iter()
            .map(|w| (w, decide(&works[w], stored.get(&works[w].id), model_id)))
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
                for &w in conflicts {
                    works[w].outcome = unavailable();
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
        let texts: Vec<&str> = todo.iter().map(|&w| works[w].chunk.text.as_str()).collect();
        let started = std::time::Instant::now();
        let (vectors, embed_stats) = embed_all(
            self.embedder,
            &texts,
            InputPurpose::Document,
            self.policy,
            self.pacer,
            self.embed_deadline,
        )
        .await;
        stats.embed.add(embed_stats);
        stats.embed_ms += started.elapsed().as_millis() as u64;
        for (&w, result) in todo.iter().zip(vectors) {
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
                Plan::Update(expect) => push_update(
                    &mut bytes,
                    index,
                    &work.id,
                    expect,
                    &self.document(work, None),
                ),
                Plan::Write(expect) => {
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
            },
            metadata: &work.chunk.metadata,
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
/// request the cluster answers 413 (larger than its `http.max_content_length`). No request starts
/// unless the time one may take (`request_time`) is left: what is left unsent is `Unavailable`
/// and waits on the queue, instead of a timeout failing the whole invocation.
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
            if deadline.allows(request_time) {
                sending.send(index, request, &mut requests, stats).await;
            } else {
                sending.end_all(request, Sent::Unavailable);
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
