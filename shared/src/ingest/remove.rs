//! Step 4, sweep: an object removed (or overwritten by a version ingest will not read) becomes
//! a delete message for its chunks.

use tracing::{info, warn};

use crate::message::{ChunkMessage, Operation, SourceRef};
use crate::queue::{ChunkQueue, send_all};
use crate::retry::Deadline;
use crate::store::ObjectStore;

use super::continuation::Continuation;
use super::event::Work;
use super::read::{ObjectAt, read_object};
use super::{IngestDeps, IngestSummary};

/// A removal (or expiration): the key's current version is read again where there still is
/// one; otherwise its chunks are queued for deletion.
pub(super) async fn run_removed<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    source: SourceRef,
    deadline: Deadline,
    made_progress: bool,
    summary: &mut IngestSummary,
) -> Result<Option<Work>, String> {
    let name = format!("s3://{}/{}", source.bucket, source.key);
    match deps.store.head(&source.bucket, &source.key).await {
        Ok(Some(head)) => {
            info!(bucket = %source.bucket, key = %source.key, removed_version = ?source.version_id, current_version = ?head.version_id, "the key still has a current version: it is read again");
            summary.reindexed += 1;
            // Pinned to what is current now, ordered by the removal's sequencer so it
            // replaces whatever the removed version left.
            let current = SourceRef {
                version_id: head.version_id,
                etag: head.etag,
                ..source
            };
            read_object(
                deps,
                current,
                ObjectAt::default(),
                deadline,
                made_progress,
                summary,
            )
            .await
        }
        Ok(None) => {
            let body = ChunkMessage::control(Operation::Delete, &source);
            let stats = send_all(&deps.queue, vec![body], deps.config.batch_limits())
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            summary.deleted += 1;
            summary.add_sent(stats);
            Ok(None)
        }
        Err(e) => {
            warn!(bucket = %source.bucket, key = %source.key, error = %e, "could not look up the key's current version");
            Err(format!("{name}: {e}"))
        }
    }
}
