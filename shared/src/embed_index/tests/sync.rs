//! The index follows the bucket in the ways data really changes: a record that loses fields, a
//! record id two objects share, a backfill under new chunk settings, a superseded writer whose
//! container crashed, and a record that moved inside its object.

use super::*;
use crate::ids::object_chunk_id;

/// A chunk message for key `key` whose record ids are scoped by their object.
fn scoped(op: &str, key: &str, seq: Option<&str>, docs: &[(&str, &str)]) -> String {
    let mut m: Value = serde_json::from_str(&message(op, key, seq, docs)).unwrap();
    m["scope"] = json!("object");
    m.to_string()
}

/// One record's chunks, `metadata` and `chunk_count` given, as event `seq` of `key` queues them.
fn record(key: &str, seq: &str, doc: &str, texts: &[&str], metadata: Value) -> String {
    let chunks: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"doc_id": doc, "chunk_index": i, "chunk_count": texts.len(), "record": 1, "text": t, "metadata": metadata}))
        .collect();
    let seq = crate::ids::normalize_sequencer(seq);
    json!({"v": 1, "op": "index", "scope": "object", "source": {"bucket": "b", "key": key, "etag": format!("e-{seq}"), "sequencer": seq}, "chunks": chunks}).to_string()
}

fn sweep(key: &str, seq: &str, expected: u64) -> String {
    let seq = crate::ids::normalize_sequencer(seq);
    json!({"v": 1, "op": "sweep", "source": {"bucket": "b", "key": key, "etag": format!("e-{seq}"), "sequencer": seq}, "chunks_expected": expected}).to_string()
}

fn stored(d: &Deps, key: &str, doc: &str, chunk: u32) -> Option<Value> {
    d.index.chunk(&object_chunk_id("b", key, doc, chunk))
}

#[tokio::test(start_paused = true)]
async fn a_record_uploaded_again_without_some_fields_keeps_none_of_them() {
    let d = deps(None);
    let v1 = json!({"tags": ["x", "y"], "attrs": {"colour": "red", "size": 3}, "title": "t"});
    let (failed, _) = run(&d, &[record("k", "0A", "r1", &["same text"], v1)]).await;
    assert!(failed.is_empty());
    let v2 = json!({"attrs": {"colour": "red"}, "title": "t"});
    let (failed, stats) = run(&d, &[record("k", "0B", "r1", &["same text"], v2.clone())]).await;
    assert!(failed.is_empty());
    assert_eq!(
        (stats.unchanged, stats.embedded),
        (1, 0),
        "the vector is kept"
    );
    let doc = stored(&d, "k", "r1", 0).unwrap();
    assert_eq!(
        doc["metadata"], v2,
        "the document is the current record, not a union"
    );
    assert_eq!(doc["embedding"].as_array().unwrap().len(), 256);
    assert_eq!(
        doc["source"]["sequencer"],
        crate::ids::normalize_sequencer("0B")
    );
}

#[tokio::test(start_paused = true)]
async fn two_objects_sharing_a_record_id_each_keep_their_record() {
    let d = deps(None);
    let bodies = [
        scoped("index", "a.jsonl", Some("0A"), &[("1", "from a")]),
        scoped("index", "b.jsonl", Some("0A"), &[("1", "from b")]),
    ];
    let (failed, _) = run(&d, &bodies).await;
    assert!(failed.is_empty());
    assert_eq!(d.index.chunk_count(), 2);
    assert_eq!(stored(&d, "a.jsonl", "1", 0).unwrap()["text"], "from a");
    // Deleting one object removes only its own record.
    let (failed, _) = run(&d, &[message("delete", "b.jsonl", Some("0B"), &[])]).await;
    assert!(failed.is_empty());
    assert_eq!(d.index.chunk_count(), 1);
    assert_eq!(stored(&d, "a.jsonl", "1", 0).unwrap()["text"], "from a");
}

/// `ID_SCOPE=bucket`: the user declared record ids unique. A second object with the same id is
/// a collision: counted, and written under its own object's id, so deleting either object
/// never takes the other's record with it.
#[tokio::test(start_paused = true)]
async fn a_collision_of_bucket_wide_ids_loses_no_record() {
    let d = deps(None);
    let (failed, _) = run(
        &d,
        &[message("index", "a.jsonl", Some("0A"), &[("1", "from a")])],
    )
    .await;
    assert!(failed.is_empty());
    let (failed, stats) = run(
        &d,
        &[message("index", "b.jsonl", Some("0A"), &[("1", "from b")])],
    )
    .await;
    assert!(failed.is_empty());
    assert_eq!(stats.id_collisions, 1);
    assert_eq!(d.index.chunk(&chunk_id("1", 0)).unwrap()["text"], "from a");
    assert_eq!(stored(&d, "b.jsonl", "1", 0).unwrap()["text"], "from b");
    // b again (a duplicate event): it stays where it is, never in both places.
    let (_, stats) = run(
        &d,
        &[message("index", "b.jsonl", Some("0A"), &[("1", "from b")])],
    )
    .await;
    assert_eq!((stats.id_collisions, d.index.chunk_count()), (1, 2));
    let (failed, _) = run(&d, &[message("delete", "a.jsonl", Some("0B"), &[])]).await;
    assert!(failed.is_empty());
    assert_eq!(d.index.chunk_count(), 1);
    assert_eq!(stored(&d, "b.jsonl", "1", 0).unwrap()["text"], "from b");
    // Both in one batch: two writes, one collision, nothing lost.
    let d = deps(None);
    let bodies = [
        message("index", "a.jsonl", Some("0A"), &[("1", "from a")]),
        message("index", "b.jsonl", Some("0A"), &[("1", "from b")]),
    ];
    let (failed, stats) = run(&d, &bodies).await;
    assert!(failed.is_empty());
    assert_eq!((stats.id_collisions, d.index.chunk_count()), (1, 2));
}

