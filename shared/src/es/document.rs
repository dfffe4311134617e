//! The document stored per chunk, and the index mapping that holds it.

use serde::Serialize;
use serde_json::{Map, Value, json};

/// Where a chunk came from, stored under `source`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SourceFields<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub version_id: Option<&'a str>,
    pub etag: Option<&'a str>,
    pub sequencer: Option<&'a str>,
    pub record: u64,
    /// When ingest read the version (not mapped: only read back by `_mget` to order two writes
    /// of the same content).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_at: Option<&'a str>,
}

/// One chunk as indexed, always whole: an unchanged chunk is written again with its stored
/// vector, so no field of an older version of its record survives.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChunkDocument<'a> {
    pub doc_id: &'a str,
    pub chunk_index: u32,
    pub chunk_count: u32,
    pub text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<&'a [f32]>,
    pub source: SourceFields<'a>,
    pub metadata: &'a Map<String, Value>,
    /// Where in its document the chunk is (documents only; see `ChunkPayload::citation`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub citation: Option<&'a Value>,
    pub model_id: &'a str,
    pub content_sha256: &'a str,
    pub indexed_at: &'a str,
}

/// The mapping for a new index: `embedding` as an indexed `dense_vector` of the model's size,
/// `metadata` flattened so arbitrary record fields can never cause mapping conflicts.
/// `text_analyzer` analyses `text` for keyword search (`cjk` by default: bigrams for Japanese,
/// Chinese and Korean, words for the rest, with no plugin).
pub fn index_mapping(
    dimensions: usize,
    similarity: &str,
    vector_index_type: &str,
    text_analyzer: &str,
) -> Value {
    json!({
        "mappings": {
            "dynamic": false,
            "properties": {
                "doc_id": {"type": "keyword"},
                "chunk_index": {"type": "integer"},
                "chunk_count": {"type": "integer"},
                "text": {"type": "text", "analyzer": text_analyzer},
                "embedding": {
                    "type": "dense_vector", "dims": dimensions, "index": true, "similarity": similarity,
                    // Pinned: Elasticsearch's default changes across versions (int8, then BBQ).
                    "index_options": {"type": vector_index_type}
                },
                "source": {"properties": {
                    "bucket": {"type": "keyword"},
                    "key": {"type": "keyword"},
                    "version_id": {"type": "keyword"},
                    "etag": {"type": "keyword"},
                    "sequencer": {"type": "keyword"},
                    "record": {"type": "long"}
                }},
                "metadata": {"type": "flattened"},
                "citation": {"properties": {
                    "format": {"type": "keyword"},
                    "label": {"type": "keyword", "index": false},
                    "page": {"type": "integer"},
                    "headings": {"type": "keyword"},
                    "sheet": {"type": "keyword"},
                    "row": {"type": "long"},
                    "lines": {"type": "long"}
                }},
                "model_id": {"type": "keyword"},
                "content_sha256": {"type": "keyword"},
                "indexed_at": {"type": "date"}
            }
        }
    })
}

/// The `dims` of `embedding` in a `GET <index>/_mapping` answer, per concrete index.
pub fn mapped_dimensions(mapping: &Value) -> Vec<(String, Option<u64>)> {
    mapping
        .as_object()
        .map(|indices| {
            indices
                .iter()
                .map(|(name, m)| {
                    let dims = m
                        .pointer("/mappings/properties/embedding/dims")
                        .and_then(Value::as_u64);
                    (name.clone(), dims)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_has_the_contract_fields() {
        let metadata = json!({"title": "t"}).as_object().unwrap().clone();
        let vector = [0.5f32, 0.25];
        let doc = ChunkDocument {
            doc_id: "d",
            chunk_index: 1,
            chunk_count: 2,
            text: "本文",
            embedding: Some(&vector),
            source: SourceFields {
                bucket: "b",
                key: "k k+",
                version_id: None,
                etag: Some("e"),
                sequencer: None,
                record: 3,
                read_at: None,
            },
            metadata: &metadata,
            citation: None,
            model_id: "amazon.titan-embed-text-v2:0",
            content_sha256: "abc",
            indexed_at: "2026-11-22T00:00:00.000Z",
        };
        let v = serde_json::to_value(&doc).unwrap();
        for field in [
            "doc_id",
            "chunk_index",
            "chunk_count",
            "text",
            "embedding",
            "source",
            "metadata",
            "model_id",
            "content_sha256",
            "indexed_at",
        ] {
            assert!(v.get(field).is_some(), "{field}");
        }
        assert_eq!(v["source"]["key"], "k k+");
        assert_eq!(v["source"]["record"], 3);
        let partial = serde_json::to_value(ChunkDocument {
            embedding: None,
            ..doc
        })
        .unwrap();
        assert!(partial.get("embedding").is_none());
    }

    #[test]
    fn reads_dimensions_from_a_mapping_answer() {
        let answer = json!({"docs-v1": index_mapping(256, "cosine", "int8_hnsw", "cjk")});
        assert_eq!(
            mapped_dimensions(&answer),
            vec![("docs-v1".to_string(), Some(256))]
        );
    }
}
