//! What is stored, read before a batch decides anything: each chunk's fingerprint and writer,
//! and each source object's marker (the newest S3 event applied to it), with the versions that
//! compare-and-set writes are conditioned on.

use std::collections::HashMap;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::bulk::DocVersion;
use super::client::{EsClient, EsError, encode_path, status_error};

/// A chunk as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChunk {
    pub content_sha256: String,
    pub model_id: String,
    pub bucket: String,
    pub key: String,
    /// The sequencer of the event that wrote it (empty for a backfill).
    pub sequencer: String,
    /// The eTag of the version it holds, and when ingest read that version (empty if unknown).
    pub etag: String,
    pub read_at: String,
    /// How many chunks its document had when it was written.
    pub chunk_count: u32,
    pub version: DocVersion,
    /// The stored vector: an unchanged chunk is written again whole with it (a partial update
    /// would merge the new record's fields into the old ones and keep fields it no longer has).
    pub vector: Option<Vec<f32>>,
}

/// The marker of one source object: the newest S3 event applied to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceMarker {
    pub bucket: String,
    pub key: String,
    /// Normalised S3 sequencer; empty for an object only a backfill has seen.
    pub sequencer: String,
    /// The newest event removed the object.
    #[serde(default)]
    pub deleted: bool,
    /// The eTag of the version that event indexed (a backfill of the same eTag is the same
    /// version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default)]
    pub updated_at: String,
    /// The sweep of this event ran: chunks older writers leave behind now are nobody else's
    /// to remove.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub swept: bool,
}

/// A marker as stored, with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMarker {
    pub marker: SourceMarker,
    pub version: DocVersion,
}

/// What [`EsClient::lookup`] found: only ids that exist are present.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Stored {
    pub chunks: HashMap<String, StoredChunk>,
    pub markers: HashMap<String, StoredMarker>,
}

impl EsClient {
    /// The index beside the chunk index that records, per source object, the newest S3 event
    /// applied (so an older event never wins over a newer one).
    pub fn marker_index(&self) -> String {
        self.markers
            .clone()
            .unwrap_or_else(|| format!("{}-sources", self.index))
    }

    /// Writing a concrete index with the markers of the alias that names it: while a migration
    /// runs, embed-index writes the alias's current index by its own name (a batch in flight
    /// when the alias moves must not write the old model into the new index), keeping the
    /// order of events the alias's markers hold.
    pub fn with_markers(mut self, markers: String) -> Self {
        self.markers = Some(markers);
        self
    }

    /// Creates the marker index when it is missing.
    pub async fn ensure_marker_index(&self) -> Result<(), EsError> {
        let index = self.marker_index();
        let path = format!("/{}", encode_path(&index));
        let (status, _) = self.send(Method::HEAD, &path, None).await?;
        if status != StatusCode::NOT_FOUND {
            return Ok(());
        }
        let mapping = json!({"mappings": {"dynamic": false, "properties": {
            "bucket": {"type": "keyword"}, "key": {"type": "keyword"}, "sequencer": {"type": "keyword"},
            "deleted": {"type": "boolean"}, "etag": {"type": "keyword"}, "updated_at": {"type": "date"}
        }}});
        let body = serde_json::to_vec(&mapping).expect("mapping serialises");
        let (status, bytes) = self
            .send(Method::PUT, &path, Some((body, "application/json")))
            .await?;
        if status.is_success()
            || String::from_utf8_lossy(&bytes).contains("resource_already_exists_exception")
        {
            Ok(())
        } else {
            Err(status_error(
                &format!("creating index {index}"),
                status,
                &bytes,
            ))
        }
    }

    /// Reads, in one `_mget` (real-time: it sees writes not yet refreshed), the chunks among
    /// `chunk_ids` and the markers among `marker_ids` that exist.
    pub async fn lookup(
        &self,
        chunk_ids: &[String],
        marker_ids: &[String],
    ) -> Result<Stored, EsError> {
        if chunk_ids.is_empty() && marker_ids.is_empty() {
            return Ok(Stored::default());
        }
        let what = "_mget of stored chunks and source markers";
        let marker_index = self.marker_index();
        let docs: Vec<Value> = chunk_ids
            .iter()
            .map(|id| json!({"_index": self.index, "_id": id,
                "_source": ["content_sha256", "model_id", "embedding", "chunk_count", "source.bucket", "source.key", "source.sequencer", "source.etag", "source.read_at"]}))
            .chain(
                marker_ids
                    .iter()
                    .map(|id| json!({"_index": marker_index, "_id": id})),
            )
            .collect();
        let body = serde_json::to_vec(&json!({ "docs": docs })).expect("ids serialise");
        let bytes = self
            .call(
                Method::POST,
                "/_mget",
                Some((body, "application/json")),
                what,
            )
            .await?;
        parse_lookup(&Self::json(what, &bytes)?, chunk_ids, marker_ids).map_err(|detail| {
            EsError::Decode {
                what: what.into(),
                detail,
            }
        })
    }
}