/// One record's chunks as a read of the object at `read_at` queues them (a backfill when `seq`
/// is `None`).
fn read(seq: Option<&str>, read_at: &str, texts: &[&str]) -> String {
    let mut m: Value =
        serde_json::from_str(&record("k", seq.unwrap_or("00"), "r", texts, json!({}))).unwrap();
    m["source"]["read_at"] = json!(read_at);
    m["source"]["etag"] = json!("e1");
    if seq.is_none() {
        m["source"].as_object_mut().unwrap().remove("sequencer");
    }
    m.to_string()
}

/// Chunk settings changed, then a backfill: the new cut replaces the old one and the chunks
/// past its end go; the old cut delivered late (an event read before the change) changes
/// nothing; a newer version wins over both.
#[tokio::test(start_paused = true)]
async fn the_latest_read_of_a_content_holds_it_and_no_old_tail_stays() {
    let d = deps(None);
    let old = ["part one.", "part two.", "part three."];
    let t1 = "2026-12-06T10:00:00.000000000Z";
    let bodies = [read(Some("0A"), t1, &old), sweep("k", "0A", 3)];
    let (failed, _) = run(&d, &bodies).await;
    assert!(failed.is_empty());
    assert_eq!(d.index.chunk_count(), 3);

    // The backfill (no sequencer: it applies as the object's event) reads it again, later.
    let text = "part one. part two. part three.";
    let t2 = "2026-12-06T11:00:00.000000000Z";
    let (failed, stats) = run(&d, &[read(None, t2, &[text])]).await;
    assert!(failed.is_empty(), "{stats:?}");
    assert_eq!(d.index.chunk_count(), 1, "the old tail is removed");
    assert_eq!(stats.deleted, 2);
    let doc = stored(&d, "k", "r", 0).unwrap();
    assert_eq!(
        (doc["text"].as_str(), doc["chunk_count"].as_u64()),
        (Some(text), Some(1))
    );

    // The old cut again, read before the change and delivered now: the later read holds.
    let (_, stats) = run(&d, &[read(Some("0A"), t1, &old)]).await;
    assert_eq!((stats.indexed, d.index.chunk_count()), (0, 1), "{stats:?}");
    assert_eq!(stored(&d, "k", "r", 0).unwrap()["chunk_count"], 1);

    // A newer version wins over any read of the older one.
    let t3 = "2026-12-06T09:00:00.000000000Z";
    let mut newer: Value = serde_json::from_str(&read(Some("0B"), t3, &["new"])).unwrap();
    newer["source"]["etag"] = json!("e2");
    let (failed, _) = run(&d, &[newer.to_string()]).await;
    assert!(failed.is_empty());
    assert_eq!(stored(&d, "k", "r", 0).unwrap()["text"], "new");
}

/// A writer of an older event whose container crashed between its write and its check of the
/// marker: the newer event's sweep had already run, so when the message comes back it removes
/// the chunk it left itself.
#[tokio::test(start_paused = true)]
async fn a_crashed_older_writer_removes_what_it_left_once_the_newer_sweep_ran() {
    let d = deps(None);
    let (failed, _) = run(&d, &[sweep("k", "0B", 0)]).await;
    assert!(failed.is_empty());
    let marker = d
        .index
        .lookup(&[], &[crate::ids::source_marker_id("b", "k")])
        .await
        .unwrap();
    assert!(
        marker.markers.values().next().unwrap().marker.swept,
        "the sweep is recorded"
    );
    // The crashed writer's chunk, as its bulk write left it.
    let stale = record("k", "0A", "r", &["stale"], json!({}));
    let message = ChunkMessage::parse(&stale).unwrap();
    let id = message.chunk_id(&message.chunks[0]);
    let doc = json!({"doc_id": "r", "chunk_index": 0, "chunk_count": 1, "text": "stale", "embedding": vec![0.5f32; 256],
        "source": {"bucket": "b", "key": "k", "etag": format!("e-{}", crate::ids::normalize_sequencer("0A")), "sequencer": crate::ids::normalize_sequencer("0A"), "record": 1},
        "metadata": {}, "model_id": "amazon.titan-embed-text-v2:0", "content_sha256": content_sha256("stale"), "indexed_at": "t"});
    let mut body = Vec::new();
    crate::es::bulk::push_index(&mut body, CHUNKS, &id, crate::es::Expect::Any, &doc);
    d.index.bulk(body, 1).await.unwrap();
    assert_eq!(d.index.chunk_count(), 1);

    let (failed, stats) = run(&d, &[stale]).await;
    assert!(failed.is_empty());
    assert_eq!((stats.compensated, d.index.chunk_count()), (1, 0));
}

