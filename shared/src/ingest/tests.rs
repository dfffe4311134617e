use super::event::sqs_messages;
use super::*;
use crate::config::{Env, IngestConfig};
use crate::message::{ChunkMessage, Operation, SourceRef};
use crate::reader::ResumePoint;
use crate::retry::Deadline;
use crate::test_util::{FailingQueue, MemoryQueue, MemoryStore};
use serde_json::Value;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

/// Records the work handed over instead of invoking anything; `queue` makes it behave as
/// the intake queue (backfill pages fan out).
#[derive(Default)]
struct Handover {
    events: Mutex<Vec<Value>>,
    queue: bool,
}

impl Continuation for Handover {
    async fn hand_over(&self, event: Value) -> Result<(), String> {
        self.events.lock().unwrap().push(event);
        Ok(())
    }

    fn is_queue(&self) -> bool {
        self.queue
    }
}

type Deps = IngestDeps<MemoryStore, FailingQueue<MemoryQueue>, Handover>;

fn later() -> Deadline {
    Deadline::after(Duration::from_secs(600))
}

fn now() -> Deadline {
    Deadline::after(Duration::ZERO)
}

fn deps(objects: &[(&str, &str)], down: bool) -> Deps {
    let store = MemoryStore::default();
    for (key, body) in objects {
        store
            .objects
            .lock()
            .unwrap()
            .insert(("b".into(), key.to_string()), body.as_bytes().to_vec());
    }
    let vars = [("CHUNK_QUEUE_URL", "q")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config = IngestConfig::from_env(&mut Env::from_map(vars)).unwrap();
    IngestDeps {
        store,
        queue: {
            let queue = FailingQueue::new(MemoryQueue::default());
            queue.set_down(down);
            queue
        },
        continuation: Handover::default(),
        config,
    }
}

fn record(event: &str, key: &str, sequencer: Option<&str>) -> Value {
    json!({"eventName": event, "eventTime": "2026-11-22T00:00:00.000Z", "s3": {"bucket": {"name": "b"}, "object": {"key": key, "sequencer": sequencer}}})
}

/// An SQS event of the intake queue with these bodies, message ids `m0`, `m1`, ...
fn sqs_event(bodies: &[String]) -> Value {
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| json!({"messageId": format!("m{i}"), "receiptHandle": "r", "body": b, "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:ap-northeast-1:123456789012:sakuin-intake"}))
        .collect();
    json!({ "Records": records })
}

#[test]
fn an_sqs_record_without_a_message_id_is_a_bad_event() {
    let mut event = sqs_event(&["{}".into(), "{}".into()]);
    event["Records"][1]
        .as_object_mut()
        .unwrap()
        .remove("messageId");
    let Some(Err(IngestError::BadEvent(e))) = sqs_messages(&event) else {
        panic!("a record without an id must be refused");
    };
    assert!(e.contains("without a messageId"), "{e}");
    let ids: Vec<_> = sqs_messages(&sqs_event(&["{}".into()]))
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(ids, [Some("m0".to_string())]);
}

fn failed_ids(summary: &IngestSummary) -> Vec<String> {
    let mut ids: Vec<String> = summary
        .batch_item_failures
        .as_ref()
        .expect("an SQS event is answered with a partial batch response")
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    ids.sort();
    ids
}

fn lines(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            json!({"id": format!("{prefix}{i}"), "text": format!("text {i}")}).to_string() + "\n"
        })
        .collect()
}

fn messages(d: &Deps) -> Vec<ChunkMessage> {
    d.queue
        .inner
        .bodies()
        .iter()
        .map(|b| ChunkMessage::parse(b).unwrap())
        .collect()
}

fn handed_over(d: &Deps) -> Vec<Value> {
    d.continuation.events.lock().unwrap().clone()
}

#[tokio::test]
async fn every_record_of_a_multi_record_event_and_nothing_else() {
    let d = deps(
        &[
            (
                "a b+.jsonl",
                "{\"id\":1,\"text\":\"one\"}\n{\"id\":2,\"text\":\"two\"}\n",
            ),
            ("c.json", "[{\"text\":\"three\"}]"),
        ],
        false,
    );
    let event = json!({"Records": [
        record("ObjectCreated:Put", "a+b%2B.jsonl", Some("0A")),
        record("ObjectCreated:CompleteMultipartUpload", "c.json", None),
        record("ObjectCreated:Put", "folder/", None),
        record("ObjectCreated:Put", "rejects/a.jsonl/e1.jsonl", None),
        record("ObjectRestore:Completed", "c.json", None),
    ]});
    let summary = handle_event(&d, event, later()).await.unwrap();
    assert_eq!(
        (
            summary.objects,
            summary.records,
            summary.chunks,
            summary.rejected,
            summary.ignored
        ),
        (2, 3, 3, 0, 3)
    );
    assert_eq!(summary.batch_item_failures, None, "not an SQS event");
    let msgs = messages(&d);
    let texts: Vec<&str> = msgs
        .iter()
        .flat_map(|m| m.chunks.iter().map(|c| c.text.as_str()))
        .collect();
    assert_eq!(texts, vec!["one", "two", "three"]);
    assert_eq!(msgs[0].source.key, "a b+.jsonl");
    assert_eq!(
        msgs[0].source.sequencer.as_deref(),
        Some(crate::ids::normalize_sequencer("0A").as_str())
    );
    // The sweep for the sequenced object goes after its chunks; the unsequenced one has none.
    let ops: Vec<Operation> = msgs.iter().map(|m| m.op).collect();
    assert_eq!(
        ops,
        vec![Operation::Index, Operation::Sweep, Operation::Index]
    );
}

