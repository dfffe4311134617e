//! The handler against an in-memory index that behaves as Elasticsearch does where ordering
//! depends on it: versions and compare-and-set on every write, real-time `_mget`, and
//! `_delete_by_query` that only sees refreshed documents.

use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use serde_json::{Value, json};

use super::*;
use crate::config::EmbedIndexConfig;
use crate::embed::{EmbedError, EmbeddingModel};
use crate::es::{BulkOutcome, DocVersion, EsSettings, Stored, VectorSettings};
use crate::ids::chunk_id;
use crate::message::SourceRef;
use crate::test_util::{
    CHUNKS, FailingEmbedder, MARKERS, MemoryEmbedder, MemoryIndex, MemoryQueue,
};

mod sync;

/// The shared fake embedder, behind the wrapper that throttles or refuses on a plan.
type TestEmbedder = FailingEmbedder<MemoryEmbedder>;

fn embedder(model: &EmbeddingModel, reject: Option<&str>) -> TestEmbedder {
    let e = FailingEmbedder::new(MemoryEmbedder::new(model.clone()));
    match reject {
        Some(text) => e.reject(text),
        None => e,
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
            client_identity: None,
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
        migration_check: Duration::from_secs(30),
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
    // Each event its own content (eTag); a backfill (no sequencer) reads the first one's.
    let etag = seq.map_or("e".to_owned(), |s| format!("e-{s}"));
    json!({"v": 1, "op": op, "source": {"bucket": "b", "key": key, "etag": etag, "sequencer": seq.map(crate::ids::normalize_sequencer)}, "chunks": chunks}).to_string()
}

/// An index message at sequencer `01` for `key` of `n` one-chunk documents `d0`, `d1`, … whose
/// texts `text` gives.
fn numbered_message(key: &str, n: usize, text: impl Fn(usize) -> String) -> String {
    let docs: Vec<(String, String)> = (0..n).map(|j| (format!("d{j}"), text(j))).collect();
    let docs: Vec<(&str, &str)> = docs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    message("index", key, Some("01"), &docs)
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
async fn throttled_work_waits_on_the_queue_as_long_as_the_pace_says() {
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
    assert_eq!(stats.waiting.get(WaitCause::Throttled), 1, "{stats:?}");
    let back = requeued(&d);
    let pace = d.pacer.capacity_in().as_secs_f64().ceil() as i32;
    assert_eq!(
        (back.len(), back[0].1),
        (1, pace),
        "delayed as long as the pace says, not the outage's minute"
    );
    assert!(back[0].1 < 60);
    assert_eq!(
        ChunkMessage::parse(&back[0].0).unwrap().requeues,
        1,
        "nothing moved: the hand-over counts toward the hop limit"
    );
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
async fn under_a_token_budget_messages_past_the_deadline_are_handed_back_at_once() {
    let mut d = deps(None);
    // 10 tokens a second: about 40 characters. Each message below is 50 texts of 40
    // characters, 500 tokens: 50 s of the pace, so one fits the 30 s less the writes' reserve
    // at most, and the rest go to containers with room.
    d.pacer = crate::embed::Pacer::adaptive(4).with_token_budget(10.0);
    let bodies: Vec<String> = (0..3)
        .map(|i| numbered_message(&format!("k{i}"), 50, |j| format!("{j:0>40}")))
        .collect();
    let (failed, stats) = run(&d, &bodies).await;
    assert!(failed.is_empty());
    assert_eq!(stats.handed_back, 2, "{stats:?}");
    let back = requeued(&d);
    let handed: Vec<_> = back
        .iter()
        .filter(|(body, _)| !body.contains("\"k0\""))
        .collect();
    assert_eq!(handed.len(), 2);
    for (body, delay) in handed {
        assert_eq!(*delay, 0, "taken by another container now");
        let m = ChunkMessage::parse(body).unwrap();
        assert_eq!(m.chunks.len(), 50, "unopened: every chunk, no vector");
        assert!(m.chunks.iter().all(|c| c.vector.is_none()));
    }
}

#[tokio::test(start_paused = true)]
async fn a_batch_held_as_long_as_a_container_holds_work_hands_back_the_rest_at_once() {
    let mut d = deps(None);
    // 20 tokens a second, and one message of 1,000 texts of a token each (as the fake counts
    // them): 50 s of the pace. The first message always stays, and the deadline (120 s) would
    // allow it all; the container still stops starting calls 20 s in and hands back the rest.
    d.pacer = crate::embed::Pacer::adaptive(4).with_token_budget(20.0);
    let body = numbered_message("k0", 1000, |j| format!("t{j}"));
    let started = tokio::time::Instant::now();
    let (r, stats) = handle_batch(
        &d,
        event(&[body]),
        Deadline::after(Duration::from_secs(120)),
    )
    .await
    .unwrap();
    assert!(failures(&r).is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(stats.embedded > 0 && stats.held_back > 0, "{stats:?}");
    assert_eq!(stats.embedded + stats.held_back, 1000, "{stats:?}");
    assert_eq!(stats.waiting.get(WaitCause::Held), 1, "{stats:?}");
    assert_eq!(stats.handed_back, 1, "{stats:?}");
    let back = requeued(&d);
    assert_eq!(back.len(), 1);
    let (body, delay) = &back[0];
    assert_eq!(*delay, 0, "taken by another container now");
    let m = ChunkMessage::parse(body).unwrap();
    assert_eq!(m.requeues, 0, "moving to a container with room is no hop");
    assert_eq!(
        m.chunks.len(),
        1000 - stats.indexed as usize,
        "what landed stays landed"
    );
    assert!(
        m.chunks.iter().all(|c| c.vector.is_none()),
        "nothing paid for is left behind"
    );
}

#[tokio::test(start_paused = true)]
async fn out_of_time_with_progress_goes_on_at_once_and_counts_no_hop() {
    let mut d = deps(None);
    // 2,000 texts of a token each (as the fake counts them) at 20 tokens a second: some land,
    // the deadline takes the rest.
    d.pacer = crate::embed::Pacer::adaptive(1).with_token_budget(20.0);
    let body = numbered_message("k", 2000, |j| format!("text number {j} of a long message"));
    let (failed, stats) = run(&d, &[body]).await;
    assert!(failed.is_empty());
    // Beyond the pace from the first call: done as far as the deadline allows (20 tokens a
    // second for most of 30 s), not handed back after the first call.
    assert!(stats.indexed > 400 && stats.indexed < 2000, "{stats:?}");
    let back = requeued(&d);
    assert_eq!(back.len(), 1, "{stats:?}");
    let m = ChunkMessage::parse(&back[0].0).unwrap();
    assert_eq!(back[0].1, 0, "no outage to wait out");
    assert_eq!(m.requeues, 0, "it moved forward: no hop");
    assert_eq!(m.chunks.len() as u64, 2000 - stats.indexed);
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
    let (r, stats) = handle_batch(
        &d,
        event(&[numbered_message("k", 7, |i| format!("text {i}"))]),
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

/// Version 01 of key `k`: chunk `a` ("same", kept by version 02) and chunk `b` ("old", which
/// version 02 no longer has).
async fn index_first_version(d: &Deps) {
    run(
        d,
        &[message(
            "index",
            "k",
            Some("01"),
            &[("a", "same"), ("b", "old")],
        )],
    )
    .await;
}

/// A sweep that overtakes its own version's chunks waits for them, so the unchanged ones are
/// updated in place rather than deleted and embedded again.
#[tokio::test(start_paused = true)]
async fn a_sweep_waits_for_its_version() {
    let d = deps(None);
    index_first_version(&d).await;
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

/// A sweep whose chunks are arriving looks again after the first delay without counting a
/// wait; one whose chunks do not move waits on the outage's doubling schedule, each wait
/// counted, so it runs in the end.
#[tokio::test(start_paused = true)]
async fn a_sweep_whose_chunks_arrive_looks_again_soon() {
    let d = deps(None);
    let mut sweep: Value = serde_json::from_str(&message("sweep", "k", Some("02"), &[])).unwrap();
    sweep["chunks_expected"] = json!(3);
    run(&d, &[sweep.to_string()]).await;
    let (first, first_delay) = requeued(&d).remove(0);
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(
        (first["requeues"].as_u64(), first["indexed_seen"].as_u64()),
        (Some(1), Some(0))
    );
    // One of its three chunks lands meanwhile: moving, so soon and not counted.
    run(&d, &[message("index", "k", Some("02"), &[("a", "one")])]).await;
    run(&d, &[first.to_string()]).await;
    let (second, second_delay) = requeued(&d).remove(0);
    let second: Value = serde_json::from_str(&second).unwrap();
    assert_eq!(
        (second["requeues"].as_u64(), second["indexed_seen"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(second_delay, first_delay, "the first delay again");
    // Nothing more lands: the next wait is counted, and doubled.
    run(&d, &[second.to_string()]).await;
    let (third, third_delay) = requeued(&d).remove(0);
    let third: Value = serde_json::from_str(&third).unwrap();
    assert_eq!(third["requeues"].as_u64(), Some(2));
    assert_eq!(third_delay, first_delay * 2);
}

/// The log lines written while the guard lives (the test runtime is one thread).
#[derive(Clone, Default)]
struct LogLines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogLines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogLines {
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let lines = Self::default();
        let writer = lines.clone();
        let subscriber = lambda_runtime::tracing::subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (lines, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Deps whose Elasticsearch requests may take up to `es_timeout` (`ES_TIMEOUT_SECS`).
fn deps_with_es_timeout(es_timeout: Duration) -> Deps {
    let mut d = deps(None);
    d.config.es.timeout = es_timeout;
    d
}

/// A 30 s function with `ES_TIMEOUT_SECS` at its default 30: the batch is embedded, written and
/// its deletion applied, not handed back for want of a whole request time.
#[tokio::test(start_paused = true)]
async fn a_30_s_function_with_the_30_s_elasticsearch_timeout_writes_its_batch() {
    let d = deps_with_es_timeout(Duration::from_secs(30));
    run(&d, &[message("index", "gone", Some("01"), &[("g", "old")])]).await;
    let (logs, _guard) = LogLines::capture();
    let bodies = [
        message("index", "k", Some("01"), &[("a", "alpha"), ("b", "beta")]),
        message("delete", "gone", Some("02"), &[]),
    ];
    let deadline = Deadline::after(Duration::from_secs(30) - EmbedIndexConfig::RESPONSE_RESERVE);
    let (r, stats) = handle_batch(&d, event(&bodies), deadline).await.unwrap();
    assert!(failures(&r).is_empty());
    assert_eq!(
        (
            stats.embedded,
            stats.indexed,
            stats.deleted,
            stats.messages_requeued
        ),
        (2, 2, 1, 0),
        "{stats:?}"
    );
    assert_eq!(d.index.chunk_count(), 2);
    assert!(requeued(&d).is_empty());
    assert!(
        !logs.text().contains("waits on the queue"),
        "{}",
        logs.text()
    );
}

/// An index whose chunk `_bulk` takes `bulk_takes` (a slow cluster, within its timeout).
struct SlowBulk {
    index: MemoryIndex,
    bulk_takes: Duration,
}

impl SearchIndex for SlowBulk {
    fn index_name(&self) -> &str {
        self.index.index_name()
    }
    fn marker_index(&self) -> String {
        self.index.marker_index()
    }
    async fn ensure_index(&self, m: &EmbeddingModel, v: &VectorSettings) -> Result<(), EsError> {
        self.index.ensure_index(m, v).await
    }
    async fn lookup(&self, c: &[String], m: &[String]) -> Result<Stored, EsError> {
        self.index.lookup(c, m).await
    }
    async fn bulk(&self, body: Vec<u8>, actions: usize) -> Result<BulkOutcome, EsError> {
        if String::from_utf8_lossy(&body).contains(&format!("\"_index\":\"{CHUNKS}\"")) {
            tokio::time::sleep(self.bulk_takes).await;
        }
        self.index.bulk(body, actions).await
    }
    async fn refresh(&self) -> Result<(), EsError> {
        self.index.refresh().await
    }
    async fn count_chunks(&self, s: &SourceRef, q: &str) -> Result<u64, EsError> {
        self.index.count_chunks(s, q).await
    }
    async fn delete_chunks(&self, s: &SourceRef, q: &str, i: bool) -> Result<u64, EsError> {
        self.index.delete_chunks(s, q, i).await
    }
}

/// Near the deadline the rest of the work waits on the queue, and says why: out of time, not
/// "Elasticsearch unavailable" (the cluster answered everything it was asked).
#[tokio::test(start_paused = true)]
async fn near_the_deadline_the_rest_waits_out_of_time() {
    let (logs, _guard) = LogLines::capture();
    let bodies = [
        message("index", "k", Some("01"), &[("a", "alpha"), ("b", "beta")]),
        message("delete", "j", Some("02"), &[]),
    ];
    // 4 s left: no request is worth starting, so nothing is looked up or embedded.
    let d = deps_with_es_timeout(Duration::from_secs(30));
    let (r, stats) = handle_batch(&d, event(&bodies), Deadline::after(Duration::from_secs(4)))
        .await
        .unwrap();
    assert!(failures(&r).is_empty());
    assert_eq!(stats.waiting.get(WaitCause::OutOfTime), 2, "{stats:?}");
    assert_eq!(stats.waiting.get(WaitCause::EsUnavailable), 0);
    assert_eq!(d.embedder.attempts(), 0, "nothing embedded blind");
    assert_eq!(requeued(&d).len(), 2);

    // 14 s left and the chunk write takes 10: it lands, but reading the markers again and the
    // deletion's refresh no longer fit; those messages wait, out of time.
    let model = d.config.model.clone();
    let mut cfg = config(model.clone());
    cfg.es.timeout = Duration::from_secs(30);
    let slow = EmbedIndexDeps::new(
        embedder(&model, None),
        SlowBulk {
            index: MemoryIndex::default(),
            bulk_takes: Duration::from_secs(10),
        },
        Some(MemoryQueue::default()),
        cfg,
    );
    let (r, stats) = handle_batch(
        &slow,
        event(&bodies),
        Deadline::after(Duration::from_secs(14)),
    )
    .await
    .unwrap();
    assert!(failures(&r).is_empty());
    assert_eq!((stats.embedded, stats.deleted), (2, 0), "{stats:?}");
    assert_eq!(slow.index.index.chunk_count(), 2, "written");
    assert_eq!(stats.waiting.get(WaitCause::OutOfTime), 2, "{stats:?}");
    assert_eq!(stats.messages_requeued, 2);
    let text = logs.text();
    assert!(
        text.contains("out of time: the work waits on the queue") && text.contains("out_of_time"),
        "{text}"
    );
    assert!(!text.contains("Elasticsearch unavailable"), "{text}");

    // The next invocation, with time, finishes them without embedding again.
    let back: Vec<String> = slow
        .requeue
        .as_ref()
        .unwrap()
        .take()
        .into_iter()
        .map(|e| e.body)
        .collect();
    let (r, stats) = handle_batch(
        &slow,
        event(&back),
        Deadline::after(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    assert!(failures(&r).is_empty());
    assert_eq!(
        (stats.embedded, stats.messages_requeued),
        (0, 0),
        "{stats:?}"
    );
}

/// The template's 120 s with `EsTimeoutSecs` at 60: a sweep's refresh and removal, which once
/// asked for two whole request times (more than the 118 s left), run.
#[tokio::test(start_paused = true)]
async fn a_sweep_refreshes_and_removes_in_120_s_with_a_60_s_elasticsearch_timeout() {
    let d = deps_with_es_timeout(Duration::from_secs(60));
    index_first_version(&d).await;
    let bodies = [
        message("index", "k", Some("02"), &[("a", "same")]),
        message("sweep", "k", Some("02"), &[]),
    ];
    let deadline = Deadline::after(Duration::from_secs(120) - EmbedIndexConfig::RESPONSE_RESERVE);
    let (r, stats) = handle_batch(&d, event(&bodies), deadline).await.unwrap();
    assert!(failures(&r).is_empty());
    assert_eq!(
        (stats.deleted, stats.messages_requeued),
        (1, 0),
        "{stats:?}"
    );
    assert_eq!(d.index.chunk_count(), 1, "the old version's chunk is swept");
}

/// `FUNCTION_TIMEOUT_SECS` too short for `ES_TIMEOUT_SECS` is refused at start, naming both,
/// with the other problems; the first invocation checks the real deadline once per container.
#[tokio::test(start_paused = true)]
async fn a_function_timeout_too_short_for_the_elasticsearch_timeout_is_refused() {
    let env = |pairs: &[(&str, &str)]| {
        crate::config::Env::from_map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    let err = EmbedIndexConfig::from_env(&mut env(&[
        ("ES_HOST", "h"),
        ("ES_PORT", "ninety"),
        ("ES_TIMEOUT_SECS", "30"),
        ("FUNCTION_TIMEOUT_SECS", "30"),
    ]))
    .unwrap_err();
    assert_eq!(err.problems.len(), 2, "{err}");
    let problem = err
        .problems
        .iter()
        .find(|p| p.contains("FUNCTION_TIMEOUT_SECS"))
        .expect("the timeout problem");
    for needle in [
        "FUNCTION_TIMEOUT_SECS=30 is too short for ES_TIMEOUT_SECS=30",
        "at least 49 s",
        "ES_TIMEOUT_SECS to at most 11",
    ] {
        assert!(problem.contains(needle), "{needle:?} not in {problem}");
    }
    // The template's 120 s takes EsTimeoutSecs up to its MaxValue (100); unset is not checked.
    for (function, es, ok) in [
        ("120", "30", true),
        ("120", "60", true),
        ("120", "100", true),
        ("120", "102", false),
        ("", "100", true),
    ] {
        let result = EmbedIndexConfig::from_env(&mut env(&[
            ("ES_HOST", "h"),
            ("ES_TIMEOUT_SECS", es),
            ("FUNCTION_TIMEOUT_SECS", function),
        ]));
        assert_eq!(result.is_ok(), ok, "{function} / {es}: {:?}", result.err());
    }

    let d = deps_with_es_timeout(Duration::from_secs(30));
    let problem = d
        .check_function_time(Duration::from_millis(29_950))
        .expect("30 s cannot hold a batch at ES_TIMEOUT_SECS=30");
    assert!(
        problem.contains("ES_TIMEOUT_SECS=30") && problem.contains("about 30 s"),
        "{problem}"
    );
    assert_eq!(
        d.check_function_time(Duration::from_secs(1)),
        None,
        "once per container"
    );
    let d = deps_with_es_timeout(Duration::from_secs(30));
    assert_eq!(d.check_function_time(Duration::from_millis(119_900)), None);
}

/// The model ids of the chunks `index` holds, sorted.
fn models_of(index: &MemoryIndex) -> Vec<String> {
    let docs = index.docs.lock().unwrap();
    let mut models: Vec<String> = docs
        .iter()
        .filter(|((i, _), _)| i == CHUNKS)
        .map(|(_, d)| d.source["model_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    models.sort();
    models
}

/// While a model switch runs, a batch is written to the current index and then, of what that
/// finished, to the new one with the new model; a message is done only when both hold it. One the
/// new model refuses fails whole, and its retry costs the current index nothing (unchanged).
#[tokio::test(start_paused = true)]
async fn a_migrating_batch_is_done_only_when_both_indices_hold_it() {
    let current = deps(None);
    let v1 = EmbeddingModel::resolve("amazon.titan-embed-text-v1", None).unwrap();
    let target = EmbedIndexDeps::new(
        embedder(&v1, Some("refused by the new model")),
        MemoryIndex::default(),
        None::<MemoryQueue>,
        config(v1.clone()),
    );
    let bodies = vec![
        message("index", "k", Some("01"), &[("a", "alpha"), ("b", "beta")]),
        message(
            "index",
            "j",
            Some("01"),
            &[("c", "refused by the new model")],
        ),
    ];
    let deadline = || Deadline::after(Duration::from_secs(30));
    let (r, _) = handle_migrating_batch(&current, &target, event(&bodies), deadline())
        .await
        .unwrap();
    assert_eq!(failures(&r), ["m1"]);
    let current_model = current.config.model.id.clone();
    assert_eq!(models_of(&current.index), vec![current_model.clone(); 3]);
    assert_eq!(models_of(&target.index), vec![v1.id.clone(); 2]);
    assert_eq!(current.embedder.inner.texts(), 3);
    // The retry: the current index finds its chunk unchanged; the new model refuses again.
    let (r, _) = handle_migrating_batch(&current, &target, event(&bodies[1..]), deadline())
        .await
        .unwrap();
    assert_eq!(failures(&r), ["m0"]);
    assert_eq!(current.embedder.inner.texts(), 3, "nothing embedded again");
    // A message the current index cannot finish is not written to the new one.
    *current.index.script.lock().unwrap() = vec![400];
    let body = message("index", "n", Some("01"), &[("d", "delta")]);
    let (r, _) = handle_migrating_batch(&current, &target, event(&[body]), deadline())
        .await
        .unwrap();
    assert_eq!(failures(&r), ["m0"]);
    assert_eq!(models_of(&target.index).len(), 2);
}
