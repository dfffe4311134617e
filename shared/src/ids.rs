//! Deterministic identities: the same record always yields the same document and chunk ids, so
//! S3's at-least-once delivery and Lambda's retries overwrite instead of duplicating.

use sha2::{Digest, Sha256};

/// A record's id when it has no `ID_FIELD` value: its object, readable by an operator, and 64
/// bits of SHA-256 over the record's content (its JSON with keys in order). The id follows the
/// content, not the position: a line inserted above it changes nothing, and identical records
/// of one object are one document.
pub fn derived_doc_id(bucket: &str, key: &str, record: &impl serde::Serialize) -> String {
    let bytes = serde_json::to_vec(record).expect("a parsed record always serialises");
    let digest = Sha256::digest(&bytes);
    format!("s3://{bucket}/{key}#{}", hex::encode(&digest[..8]))
}

/// Where a record id is unique, and so what a chunk's `_id` is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdScope {
    /// Across the bucket (`ID_SCOPE=bucket`): one record id is one document wherever it lives.
    /// A message without a scope was queued before scopes existed, when this was the only one.
    #[default]
    Bucket,
    /// Within its object (the default): two objects that share a record id both keep it.
    Object,
}

impl std::str::FromStr for IdScope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "object" => Ok(Self::Object),
            "bucket" => Ok(Self::Bucket),
            other => Err(format!("{other:?} is not one of object, bucket")),
        }
    }
}

/// The Elasticsearch `_id` of one chunk with a bucket-wide record id: 32 hex digits (128 bits)
/// of SHA-256 over the document id and the chunk's position.
pub fn chunk_id(doc_id: &str, chunk_index: u32) -> String {
    let mut hasher = Sha256::new();
    hasher.update(doc_id.as_bytes());
    // A separator no id can contain keeps ("a1", 0) and ("a", 10) apart.
    hasher.update([0u8]);
    hasher.update(chunk_index.to_be_bytes());
    hex::encode(&hasher.finalize()[..16])
}

/// The `_id` of one chunk of a record id scoped by its object: the object (bucket and key)
/// goes into the hash too, so the same record id in two objects is two documents.
pub fn object_chunk_id(bucket: &str, key: &str, doc_id: &str, chunk_index: u32) -> String {
    let mut hasher = Sha256::new();
    // A leading tag no bucket-wide id hashes keeps the two kinds apart.
    hasher.update(b"object\0");
    for part in [bucket, key, doc_id] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    hasher.update(chunk_index.to_be_bytes());
    hex::encode(&hasher.finalize()[..16])
}

/// SHA-256 of a chunk's text, in hex: what decides whether a chunk must be embedded again.
pub fn content_sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// S3 sequencers order events for one key once left-padded to equal length; padded to a fixed
/// width (and upper-cased) they compare correctly as plain strings, also inside Elasticsearch.
pub fn normalize_sequencer(sequencer: &str) -> String {
    format!("{:0>32}", sequencer.trim().to_ascii_uppercase())
}

/// The sequencer of a repair made by `sakuin reconcile` for an object whose marker holds
/// `observed` (empty: no marker, or only a backfill's). It orders after `observed` and after
/// every repair of it, and before every real event S3 sends later: a real sequencer is 32
/// characters of `0-9A-F`, so it exceeds `observed` at a position before the suffix (`+` sorts
/// below every hex digit). So the repair beats the event it corrects, and loses to any newer one.
pub fn repair_sequencer(observed: &str) -> String {
    format!("{observed}+")
}

/// The id of the per-object marker that records the newest event applied for a key.
pub fn source_marker_id(bucket: &str, key: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(bucket.as_bytes());
    hasher.update([0u8]);
    hasher.update(key.as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_ids_are_stable_and_distinct() {
        let a = chunk_id("doc-1", 0);
        assert_eq!(a, chunk_id("doc-1", 0));
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, chunk_id("doc-1", 1));
        assert_ne!(a, chunk_id("doc-2", 0));
        assert_ne!(chunk_id("a1", 0), chunk_id("a", 10));
    }

    #[test]
    fn chunk_id_is_pinned() {
        // Changing this value re-keys every index in production: it must never change by accident.
        assert_eq!(chunk_id("faq-001", 0), "290dec4627c784edccef5f7584eb02ef");
    }

    #[test]
    fn a_repair_orders_between_the_event_it_corrects_and_any_later_one() {
        let observed = normalize_sequencer("0065F1E2D3C4B5A697");
        let repair = repair_sequencer(&observed);
        assert!(repair > observed);
        assert!(repair < normalize_sequencer("0065F1E2D3C4B5A698"));
        assert!(repair < normalize_sequencer("0065F1E2D3C4B5A6970"));
        assert!(repair_sequencer(&repair) > repair);
        assert!(repair_sequencer(&repair) < normalize_sequencer("0065F1E2D3C4B5A698"));
        // No marker: after a backfill (empty), before every real event.
        assert!(!repair_sequencer("").is_empty());
        assert!(repair_sequencer("") < normalize_sequencer("0"));
        // A hand-made deletion still comes after everything.
        assert!(repair < "~".repeat(32));
    }

    #[test]
    fn sequencers_compare_after_padding() {
        let (older, newer) = (normalize_sequencer("9F"), normalize_sequencer("0A1B"));
        assert!(older < newer, "{older} vs {newer}");
        assert_eq!(normalize_sequencer("0065f1e2d3c4b5a697").len(), 32);
        assert_eq!(normalize_sequencer("00ab"), normalize_sequencer("AB"));
    }

    #[test]
    fn derived_id_names_the_source_and_follows_the_content() {
        let record = serde_json::json!({"text": "t", "tag": 1});
        let id = derived_doc_id("b", "k/x.jsonl", &record);
        assert!(id.starts_with("s3://b/k/x.jsonl#"), "{id}");
        assert_eq!(id.len(), "s3://b/k/x.jsonl#".len() + 16);
        // The same content wherever it stands; other content, another id.
        let same: serde_json::Value = serde_json::from_str(r#"{ "tag": 1, "text": "t" }"#).unwrap();
        assert_eq!(id, derived_doc_id("b", "k/x.jsonl", &same));
        assert_ne!(
            id,
            derived_doc_id("b", "k/x.jsonl", &serde_json::json!({"text": "u"}))
        );
        assert_ne!(id, derived_doc_id("b", "k/y.jsonl", &record));
    }

    #[test]
    fn object_scoped_ids_keep_two_objects_apart() {
        let a = object_chunk_id("b", "a.jsonl", "1", 0);
        assert_eq!(a, object_chunk_id("b", "a.jsonl", "1", 0));
        assert_ne!(a, object_chunk_id("b", "c.jsonl", "1", 0));
        assert_ne!(a, object_chunk_id("b", "a.jsonl", "1", 1));
        assert_ne!(a, chunk_id("1", 0));
        assert_eq!(
            object_chunk_id("docs", "faq.jsonl", "faq-001", 0),
            "c9911303f14b976a57d1b5c7f37dbe08",
            "pinned: changing it re-keys every index"
        );
    }

    #[test]
    fn content_hash_is_sha256_hex() {
        assert_eq!(
            content_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
