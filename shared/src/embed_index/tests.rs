//! The handler against an in-memory index that behaves as Elasticsearch does where ordering
//! depends on it: versions and compare-and-set on every write, real-time `_mget`, and
//! `_delete_by_query` that only sees refreshed documents.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use serde_json::{Value, json};

use super::*;
use crate::config::EmbedIndexConfig;
use crate::embed::{EmbedError, EmbeddingModel};
use crate::es::bulk::parse_bulk_answer;
use crate::es::state::parse_lookup;
use crate::es::{BulkOutcome, DocVersion, EsSettings, Stored, VectorSettings};
use crate::message::SourceRef;
use crate::test_util::{FailingEmbedder, MemoryEmbedder, MemoryQueue};

/// The shared fake embedder, behind the wrapper that throttles or refuses on a plan.
type TestEmbedder = FailingEmbedder<MemoryEmbedder>;

fn embedder(model: &EmbeddingModel, reject: Option<&str>) -> TestEmbedder {
    let e = FailingEmbedder::new(MemoryEmbedder::new(model.clone()));
    match reject {
        Some(text) => e.reject(text),
        None => e,
    }
}

const CHUNKS: &str = "docs";
const MARKERS: &str = "docs-sources";

type Hook = Box<dyn FnOnce(&MemoryIndex) + Send>;

/// A document and its version.
#[derive(Clone)]
struct Doc {
    source: Value,
    version: DocVersion,
}

/// Elasticsearch's ordering semantics in memory. Scripted statuses for the next chunk bulk
/// items come first; `down` answers every request as an unreachable cluster.
#[derive(Default)]
struct MemoryIndex {
    docs: Mutex<HashMap<(String, String), Doc>>,
    /// Chunk ids a `_delete_by_query` can see (written before the last refresh).
    refreshed: Mutex<HashSet<String>>,
    seq_no: AtomicUsize,
    script: Mutex<Vec<u16>>,
    down: std::sync::atomic::AtomicBool,
    bulk_calls: AtomicUsize,
    /// Run once, right before / after the next chunk write lands: another container's move.
    before_write: Mutex<Option<Hook>>,
    after_write: Mutex<Option<Hook>>,
}

impl MemoryIndex {
    fn chunk(&self, id: &str) -> Option<Value> {
        let docs = self.docs.lock().unwrap();
        docs.get(&(CHUNKS.into(), id.into()))
            .map(|d| d.source.clone())
    }

    fn chunk_count(&self) -> usize {
        let docs = self.docs.lock().unwrap();
        docs.keys().filter(|(i, _)| i == CHUNKS).count()
    }

    /// Another container's marker write for key `key` of bucket `b` (`fields` over a live
    /// marker, its sequencer normalised); returns whether a marker was there before.
    fn set_marker(&self, key: &str, mut fields: Value) -> bool {
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

    fn check(&self) -> Result<(), EsError> {
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
                for (k, v) in doc.unwrap()["doc"].as_object().unwrap() {
                    stored.source[k] = v.clone();
                }
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
                    && s["sequencer"] == sequencer
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
            let older = if inclusive {
                seq <= sequencer
            } else {
                seq < sequencer
            };
            !(same && older && refreshed.contains(id))
        });
        Ok((before - docs.len()) as u64)
    }
}

type Deps = EmbedIndexDeps<TestEmbedder, MemoryIndex, MemoryQueue>;

fn config(model: EmbeddingModel) -> EmbedIndexConfig {
    EmbedIndexConfig {
        es: EsSettings {
            tcp_mss: None,
            host: "h".into(),
            port: 9200,
            use_ssl: false,
            verify_certs: true,
            ca_cert_pem: None,
            auth: None,
            index: CHUNKS.into(),
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
        },
        es_secret_id: None,
        model,
        vectors: VectorSettings {
            similarity: crate::es::Similarity::Cosine,
            index_type: Some(crate::es::version::IndexType::Hnsw),
            text_analyzer: "cjk".into(),
        },
        concurrency: 4,
        adaptive: true,
        token_budget: None,
        bulk_max_bytes: 1 << 20,
        requeue_url: Some("q".into()),
        requeue_delay_secs: 60,
        requeue_max_delay_secs: 900,
        max_requeues: 3,
        message_max_bytes: 64 * 1024,
        sqs_max_payload_bytes: 256 * 1024,
    }
}

