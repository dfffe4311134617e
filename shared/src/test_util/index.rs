//! Elasticsearch in memory, as far as ordering depends on it: versions and compare-and-set on
//! every write, real-time `_mget`, partial updates merged into the stored document, and
//! `_delete_by_query` that only sees refreshed documents.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use serde_json::{Value, json};

use crate::embed::EmbeddingModel;
use crate::embed_index::SearchIndex;
use crate::es::bulk::parse_bulk_answer;
use crate::es::state::parse_lookup;
use crate::es::{BulkOutcome, DocVersion, EsError, Stored, VectorSettings};
use crate::message::SourceRef;

pub const CHUNKS: &str = "docs";
pub const MARKERS: &str = "docs-sources";

pub type Hook = Box<dyn FnOnce(&MemoryIndex) + Send>;

/// A document and its version.
#[derive(Clone)]
pub struct Doc {
    pub source: Value,
    pub version: DocVersion,
}

/// Elasticsearch's ordering semantics in memory. Scripted statuses for the next chunk bulk
/// items come first; `down` answers every request as an unreachable cluster.
#[derive(Default)]
pub struct MemoryIndex {
    pub docs: Mutex<HashMap<(String, String), Doc>>,
    /// Chunk ids a `_delete_by_query` can see (written before the last refresh).
    pub refreshed: Mutex<HashSet<String>>,
    pub seq_no: AtomicUsize,
    pub script: Mutex<Vec<u16>>,
    pub down: std::sync::atomic::AtomicBool,
    pub bulk_calls: AtomicUsize,
    /// Run once, right before / after the next chunk write lands: another container's move.
    pub before_write: Mutex<Option<Hook>>,
    pub after_write: Mutex<Option<Hook>>,
}

impl MemoryIndex {
    pub fn chunk(&self, id: &str) -> Option<Value> {
        let docs = self.docs.lock().unwrap();
        docs.get(&(CHUNKS.into(), id.into()))
            .map(|d| d.source.clone())
    }

    pub fn chunk_count(&self) -> usize {
        let docs = self.docs.lock().unwrap();
        docs.keys().filter(|(i, _)| i == CHUNKS).count()
    }

    /// Another container's marker write for key `key` of bucket `b` (`fields` over a live
    /// marker, its sequencer normalised); returns whether a marker was there before.
    pub fn set_marker(&self, key: &str, mut fields: Value) -> bool {
        let id = crate::ids::source_marker_id("b", key);
        let seq = fields["sequencer"].as_str().unwrap().to_owned();
        fields["sequencer"] = json!(crate::ids::normalize_sequencer(&seq));
        let mut source = json!({"bucket": "b", "key": key, "deleted": false, "updated_at": "t"});
        for (k, v) in fields.as_object().unwrap() {
            source[k] = v.clone();
        }
        let seq_no = self.seq_no.fetch_add(1, AtomicOrdering::SeqCst) as u64;
        let version = DocVersion {
            seq_no,
            primary_term: 1,
        };
        let mut docs = self.docs.lock().unwrap();
        docs.insert((MARKERS.into(), id), Doc { source, version })
            .is_some()
    }

    pub fn check(&self) -> Result<(), EsError> {
        if self.down.load(AtomicOrdering::SeqCst) {
            Err(EsError::Unreachable {
                url: "http://es".into(),
                detail: "connection refused".into(),
                timeout: false,
            })
        } else {
            Ok(())
        }
    }