/// With `MAX_REQUEUES` below the sweep's five waits, a sweep waits only while a requeue is
/// left, then runs: it never goes to the dead-letter queue.
#[tokio::test(start_paused = true)]
async fn a_sweep_waits_only_as_long_as_requeues_allow() {
    let d = deps(None);
    assert_eq!(d.config.max_requeues, 3);
    let mut waiting: Value = serde_json::from_str(&sweep("k", "0A", 5)).unwrap();
    waiting["requeues"] = json!(2);
    let (failed, stats) = run(&d, &[waiting.to_string()]).await;
    assert!(failed.is_empty());
    assert_eq!((stats.sweeps_waiting, requeued(&d).len()), (1, 1));
    waiting["requeues"] = json!(3);
    let (failed, stats) = run(&d, &[waiting.to_string()]).await;
    assert!(failed.is_empty(), "not toward the DLQ");
    assert_eq!((stats.sweeps_waiting, requeued(&d).len()), (0, 0), "it ran");
}

/// A record that moved (a line inserted above it changes a positional id; an id changed by
/// hand) is not embedded again: the index already holds its text's vector.
#[tokio::test(start_paused = true)]
async fn a_text_the_index_holds_is_not_embedded_again_under_another_id() {
    let d = deps(None);
    let (failed, _) = run(
        &d,
        &[record("k", "0A", "old-id", &["a moved record"], json!({}))],
    )
    .await;
    assert!(failed.is_empty());
    d.index.refresh().await.unwrap();
    let (failed, stats) = run(
        &d,
        &[record("k", "0B", "new-id", &["a moved record"], json!({}))],
    )
    .await;
    assert!(failed.is_empty());
    assert_eq!((stats.embedded, stats.reused_by_content), (0, 1));
    assert_eq!(d.embedder.inner.texts(), 1);
    assert!(stored(&d, "k", "new-id", 0).is_some());
}

/// A message with a chunk Bedrock refuses for good fails (SQS retries it, then dead-letters it);
/// its other chunk, embedded but not written (the cluster stayed busy), goes back on the queue
/// with its vector instead of being paid for again.
#[tokio::test(start_paused = true)]
async fn a_failing_message_keeps_the_vectors_it_paid_for() {
    let d = deps(Some("refused text"));
    *d.index.script.lock().unwrap() = vec![503; 8];
    let body = message(
        "index",
        "k",
        Some("0A"),
        &[("a", "refused text"), ("b", "fine text")],
    );
    let (failed, stats) = run(&d, &[body]).await;
    assert_eq!(failed, ["m0"], "{stats:?}");
    let kept = requeued(&d);
    assert_eq!(kept.len(), 1, "{kept:?}");
    let kept = ChunkMessage::parse(&kept[0].0).unwrap();
    assert_eq!(kept.chunks.len(), 1);
    assert_eq!(kept.chunks[0].text, "fine text");
    assert!(kept.chunks[0].vector.is_some(), "it carries its vector");
    assert_eq!(
        d.embedder.inner.texts(),
        1,
        "only the fine text was embedded"
    );
}

/// `reconcile --fix` removing an orphan (its object was gone when it looked) while the key is
/// uploaded again: the repair is ordered just after the marker reconcile read, so the upload's
/// event wins whichever lands first.
#[tokio::test(start_paused = true)]
async fn a_repair_never_undoes_an_upload_that_raced_it() {
    let observed = crate::ids::normalize_sequencer("0A");
    let repair = || {
        let mut m: Value = serde_json::from_str(&message("delete", "k", Some("0A"), &[])).unwrap();
        m["source"]["sequencer"] = json!(crate::ids::repair_sequencer(&observed));
        m.to_string()
    };
    // The upload's chunks land first: the repair comes late and changes nothing.
    let d = deps(None);
    run(
        &d,
        &[message("index", "k", Some("0A"), &[("old", "gone since")])],
    )
    .await;
    let upload = message("index", "k", Some("0B"), &[("new", "uploaded again")]);
    run(&d, std::slice::from_ref(&upload)).await;
    let (failed, stats) = run(&d, &[repair()]).await;
    assert!(failed.is_empty());
    assert_eq!(stats.deleted, 0, "{stats:?}");
    assert!(d.index.chunk(&chunk_id("new", 0)).is_some());
    // The repair lands first: it removes the orphan, then the upload is indexed.
    let d = deps(None);
    run(
        &d,
        &[message("index", "k", Some("0A"), &[("old", "gone since")])],
    )
    .await;
    run(&d, &[repair()]).await;
    assert_eq!(d.index.chunk_count(), 0);
    run(&d, &[upload]).await;
    assert!(d.index.chunk(&chunk_id("new", 0)).is_some());
    assert_eq!(d.index.chunk_count(), 1);
}
