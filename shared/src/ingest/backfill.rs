//! Backfills: a prefix listed a page at a time, each page's objects queued as units, the next
//! page claimed once (a conditional write) so a retried page never starts a second chain.

use std::collections::VecDeque;

use serde_json::Value;
use tracing::info;

use crate::message::SourceRef;
use crate::queue::ChunkQueue;
use crate::store::{ListPage, Listed, ObjectStore};

use super::continuation::Continuation;
use super::event::{Work, is_data_key};
use super::{IngestDeps, IngestSummary};

/// One page of a backfill listing, and the chain it belongs to.
pub(super) struct Page {
    pub(super) bucket: String,
    pub(super) prefix: String,
    pub(super) start_after: Option<String>,
    pub(super) chain: Option<String>,
}

/// The data objects of a listed page, each a unit read from its start.
fn page_objects(
    bucket: &str,
    objects: Vec<Listed>,
    rejects_prefix: &str,
) -> impl Iterator<Item = Work> {
    objects
        .into_iter()
        .filter(move |o| is_data_key(&o.key, rejects_prefix))
        .map(move |o| Work::Object {
            source: SourceRef {
                bucket: bucket.to_owned(),
                key: o.key,
                version_id: None,
                etag: o.etag,
                sequencer: None,
                read_at: None,
            },
            resume: None,
            part: 0,
            queued: 0,
        })
}

/// One page of a backfill listing: its objects (and the next page) fanned out to the intake
/// queue, or put first in this invocation's work, in key order. `origin` is the intake message
/// the page came in.
pub(super) async fn run_backfill_page<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    page: Page,
    origin: Option<&str>,
    work: &mut VecDeque<Work>,
    summary: &mut IngestSummary,
) -> Result<Option<Work>, String> {
    let Page {
        bucket,
        prefix,
        start_after,
        chain,
    } = page;
    let listed = deps
        .store
        .list(&bucket, &prefix, start_after.as_deref())
        .await
        .map_err(|e| format!("backfill of s3://{bucket}/{prefix}: {e}"))?;
    summary.listed += listed.objects.len() as u64;
    info!(%bucket, %prefix, after = ?start_after, listed = listed.objects.len(), more = listed.truncated, "backfill page");
    // The request's own message names the chain its pages belong to.
    let chain = chain.or_else(|| origin.map(str::to_owned));
    let mut next = next_page(&bucket, &prefix, start_after.as_deref(), &listed)?;
    if let Some(Work::Backfill { chain: c, .. }) = &mut next {
        c.clone_from(&chain);
    }
    let objects = page_objects(&bucket, listed.objects, &deps.config.rejects_prefix);
    if deps.continuation.is_queue() {
        let next = match (next, chain.as_deref(), origin) {
            (Some(next), Some(chain), Some(origin)) => {
                claim_next_page(deps, &bucket, chain, origin, next).await?
            }
            (next, ..) => next,
        };
        // One message per object, so each succeeds, retries and dead-letters on its
        // own; each starts its own chain (hops 0), and the page chain is bounded by the
        // listing, whose cursor only moves forward.
        let events: Vec<Value> = objects
            .chain(next)
            .map(|unit| serde_json::json!({ "work": [unit], "hops": 0 }))
            .collect();
        let count = events.len();
        deps.continuation
            .hand_over_all(events)
            .await
            .map_err(|e| format!("backfill of s3://{bucket}/{prefix}: {e}"))?;
        info!(%bucket, %prefix, messages = count, "backfill page fanned out to the intake queue");
    } else {
        // In key order, each object before the cursor that follows it.
        let units: Vec<Work> = objects.chain(next).collect();
        for unit in units.into_iter().rev() {
            work.push_front(unit);
        }
    }
    Ok(None)
}

/// Claims the next page of a backfill's chain for the intake message `origin` before it is
/// handed over: a small object under the rejects prefix, written only where none is (S3's
/// conditional write), holding the message id. A page received again (its invocation crashed
/// after handing the next page over) finds its own claim and hands the page over again (at
/// most one page listed twice); a second chain finds another message's claim and stops here.
/// Without a rejects prefix nothing can be written, and nothing is claimed.
pub(super) async fn claim_next_page<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    bucket: &str,
    chain: &str,
    origin: &str,
    next: Work,
) -> Result<Option<Work>, String> {
    let rejects = &deps.config.rejects_prefix;
    let Work::Backfill {
        start_after: Some(after),
        ..
    } = &next
    else {
        return Ok(Some(next));
    };
    if rejects.is_empty() {
        return Ok(Some(next));
    }
    let page = crate::ids::content_sha256(after);
    let key = format!("{rejects}.backfill/{chain}/{}", &page[..16]);
    let held = deps
        .store
        .put_if_absent(bucket, &key, origin.as_bytes().to_vec())
        .await
        .map_err(|e| format!("claiming the backfill page after {after}: {e}"))?;
    match held {
        Some(claimant) if claimant != origin.as_bytes() => {
            info!(%bucket, %chain, after = %after, claim = %key, "another message of this backfill already handed this page over: this chain stops here");
            Ok(None)
        }
        _ => Ok(Some(next)),
    }
}

/// The work that lists the page after `page`, if the listing is truncated.
pub(super) fn next_page(
    bucket: &str,
    prefix: &str,
    start_after: Option<&str>,
    page: &ListPage,
) -> Result<Option<Work>, String> {
    if !page.truncated {
        return Ok(None);
    }
    // The cursor must move on, or the same page would be listed forever.
    match page.objects.last().map(|o| o.key.clone()) {
        Some(last) if start_after.is_none_or(|a| last.as_str() > a) => Ok(Some(Work::Backfill {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            start_after: Some(last),
            chain: None,
        })),
        _ => Err(format!(
            "backfill of s3://{bucket}/{prefix}: the listing after {} is truncated but does not move on",
            start_after.unwrap_or("the start")
        )),
    }
}