#[tokio::test]
async fn a_test_event_and_a_removal() {
    let d = deps(&[], false);
    let test_event = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"});
    assert_eq!(
        handle_event(&d, test_event, later()).await.unwrap().ignored,
        1
    );
    let summary = handle_event(
        &d,
        json!({"Records": [record("ObjectRemoved:Delete", "gone.jsonl", Some("0F"))]}),
        later(),
    )
    .await
    .unwrap();
    assert_eq!((summary.deleted, summary.reindexed), (1, 0));
    let msgs = messages(&d);
    assert_eq!(
        (msgs[0].op, msgs[0].source.key.as_str()),
        (Operation::Delete, "gone.jsonl")
    );
}

#[tokio::test]
async fn a_removed_version_of_a_key_that_still_has_one_reads_the_current_version_again() {
    let d = deps(&[("docs/faq.jsonl", &lines("faq", 3))], false);
    d.store
        .versions
        .lock()
        .unwrap()
        .insert("docs/faq.jsonl".into(), "v-current".into());
    // Real-shaped: ObjectRemoved:Delete naming a noncurrent version.
    let mut event: Value =
        serde_json::from_str(include_str!("../../../events/s3-removed-version.json")).unwrap();
    event["Records"][0]["s3"]["bucket"]["name"] = json!("b");
    let removed_version = event["Records"][0]["s3"]["object"]["versionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let summary = handle_event(&d, event, later()).await.unwrap();
    assert_eq!(
        (summary.reindexed, summary.objects, summary.deleted),
        (1, 1, 0)
    );
    let msgs = messages(&d);
    assert!(msgs.len() >= 2);
    for m in &msgs {
        // Pinned to the current version, ordered by the removal's sequencer.
        assert_eq!(m.source.version_id.as_deref(), Some("v-current"));
        assert_ne!(
            m.source.version_id.as_deref(),
            Some(removed_version.as_str())
        );
        assert_eq!(m.source.etag.as_deref(), Some("e2"));
        assert_eq!(
            m.source.sequencer.as_deref(),
            Some(crate::ids::normalize_sequencer("0065F1F3A9B8C7D6E5").as_str())
        );
    }
    let ops: Vec<Operation> = msgs.iter().map(|m| m.op).collect();
    assert_eq!(ops.last(), Some(&Operation::Sweep));
    assert!(
        ops[..ops.len() - 1]
            .iter()
            .all(|op| *op == Operation::Index)
    );
    let read = d.store.opened.lock().unwrap();
    assert_eq!(read[0].version_id.as_deref(), Some("v-current"));
}

#[tokio::test]
async fn expirations_and_delete_markers_delete_what_has_no_current_version() {
    let d = deps(&[("kept.jsonl", &lines("k", 1))], false);
    let mut expired: Value =
        serde_json::from_str(include_str!("../../../events/s3-lifecycle-expiration.json")).unwrap();
    expired["Records"][0]["s3"]["bucket"]["name"] = json!("b");
    let summary = handle_event(&d, expired, later()).await.unwrap();
    assert_eq!((summary.deleted, summary.ignored), (1, 0));
    let summary = handle_event(
        &d,
        json!({"Records": [
            record("ObjectRemoved:DeleteMarkerCreated", "marked.jsonl", Some("10")),
            record("LifecycleExpiration:DeleteMarkerCreated", "expired.jsonl", Some("11")),
            record("LifecycleTransition", "kept.jsonl", Some("12")),
            // An expired noncurrent version of a key that is still there.
            record("LifecycleExpiration:Delete", "kept.jsonl", Some("13")),
        ]}),
        later(),
    )
    .await
    .unwrap();
    assert_eq!(
        (summary.deleted, summary.ignored, summary.reindexed),
        (2, 1, 1)
    );
    let deletes: Vec<(String, Option<String>)> = messages(&d)
        .into_iter()
        .filter(|m| m.op == Operation::Delete)
        .map(|m| (m.source.key, m.source.sequencer))
        .collect();
    let seq = |s: &str| Some(crate::ids::normalize_sequencer(s));
    assert_eq!(
        deletes,
        vec![
            (
                "docs/archive/2025-q1.jsonl".to_string(),
                seq("0065F20A11C4D3E2F1")
            ),
            ("marked.jsonl".to_string(), seq("10")),
            ("expired.jsonl".to_string(), seq("11")),
        ]
    );
}

#[tokio::test]
async fn bad_records_are_kept_for_replay_and_the_rest_goes_on() {
    let body = "{\"id\":1,\"text\":\"good\"}\n{\"id\":2,\"text\":\n[1,2]\n{\"id\":4,\"title\":\"no text\"}\n{\"id\":5,\"text\":\"also good\"}\n";
    let d = deps(&[("in.jsonl", body)], false);
    let summary = handle_event(
        &d,
        json!({"Records": [record("ObjectCreated:Put", "in.jsonl", None)]}),
        later(),
    )
    .await
    .unwrap();
    assert_eq!(
        (summary.records, summary.rejected, summary.chunks),
        (5, 3, 2)
    );
    let objects = d.store.objects.lock().unwrap();
    let rejects = String::from_utf8(
        objects[&("b".to_string(), "rejects/in.jsonl/e1.jsonl".to_string())].clone(),
    )
    .unwrap();
    let lines: Vec<Value> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        (lines[0]["record"].as_u64(), lines[0]["raw"].as_str()),
        (Some(2), Some("{\"id\":2,\"text\":"))
    );
    assert!(
        lines[0]["reason"]
            .as_str()
            .unwrap()
            .contains("invalid JSON")
    );
    assert!(
        lines[1]["reason"]
            .as_str()
            .unwrap()
            .contains("not an object")
    );
    assert_eq!(lines[2]["raw"], "{\"id\":4,\"title\":\"no text\"}");
}

