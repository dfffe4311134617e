//! The `SearchIndex` seam embed-index writes through, and its Elasticsearch implementation.

use std::collections::HashMap;
use std::future::Future;

use serde_json::json;

use crate::embed::EmbeddingModel;
use crate::es::{BulkOutcome, EsClient, EsError, Stored, VectorSettings};
use crate::message::SourceRef;

/// Where chunks and source markers are stored and looked up.
pub trait SearchIndex: Send + Sync {
    fn index_name(&self) -> &str;

    /// Requests sent again on a fresh connection because the pooled one had been dropped on
    /// the path while idle, since the client was made (see `EsClient::stale_connections`).
    fn stale_connections(&self) -> u64 {
        0
    }

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

    /// For each content hash among `shas`, the vector of a chunk with that text embedded by
    /// `model_id`, where the index holds one (refreshed chunks only). An index that cannot say
    /// finds none, and those chunks are embedded.
    fn vectors_by_content(
        &self,
        shas: &[String],
        model_id: &str,
    ) -> impl Future<Output = Result<HashMap<String, Vec<f32>>, EsError>> + Send {
        let _ = (shas, model_id);
        async { Ok(HashMap::new()) }
    }

    fn bulk(
        &self,
        body: Vec<u8>,
        actions: usize,
    ) -> impl Future<Output = Result<BulkOutcome, EsError>> + Send;

    /// Makes every write so far visible to searches, `_delete_by_query` included.
    fn refresh(&self) -> impl Future<Output = Result<(), EsError>> + Send;

    /// How many chunks of a source object stand for its version written as event `sequencer`:
    /// that event's and those of the same content (refreshed ones).
    fn count_chunks(
        &self,
        source: &SourceRef,
        sequencer: &str,
    ) -> impl Future<Output = Result<u64, EsError>> + Send;

    /// Deletes a source object's chunks written before `sequencer` (`inclusive`: up to and
    /// including it, whatever their content); a sweep keeps the chunks of the source's own
    /// content (eTag), which another read of it wrote. Chunks written by a backfill (no
    /// sequencer) count as older. Sees only refreshed chunks. Returns the count.
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

    fn stale_connections(&self) -> u64 {
        EsClient::stale_connections(self)
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

    async fn vectors_by_content(
        &self,
        shas: &[String],
        model_id: &str,
    ) -> Result<HashMap<String, Vec<f32>>, EsError> {
        if shas.is_empty() {
            return Ok(HashMap::new());
        }
        // Several chunks may share a text; twice the hashes leaves room for that without
        // `collapse`, which not every cluster that speaks the API offers.
        let body = json!({
            "size": (shas.len() * 2).min(10_000),
            "_source": ["content_sha256", "embedding"],
            "query": {"bool": {"filter": [
                {"terms": {"content_sha256": shas}}, {"term": {"model_id": model_id}}
            ]}}
        });
        let answer = self.search(&body).await?;
        let mut found = HashMap::new();
        for hit in answer["hits"]["hits"].as_array().into_iter().flatten() {
            let source = &hit["_source"];
            let (Some(sha), Some(vector)) = (
                source["content_sha256"].as_str(),
                crate::es::state::vector(&source["embedding"]),
            ) else {
                continue;
            };
            found.entry(sha.to_owned()).or_insert(vector);
        }
        Ok(found)
    }

    async fn bulk(&self, body: Vec<u8>, actions: usize) -> Result<BulkOutcome, EsError> {
        EsClient::bulk(self, body, actions).await
    }

    async fn refresh(&self) -> Result<(), EsError> {
        EsClient::refresh(self).await
    }

    async fn count_chunks(&self, source: &SourceRef, sequencer: &str) -> Result<u64, EsError> {
        let query = json!({"bool": {
            "filter": [{"term": {"source.bucket": source.bucket}}, {"term": {"source.key": source.key}}],
            "should": version_clauses(source, sequencer), "minimum_should_match": 1
        }});
        self.count_matching(&query).await
    }

    async fn delete_chunks(
        &self,
        source: &SourceRef,
        sequencer: &str,
        inclusive: bool,
    ) -> Result<u64, EsError> {
        let keep = if inclusive {
            vec![json!({"range": {"source.sequencer": {"gt": sequencer}}})]
        } else {
            let mut keep = version_clauses(source, sequencer);
            keep.push(json!({"range": {"source.sequencer": {"gt": sequencer}}}));
            keep
        };
        let query = json!({"bool": {
            "filter": [{"term": {"source.bucket": source.bucket}}, {"term": {"source.key": source.key}}],
            "must_not": keep
        }});
        self.delete_by_query(&query).await
    }
}

/// The chunks that stand for the version of `source` written as event `sequencer`: those of
/// that event, and those of the same content (eTag) written by another read of it, which a
/// sweep keeps (of one content, the latest read holds the object).
fn version_clauses(source: &SourceRef, sequencer: &str) -> Vec<serde_json::Value> {
    let mut clauses = vec![json!({"term": {"source.sequencer": sequencer}})];
    if let Some(etag) = &source.etag {
        clauses.push(json!({"term": {"source.etag": etag}}));
    }
    clauses
}
