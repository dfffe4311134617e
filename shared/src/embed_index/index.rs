//! The `SearchIndex` seam embed-index writes through, and its Elasticsearch implementation.

use std::future::Future;

use serde_json::json;

use crate::embed::EmbeddingModel;
use crate::es::{BulkOutcome, EsClient, EsError, Stored, VectorSettings};
use crate::message::SourceRef;

/// Where chunks and source markers are stored and looked up.
pub trait SearchIndex: Send + Sync {
    fn index_name(&self) -> &str;

    /// The index of the per-object markers.
    fn marker_index(&self) -> String;

    /// Creates the index (and the marker index) if needed and checks its vector size.
    fn ensure_index(
        &self,
        model: &EmbeddingModel,
        vectors: &VectorSettings,
    ) -> impl Future<Output = Result<(), EsError>> + Send;

    /// The stored chunks among `chunk_ids` and markers among `marker_ids`, with their versions,
    /// in one real-time round trip.
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

    /// Makes every write so far visible to searches, `_delete_by_query` included.
    fn refresh(&self) -> impl Future<Output = Result<(), EsError>> + Send;

    /// How many chunks of a source object were written as its event `sequencer` (refreshed
    /// ones).
    fn count_chunks(
        &self,
        source: &SourceRef,
        sequencer: &str,
    ) -> impl Future<Output = Result<u64, EsError>> + Send;

    /// Deletes a source object's chunks written before `sequencer` (`inclusive`: up to and
    /// including it); chunks written by a backfill (no sequencer) count as older. Sees only
    /// refreshed chunks. Returns the count.
    fn delete_chunks(
        &self,
        source: &SourceRef,
        sequencer: &str,
        inclusive: bool,
    ) -> impl Future<Output = Result<u64, EsError>> + Send;
}

impl SearchIndex for EsClient {
    fn index_name(&self) -> &str {
        &self.index
    }

    fn marker_index(&self) -> String {
        EsClient::marker_index(self)
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

    async fn refresh(&self) -> Result<(), EsError> {
        EsClient::refresh(self).await
    }

    async fn count_chunks(&self, source: &SourceRef, sequencer: &str) -> Result<u64, EsError> {
        let query = json!({"bool": {"filter": [
            {"term": {"source.bucket": source.bucket}}, {"term": {"source.key": source.key}},
            {"term": {"source.sequencer": sequencer}}
        ]}});
        self.count_matching(&query).await
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
