//! The chunk message the ingester queues and the embed-index worker consumes, and the packing of
//! chunks into message bodies under a byte budget.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{IdScope, chunk_id, object_chunk_id};

/// Version of the message layout; a worker rejects versions it does not know.
pub const MESSAGE_VERSION: u32 = 1;

/// The S3 object version a set of chunks came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRef {
    pub bucket: String,
    pub key: String,
    #[serde(default)]
    pub version_id: Option<String>,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub sequencer: Option<String>,
    /// When ingest began reading this version (RFC 3339, nanoseconds): of two writes of the same
    /// content (eTag) the later read holds the object, since it was cut under the settings in
    /// force later (a backfill after `CHUNK_MAX_CHARS` changed, an event delivered late). Fixed
    /// at the first part, so every message of one read carries the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<String>,
}

/// One chunk of one document, as queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkPayload {
    pub doc_id: String,
    pub chunk_index: u32,
    pub chunk_count: u32,
    /// Line number (JSON Lines) or position (arrays) of the record in its object.
    pub record: u64,
    pub text: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// Where in a document (not a JSON record) the chunk's text is: the format, a label a
    /// person reads (`"page 14"`, `"導入 > 2.1 ネットワーク"`) and its parts
    /// (`documents::citation_fields`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citation: Option<Value>,
    /// The chunk's embedding, when a worker already paid for it but could not index it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<CarriedVector>,
}

/// An embedding carried in a message: which model made it, and its floats as little-endian
/// `f32` bytes in base64 (a 1024-dimension vector is 5.5 KB, a third of its JSON numbers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedVector {
    pub model_id: String,
    pub f32le: String,
}

impl CarriedVector {
    pub fn new(model_id: &str, vector: &[f32]) -> Self {
        let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
        Self {
            model_id: model_id.to_owned(),
            f32le: BASE64.encode(&bytes),
        }
    }

    /// The vector, if it decodes to `dimensions` floats.
    pub fn decode(&self, dimensions: usize) -> Option<Vec<f32>> {
        let bytes = BASE64.decode(&self.f32le).ok()?;
        if bytes.len() != dimensions * 4 {
            return None;
        }
        Some(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )
    }
}

/// What a message asks the worker to do with its source object's chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Embed and index the chunks it carries.
    Index,
    /// The object was removed: delete its chunks written before this event.
    Delete,
    /// The object version is fully queued: delete chunks of older versions of the same key.
    Sweep,
}

/// A queued unit of work: chunks of one source object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkMessage {
    pub v: u32,
    pub op: Operation,
    pub source: SourceRef,
    #[serde(default)]
    pub chunks: Vec<ChunkPayload>,
    /// How many times embed-index has put this work back on the queue while Elasticsearch was
    /// unavailable: the hop count that bounds that loop.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub requeues: u32,
    /// On a sweep: how many chunks the version queued. embed-index removes older chunks only
    /// once that many are indexed, so a sweep that overtakes its own chunks never deletes one
    /// they would have kept (and so never makes it embed one again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks_expected: Option<u64>,
    /// On a sweep that waits for its version's chunks: how many were indexed when it last
    /// looked. More at the next look means they are arriving: it looks again soon, without
    /// counting a wait, rather than on the outage's doubling schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexed_seen: Option<u64>,
    /// Where its chunks' record ids are unique, which decides their `_id`s.
    #[serde(default, skip_serializing_if = "is_bucket")]
    pub scope: IdScope,
}

