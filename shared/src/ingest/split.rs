//! Step 2, split: one record's text into chunks, packed into chunk messages (or into the rejects
//! when it cannot be).

use serde_json::Value;

use crate::chunker::chunk_text;
use crate::config::IngestConfig;
use crate::message::{ChunkPayload, MessagePacker, SourceRef};
use crate::record::{Document, RecordOrigin};

/// Packs one record's chunks; returns how many, or why it was rejected with the text to keep.
pub(super) fn pack_record(
    cfg: &IngestConfig,
    source: &SourceRef,
    raw: crate::reader::RawRecord,
    packer: &mut MessagePacker,
    bodies: &mut Vec<String>,
) -> Result<u32, (String, String)> {
    let position = raw.position;
    let value = raw.value.map_err(|e| {
        (
            e.to_string(),
            String::from_utf8_lossy(&raw.raw).into_owned(),
        )
    })?;
    let origin = RecordOrigin {
        bucket: &source.bucket,
        key: &source.key,
    };
    let doc = cfg
        .fields
        .document(value, origin)
        .map_err(|(e, record)| (e.to_string(), record.to_string()))?;
    pack_document(cfg, doc, position.number(), None, packer, bodies)
}

/// Packs one document's chunks (a record's, or a section's of a PDF, Word, ... file, with its
/// citation); returns how many, or why it was rejected with the text to keep.
pub(super) fn pack_document(
    cfg: &IngestConfig,
    doc: Document,
    record: u64,
    citation: Option<Value>,
    packer: &mut MessagePacker,
    bodies: &mut Vec<String>,
) -> Result<u32, (String, String)> {
    let texts = chunk_text(&doc.text, &cfg.chunking);
    let chunk_count = texts.len() as u32;
    let encoded: Vec<String> = texts
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            MessagePacker::encode(&ChunkPayload {
                doc_id: doc.doc_id.clone(),
                chunk_index: i as u32,
                chunk_count,
                record,
                text,
                metadata: doc.metadata.clone(),
                citation: citation.clone(),
                vector: None,
            })
        })
        .collect();
    // All of a record's chunks go, or none: check the largest before packing any.
    if let Some(largest) = encoded.iter().map(String::len).max()
        && let Err(e) = packer.fits(largest)
    {
        let mut record = doc.metadata.clone();
        record.insert("text".into(), doc.text.clone().into());
        return Err((e.to_string(), Value::Object(record).to_string()));
    }
    for chunk in &encoded {
        if let Some(body) = packer.push(chunk).expect("size checked above") {
            bodies.push(body);
        }
    }
    Ok(chunk_count)
}