#[tokio::test]
async fn a_json_lines_object_whose_first_line_is_not_an_object_loses_only_that_line() {
    let header = "id,text\n{\"id\":1,\"text\":\"one\"}\n{\"id\":2,\"text\":\"two\"}\n";
    let number = "42\n{\"id\":3,\"text\":\"three\"}\n";
    // No JSON Lines extension: the object line after the header says it.
    let unnamed = "\"export v2\"\n{\"id\":4,\"text\":\"four\"}\n";
    let d = deps(
        &[
            ("h.jsonl", header),
            ("n.ndjson", number),
            ("u.json", unnamed),
        ],
        false,
    );
    let summary = handle_event(
        &d,
        json!({"Records": [
            record("ObjectCreated:Put", "h.jsonl", None),
            record("ObjectCreated:Put", "n.ndjson", None),
            record("ObjectCreated:Put", "u.json", None),
        ]}),
        later(),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            summary.objects,
            summary.records,
            summary.rejected,
            summary.chunks
        ),
        (3, 7, 3, 4)
    );
    let ids: Vec<String> = messages(&d)
        .iter()
        .flat_map(|m| m.chunks.iter().map(|c| c.doc_id.clone()))
        .collect();
    assert_eq!(ids, vec!["1", "2", "3", "4"]);
    let objects = d.store.objects.lock().unwrap();
    let rejects = String::from_utf8(
        objects[&("b".to_string(), "rejects/h.jsonl/e1.jsonl".to_string())].clone(),
    )
    .unwrap();
    let line: Value = serde_json::from_str(rejects.trim()).unwrap();
    assert_eq!(
        (line["position"].as_str(), line["raw"].as_str()),
        (Some("line 1"), Some("id,text"))
    );
}

#[tokio::test]
async fn not_json_is_rejected_whole_and_a_missing_object_is_skipped() {
    // Named JSON but not JSON: the record reader rejects it whole. Bytes no reader takes: a
    // document skipped with its reason. Gone: skipped, its newer event covers it.
    let d = deps(
        &[("x.json", "id,text\n1,hello\n"), ("x.bin", "\0\x01\x02")],
        false,
    );
    let event = json!({"Records": [
        record("ObjectCreated:Put", "x.json", None),
        record("ObjectCreated:Put", "x.bin", None),
        record("ObjectCreated:Put", "gone.json", None)
    ]});
    let summary = handle_event(&d, event, later()).await.unwrap();
    assert_eq!(
        (
            summary.rejected,
            summary.documents_skipped,
            summary.skipped,
            summary.objects
        ),
        (1, 1, 1, 1)
    );
    let objects = d.store.objects.lock().unwrap();
    assert!(objects.contains_key(&("b".to_string(), "rejects/x.json/e1.jsonl".to_string())));
    let skipped = &objects[&("b".to_string(), "rejects/skipped/x.bin.json".to_string())];
    let skipped: Value = serde_json::from_slice(skipped).unwrap();
    assert_eq!(skipped["kind"], "unsupported");
    assert!(
        skipped["reason"].as_str().unwrap().contains("binary"),
        "{skipped}"
    );
}

