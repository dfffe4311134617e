//! Step 3, send: chunk messages out ten to a `SendMessageBatch`, and rejected records into
//! `rejects/<key>/<etag>.jsonl` for replay.

use tracing::warn;

use crate::config::IngestConfig;
use crate::message::{ChunkMessage, MessagePacker, SourceRef};
use crate::queue::{ChunkQueue, send_all};
use crate::reader::RecordPosition;
use crate::record::Document;
use crate::store::ObjectStore;

use super::continuation::Continuation;
use super::read::ObjectFailure;
use super::split::{pack_document, pack_record};
use super::{IngestDeps, IngestSummary};

/// Rejected records of one object, kept as JSON Lines for an operator to read and replay.
pub(super) struct Rejects {
    pub(super) lines: Vec<u8>,
    pub(super) count: u64,
    pub(super) dropped: u64,
}

impl Rejects {
    /// Room for rejects per object; past it they are counted, not kept.
    const MAX_BYTES: usize = 8 * 1024 * 1024;
    /// The raw text kept per rejected record.
    const MAX_RAW: usize = 64 * 1024;

    pub(super) fn new() -> Self {
        Self {
            lines: Vec::new(),
            count: 0,
            dropped: 0,
        }
    }

    pub(super) fn add(
        &mut self,
        source: &SourceRef,
        position: RecordPosition,
        reason: &str,
        raw: &str,
    ) {
        self.count += 1;
        let cut = raw
            .char_indices()
            .nth(Self::MAX_RAW)
            .map_or(raw.len(), |(i, _)| i);
        let line = serde_json::json!({
            "bucket": source.bucket, "key": source.key, "etag": source.etag,
            "record": position.number(), "position": position.to_string(),
            "reason": reason, "raw": &raw[..cut], "raw_truncated": cut < raw.len(),
        });
        let line = line.to_string();
        if self.lines.len() + line.len() + 1 > Self::MAX_BYTES {
            self.dropped += 1;
            return;
        }
        self.lines.extend_from_slice(line.as_bytes());
        self.lines.push(b'\n');
    }

    /// `<prefix><key>/<etag>.jsonl` (`<etag>.part<N>.jsonl` for continued parts): one rejects
    /// object per object version.
    pub(super) fn key(prefix: &str, source: &SourceRef, part: u32) -> String {
        let etag = source.etag.as_deref().unwrap_or("unversioned");
        match part {
            0 => format!("{prefix}{}/{etag}.jsonl", source.key),
            n => format!("{prefix}{}/{etag}.part{n}.jsonl", source.key),
        }
    }
}

/// What reading an object has produced and not yet sent: packed chunk messages, rejects, and
/// the count of chunks queued for it so far (the sweep's).
pub(super) struct Outbox {
    pub(super) packer: MessagePacker,
    pub(super) bodies: Vec<String>,
    pub(super) rejects: Rejects,
    pub(super) queued: u64,
}

impl Outbox {
    /// An empty outbox for `source`, which earlier parts queued `queued` chunks of.
    pub(super) fn new(cfg: &IngestConfig, source: &SourceRef, queued: u64) -> Self {
        Outbox {
            packer: MessagePacker::new(source, cfg.fields.id_scope, cfg.message_max_bytes),
            bodies: Vec::new(),
            rejects: Rejects::new(),
            queued,
        }
    }

    /// Packs one record's chunks, or counts and keeps it as a reject.
    pub(super) fn take(
        &mut self,
        cfg: &IngestConfig,
        source: &SourceRef,
        raw: crate::reader::RawRecord,
        summary: &mut IngestSummary,
    ) {
        let position = raw.position;
        let packed = pack_record(cfg, source, raw, &mut self.packer, &mut self.bodies);
        self.count(source, position, packed, summary);
    }

    /// Packs the chunks of one section of a document (its `record` number, its citation), or
    /// counts and keeps it as a reject.
    pub(super) fn take_section(
        &mut self,
        cfg: &IngestConfig,
        source: &SourceRef,
        section: Document,
        record: u64,
        citation: serde_json::Value,
        summary: &mut IngestSummary,
    ) {
        let packed = pack_document(
            cfg,
            section,
            record,
            Some(citation),
            &mut self.packer,
            &mut self.bodies,
        );
        self.count(source, RecordPosition::Index(record), packed, summary);
    }

    fn count(
        &mut self,
        source: &SourceRef,
        position: RecordPosition,
        packed: Result<u32, (String, String)>,
        summary: &mut IngestSummary,
    ) {
        summary.records += 1;
        match packed {
            Ok(chunks) => {
                summary.chunks += u64::from(chunks);
                self.queued += u64::from(chunks);
            }
            Err((reason, raw)) => {
                warn!(bucket = %source.bucket, key = %source.key, record = %position, %reason, "record rejected");
                summary.rejected += 1;
                self.rejects.add(source, position, &reason, &raw);
            }
        }
    }

    /// Sends what is left (with the sweep of older versions once the object is read to its
    /// end) and writes the rejects; the count of rejected records.
    pub(super) async fn flush<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
        mut self,
        deps: &IngestDeps<S, Q, C>,
        source: &SourceRef,
        part: u32,
        whole: bool,
        summary: &mut IngestSummary,
    ) -> Result<u64, ObjectFailure> {
        let mut bodies = self.bodies;
        bodies.extend(self.packer.finish());
        if whole && source.sequencer.is_some() {
            // Sent last; whenever it is processed, it removes only chunks of older versions, and
            // only once the version's chunks are indexed (so none of them is embedded again).
            bodies.push(ChunkMessage::sweep(source, self.queued));
        }
        summary.add_sent(send_all(&deps.queue, bodies, deps.config.batch_limits()).await?);
        let rejected = self.rejects.count;
        write_rejects(deps, source, part, self.rejects).await?;
        Ok(rejected)
    }
}

/// Writes the object's rejects (if any) under the rejects prefix of its bucket.
pub(super) async fn write_rejects<S: ObjectStore, Q: ChunkQueue, C: Continuation>(
    deps: &IngestDeps<S, Q, C>,
    source: &SourceRef,
    part: u32,
    rejects: Rejects,
) -> Result<(), ObjectFailure> {
    if rejects.count == 0 || deps.config.rejects_prefix.is_empty() {
        return Ok(());
    }
    let key = Rejects::key(&deps.config.rejects_prefix, source, part);
    let (count, not_kept) = (rejects.count, rejects.dropped);
    deps.store
        .put(&source.bucket, &key, rejects.lines)
        .await
        .map_err(|e| ObjectFailure::Retry(format!("writing rejects: {e}")))?;
    warn!(bucket = %source.bucket, key = %source.key, rejects = %key, count, not_kept, "rejected records written");
    Ok(())
}