fn deps(reject: Option<&'static str>) -> Deps {
    let model = EmbeddingModel::resolve("amazon.titan-embed-text-v2:0", Some(256)).unwrap();
    let embedder = embedder(&model, reject);
    EmbedIndexDeps::new(
        embedder,
        MemoryIndex::default(),
        Some(MemoryQueue::default()),
        config(model),
    )
}

fn message(op: &str, key: &str, seq: Option<&str>, docs: &[(&str, &str)]) -> String {
    let chunks: Vec<Value> = docs
        .iter()
        .map(|(id, text)| json!({"doc_id": id, "chunk_index": 0, "chunk_count": 1, "record": 1, "text": text, "metadata": {"k": key}}))
        .collect();
    json!({"v": 1, "op": op, "source": {"bucket": "b", "key": key, "etag": "e", "sequencer": seq.map(crate::ids::normalize_sequencer)}, "chunks": chunks}).to_string()
}

fn event(bodies: &[String]) -> SqsEvent {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| json!({"messageId": format!("m{i}"), "receiptHandle": "r", "body": b, "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs"}))
        .collect();
    serde_json::from_value(json!({"Records": records})).unwrap()
}

fn failures(r: &SqsBatchResponse) -> Vec<String> {
    serde_json::to_value(r).unwrap()["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
        .collect()
}

async fn run(d: &Deps, bodies: &[String]) -> (Vec<String>, BatchStats) {
    let (r, stats) = handle_batch(d, event(bodies), Deadline::after(Duration::from_secs(30)))
        .await
        .unwrap();
    (failures(&r), stats)
}

fn requeued(d: &Deps) -> Vec<(String, i32)> {
    let queue = d.requeue.as_ref().unwrap();
    let taken = queue.take().into_iter();
    taken.map(|e| (e.body, e.delay_seconds)).collect()
}

/// The SQS batches of `events/` (what `sam local invoke` uses): the chunk messages are indexed,
/// and the poison one (its body cut short) fails alone, by its message id.
#[tokio::test(start_paused = true)]
async fn the_sqs_events_of_the_events_folder() {
    let d = deps(None);
    let batch = async |text: &str| {
        let event: SqsEvent = serde_json::from_str(text).unwrap();
        let (r, stats) = handle_batch(&d, event, Deadline::after(Duration::from_secs(30)))
            .await
            .unwrap();
        (failures(&r), stats)
    };
    let (failed, stats) = batch(include_str!("../../../events/sqs-chunks.json")).await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!((stats.chunks, stats.indexed), (3, 3));
    assert_eq!(d.index.chunk_count(), 3);

    let (failed, _) = batch(include_str!("../../../events/sqs-poison.json")).await;
    assert_eq!(failed, ["c3d9e8f1-2a4b-4c6d-8e0f-1a2b3c4d5e6f"]);
}

#[tokio::test(start_paused = true)]
async fn a_poison_message_fails_alone() {
    let d = deps(None);
    let bodies = vec![
        message("index", "k", None, &[("a", "alpha")]),
        "{\"v\":1,".into(),
        message("index", "j", None, &[("b", "beta")]),
    ];
    let (failed, stats) = run(&d, &bodies).await;
    assert_eq!(failed, vec!["m1"]);
    assert_eq!(stats.indexed, 2);
    assert_eq!(d.index.chunk_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn duplicates_and_unchanged_chunks_cost_no_embedding() {
    let d = deps(None);
    let body = message("index", "k", Some("01"), &[("a", "alpha"), ("b", "beta")]);
    let (failed, stats) = run(&d, &[body.clone(), body.clone()]).await;
    assert!(failed.is_empty());
    assert_eq!((stats.chunks, stats.embedded), (2, 2));
    let (_, stats) = run(&d, &[body]).await;
    assert_eq!((stats.unchanged, stats.embedded, stats.indexed), (2, 0, 2));
    assert_eq!(d.embedder.inner.texts(), 2);
}

#[tokio::test(start_paused = true)]
async fn rejected_items_fail_their_message_and_busy_items_are_retried() {
    let d = deps(None);
    *d.index.script.lock().unwrap() = vec![429, 400, 503];
    let bodies = vec![
        message("index", "k1", None, &[("a", "alpha")]),
        message("index", "k2", None, &[("b", "beta")]),
        message("index", "k3", None, &[("c", "gamma")]),
    ];
    let (failed, stats) = run(&d, &bodies).await;
    assert_eq!(failed, vec!["m1"], "{stats:?}");
    assert_eq!(stats.indexed, 2);
    assert!(d.index.bulk_calls.load(AtomicOrdering::SeqCst) >= 2);
    assert_eq!(stats.bulk_retries, 2, "the 429 and the 503 are resent");
    assert_eq!(
        stats.failures.nonzero().collect::<Vec<_>>(),
        vec![(FailureReason::EsRejected, 1)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_chunk_bedrock_refuses_fails_only_its_message() {
    let d = deps(Some("poisoned text"));
    let bodies = vec![
        message("index", "k", None, &[("a", "fine")]),
        message("index", "j", None, &[("b", "poisoned text")]),
    ];
    let (failed, stats) = run(&d, &bodies).await;
    assert_eq!(failed, vec!["m1"]);
    assert_eq!(stats.failed_embedding, 1);
    assert_eq!(
        stats.failures.nonzero().collect::<Vec<_>>(),
        vec![(FailureReason::ModelRejected, 1)]
    );
}

#[test]
fn embedding_errors_are_counted_by_reason() {
    let permanent = |code: &str| EmbedError::Permanent {
        code: code.into(),
        message: "m".into(),
    };
    let cases = [
        (EmbedError::Throttled("t".into()), "throttled"),
        (EmbedError::Transient("503".into()), "bedrock_error"),
        (EmbedError::OutOfTime, "out_of_time"),
        (permanent("ValidationException"), "model_rejected"),
        (permanent("AccessDeniedException"), "access_denied"),
    ];
    let mut failures = Failures::default();
    for (error, label) in &cases {
        let reason = FailureReason::of_embedding(error);
        assert_eq!(reason.label(), *label);
        failures.add(reason);
    }
    failures.add(FailureReason::Throttled);
    assert_eq!(
        format!("{failures:?}"),
        r#"{"throttled": 2, "bedrock_error": 1, "out_of_time": 1, "model_rejected": 1, "access_denied": 1}"#
    );
}

#[tokio::test(start_paused = true)]
async fn an_older_event_never_wins_over_a_newer_one() {
    let d = deps(None);
    run(
        &d,
        &[message("index", "k", Some("0B"), &[("a", "new text")])],
    )
    .await;
    let (failed, stats) = run(
        &d,
        &[message(
            "index",
            "k",
            Some("0A"),
            &[("a", "old text"), ("stale", "old only")],
        )],
    )
    .await;
    assert!(failed.is_empty());
    assert_eq!(stats.superseded, 2);
    assert_eq!(
        d.index.chunk(&chunk_id("a", 0)).unwrap()["text"],
        "new text"
    );
    assert!(d.index.chunk(&chunk_id("stale", 0)).is_none());
}

#[tokio::test(start_paused = true)]
async fn an_index_and_a_delete_of_one_key_in_one_batch_apply_only_the_newer() {
    let d = deps(None);
    let (_, stats) = run(
        &d,
        &[
            message("delete", "k", Some("0C"), &[]),
            message("index", "k", Some("0B"), &[("a", "gone")]),
        ],
    )
    .await;
    assert_eq!((stats.superseded, stats.embedded), (1, 0));
    assert_eq!(d.index.chunk_count(), 0);
    // And a late copy of the index message changes nothing.
    run(&d, &[message("index", "k", Some("0B"), &[("a", "gone")])]).await;
    assert_eq!(d.index.chunk_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn overwrite_sweeps_stale_chunks_and_delete_removes_the_rest() {
    let d = deps(None);
    run(
        &d,
        &[message(
            "index",
            "k",
            Some("01"),
            &[("a", "one"), ("b", "two"), ("c", "three")],
        )],
    )
    .await;
    run(
        &d,
        &[message(
            "index",
            "other",
            Some("01"),
            &[("z", "other object")],
        )],
    )
    .await;
    // The new version has fewer records; its sweep may even arrive before its chunks.
    let (failed, _) = run(
        &d,
        &[
            message("sweep", "k", Some("02"), &[]),
            message("index", "k", Some("02"), &[("a", "one v2")]),
        ],
    )
    .await;
    assert!(failed.is_empty());
    assert!(d.index.chunk(&chunk_id("a", 0)).is_some());
    assert!(
        d.index.chunk(&chunk_id("b", 0)).is_none() && d.index.chunk(&chunk_id("c", 0)).is_none()
    );
    // A late, older delete changes nothing; the real delete removes the object's chunks only.
    let (_, stats) = run(&d, &[message("delete", "k", Some("01"), &[])]).await;
    assert_eq!(stats.deleted, 0);
    let (_, stats) = run(&d, &[message("delete", "k", Some("03"), &[])]).await;
    assert_eq!(stats.deleted, 1);
    assert_eq!(d.index.chunk_count(), 1);
    assert!(d.index.chunk(&chunk_id("z", 0)).is_some());
}

/// Another container applies a deletion of the object right after this one wrote an older
/// version's chunks, before the writes were refreshed: the deletion cannot see them, so the
/// writer must notice the newer marker and take its chunks back.
#[tokio::test(start_paused = true)]
async fn a_delete_racing_a_write_leaves_nothing_behind() {
    let d = deps(None);
    // The other container's whole batch (claim, refresh, delete) falls between this writer's
    // write and its re-check; its refresh came before the write, so its delete saw nothing.
    *d.index.after_write.lock().unwrap() = Some(Box::new(move |index: &MemoryIndex| {
        let claimed = index.set_marker("k", json!({"sequencer": "0C", "deleted": true}));
        assert!(claimed, "the writer claimed the marker before writing");
    }));
    let (failed, stats) = run(
        &d,
        &[message(
            "index",
            "k",
            Some("0B"),
            &[("a", "late"), ("b", "late")],
        )],
    )
    .await;
    assert!(failed.is_empty());
    assert_eq!(stats.compensated, 2, "{stats:?}");
    assert_eq!(d.index.chunk_count(), 0);
}

/// Two writers of different versions race for the same chunk id: the older one loses the
/// compare-and-set, reads again, and leaves the newer text alone.
#[tokio::test(start_paused = true)]
async fn the_older_of_two_racing_writers_loses() {
    let d = deps(None);
    run(&d, &[message("index", "k", Some("0A"), &[("a", "first")])]).await;
    let id = chunk_id("a", 0);
    let staged = id.clone();
    // A newer event (0C) writes the chunk between this batch's lookup and its write.
    *d.index.before_write.lock().unwrap() = Some(Box::new(move |index: &MemoryIndex| {
        let mut docs = index.docs.lock().unwrap();
        let seq_no = index.seq_no.fetch_add(1, AtomicOrdering::SeqCst) as u64;
        let doc = docs.get_mut(&(CHUNKS.into(), staged)).unwrap();
        doc.source["text"] = json!("newest");
        doc.source["content_sha256"] = json!(crate::ids::content_sha256("newest"));
        doc.source["source"]["sequencer"] = json!(crate::ids::normalize_sequencer("0C"));
        doc.version = DocVersion {
            seq_no,
            primary_term: 1,
        };
    }));
    let (failed, stats) = run(
        &d,
        &[message("index", "k", Some("0B"), &[("a", "older v2")])],
    )
    .await;
    assert!(failed.is_empty());
    assert_eq!((stats.conflicts, stats.superseded), (1, 1), "{stats:?}");
    assert_eq!(d.index.chunk(&id).unwrap()["text"], "newest");
}

#[tokio::test(start_paused = true)]
async fn a_backfill_fills_unseen_objects_and_never_undoes_an_event() {
    let d = deps(None);
    // Seen by an event: a backfill of another eTag is not applied.
    run(
        &d,
        &[message(
            "index",
            "k",
            Some("0A"),
            &[("a", "from the event")],
        )],
    )
    .await;
    let mut stale =
        serde_json::from_str::<Value>(&message("index", "k", None, &[("a", "listing")])).unwrap();
    stale["source"]["etag"] = json!("other");
    let (_, stats) = run(&d, &[stale.to_string()]).await;
    assert_eq!(stats.superseded, 1);
    assert_eq!(
        d.index.chunk(&chunk_id("a", 0)).unwrap()["text"],
        "from the event"
    );
    // Unseen object: applied, and a later real event of it wins.
    run(&d, &[message("index", "new", None, &[("n", "backfilled")])]).await;
    assert_eq!(
        d.index.chunk(&chunk_id("n", 0)).unwrap()["text"],
        "backfilled"
    );
    run(&d, &[message("delete", "new", Some("01"), &[])]).await;
    assert!(d.index.chunk(&chunk_id("n", 0)).is_none());
}

#[tokio::test(start_paused = true)]
async fn an_outage_waits_on_the_queue_with_growing_delays_and_never_pays_twice() {
    let d = deps(None);
    // Elasticsearch answers 503 to every chunk write of the first batch.
    *d.index.script.lock().unwrap() = vec![503; 20];
    let body = message("index", "k", Some("01"), &[("a", "alpha"), ("b", "beta")]);
    let (failed, stats) = run(&d, &[body]).await;
    assert!(
        failed.is_empty(),
        "the message waits on the queue, not toward the DLQ"
    );
    assert_eq!((stats.embedded, stats.requeued), (2, 2));
    assert_eq!(stats.failures.get(FailureReason::EsUnavailable), 2);
    let back = requeued(&d);
    assert_eq!((back.len(), back[0].1), (1, 60));

    // Now the cluster is unreachable altogether: the message goes round again, later each time,
    // without calling Bedrock, until the hop limit (3 here) sends it to the DLQ.
    d.index.script.lock().unwrap().clear();
    d.index.down.store(true, AtomicOrdering::SeqCst);
    let calls = d.embedder.attempts();
    let mut body = back[0].0.clone();
    for delay in [120, 240] {
        let (failed, _) = run(&d, &[body.clone()]).await;
        assert!(failed.is_empty());
        let back = requeued(&d);
        assert_eq!(back[0].1, delay);
        body = back[0].0.clone();
    }
    let (failed, _) = run(&d, &[body.clone()]).await;
    assert_eq!(failed.len(), 1, "over MAX_REQUEUES: to the DLQ");

    // The cluster is back: the last copy indexes without any Bedrock call.
    d.index.down.store(false, AtomicOrdering::SeqCst);
    let (failed, stats) = run(&d, &[body]).await;
    assert!(failed.is_empty());
    assert_eq!((stats.reused, stats.embedded, stats.indexed), (2, 0, 2));
    assert_eq!(d.embedder.attempts(), calls);
    assert_eq!(
        d.index.chunk(&chunk_id("a", 0)).unwrap()["embedding"]
            .as_array()
            .unwrap()
            .len(),
        256
    );
}

#[tokio::test(start_paused = true)]
async fn throttled_work_waits_on_the_queue_and_never_counts_toward_the_dlq() {
    let d = deps(None);
    d.embedder.set_throttled(true);
    let body = message("index", "k", Some("01"), &[("a", "alpha"), ("b", "beta")]);
    let (failed, stats) = run(&d, &[body]).await;
    assert!(failed.is_empty(), "handed back, not failed toward the DLQ");
    // Throttled past the retries, or still waiting for the pace when the time ran out.
    assert_eq!(
        stats.failures.get(FailureReason::Throttled) + stats.failures.get(FailureReason::OutOfTime),
        2
    );
    assert!(stats.embed.throttles >= 1, "{:?}", stats.embed);
    let back = requeued(&d);
    assert_eq!((back.len(), back[0].1), (1, 60), "delayed");
    assert!(
        d.pacer.report().rate.is_some(),
        "the container paces its calls from now on"
    );

    // The quota has room again: the handed-back message lands.
    d.embedder.set_throttled(false);
    let (failed, stats) = run(&d, &[back[0].0.clone()]).await;
    assert!(failed.is_empty());
    assert_eq!((stats.embedded, stats.indexed), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn a_cold_start_during_an_outage_is_no_failure() {
    let d = deps(None);
    d.index.down.store(true, AtomicOrdering::SeqCst);
    let bodies = [
        message("index", "k", Some("01"), &[("a", "alpha")]),
        message("delete", "j", Some("02"), &[]),
    ];
    let (failed, stats) = run(&d, &bodies).await;
    assert!(failed.is_empty());
    assert_eq!((stats.embedded, stats.messages_requeued), (0, 2));
    assert_eq!(d.embedder.attempts(), 0, "nothing embedded blind");
    let back = requeued(&d);
    assert!(ChunkMessage::parse(&back[1].0).unwrap().requeues == 1);
}

#[tokio::test(start_paused = true)]
async fn a_bulk_too_large_for_the_cluster_is_split() {
    struct Small(MemoryIndex);
    impl SearchIndex for Small {
        fn index_name(&self) -> &str {
            CHUNKS
        }
        fn marker_index(&self) -> String {
            MARKERS.into()
        }
        async fn ensure_index(
            &self,
            m: &EmbeddingModel,
            v: &VectorSettings,
        ) -> Result<(), EsError> {
            self.0.ensure_index(m, v).await
        }
        async fn lookup(&self, c: &[String], m: &[String]) -> Result<Stored, EsError> {
            self.0.lookup(c, m).await
        }
        async fn bulk(&self, body: Vec<u8>, actions: usize) -> Result<BulkOutcome, EsError> {
            if actions > 2 {
                return Err(EsError::Status {
                    what: "_bulk".into(),
                    status: 413,
                    kind: "http".into(),
                    reason: "Request Entity Too Large".into(),
                });
            }
            self.0.bulk(body, actions).await
        }
        async fn refresh(&self) -> Result<(), EsError> {
            self.0.refresh().await
        }
        async fn count_chunks(&self, s: &SourceRef, q: &str) -> Result<u64, EsError> {
            self.0.count_chunks(s, q).await
        }
        async fn delete_chunks(&self, s: &SourceRef, q: &str, i: bool) -> Result<u64, EsError> {
            self.0.delete_chunks(s, q, i).await
        }
    }
    let model = EmbeddingModel::resolve("amazon.titan-embed-text-v2:0", Some(256)).unwrap();
    let d = EmbedIndexDeps::new(
        embedder(&model, None),
        Small(MemoryIndex::default()),
        Some(MemoryQueue::default()),
        config(model),
    );
    let docs: Vec<(String, String)> = (0..7)
        .map(|i| (format!("d{i}"), format!("text {i}")))
        .collect();
    let docs: Vec<(&str, &str)> = docs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let (r, stats) = handle_batch(
        &d,
        event(&[message("index", "k", Some("01"), &docs)]),
        Deadline::after(Duration::from_secs(30)),
    )
    .await
    .unwrap();
    assert!(failures(&r).is_empty());
    assert_eq!((stats.indexed, d.index.0.chunk_count()), (7, 7));
}

/// The undo of an overtaken write fails (the cluster goes away right after the write): the
/// message waits on the queue with every chunk, and its replay, now superseded, removes what it
/// wrote — here the newer version (0C) has already swept, so nothing else would.
#[tokio::test(start_paused = true)]
async fn a_failed_undo_is_finished_by_the_replay() {
    let d = deps(None);
    *d.index.after_write.lock().unwrap() = Some(Box::new(|index: &MemoryIndex| {
        index.set_marker(
            "k",
            json!({"sequencer": "0C", "deleted": false, "etag": "e3"}),
        );
        index.down.store(true, AtomicOrdering::SeqCst);
    }));
    let (failed, stats) = run(
        &d,
        &[message(
            "index",
            "k",
            Some("0B"),
            &[("a", "v2"), ("b", "v2")],
        )],
    )
    .await;
    assert!(failed.is_empty());
    assert_eq!(
        (stats.compensated, stats.messages_requeued),
        (0, 1),
        "{stats:?}"
    );
    assert_eq!(d.index.chunk_count(), 2, "written, not yet undone");
    let back = requeued(&d);
    assert_eq!(
        ChunkMessage::parse(&back[0].0).unwrap().chunks.len(),
        2,
        "every chunk travels"
    );

    d.index.down.store(false, AtomicOrdering::SeqCst);
    let (failed, stats) = run(&d, &[back[0].0.clone()]).await;
    assert!(failed.is_empty());
    assert_eq!((stats.superseded, stats.compensated), (2, 2), "{stats:?}");
    assert_eq!(d.index.chunk_count(), 0);
    assert_eq!(d.embedder.inner.texts(), 2, "embedded once");
}

/// A sweep that overtakes its own version's chunks waits for them, so the unchanged ones are
/// updated in place rather than deleted and embedded again.
#[tokio::test(start_paused = true)]
async fn a_sweep_waits_for_its_version() {
    let d = deps(None);
    run(
        &d,
        &[message(
            "index",
            "k",
            Some("01"),
            &[("a", "same"), ("b", "old")],
        )],
    )
    .await;
    let mut sweep: Value = serde_json::from_str(&message("sweep", "k", Some("02"), &[])).unwrap();
    sweep["chunks_expected"] = json!(1);
    let (failed, stats) = run(&d, &[sweep.to_string()]).await;
    assert!(failed.is_empty());
    assert_eq!((stats.sweeps_waiting, stats.deleted), (1, 0));
    assert_eq!(d.index.chunk_count(), 2);
    let back = requeued(&d);
    let (_, stats) = run(&d, &[message("index", "k", Some("02"), &[("a", "same")])]).await;
    assert_eq!((stats.unchanged, stats.embedded), (1, 0));
    let (_, stats) = run(&d, &[back[0].0.clone()]).await;
    assert_eq!(stats.deleted, 1, "now the old chunk goes");
    assert!(d.index.chunk(&chunk_id("a", 0)).is_some());
    assert!(d.index.chunk(&chunk_id("b", 0)).is_none());
    assert_eq!(d.embedder.inner.texts(), 2);
}