#[tokio::test]
async fn a_queue_outage_fails_the_invocation_naming_the_object() {
    let d = deps(&[("in.jsonl", "{\"text\":\"t\"}\n")], true);
    let err = handle_event(
        &d,
        json!({"Records": [record("ObjectCreated:Put", "in.jsonl", None)]}),
        later(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("s3://b/in.jsonl")
            && err.to_string().contains("connection refused"),
        "{err}"
    );
    assert!(handed_over(&d).is_empty());
}

#[tokio::test]
async fn an_sqs_batch_reports_only_the_messages_that_failed() {
    let d = deps(
        &[
            ("ok.jsonl", &lines("ok", 2)),
            ("part.jsonl", &lines("p", 4)),
        ],
        false,
    );
    d.store.failing.lock().unwrap().insert("flaky.jsonl".into());
    let notification =
        |key: &str| json!({"Records": [record("ObjectCreated:Put", key, Some("0A"))]}).to_string();
    // A continuation of part.jsonl from its third line, as an earlier invocation left it.
    let point = ResumePoint {
        offset: lines("p", 2).len() as u64,
        line: 3,
        index: 0,
        values: false,
        in_array: false,
        compressed: Some(false),
    };
    let continuation = json!({"work": [{"kind": "object", "source": {"bucket": "b", "key": "part.jsonl", "etag": "e1"}, "resume": point, "part": 1}], "hops": 2}).to_string();
    let event = sqs_event(&[
        notification("ok.jsonl"),
        notification("flaky.jsonl"),
        "{\"Records\": [".into(),
        continuation,
        json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"}).to_string(),
    ]);
    let summary = handle_event(&d, event, later()).await.unwrap();
    assert_eq!(failed_ids(&summary), vec!["m1", "m2"]);
    assert_eq!(
        (
            summary.objects,
            summary.records,
            summary.failed,
            summary.ignored
        ),
        (2, 4, 1, 1)
    );
    let ids: Vec<String> = messages(&d)
        .iter()
        .flat_map(|m| m.chunks.iter().map(|c| c.doc_id.clone()))
        .collect();
    assert_eq!(ids, vec!["ok0", "ok1", "p2", "p3"]);
    assert!(handed_over(&d).is_empty());
    // The answer is exactly what the event source mapping reads.
    assert!(summary.records > 0);
    assert_eq!(
        summary.into_response(),
        json!({"batchItemFailures": [{"itemIdentifier": "m2"}, {"itemIdentifier": "m1"}]})
    );

    // Nothing failed: an empty list, never a missing one.
    let summary = handle_event(&d, sqs_event(&[notification("ok.jsonl")]), later())
        .await
        .unwrap();
    assert_eq!(summary.into_response(), json!({"batchItemFailures": []}));
}

/// The S3 notifications of `events/` (what `sam local invoke` and the README use), invoked
/// directly as S3 would: each is read, decoded and queued as the demo bucket would have it.
#[tokio::test]
async fn the_s3_events_of_the_events_folder() {
    let event = |text: &str| serde_json::from_str::<Value>(text).unwrap();
    let d = deps(&[], false);
    for (key, body) in [
        ("docs/faq.jsonl", lines("faq", 3)),
        // `+` is a space and %2B a plus in a notification's key.
        ("docs/2024 annual report+q4日本.jsonl", lines("report", 2)),
        (
            "docs/articles.json",
            json!([{"id": "a1", "text": "An article."}]).to_string(),
        ),
    ] {
        d.store
            .objects
            .lock()
            .unwrap()
            .insert(("sakuin-demo".into(), key.into()), body.into_bytes());
    }
    let run = async |text: &str| handle_event(&d, event(text), later()).await.unwrap();

    let put = run(include_str!("../../../events/s3-put.json")).await;
    assert_eq!((put.objects, put.records), (1, 3));
    let encoded = run(include_str!("../../../events/s3-put-encoded-key.json")).await;
    assert_eq!((encoded.objects, encoded.records), (1, 2));
    let multi = run(include_str!("../../../events/s3-put-multi.json")).await;
    assert_eq!((multi.objects, multi.records), (2, 4));
    let keys: BTreeSet<String> = messages(&d).into_iter().map(|m| m.source.key).collect();
    assert_eq!(
        keys,
        [
            "docs/2024 annual report+q4日本.jsonl",
            "docs/articles.json",
            "docs/faq.jsonl"
        ]
        .map(String::from)
        .into()
    );

    // The test event S3 sends when notifications are configured: nothing to do.
    let test = run(include_str!("../../../events/s3-test-event.json")).await;
    assert_eq!((test.objects, test.deleted), (0, 0));
    // The removal of a key that is gone: its chunks are queued for deletion.
    d.store.objects.lock().unwrap().clear();
    let removed = run(include_str!("../../../events/s3-removed.json")).await;
    assert_eq!(removed.deleted, 1);
    let last = messages(&d).pop().unwrap();
    assert_eq!(
        (last.op, last.source.key.as_str()),
        (Operation::Delete, "docs/faq.jsonl")
    );
}

#[tokio::test]
async fn real_shaped_intake_events() {
    let d = deps(&[], false);
    let body = lines("faq", 3);
    d.store.objects.lock().unwrap().insert(
        ("sakuin-demo".into(), "docs/faq.jsonl".into()),
        body.into_bytes(),
    );
    let event: Value =
        serde_json::from_str(include_str!("../../../events/sqs-intake-s3-put.json")).unwrap();
    let summary = handle_event(&d, event, later()).await.unwrap();
    assert_eq!(failed_ids(&summary), Vec::<String>::new());
    assert_eq!(
        (summary.objects, summary.records, summary.ignored),
        (1, 3, 1)
    );
    assert_eq!(
        messages(&d)[0].source.etag.as_deref(),
        Some("cb032eccdfba5b600a2445455bb19df9")
    );

    // The continuation resumes docs/large.jsonl at byte 1048576, line 4121.
    let event: Value =
        serde_json::from_str(include_str!("../../../events/sqs-intake-continuation.json")).unwrap();
    let mut large = vec![b' '; 1_048_575];
    large.push(b'\n');
    large.extend_from_slice(lines("large", 2).as_bytes());
    d.store
        .objects
        .lock()
        .unwrap()
        .insert(("sakuin-demo".into(), "docs/large.jsonl".into()), large);
    let summary = handle_event(&d, event, later()).await.unwrap();
    assert_eq!(failed_ids(&summary), Vec::<String>::new());
    assert_eq!((summary.objects, summary.records), (1, 2));
    let last = d.store.opened.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        last.range_start,
        Some(1_048_576),
        "a ranged read, not byte 0"
    );
    let records: Vec<u64> = messages(&d)
        .iter()
        .filter(|m| m.source.key == "docs/large.jsonl")
        .flat_map(|m| m.chunks.iter().map(|c| c.record))
        .collect();
    assert_eq!(records, vec![4121, 4122]);
}