fn is_bucket(scope: &IdScope) -> bool {
    *scope == IdScope::Bucket
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Why a message body could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("message body is not a chunk message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("message version {0} is not supported (this worker reads version {MESSAGE_VERSION})")]
    Version(u32),
}

impl ChunkMessage {
    /// The body of a message with no chunks (a deletion or a sweep).
    pub fn control(op: Operation, source: &SourceRef) -> String {
        let message = ChunkMessage {
            v: MESSAGE_VERSION,
            op,
            source: source.clone(),
            chunks: Vec::new(),
            requeues: 0,
            chunks_expected: None,
            indexed_seen: None,
            scope: IdScope::default(),
        };
        serde_json::to_string(&message).expect("a control message always serialises")
    }

    /// The body of the sweep that follows a version's `chunks` chunks.
    pub fn sweep(source: &SourceRef, chunks: u64) -> String {
        let message = ChunkMessage {
            v: MESSAGE_VERSION,
            op: Operation::Sweep,
            source: source.clone(),
            chunks: Vec::new(),
            requeues: 0,
            chunks_expected: Some(chunks),
            indexed_seen: None,
            scope: IdScope::default(),
        };
        serde_json::to_string(&message).expect("a sweep always serialises")
    }

    /// The `_id` a chunk of this message has in its scope: object-scoped ids name the object.
    /// With bucket-wide ids, the object-scoped one is where a chunk goes when another object
    /// holds its record id (see embed-index's writes).
    pub fn chunk_id(&self, chunk: &ChunkPayload) -> String {
        self.id_of(&chunk.doc_id, chunk.chunk_index)
    }

    /// The `_id` of chunk `chunk_index` of document `doc_id` of this message's object.
    pub fn id_of(&self, doc_id: &str, chunk_index: u32) -> String {
        match self.scope {
            IdScope::Bucket => chunk_id(doc_id, chunk_index),
            IdScope::Object => self.object_id_of(doc_id, chunk_index),
        }
    }

    /// The `_id` of a chunk scoped by this message's object.
    pub fn object_chunk_id(&self, chunk: &ChunkPayload) -> String {
        self.object_id_of(&chunk.doc_id, chunk.chunk_index)
    }

    fn object_id_of(&self, doc_id: &str, chunk_index: u32) -> String {
        object_chunk_id(&self.source.bucket, &self.source.key, doc_id, chunk_index)
    }

    /// The `_id`s chunk `chunk_index` of `doc_id` may be stored under: its scope's id and, for
    /// a bucket-wide record id, its object's own id (where it goes when another object holds
    /// the record id).
    pub fn candidate_ids(&self, doc_id: &str, chunk_index: u32) -> Vec<String> {
        let id = self.id_of(doc_id, chunk_index);
        let object_id = self.object_id_of(doc_id, chunk_index);
        if id == object_id {
            vec![id]
        } else {
            vec![id, object_id]
        }
    }

    pub fn parse(body: &str) -> Result<Self, MessageError> {
        let message: ChunkMessage = serde_json::from_str(body)?;
        if message.v != MESSAGE_VERSION {
            return Err(MessageError::Version(message.v));
        }
        Ok(message)
    }
}

/// A chunk whose serialised form alone is over the message budget.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a chunk with its metadata takes {bytes} bytes, over the {budget}-byte message budget")]
pub struct ChunkTooLarge {
    pub bytes: usize,
    pub budget: usize,
}

/// Packs chunks of one source object into message bodies of at most `budget` bytes.
pub struct MessagePacker {
    header: String,
    budget: usize,
    body: String,
    chunks: usize,
}

impl MessagePacker {
    pub fn new(source: &SourceRef, scope: IdScope, budget: usize) -> Self {
        Self::requeued(source, scope, 0, budget)
    }

    /// A packer for chunks going back on the queue for the `requeues`-th time.
    pub fn requeued(source: &SourceRef, scope: IdScope, requeues: u32, budget: usize) -> Self {
        let source = serde_json::to_string(source).expect("a source reference always serialises");
        let hops = if requeues > 0 {
            format!(r#""requeues":{requeues},"#)
        } else {
            String::new()
        };
        let scope = if is_bucket(&scope) {
            ""
        } else {
            r#""scope":"object","#
        };
        let header = format!(
            r#"{{"v":{MESSAGE_VERSION},"op":"index",{hops}{scope}"source":{source},"chunks":["#
        );
        Self {
            body: header.clone(),
            header,
            budget,
            chunks: 0,
        }
    }

    /// Serialises one chunk the way it will travel, so its size can be checked before packing.
    pub fn encode(chunk: &ChunkPayload) -> String {
        let json = serde_json::to_string(chunk).expect("a chunk always serialises");
        sqs_safe(json)
    }

    /// Whether an encoded chunk of `len` bytes fits in a message of its own.
    pub fn fits(&self, len: usize) -> Result<(), ChunkTooLarge> {
        let alone = self.header.len() + len + 2;
        if alone > self.budget {
            Err(ChunkTooLarge {
                bytes: alone,
                budget: self.budget,
            })
        } else {
            Ok(())
        }
    }

    /// Adds an encoded chunk; returns the full message it closed when it did not fit beside the
    /// chunks before it.
    pub fn push(&mut self, encoded: &str) -> Result<Option<String>, ChunkTooLarge> {
        self.fits(encoded.len())?;
        let mut closed = None;
        if self.chunks > 0 && self.body.len() + 1 + encoded.len() + 2 > self.budget {
            closed = self.finish();
        }
        if self.chunks > 0 {
            self.body.push(',');
        }
        self.body.push_str(encoded);
        self.chunks += 1;
        Ok(closed)
    }

    /// The last, partly filled message, if any chunk is waiting.
    pub fn finish(&mut self) -> Option<String> {
        if self.chunks == 0 {
            return None;
        }
        let mut body = std::mem::replace(&mut self.body, self.header.clone());
        body.push_str("]}");
        self.chunks = 0;
        Some(body)
    }
}

/// SQS refuses U+FFFE and U+FFFF in message bodies; JSON can carry them escaped.
fn sqs_safe(json: String) -> String {
    if json.contains(['\u{FFFE}', '\u{FFFF}']) {
        json.replace('\u{FFFE}', "\\ufffe")
            .replace('\u{FFFF}', "\\uffff")
    } else {
        json
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source() -> SourceRef {
        SourceRef {
            bucket: "b".into(),
            key: "docs/日本.jsonl".into(),
            version_id: None,
            etag: Some("e".into()),
            sequencer: Some("0A".into()),
            read_at: None,
        }
    }

    fn chunk(i: u32, text: &str) -> ChunkPayload {
        ChunkPayload {
            doc_id: format!("d{i}"),
            chunk_index: 0,
            chunk_count: 1,
            record: u64::from(i),
            text: text.into(),
            metadata: json!({"lang": "ja"}).as_object().unwrap().clone(),
            citation: None,
            vector: None,
        }
    }

    #[test]
    fn packs_under_budget_and_round_trips() {
        let mut packer = MessagePacker::new(&source(), IdScope::Object, 400);
        let mut bodies = Vec::new();
        for i in 0..10 {
            if let Some(body) = packer
                .push(&MessagePacker::encode(&chunk(i, "テキスト text")))
                .unwrap()
            {
                bodies.push(body);
            }
        }
        bodies.extend(packer.finish());
        assert!(bodies.len() > 1);
        let mut seen = 0;
        for body in &bodies {
            assert!(body.len() <= 400, "{} bytes", body.len());
            let msg = ChunkMessage::parse(body).unwrap();
            assert_eq!(msg.source, source());
            assert_eq!(msg.scope, IdScope::Object);
            for c in msg.chunks {
                assert_eq!(c, chunk(seen, "テキスト text"));
                seen += 1;
            }
        }
        assert_eq!(seen, 10);
        assert!(packer.finish().is_none());
    }

    #[test]
    fn a_chunk_over_budget_is_refused() {
        let mut packer = MessagePacker::new(&source(), IdScope::Object, 200);
        let err = packer
            .push(&MessagePacker::encode(&chunk(0, &"x".repeat(300))))
            .unwrap_err();
        assert_eq!(err.budget, 200);
        assert!(packer.finish().is_none());
    }

    #[test]
    fn noncharacters_are_escaped_for_sqs() {
        let enc = MessagePacker::encode(&chunk(0, "a\u{FFFE}b\u{FFFF}"));
        assert!(!enc.contains('\u{FFFE}') && enc.contains("\\ufffe"));
        let back: ChunkPayload = serde_json::from_str(&enc).unwrap();
        assert_eq!(back.text, "a\u{FFFE}b\u{FFFF}");
    }

    #[test]
    fn carried_vectors_round_trip_exactly() {
        let v = vec![0.1f32, -2.5, f32::MIN_POSITIVE, 1e-7];
        let carried = CarriedVector::new("amazon.titan-embed-text-v2:0", &v);
        assert_eq!(carried.decode(4).unwrap(), v);
        assert!(carried.decode(5).is_none());
        let chunk = ChunkPayload {
            vector: Some(carried),
            ..chunk(0, "t")
        };
        let back: ChunkPayload = serde_json::from_str(&MessagePacker::encode(&chunk)).unwrap();
        assert_eq!(back, chunk);
    }

    #[test]
    fn requeued_messages_carry_their_hop_count() {
        let mut packer = MessagePacker::requeued(&source(), IdScope::Object, 3, 4096);
        packer.push(&MessagePacker::encode(&chunk(0, "t"))).unwrap();
        let msg = ChunkMessage::parse(&packer.finish().unwrap()).unwrap();
        assert_eq!((msg.requeues, msg.chunks.len()), (3, 1));
        let fresh = ChunkMessage::parse(&ChunkMessage::control(Operation::Sweep, &source()));
        assert_eq!(fresh.unwrap().requeues, 0);
    }

    #[test]
    fn control_messages_round_trip() {
        let body = ChunkMessage::control(Operation::Delete, &source());
        let msg = ChunkMessage::parse(&body).unwrap();
        assert_eq!((msg.op, msg.chunks.len()), (Operation::Delete, 0));
        assert!(body.contains(r#""op":"delete""#));
    }

    #[test]
    fn parse_errors_are_clear() {
        assert!(
            ChunkMessage::parse("{not json")
                .unwrap_err()
                .to_string()
                .contains("not a chunk message")
        );
        let v2 = r#"{"v":2,"op":"index","source":{"bucket":"b","key":"k"},"chunks":[]}"#;
        assert!(
            ChunkMessage::parse(v2)
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
    }
}
