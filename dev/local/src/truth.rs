//! The promise, checked whole: the index holds exactly the records of the bucket's current
//! objects, each with its current text, and nothing else.
//!
//! The bucket side is read independently of sakuin's reader and chunker: the objects are JSON
//! Lines whose records carry `id` and `text`, and every record is expected under its object's
//! key as `doc_id` = `id` (ids are scoped by object: two objects may share one) with a complete
//! set of chunks (`chunk_index` 0 to `chunk_count` - 1): one chunk holding exactly its text, or
//! several that are each a piece of its current text and together cover it; and each chunk's
//! `metadata` exactly the record's other fields, none of an older version left over.

use std::collections::BTreeMap;
use std::fmt;

use sakuin::es::EsClient;
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The prefix ingest writes rejected records under; not source data.
const REJECTS: &str = "rejects/";

/// Documents per search page.
const PAGE: usize = 2000;

/// One expected or indexed document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    pub key: String,
    pub text: String,
    /// The record's fields but `id` and `text`.
    pub metadata: Value,
}

/// How the whole index compares with the whole bucket.
#[derive(Debug, Default)]
pub struct Comparison {
    /// Current objects read from the bucket.
    pub objects: usize,
    /// Records in them: the documents expected.
    pub expected: usize,
    /// Chunk documents in the index.
    pub indexed: usize,
    /// Expected and absent.
    pub missing: Vec<String>,
    /// Indexed and not in any current object (deleted, replaced, or duplicated chunks).
    pub extra: Vec<String>,
    /// Indexed under the right id with another text or key (an older version).
    pub stale: Vec<String>,
}

impl Comparison {
    pub fn mismatches(&self) -> usize {
        self.missing.len() + self.extra.len() + self.stale.len()
    }

    pub fn is_equal(&self) -> bool {
        self.mismatches() == 0
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} objects, {} documents expected, {} indexed, {} mismatches",
            self.objects,
            self.expected,
            self.indexed,
            self.mismatches()
        )?;
        for (what, ids) in [
            ("missing", &self.missing),
            ("extra", &self.extra),
            ("stale", &self.stale),
        ] {
            if !ids.is_empty() {
                let shown: Vec<&str> = ids.iter().take(10).map(String::as_str).collect();
                write!(f, "; {what} {}: {}", ids.len(), shown.join(", "))?;
                if ids.len() > shown.len() {
                    write!(f, ", …")?;
                }
            }
        }
        Ok(())
    }
}

/// Reads every current object of `bucket` and every document of the client's index, and
/// compares them.
pub async fn compare_index_with_bucket(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    es: &EsClient,
) -> Result<Comparison, BoxError> {
    let (objects, expected) = bucket_documents(s3, bucket).await?;
    let indexed = index_documents(es).await?;
    let mut comparison = Comparison {
        objects,
        expected: expected.len(),
        indexed: indexed.values().map(Vec::len).sum(),
        ..Comparison::default()
    };
    for ((key, id), doc) in &expected {
        let chunks = indexed
            .get(&(key.clone(), id.clone()))
            .map_or(&[][..], Vec::as_slice);
        if chunks.is_empty() {
            comparison.missing.push(id.clone());
        } else if holds(doc, chunks) {
            continue;
        } else if chunks.len() > 1 && chunks.iter().all(|c| c.count == 1) {
            // The same one-chunk record indexed several times.
            if !chunks
                .iter()
                .any(|c| c.key == doc.key && c.text == doc.text && c.metadata == doc.metadata)
            {
                comparison.stale.push(id.clone());
            }
            comparison
                .extra
                .extend(std::iter::repeat_n(id.clone(), chunks.len() - 1));
        } else {
            comparison.stale.push(id.clone());
        }
    }
    for ((key, id), docs) in &indexed {
        if !expected.contains_key(&(key.clone(), id.clone())) {
            comparison
                .extra
                .extend(std::iter::repeat_n(id.clone(), docs.len()));
        }
    }
    Ok(comparison)
}

/// One chunk document as indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Chunk {
    key: String,
    index: u64,
    count: u64,
    text: String,
    metadata: Value,
}

/// Whether `chunks` are exactly `doc`'s current chunks: all of them, under its key; one holding
/// its text (trimmed, as chunks are), or several that are pieces of its text and together
/// cover it.
fn holds(doc: &Doc, chunks: &[Chunk]) -> bool {
    let n = chunks.len() as u64;
    if chunks
        .iter()
        .any(|c| c.count != n || c.key != doc.key || c.metadata != doc.metadata)
    {
        return false;
    }
    let mut indices: Vec<u64> = chunks.iter().map(|c| c.index).collect();
    indices.sort_unstable();
    if indices != (0..n).collect::<Vec<_>>() {
        return false;
    }
    if n == 1 {
        return chunks[0].text == doc.text.trim();
    }
    let visible = |t: &str| t.chars().filter(|c| !c.is_whitespace()).count();
    chunks.iter().all(|c| doc.text.contains(c.text.as_str()))
        && chunks.iter().map(|c| visible(&c.text)).sum::<usize>() >= visible(&doc.text)
}