#[tokio::test]
async fn a_continuation_loop_is_stopped_at_the_hop_limit() {
    let d = deps(&[("loop.jsonl", &lines("l", 2))], false);
    let work = json!([{"kind": "object", "source": {"bucket": "b", "key": "loop.jsonl"}}]);
    let over = json!({"work": work, "hops": MAX_HOPS + 1});
    let summary = handle_event(&d, sqs_event(&[over.to_string()]), later())
        .await
        .unwrap();
    assert_eq!(failed_ids(&summary), vec!["m0"]);
    assert_eq!(summary.records, 0, "nothing of it is read");
    let err = handle_event(&d, over, later()).await.unwrap_err();
    assert!(
        err.to_string().contains("continuation loop was stopped")
            && err.to_string().contains("s3://b/loop.jsonl"),
        "{err}"
    );
    // At the limit it still runs; it reads further into the object, so what it hands over
    // starts the count again: a chain that moves forward ends by itself.
    let at = json!({"work": work, "hops": MAX_HOPS});
    let summary = handle_event(&d, sqs_event(&[at.to_string()]), now())
        .await
        .unwrap();
    assert_eq!(failed_ids(&summary), Vec::<String>::new());
    assert_eq!(handed_over(&d)[0]["hops"], 1);
}

#[tokio::test]
async fn when_time_runs_short_a_batch_hands_over_the_rest_and_succeeds() {
    let d = deps(
        &[
            ("a.jsonl", &lines("a", 3)),
            ("b.jsonl", &lines("b", 1)),
            ("c.jsonl", &lines("c", 1)),
        ],
        false,
    );
    let notification =
        |key: &str| json!({"Records": [record("ObjectCreated:Put", key, Some("0A"))]}).to_string();
    let continuation = json!({"work": [{"kind": "object", "source": {"bucket": "b", "key": "c.jsonl"}}], "hops": 7}).to_string();
    let event = sqs_event(&[
        notification("a.jsonl"),
        notification("b.jsonl"),
        continuation,
    ]);
    let summary = handle_event(&d, event, now()).await.unwrap();
    assert_eq!(failed_ids(&summary), Vec::<String>::new());
    assert_eq!(summary.records, 1, "one record, then the deadline");
    let events = handed_over(&d);
    assert_eq!(events.len(), 3, "{events:?}");
    // The rest of a.jsonl, from its second line; b.jsonl whole; c.jsonl one hop further.
    assert_eq!(events[0]["hops"], 1);
    assert_eq!(events[0]["work"][0]["part"], 1);
    assert_eq!(events[0]["work"][0]["resume"]["line"], 2);
    assert_eq!(events[1]["hops"], 1);
    assert_eq!(events[1]["work"][0]["source"]["key"], "b.jsonl");
    assert_eq!(events[2]["hops"], 8);
    assert!(
        summary
            .continued
            .as_deref()
            .unwrap()
            .contains("a.jsonl from byte")
    );
}