    /// Applies one action with its precondition; returns the item's answer.
    fn apply(&self, action: &str, meta: &Value, doc: Option<&Value>) -> Value {
        let index = meta["_index"].as_str().unwrap().to_owned();
        let id = meta["_id"].as_str().unwrap().to_owned();
        let mut docs = self.docs.lock().unwrap();
        let key = (index.clone(), id.clone());
        let current = docs.get(&key).map(|d| d.version);
        let wanted = meta["if_seq_no"].as_u64().map(|s| DocVersion {
            seq_no: s,
            primary_term: meta["if_primary_term"].as_u64().unwrap(),
        });
        let conflict = |reason: &str| json!({action: {"_id": id, "status": 409, "error": {"type": "version_conflict_engine_exception", "reason": reason}}});
        if action == "create" && current.is_some() {
            return conflict("document already exists");
        }
        if wanted.is_some() && wanted != current {
            return conflict("required seqNo");
        }
        if action == "update" && current.is_none() {
            return json!({action: {"_id": id, "status": 404, "error": {"type": "document_missing_exception", "reason": "missing"}}});
        }
        let seq_no = self.seq_no.fetch_add(1, AtomicOrdering::SeqCst) as u64;
        let version = DocVersion {
            seq_no,
            primary_term: 1,
        };
        match action {
            "delete" => {
                docs.remove(&key);
                self.refreshed.lock().unwrap().remove(&id);
            }
            "update" => {
                let stored = docs.get_mut(&key).unwrap();
                merge(&mut stored.source, &doc.unwrap()["doc"]);
                stored.version = version;
            }
            _ => {
                docs.insert(
                    key,
                    Doc {
                        source: doc.unwrap().clone(),
                        version,
                    },
                );
            }
        }
        json!({action: {"_id": id, "status": 200, "_seq_no": seq_no, "_primary_term": 1}})
    }
}

impl SearchIndex for MemoryIndex {
    fn index_name(&self) -> &str {
        CHUNKS
    }

    fn marker_index(&self) -> String {
        MARKERS.into()
    }

    async fn ensure_index(&self, _: &EmbeddingModel, _: &VectorSettings) -> Result<(), EsError> {
        self.check()
    }

    /// Answers as `_mget` does, read by the client's own parser.
    async fn lookup(&self, chunk_ids: &[String], marker_ids: &[String]) -> Result<Stored, EsError> {
        self.check()?;
        let docs = self.docs.lock().unwrap();
        let answer: Vec<Value> = chunk_ids
            .iter()
            .map(|id| (CHUNKS, id))
            .chain(marker_ids.iter().map(|id| (MARKERS, id)))
            .map(|(index, id)| match docs.get(&(index.into(), id.clone())) {
                Some(d) => json!({"_id": id, "found": true, "_seq_no": d.version.seq_no,
                    "_primary_term": d.version.primary_term, "_source": d.source}),
                None => json!({"_id": id, "found": false}),
            })
            .collect();
        Ok(parse_lookup(&json!({ "docs": answer }), chunk_ids, marker_ids).unwrap())
    }