/// The records of the bucket's current objects, by key and id; and how many objects there are.
async fn bucket_documents(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
) -> Result<(usize, BTreeMap<(String, String), Doc>), BoxError> {
    let mut keys = Vec::new();
    let mut pages = s3.list_objects_v2().bucket(bucket).into_paginator().send();
    while let Some(page) = pages.next().await {
        for object in page?.contents() {
            let key = object.key().unwrap_or_default();
            if !key.starts_with(REJECTS) {
                keys.push(key.to_owned());
            }
        }
    }
    let mut expected = BTreeMap::new();
    for key in &keys {
        let body = s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await?
            .body
            .collect()
            .await?
            .into_bytes();
        for (n, line) in body.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let record: Value =
                serde_json::from_slice(line).map_err(|e| format!("{key} line {}: {e}", n + 1))?;
            let (Some(id), Some(text)) = (record["id"].as_str(), record["text"].as_str()) else {
                return Err(format!("{key} line {}: no id and text", n + 1).into());
            };
            let mut metadata = record.clone();
            if let Some(fields) = metadata.as_object_mut() {
                fields.remove("id");
                fields.remove("text");
            }
            let doc = Doc {
                key: key.clone(),
                text: text.to_owned(),
                metadata,
            };
            if expected.insert((key.clone(), id.to_owned()), doc).is_some() {
                return Err(format!("{key} line {}: the id {id} is used twice", n + 1).into());
            }
        }
    }
    Ok((keys.len(), expected))
}

/// Every chunk document of the index, by `source.key` and `doc_id`.
async fn index_documents(
    es: &EsClient,
) -> Result<BTreeMap<(String, String), Vec<Chunk>>, BoxError> {
    es.refresh().await.map_err(|e| e.to_string())?;
    let mut hits = Vec::new();
    let mut after: Option<Value> = None;
    loop {
        let mut query = json!({
            "size": PAGE,
            "query": {"match_all": {}},
            "sort": [{"doc_id": "asc"}, {"source.key": "asc"}, {"chunk_index": "asc"}],
            "_source": ["doc_id", "text", "source.key", "chunk_index", "chunk_count", "metadata"]
        });
        if let Some(after) = after.take() {
            query["search_after"] = after;
        }
        let answer = es.search(&query).await.map_err(|e| e.to_string())?;
        let page = answer["hits"]["hits"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let full = page.len() == PAGE;
        after = page.last().map(|hit| hit["sort"].clone());
        hits.extend(page);
        if !full {
            break;
        }
    }
    let mut indexed: BTreeMap<(String, String), Vec<Chunk>> = BTreeMap::new();
    for hit in &hits {
        let source = &hit["_source"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let key = text(&source["source"]["key"]);
        indexed
            .entry((key.clone(), text(&source["doc_id"])))
            .or_default()
            .push(Chunk {
                key,
                index: source["chunk_index"].as_u64().unwrap_or(u64::MAX),
                count: source["chunk_count"].as_u64().unwrap_or(0),
                text: text(&source["text"]),
                metadata: source.get("metadata").cloned().unwrap_or(json!({})),
            });
    }
    Ok(indexed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(index: u64, count: u64, text: &str) -> Chunk {
        Chunk {
            key: "k".into(),
            index,
            count,
            text: text.into(),
            metadata: json!({}),
        }
    }

    #[test]
    fn a_record_is_held_by_all_its_current_pieces_and_nothing_else() {
        let doc = Doc {
            key: "k".into(),
            text: "One. Two. Three.".into(),
            metadata: json!({}),
        };
        assert!(holds(&doc, &[chunk(0, 1, "One. Two. Three.")]));
        assert!(holds(
            &doc,
            &[chunk(1, 2, "Two. Three."), chunk(0, 2, "One. Two.")]
        ));
        assert!(!holds(&doc, &[chunk(0, 2, "One. Two.")]), "a piece missing");
        assert!(
            !holds(&doc, &[chunk(0, 2, "One."), chunk(1, 2, "Three.")]),
            "not covered"
        );
        assert!(
            !holds(&doc, &[chunk(0, 2, "One. Two."), chunk(1, 2, "Four.")]),
            "stale text"
        );
        assert!(
            !holds(&doc, &[chunk(0, 1, "One. Two.")]),
            "one chunk holds it all"
        );
        let mut moved = chunk(0, 1, "One. Two. Three.");
        moved.key = "other".into();
        assert!(!holds(&doc, &[moved]));
        let mut old_fields = chunk(0, 1, "One. Two. Three.");
        old_fields.metadata = json!({"tag": "removed since"});
        assert!(!holds(&doc, &[old_fields]), "a field of an older version");
    }
}