#[tokio::test]
async fn a_direct_event_hands_failed_units_over_with_the_rest() {
    let d = deps(
        &[
            ("flaky.jsonl", &lines("f", 1)),
            ("big.jsonl", &lines("g", 3)),
        ],
        false,
    );
    d.store.failing.lock().unwrap().insert("flaky.jsonl".into());
    let event = json!({"Records": [
        record("ObjectCreated:Put", "flaky.jsonl", Some("01")),
        record("ObjectCreated:Put", "big.jsonl", Some("02")),
    ]});
    // The failed unit takes the invocation's turn; the deadline has passed, so the rest is
    // handed over, and the failed unit with it instead of an error.
    let summary = handle_event(&d, event.clone(), now()).await.unwrap();
    assert_eq!(summary.failed, 1);
    let events = handed_over(&d);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["hops"], 1);
    let keys: Vec<&str> = events[0]["work"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["source"]["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["flaky.jsonl", "big.jsonl"]);

    // With time enough nothing is handed over, and the failure fails the invocation.
    let err = handle_event(&d, event, later()).await.unwrap_err();
    assert!(err.to_string().contains("s3://b/flaky.jsonl"), "{err}");
    assert_eq!(handed_over(&d).len(), 1);
}

#[tokio::test]
async fn an_object_of_rejected_records_hands_over_at_the_deadline() {
    let body: String = (0..40).map(|i| format!("{{\"id\":{i}}}\n")).collect();
    let d = deps(&[("notext.jsonl", &body)], false);
    let summaries = run_to_completion(
        &d,
        json!({"Records": [record("ObjectCreated:Put", "notext.jsonl", Some("0B"))]}),
    )
    .await;
    assert_eq!(summaries.len(), 40, "one record per invocation");
    assert!(summaries[0].continued.is_some());
    assert_eq!(summaries.iter().map(|s| s.rejected).sum::<u64>(), 40);
    assert_eq!(summaries.iter().map(|s| s.objects).sum::<u64>(), 1);
    let msgs = messages(&d);
    assert_eq!(msgs.len(), 1, "only the sweep");
    assert_eq!(msgs[0].op, Operation::Sweep);
}

/// Runs an event, then every continuation it hands over, each with a deadline already
/// past (so every invocation stops at its first chance); returns the invocations' summaries.
async fn run_to_completion(d: &Deps, event: Value) -> Vec<IngestSummary> {
    let mut summaries = vec![handle_event(d, event, now()).await.unwrap()];
    loop {
        let next = d.continuation.events.lock().unwrap().pop();
        let Some(next) = next else { break };
        // The handed-over work survives a round trip through JSON, as it does through
        // Lambda or SQS; through the intake queue it arrives as a message body.
        let next = if d.continuation.queue {
            sqs_event(&[next.to_string()])
        } else {
            serde_json::from_str(&next.to_string()).unwrap()
        };
        let summary = handle_event(d, next, now()).await.unwrap();
        if let Some(failures) = &summary.batch_item_failures {
            assert!(failures.is_empty(), "{failures:?}");
        }
        summaries.push(summary);
        assert!(summaries.len() < 2000, "continuations never end");
    }
    summaries
}

fn queued_doc_ids(d: &Deps) -> Vec<String> {
    messages(d)
        .iter()
        .flat_map(|m| m.chunks.iter().map(|c| c.doc_id.clone()))
        .collect()
}

#[tokio::test]
async fn a_short_deadline_continues_in_fresh_invocations_without_loss_or_duplication() {
    let body: String = (0..300)
        .map(|i| {
            json!({"id": format!("d{i:04}"), "text": format!("record {i} with some text")})
                .to_string()
                + "\n"
        })
        .collect();
    let gz = gzip(body.as_bytes());
    for (key, content) in [("big.jsonl", body.into_bytes()), ("big.jsonl.gz", gz)] {
        let mut d = deps(&[], false);
        d.store
            .objects
            .lock()
            .unwrap()
            .insert(("b".into(), key.into()), content);
        d.config.message_max_bytes = 4096;
        let summaries = run_to_completion(
            &d,
            json!({"Records": [record("ObjectCreated:Put", key, Some("0C"))]}),
        )
        .await;
        assert!(
            summaries.len() > 2,
            "the object took several invocations: {}",
            summaries.len()
        );
        assert!(
            summaries[0]
                .continued
                .as_deref()
                .unwrap()
                .contains(&format!("{key} from byte"))
        );
        let ids = queued_doc_ids(&d);
        let expected: Vec<String> = (0..300).map(|i| format!("d{i:04}")).collect();
        assert_eq!(ids, expected, "{key}: every record queued once, in order");
        assert_eq!(summaries.iter().map(|s| s.records).sum::<u64>(), 300);
        // Only the invocation that finished the object sends its sweep.
        let sweeps = messages(&d)
            .iter()
            .filter(|m| m.op == Operation::Sweep)
            .count();
        assert_eq!(sweeps, 1);
        let sweep = messages(&d).last().unwrap().clone();
        assert_eq!(sweep.op, Operation::Sweep);
        assert_eq!(
            sweep.chunks_expected,
            Some(300),
            "the sweep counts the chunks of every part"
        );
        // Later parts of plain content read from where the last part stopped; gzip content
        // is read from its start every time.
        let opened = d.store.opened.lock().unwrap();
        assert_eq!(opened[0].range_start, None);
        let ranged = opened[1..]
            .iter()
            .filter(|o| o.range_start.is_some())
            .count();
        if key.ends_with(".gz") {
            assert_eq!(ranged, 0);
        } else {
            assert_eq!(ranged, opened.len() - 1);
            assert!(
                opened
                    .windows(2)
                    .all(|w| w[0].range_start < w[1].range_start)
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_gzip_part_that_cannot_skip_in_time_is_handed_over_unread() {
    let body = lines("z", 6);
    let gz = gzip(body.as_bytes());
    // Where an earlier invocation stopped: after the third record.
    let mut reader =
        crate::reader::open_records(std::io::Cursor::new(gz.clone()), "z.jsonl.gz", 1024)
            .await
            .unwrap();
    let mut point = None;
    for _ in 0..3 {
        point = Some(reader.next_record().await.unwrap().unwrap().resume);
    }
    let point = point.unwrap();
    assert_eq!(point.compressed, Some(true));
    let d = deps(&[("first.jsonl", &lines("f", 1))], false);
    d.store
        .objects
        .lock()
        .unwrap()
        .insert(("b".into(), "z.jsonl.gz".into()), gz);
    // Opening the gzip object takes longer than the time left.
    d.store
        .slow
        .lock()
        .unwrap()
        .insert("z.jsonl.gz".into(), Duration::from_secs(10));
    let gz_unit = json!({"kind": "object", "source": {"bucket": "b", "key": "z.jsonl.gz", "etag": "e1"}, "resume": point, "part": 1});
    let event = json!({"work": [
        {"kind": "object", "source": {"bucket": "b", "key": "first.jsonl"}},
        gz_unit,
    ], "hops": 4});
    let summary = handle_event(&d, event, Deadline::after(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!((summary.objects, summary.records), (1, 1));
    let events = handed_over(&d);
    assert_eq!(events.len(), 1);
    let unit: Work = serde_json::from_value(events[0]["work"][0].clone()).unwrap();
    assert_eq!(
        unit,
        serde_json::from_value(gz_unit).unwrap(),
        "handed over as it came"
    );
    assert_eq!(
        events[0]["hops"], 1,
        "the first unit moved the chain forward"
    );
    // A fresh invocation gets through: the skip is its first unit.
    d.store.slow.lock().unwrap().clear();
    let summary = handle_event(
        &d,
        events[0].clone(),
        Deadline::after(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    assert_eq!((summary.objects, summary.records), (1, 3));
    let ids = queued_doc_ids(&d);
    assert_eq!(ids, vec!["f0", "z3", "z4", "z5"]);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use async_compression::tokio::write::GzipEncoder;
    use tokio::io::AsyncWriteExt;
    let data = data.to_vec();
    // Its own thread and runtime: the tests calling this already run inside one.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut enc = GzipEncoder::new(Vec::new());
            enc.write_all(&data).await.unwrap();
            enc.shutdown().await.unwrap();
            enc.into_inner()
        })
    })
    .join()
    .unwrap()
}

#[tokio::test]
async fn a_backfill_reads_every_object_under_the_prefix_across_pages_and_seams() {
    let array = serde_json::to_string(
        &(0..30)
            .map(|i| json!({"id": format!("arr{i}"), "text": "t"}))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let objects = [
        ("in/a.jsonl", lines("a", 40)),
        ("in/b.json", array),
        ("in/c.jsonl", lines("c", 5)),
        ("in/folder/", String::new()),
        ("rejects/in/x.jsonl/e1.jsonl", lines("never", 3)),
        ("other/z.jsonl", lines("never", 3)),
    ];
    let refs: Vec<(&str, &str)> = objects.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Without the intake queue the pages are read in line; with it they fan out.
    for queue in [false, true] {
        let mut d = deps(&refs, false);
        d.config.message_max_bytes = 4096;
        d.continuation.queue = queue;
        let summaries =
            run_to_completion(&d, json!({"backfill": {"bucket": "b", "prefix": "in/"}})).await;
        let mut ids = queued_doc_ids(&d);
        let total = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), total, "no duplicates");
        assert_eq!(total, 75);
        assert!(ids.iter().all(|id| !id.starts_with("never")));
        assert_eq!(summaries.iter().map(|s| s.objects).sum::<u64>(), 3);
        assert_eq!(summaries.iter().map(|s| s.listed).sum::<u64>(), 4);
    }
}

#[tokio::test]
async fn a_backfill_page_fans_out_one_message_per_object() {
    let d = deps(
        &[
            ("in/a.jsonl", &lines("a", 1)),
            ("in/b.jsonl", &lines("b", 1)),
            ("in/c.jsonl", &lines("c", 1)),
        ],
        false,
    );
    let d = Deps {
        continuation: Handover {
            queue: true,
            ..Default::default()
        },
        ..d
    };
    let summary = handle_event(
        &d,
        sqs_event(&[json!({"backfill": {"bucket": "b", "prefix": "in/"}}).to_string()]),
        later(),
    )
    .await
    .unwrap();
    assert_eq!((summary.listed, summary.records), (2, 0));
    let events = handed_over(&d);
    let units: Vec<Work> = events
        .iter()
        .map(|e| {
            assert_eq!(e["hops"], 0);
            let work = e["work"].as_array().unwrap();
            assert_eq!(work.len(), 1, "one unit per message");
            serde_json::from_value(work[0].clone()).unwrap()
        })
        .collect();
    let source = |key: &str| SourceRef {
        bucket: "b".into(),
        key: key.into(),
        version_id: None,
        etag: Some("e1".into()),
        sequencer: None,
        read_at: None,
    };
    assert_eq!(
        units,
        vec![
            Work::Object {
                source: source("in/a.jsonl"),
                resume: None,
                part: 0,
                queued: 0
            },
            Work::Object {
                source: source("in/b.jsonl"),
                resume: None,
                part: 0,
                queued: 0
            },
            Work::Backfill {
                bucket: "b".into(),
                prefix: "in/".into(),
                start_after: Some("in/b.jsonl".into()),
                chain: Some("m0".into()),
            },
        ]
    );
}

/// A late `ObjectCreated` in a versioned bucket names a version that is no longer current:
/// it is skipped (the current version's own event indexes that one), not read and indexed.
#[tokio::test]
async fn a_late_notification_of_a_version_no_longer_current_reads_nothing() {
    let d = deps(&[("v.jsonl", &lines("v", 2))], false);
    d.store
        .versions
        .lock()
        .unwrap()
        .insert("v.jsonl".into(), "version-2".into());
    let mut late = record("ObjectCreated:Put", "v.jsonl", Some("0A"));
    late["s3"]["object"]["versionId"] = json!("version-1");
    let summary = handle_event(&d, json!({"Records": [late]}), later())
        .await
        .unwrap();
    assert_eq!((summary.skipped, summary.records), (1, 0));
    assert!(
        messages(&d).is_empty(),
        "nothing of the old version is queued"
    );
    // The current version's own notification is read.
    let mut current = record("ObjectCreated:Put", "v.jsonl", Some("0B"));
    current["s3"]["object"]["versionId"] = json!("version-2");
    let summary = handle_event(&d, json!({"Records": [current]}), later())
        .await
        .unwrap();
    assert_eq!(summary.records, 2);
}

/// A backfill page received twice never starts a second chain: each page claims the next
/// one (a conditional write under the rejects prefix) before handing it over; the message
/// that made the claim may hand it over again, any other stops.
#[tokio::test]
async fn a_backfill_page_received_twice_starts_no_second_chain() {
    let keys: Vec<String> = (0..5).map(|i| format!("in/{i}.jsonl")).collect();
    let objects: Vec<(&str, String)> = keys.iter().map(|k| (k.as_str(), lines("x", 1))).collect();
    let objects: Vec<(&str, &str)> = objects.iter().map(|(k, b)| (*k, b.as_str())).collect();
    let d = deps(&objects, false);
    let d = Deps {
        continuation: Handover {
            queue: true,
            ..Default::default()
        },
        ..d
    };
    let pages = |d: &Deps| -> Vec<Value> {
        let pages = handed_over(d)
            .into_iter()
            .filter(|e| e["work"][0]["kind"] == "backfill")
            .collect();
        d.continuation.events.lock().unwrap().clear();
        pages
    };
    let request = json!({"backfill": {"bucket": "b", "prefix": "in/"}}).to_string();
    handle_event(&d, sqs_event(&[request]), later())
        .await
        .unwrap();
    let first = pages(&d);
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0]["work"][0]["chain"], "m0",
        "the request's message names the chain"
    );
    let page = first[0].to_string();

    // The second page, handed over twice (as two messages): the first to run claims the
    // third page, the other stops; the claimant received again hands it over again.
    handle_event(&d, sqs_event(&["{}".into(), page.clone()]), later())
        .await
        .unwrap();
    assert_eq!(
        pages(&d).len(),
        1,
        "the claimant (m1) hands the third page over"
    );
    handle_event(&d, sqs_event(std::slice::from_ref(&page)), later())
        .await
        .unwrap();
    assert_eq!(
        pages(&d).len(),
        0,
        "another message (m0) stops: no second chain"
    );
    handle_event(&d, sqs_event(&["{}".into(), page]), later())
        .await
        .unwrap();
    assert_eq!(pages(&d).len(), 1, "m1 received again hands it over again");
    let claims: Vec<String> = d
        .store
        .objects
        .lock()
        .unwrap()
        .keys()
        .filter(|(_, k)| k.starts_with("rejects/.backfill/m0/"))
        .map(|(_, k)| k.clone())
        .collect();
    assert_eq!(claims.len(), 2, "{claims:?}");
}

#[tokio::test]
async fn continuations_queued_before_the_removal_check_still_read() {
    let d = deps(&[("still.jsonl", &lines("s", 1))], false);
    let old = json!({"work": [{"kind": "delete", "source": {"bucket": "b", "key": "still.jsonl", "sequencer": "0000000000000000000000000000000A"}}]});
    let summary = handle_event(&d, old, later()).await.unwrap();
    assert_eq!((summary.reindexed, summary.deleted), (1, 0));
}

#[tokio::test]
async fn unknown_events_are_refused_clearly() {
    let d = deps(&[], false);
    let err = handle_event(&d, json!({"backfil": {"bucket": "b"}}), later())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("backfil"), "{err}");
    let err = handle_event(&d, json!({"backfill": {"prefix": "x"}}), later())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bucket"), "{err}");
}

#[test]
fn the_intake_queue_is_optional() {
    let vars = |pairs: &[(&str, &str)]| {
        Env::from_map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    let cfg = IngestConfig::from_env(&mut vars(&[("CHUNK_QUEUE_URL", "q")])).unwrap();
    assert_eq!(cfg.intake_queue_url, None);
    let cfg = IngestConfig::from_env(&mut vars(&[
        ("CHUNK_QUEUE_URL", "q"),
        ("INGEST_QUEUE_URL", "https://sqs/intake"),
    ]))
    .unwrap();
    assert_eq!(cfg.intake_queue_url.as_deref(), Some("https://sqs/intake"));
}