    /// A search over refreshed chunks, as the client's: the first stored vector per hash.
    async fn vectors_by_content(
        &self,
        shas: &[String],
        model_id: &str,
    ) -> Result<HashMap<String, Vec<f32>>, EsError> {
        self.check()?;
        let docs = self.docs.lock().unwrap();
        let refreshed = self.refreshed.lock().unwrap();
        let mut found = HashMap::new();
        let mut ids: Vec<&(String, String)> = docs.keys().collect();
        ids.sort();
        for key in ids {
            let source = &docs[key].source;
            let Some(sha) = source["content_sha256"].as_str() else {
                continue;
            };
            if key.0 != CHUNKS
                || !refreshed.contains(&key.1)
                || source["model_id"] != model_id
                || !shas.iter().any(|s| s == sha)
            {
                continue;
            }
            let vector: Option<Vec<f32>> = source["embedding"]
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_f64().map(|x| x as f32)).collect());
            if let Some(vector) = vector {
                found.entry(sha.to_owned()).or_insert(vector);
            }
        }
        Ok(found)
    }

    async fn bulk(&self, body: Vec<u8>, actions: usize) -> Result<BulkOutcome, EsError> {
        self.check()?;
        self.bulk_calls.fetch_add(1, AtomicOrdering::SeqCst);
        let text = String::from_utf8(body).unwrap();
        if text.contains(&format!("\"_index\":\"{CHUNKS}\""))
            && let Some(then) = self.before_write.lock().unwrap().take()
        {
            then(self);
        }
        let mut lines = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap());
        let mut items = Vec::new();
        let mut wrote_chunk = false;
        while let Some(line) = lines.next() {
            let (action, meta) = line.as_object().unwrap().iter().next().unwrap();
            let doc = if action == "delete" {
                None
            } else {
                lines.next()
            };
            let chunk = meta["_index"] == CHUNKS;
            let scripted = if chunk && action != "delete" {
                let mut script = self.script.lock().unwrap();
                (!script.is_empty()).then(|| script.remove(0))
            } else {
                None
            };
            let item = match scripted {
                Some(status) if status >= 300 => {
                    json!({action: {"_id": meta["_id"], "status": status, "error": {"type": if status == 429 { "es_rejected_execution_exception" } else { "document_parsing_exception" }, "reason": "scripted"}}})
                }
                _ => {
                    wrote_chunk |= chunk && action != "delete";
                    self.apply(action, meta, doc.as_ref())
                }
            };
            items.push(item);
        }
        if wrote_chunk && let Some(then) = self.after_write.lock().unwrap().take() {
            then(self);
        }
        let answer = json!({"errors": true, "items": items});
        Ok(parse_bulk_answer(answer.to_string().as_bytes(), actions).unwrap())
    }

    async fn refresh(&self) -> Result<(), EsError> {
        self.check()?;
        let docs = self.docs.lock().unwrap();
        let mut refreshed = self.refreshed.lock().unwrap();
        refreshed.extend(
            docs.keys()
                .filter(|(i, _)| i == CHUNKS)
                .map(|(_, id)| id.clone()),
        );
        Ok(())
    }

    async fn count_chunks(&self, source: &SourceRef, sequencer: &str) -> Result<u64, EsError> {
        self.check()?;
        let docs = self.docs.lock().unwrap();
        let refreshed = self.refreshed.lock().unwrap();
        Ok(docs
            .iter()
            .filter(|((index, id), d)| {
                let s = &d.source["source"];
                index == CHUNKS
                    && refreshed.contains(id)
                    && s["bucket"] == source.bucket.as_str()
                    && s["key"] == source.key.as_str()
                    && (s["sequencer"] == sequencer || same_content(s, source))
            })
            .count() as u64)
    }

    async fn delete_chunks(
        &self,
        source: &SourceRef,
        sequencer: &str,
        inclusive: bool,
    ) -> Result<u64, EsError> {
        self.check()?;
        let mut docs = self.docs.lock().unwrap();
        let refreshed = self.refreshed.lock().unwrap();
        let before = docs.len();
        docs.retain(|(index, id), d| {
            let s = &d.source["source"];
            let same = index == CHUNKS
                && s["key"] == source.key.as_str()
                && s["bucket"] == source.bucket.as_str();
            let seq = s["sequencer"].as_str().unwrap_or("");
            let goes = if inclusive {
                seq <= sequencer
            } else {
                seq < sequencer && !same_content(s, source)
            };
            !(same && goes && refreshed.contains(id))
        });
        Ok((before - docs.len()) as u64)
    }
}

/// Whether a stored chunk's `source` holds the same content (eTag) as `source`.
fn same_content(stored: &Value, source: &SourceRef) -> bool {
    source
        .etag
        .as_deref()
        .is_some_and(|etag| stored["etag"] == etag)
}

/// A partial document merged into a stored one as Elasticsearch's `update` does: objects
/// recursively, key by key, so a field the partial document leaves out stays as stored; any
/// other value replaces.
/// <https://www.elastic.co/guide/en/elasticsearch/reference/current/docs-update.html#_update_part_of_a_document>
pub fn merge(stored: &mut Value, partial: &Value) {
    match (stored, partial) {
        (Value::Object(stored), Value::Object(partial)) => {
            for (k, v) in partial {
                match stored.get_mut(k) {
                    Some(old) if old.is_object() && v.is_object() => merge(old, v),
                    _ => {
                        stored.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (stored, partial) => *stored = partial.clone(),
    }
}