impl EsClient {
    /// How many chunks of the index match `query` (`_count`).
    pub async fn count_matching(&self, query: &Value) -> Result<u64, EsError> {
        let what = format!("counting in {}", self.index);
        let body = serde_json::to_vec(&json!({ "query": query })).expect("query serialises");
        let bytes = self
            .call(
                Method::POST,
                &format!("/{}/_count", encode_path(&self.index)),
                Some((body, "application/json")),
                &what,
            )
            .await?;
        Ok(Self::json(&what, &bytes)?["count"].as_u64().unwrap_or(0))
    }
}

/// Reads an `_mget` answer whose docs are `chunk_ids` then `marker_ids`, in request order
/// (`_index` would name the concrete index behind an alias, so position is what matches).
pub fn parse_lookup(
    answer: &Value,
    chunk_ids: &[String],
    marker_ids: &[String],
) -> Result<Stored, String> {
    let docs = answer["docs"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if docs.len() != chunk_ids.len() + marker_ids.len() {
        return Err(format!(
            "{} docs for {} ids",
            docs.len(),
            chunk_ids.len() + marker_ids.len()
        ));
    }
    let (chunks, markers) = docs.split_at(chunk_ids.len());
    let mut stored = Stored::default();
    for (id, d) in chunk_ids.iter().zip(chunks) {
        if let Some(version) = found(d)? {
            let s = &d["_source"];
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            stored.chunks.insert(
                id.clone(),
                StoredChunk {
                    content_sha256: text(&s["content_sha256"]),
                    model_id: text(&s["model_id"]),
                    bucket: text(&s["source"]["bucket"]),
                    key: text(&s["source"]["key"]),
                    sequencer: text(&s["source"]["sequencer"]),
                    etag: text(&s["source"]["etag"]),
                    read_at: text(&s["source"]["read_at"]),
                    chunk_count: s["chunk_count"].as_u64().unwrap_or(0) as u32,
                    version,
                    vector: vector(&s["embedding"]),
                },
            );
        }
    }
    for (id, d) in marker_ids.iter().zip(markers) {
        if let Some(version) = found(d)? {
            let s = &d["_source"];
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            let marker = SourceMarker {
                bucket: text(&s["bucket"]),
                key: text(&s["key"]),
                sequencer: text(&s["sequencer"]),
                deleted: s["deleted"].as_bool().unwrap_or(false),
                etag: s["etag"].as_str().map(str::to_owned),
                updated_at: text(&s["updated_at"]),
                swept: s["swept"].as_bool().unwrap_or(false),
            };
            stored
                .markers
                .insert(id.clone(), StoredMarker { marker, version });
        }
    }
    Ok(stored)
}

/// A stored `embedding`, when it is an array of numbers.
pub(crate) fn vector(value: &Value) -> Option<Vec<f32>> {
    value
        .as_array()?
        .iter()
        .map(|x| x.as_f64().map(|x| x as f32))
        .collect()
}

/// The version of a found document; `None` when it does not exist. A per-doc error (a missing
/// index answers `found: false`) is an error: deciding on it would be deciding blind.
fn found(doc: &Value) -> Result<Option<DocVersion>, String> {
    if let Some(error) = doc.get("error") {
        return Err(format!("_mget item failed: {error}"));
    }
    if doc["found"].as_bool() != Some(true) {
        return Ok(None);
    }
    match (doc["_seq_no"].as_u64(), doc["_primary_term"].as_u64()) {
        (Some(seq_no), Some(primary_term)) => Ok(Some(DocVersion {
            seq_no,
            primary_term,
        })),
        _ => Err(format!(
            "_mget found {} without _seq_no/_primary_term",
            doc["_id"]
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_chunks_and_markers_by_position_with_their_versions() {
        let answer = json!({"docs": [
            {"_index": "docs-000001", "_id": "c1", "_seq_no": 4, "_primary_term": 1, "found": true,
             "_source": {"content_sha256": "aa", "model_id": "m", "source": {"bucket": "b", "key": "k", "sequencer": "0A"}}},
            {"_index": "docs-000001", "_id": "c2", "found": false},
            {"_index": "docs-sources", "_id": "m1", "_seq_no": 9, "_primary_term": 2, "found": true,
             "_source": {"bucket": "b", "key": "k", "sequencer": "0B", "deleted": true, "updated_at": "t"}}
        ]});
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let stored = parse_lookup(&answer, &ids(&["c1", "c2"]), &ids(&["m1"])).unwrap();
        assert_eq!(stored.chunks.len(), 1);
        let c1 = &stored.chunks["c1"];
        assert_eq!((c1.sequencer.as_str(), c1.version.seq_no), ("0A", 4));
        let m1 = &stored.markers["m1"];
        assert!(m1.marker.deleted && m1.marker.etag.is_none());
        assert_eq!(m1.version.primary_term, 2);
        assert!(parse_lookup(&answer, &ids(&["c1"]), &[]).is_err(), "count");
        let broken = json!({"docs": [{"_id": "c1", "error": {"type": "x"}}]});
        assert!(parse_lookup(&broken, &ids(&["c1"]), &[]).is_err());
    }
}
