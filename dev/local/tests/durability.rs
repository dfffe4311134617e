//! The index ends equal to the bucket in the deployment the template creates: S3 notifications
//! on the intake queue, several `ingest` and `embed-index` containers at once, versioned
//! buckets, an Elasticsearch outage far longer than the queue's retry budget, invocations that
//! crash. Every scenario ends by comparing the whole index with the whole bucket.
//!
//! Figures: `cargo test -p sakuin-local --test durability -- --nocapture --test-threads=1`.

use std::time::{Duration, Instant};

use sakuin_local::fleet::{Fleet, FleetOptions, Notification, Rng, shuffled_deliveries};
use sakuin_local::pipeline::{BUCKET, MAX_RECEIVE_COUNT, PipelineOptions, VISIBILITY_TIMEOUT_SECS};
use sakuin_local::stack::LocalStack;
use sakuin_local::truth::{Comparison, compare_index_with_bucket};
use serde_json::json;

/// One scenario at a time: each runs several containers of its own, and its timings (a
/// visibility timeout of seconds) assume the machine is not shared with another scenario.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start(index: &str, options: FleetOptions) -> Fleet {
    let stack = LocalStack::start(&[])
        .await
        .expect("the local stack starts (make venv installs it)");
    let log = stack.work_dir.join("functions.log");
    Fleet::start(
        stack,
        FleetOptions {
            pipeline: PipelineOptions {
                index: index.into(),
                log: Some(log),
                ..options.pipeline
            },
            ..options
        },
    )
    .await
    .expect("the functions start (cargo build --workspace builds them)")
}

/// JSON Lines of `n` one-chunk records with ids `{prefix}-{i}`; `version` is in every text, so
/// each version's texts are new and an older text left in the index shows as stale.
fn records(prefix: &str, version: u32, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            json!({"id": format!("{prefix}-{i}"), "text": format!("Record {i} of {prefix}, version {version}.")})
                .to_string()
                + "\n"
        })
        .collect::<String>()
        .into_bytes()
}

async fn compare(fleet: &Fleet) -> Comparison {
    compare_index_with_bucket(&fleet.s3, BUCKET, &fleet.es())
        .await
        .expect("the bucket and the index can be read")
}

/// Asserts the index equals the bucket and both DLQs are empty.
async fn assert_settled(fleet: &Fleet) -> Comparison {
    let comparison = compare(fleet).await;
    assert!(comparison.is_equal(), "index ≠ bucket: {comparison}");
    assert_eq!(
        fleet.dead_letters().await.unwrap(),
        (0, 0),
        "chunk and intake DLQs"
    );
    comparison
}

/// Sum of `metric` over the EMF lines the functions wrote.
fn emf_sum(fleet: &Fleet, metric: &str) -> f64 {
    let log = fleet.stack.work_dir.join("functions.log");
    sakuin_local::pipeline::emf_sum(&log, metric, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_overwrites_and_deletes_of_the_same_keys_end_equal_to_the_bucket() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = std::env::var("SAKUIN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_203);
    let fleet = start(
        "concurrency",
        FleetOptions {
            // Compressed: a message waiting on its object's order comes back in seconds.
            pipeline: PipelineOptions {
                extra_env: vec![
                    ("REQUEUE_DELAY_SECS".into(), "2".into()),
                    ("REQUEUE_MAX_DELAY_SECS".into(), "8".into()),
                ],
                ..PipelineOptions::default()
            },
            ingest_containers: 2,
            embed_index_containers: 4,
        },
    )
    .await;
    let mut rng = Rng::new(seed);
    let began = Instant::now();
    const KEYS: usize = 8;
    let mut versions = [0u32; KEYS];
    let (mut operations, mut deliveries, mut texts_written) = (0, 0, 0);
    // Rounds of operations on a few keys, each round's notifications delivered slightly out
    // of order and some twice, while the containers work on the rounds before.
    for _round in 0..10 {
        let mut round = Vec::new();
        for _ in 0..8 {
            let k = rng.below(KEYS);
            let key = format!("race/{k}.jsonl");
            let notification = if rng.below(6) == 0 {
                fleet.delete(&key).await.unwrap()
            } else {
                versions[k] += 1;
                let n = 1 + rng.below(12);
                texts_written += n;
                fleet
                    .put(&key, records(&format!("k{k}"), versions[k], n))
                    .await
                    .unwrap()
            };
            round.push(notification);
            operations += 1;
        }
        let delivered = shuffled_deliveries(&round, &mut rng, 4, 4);
        deliveries += delivered.len();
        fleet.deliver(&delivered).await.unwrap();
        tokio::time::sleep(Duration::from_millis(rng.below(400) as u64)).await;
    }
    let sending = began.elapsed();
    let took = sending
        + fleet
            .run_until_quiet(Duration::from_secs(300))
            .await
            .unwrap();
    let comparison = compare(&fleet).await;
    let texts = fleet.texts_embedded().await.unwrap();
    println!(
        "concurrency (seed {seed}): {} ingest + {} embed-index containers, {operations} S3 operations on {KEYS} keys, {deliveries} notifications delivered; {comparison}; {texts} texts embedded for {texts_written} written; {:.1} s",
        fleet.ingest.containers(),
        fleet.embed_index.containers(),
        took.as_secs_f64()
    );
    println!(
        "  ingest {:?}\n  embed-index {:?}\n  write conflicts {}, chunks compensated {}, sweeps waiting {}, messages requeued {}",
        fleet.ingest.stats(),
        fleet.embed_index.stats(),
        emf_sum(&fleet, "WriteConflicts"),
        emf_sum(&fleet, "ChunksCompensated"),
        emf_sum(&fleet, "SweepsWaiting"),
        emf_sum(&fleet, "MessagesRequeued"),
    );
    assert!(comparison.is_equal(), "index ≠ bucket: {comparison}");
    assert_eq!(fleet.dead_letters().await.unwrap(), (0, 0));
    assert!(
        texts <= texts_written as u64,
        "no text is embedded twice: {texts} > {texts_written}"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioned_bucket_removals_markers_undeletes_and_expirations_end_equal_to_the_bucket() {
    let _one = ONE_AT_A_TIME.lock().await;
    let fleet = start(
        "versions",
        FleetOptions {
            pipeline: PipelineOptions {
                versioned_bucket: true,
                ..PipelineOptions::default()
            },
            ingest_containers: 1,
            embed_index_containers: 2,
        },
    )
    .await;
    let quiet = async || {
        fleet
            .run_until_quiet(Duration::from_secs(120))
            .await
            .unwrap();
    };
    let keys_indexed = async || -> Vec<String> {
        let es = fleet.es();
        es.refresh().await.unwrap();
        let answer = es
            .search(&json!({"size": 0, "aggs": {"keys": {"terms": {"field": "source.key", "size": 100}}}}))
            .await
            .unwrap();
        let mut keys: Vec<String> = answer["aggregations"]["keys"]["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["key"].as_str().unwrap().to_owned())
            .collect();
        keys.sort();
        keys
    };

    // Two versions of `kept` and of `trimmed`, one of the others.
    let kept_v1 = fleet
        .put("v/kept.jsonl", records("kept", 1, 4))
        .await
        .unwrap();
    let mut notes = vec![kept_v1.clone()];
    notes.push(
        fleet
            .put("v/kept.jsonl", records("kept", 2, 3))
            .await
            .unwrap(),
    );
    let trimmed_v1 = fleet
        .put("v/trimmed.jsonl", records("trim", 1, 5))
        .await
        .unwrap();
    notes.push(trimmed_v1.clone());
    notes.push(
        fleet
            .put("v/trimmed.jsonl", records("trim", 2, 2))
            .await
            .unwrap(),
    );
    for key in ["deleted", "undeleted", "expired"] {
        notes.push(
            fleet
                .put(&format!("v/{key}.jsonl"), records(key, 1, 3))
                .await
                .unwrap(),
        );
    }
    fleet.deliver(&notes).await.unwrap();
    quiet().await;
    assert_settled(&fleet).await;
    let texts_before = fleet.texts_embedded().await.unwrap();

    // A noncurrent version removed by hand and one by the lifecycle rule: the current versions
    // stay. A delete marker by hand and one by expiration: those keys go.
    let version = |n: &Notification| n.version_id.clone().expect("a versioned bucket");
    let marker = fleet.delete("v/undeleted.jsonl").await.unwrap();
    let notes = vec![
        fleet
            .delete_version("v/kept.jsonl", &version(&kept_v1))
            .await
            .unwrap(),
        fleet
            .expire_version("v/trimmed.jsonl", &version(&trimmed_v1))
            .await
            .unwrap(),
        fleet.delete("v/deleted.jsonl").await.unwrap(),
        fleet.expire("v/expired.jsonl").await.unwrap(),
        marker.clone(),
    ];
    assert_eq!(
        marker.event["Records"][0]["eventName"],
        "ObjectRemoved:DeleteMarkerCreated"
    );
    fleet.deliver(&notes).await.unwrap();
    quiet().await;
    assert_settled(&fleet).await;
    assert_eq!(keys_indexed().await, ["v/kept.jsonl", "v/trimmed.jsonl"]);
    assert_eq!(
        fleet.texts_embedded().await.unwrap(),
        texts_before,
        "the versions that stay current are not embedded again"
    );

    // Removing the delete marker brings the object back.
    let undelete = fleet
        .delete_version("v/undeleted.jsonl", &version(&marker))
        .await
        .unwrap();
    fleet.deliver(&[undelete]).await.unwrap();
    quiet().await;
    let comparison = assert_settled(&fleet).await;
    assert_eq!(
        keys_indexed().await,
        ["v/kept.jsonl", "v/trimmed.jsonl", "v/undeleted.jsonl"]
    );
    assert_eq!(
        fleet.texts_embedded().await.unwrap(),
        texts_before + 3,
        "the undeleted object is embedded again, once"
    );
    println!("versions: {comparison}");

    // The comparison itself sees each kind of difference: a document left behind, one with an
    // older text, one missing.
    let es = fleet.es();
    let doc = |id: &str, key: &str, text: &str| json!({"doc_id": id, "chunk_index": 0, "chunk_count": 1, "text": text, "source": {"bucket": BUCKET, "key": key}});
    for (method, id, key, body) in [
        (
            reqwest::Method::PUT,
            "ghost",
            "v/deleted.jsonl",
            Some(doc("ghost", "v/deleted.jsonl", "left behind")),
        ),
        (
            reqwest::Method::PUT,
            "kept-0",
            "v/kept.jsonl",
            Some(doc(
                "kept-0",
                "v/kept.jsonl",
                "Record 0 of kept, version 1.",
            )),
        ),
        (reqwest::Method::DELETE, "trim-1", "v/trimmed.jsonl", None),
    ] {
        let path = format!(
            "/versions/_doc/{}",
            sakuin::ids::object_chunk_id(BUCKET, key, id, 0)
        );
        let body = body.map(|b| (b.to_string().into_bytes(), "application/json"));
        let (status, answer) = es.send(method, &path, body).await.unwrap();
        assert!(
            status.is_success(),
            "{path}: {status} {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let tampered = compare(&fleet).await;
    assert_eq!(
        (
            tampered.extra.as_slice(),
            tampered.stale.as_slice(),
            tampered.missing.as_slice()
        ),
        (
            &["ghost".to_owned()][..],
            &["kept-0".to_owned()][..],
            &["trim-1".to_owned()][..]
        ),
        "{tampered}"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_five_times_the_retry_budget_loses_nothing_and_embeds_nothing_twice() {
    let _one = ONE_AT_A_TIME.lock().await;
    let fleet = start(
        "outage",
        FleetOptions {
            pipeline: PipelineOptions {
                es_faults: true,
                extra_env: vec![
                    ("REQUEUE_DELAY_SECS".into(), "1".into()),
                    ("REQUEUE_MAX_DELAY_SECS".into(), "4".into()),
                ],
                ..PipelineOptions::default()
            },
            ingest_containers: 1,
            embed_index_containers: 2,
        },
    )
    .await;
    let faults = fleet.es_faults.as_ref().unwrap();
    // What a message gets before the DLQ: every receive, each a visibility timeout apart.
    let budget = Duration::from_secs(u64::from(MAX_RECEIVE_COUNT * VISIBILITY_TIMEOUT_SECS));
    let outage = budget * 5;

    let mut notes = Vec::new();
    for i in 0..4 {
        notes.push(
            fleet
                .put(&format!("out/{i}.jsonl"), records(&format!("o{i}"), 1, 20))
                .await
                .unwrap(),
        );
    }
    fleet.deliver(&notes).await.unwrap();
    fleet
        .run_until_quiet(Duration::from_secs(120))
        .await
        .unwrap();
    assert_settled(&fleet).await;
    let texts_before = fleet.texts_embedded().await.unwrap();

    // The cluster goes away. New objects, an overwrite and a delete arrive meanwhile; halfway
    // through, every embed-index container is replaced by a cold one.
    faults.set_down(true);
    let down_at = Instant::now();
    let mut notes = Vec::new();
    for i in 4..8 {
        notes.push(
            fleet
                .put(&format!("out/{i}.jsonl"), records(&format!("o{i}"), 1, 20))
                .await
                .unwrap(),
        );
    }
    notes.push(
        fleet
            .put("out/0.jsonl", records("o0", 2, 15))
            .await
            .unwrap(),
    );
    notes.push(fleet.delete("out/1.jsonl").await.unwrap());
    fleet.deliver(&notes).await.unwrap();
    tokio::time::sleep(outage / 2).await;
    fleet.embed_index.recycle().await;
    tokio::time::sleep(outage.saturating_sub(down_at.elapsed())).await;
    let (dead, intake_dead) = fleet.dead_letters().await.unwrap();
    assert_eq!(
        (dead, intake_dead),
        (0, 0),
        "nothing dead-letters during the outage"
    );
    let texts_during = fleet.texts_embedded().await.unwrap() - texts_before;
    faults.set_down(false);
    let outage_took = down_at.elapsed();

    let drain = fleet
        .run_until_quiet(Duration::from_secs(180))
        .await
        .unwrap();
    let comparison = assert_settled(&fleet).await;
    let texts = fleet.texts_embedded().await.unwrap() - texts_before;
    // Every new text of the outage, each embedded once: 4 new objects and the overwrite.
    let new_texts = 4 * 20 + 15;
    println!(
        "outage: {:.0} s down ÷ {:.0} s retry budget = {:.1}; DLQ messages 0 and 0; {texts_during} texts embedded during the outage; {texts} texts embedded for {new_texts} new chunks ({:.2} per chunk); drained {:.1} s after the return; {} requests answered 503; messages requeued {}; {comparison}",
        outage_took.as_secs_f64(),
        budget.as_secs_f64(),
        outage_took.as_secs_f64() / budget.as_secs_f64(),
        texts as f64 / new_texts as f64,
        drain.as_secs_f64(),
        faults.injected().unavailable_requests,
        emf_sum(&fleet, "MessagesRequeued"),
    );
    println!("  embed-index {:?}", fleet.embed_index.stats());
    assert!(faults.injected().unavailable_requests > 0);
    assert!(
        fleet.embed_index.stats().cold_starts > 2,
        "a cold start during the outage"
    );
    assert_eq!(texts, new_texts, "nothing is embedded twice, or blind");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_invocations_and_continuations_lose_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let fleet = start(
        "crashes",
        FleetOptions {
            pipeline: PipelineOptions {
                extra_env: vec![
                    ("INGEST_TIME_LIMIT_SECS".into(), "1".into()),
                    ("MESSAGE_MAX_BYTES".into(), "4096".into()),
                    ("REQUEUE_DELAY_SECS".into(), "2".into()),
                    ("REQUEUE_MAX_DELAY_SECS".into(), "8".into()),
                ],
                ..PipelineOptions::default()
            },
            ingest_containers: 2,
            embed_index_containers: 2,
        },
    )
    .await;
    // The first invocation for the large object's notification dies part way, and so does
    // the first continuation; so does one embed-index invocation.
    let crash_after = Duration::from_millis(400);
    fleet.ingest.crash_when("crash/large.jsonl\"", crash_after);
    fleet.ingest.crash_when("\"hops\"", crash_after);
    fleet
        .embed_index
        .crash_when("\"op\":\"index\"", Duration::from_millis(30));

    const LARGE: usize = 8000;
    let large = fleet
        .put("crash/large.jsonl", records("large", 1, LARGE))
        .await
        .unwrap();
    let mut notes = vec![large];
    for i in 0..5 {
        notes.push(
            fleet
                .put(
                    &format!("crash/{i}.jsonl"),
                    records(&format!("c{i}"), 1, 10),
                )
                .await
                .unwrap(),
        );
    }
    fleet.deliver(&notes).await.unwrap();
    let took = fleet
        .run_until_quiet(Duration::from_secs(300))
        .await
        .unwrap();
    let comparison = assert_settled(&fleet).await;
    let texts = fleet.texts_embedded().await.unwrap();
    let ingest = fleet.ingest.stats();
    let embed = fleet.embed_index.stats();
    println!(
        "crashes: ingest {ingest:?}; embed-index {embed:?}; {comparison}; {texts} texts embedded for {} chunks ({:.3} per chunk); sweeps waiting {}; {:.1} s",
        comparison.expected,
        texts as f64 / comparison.expected as f64,
        emf_sum(&fleet, "SweepsWaiting"),
        took.as_secs_f64()
    );
    assert_eq!(
        (
            fleet.ingest.crashes_pending(),
            fleet.embed_index.crashes_pending()
        ),
        (0, 0),
        "every planned crash happened"
    );
    assert_eq!(ingest.crashes, 2);
    assert_eq!(embed.crashes, 1);
    assert!(texts >= comparison.expected as u64);
    fleet.stop().await;
}

/// Runs the `sakuin` command line with the fleet's variables; exit status and stdout.
async fn sakuin(fleet: &Fleet, args: &[&str]) -> (Option<i32>, String) {
    let (code, out, err) = fleet.sakuin(args).await;
    if !err.is_empty() {
        eprintln!("sakuin {}: {err}", args.join(" "));
    }
    (code, out)
}

fn json_of(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_made_behind_the_pipelines_back_is_found_and_repaired_by_reconcile() {
    let _one = ONE_AT_A_TIME.lock().await;
    let fleet = start(
        "reconcile",
        FleetOptions {
            pipeline: PipelineOptions {
                versioned_bucket: true,
                ..PipelineOptions::default()
            },
            ingest_containers: 2,
            embed_index_containers: 2,
        },
    )
    .await;
    let mut notes = Vec::new();
    for i in 0..8 {
        let body = records(&format!("r{i}"), 1, 3);
        notes.push(fleet.put(&format!("r/{i}.jsonl"), body).await.unwrap());
    }
    // A file with no records: the index holds nothing of it, and that is in sync.
    notes.push(fleet.put("r/empty.jsonl", Vec::new()).await.unwrap());
    fleet.deliver(&notes).await.unwrap();
    fleet
        .run_until_quiet(Duration::from_secs(120))
        .await
        .unwrap();
    assert_settled(&fleet).await;
    let scope = format!("s3://{BUCKET}/");
    let (code, out) = sakuin(&fleet, &["reconcile", &scope, "--json"]).await;
    let report = json_of(&out);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        (report["objects"].as_u64(), report["empty"].as_u64()),
        (Some(9), Some(1))
    );

    // Behind the pipeline's back: the notifications of two overwrites, two new objects and two
    // deletions never reach it.
    let withheld = vec![
        fleet.put("r/0.jsonl", records("r0", 2, 2)).await.unwrap(),
        fleet.put("r/1.jsonl", records("r1", 2, 4)).await.unwrap(),
        fleet
            .put("r/new-a.jsonl", records("na", 1, 3))
            .await
            .unwrap(),
        fleet
            .put("r/new-b.jsonl", records("nb", 1, 1))
            .await
            .unwrap(),
        fleet.delete("r/2.jsonl").await.unwrap(),
        fleet.delete("r/3.jsonl").await.unwrap(),
    ];
    let before = compare(&fleet).await;
    assert!(!before.is_equal(), "the drift is real: {before}");

    let (code, out) = sakuin(&fleet, &["reconcile", &scope]).await;
    println!("{out}");
    assert_eq!(code, Some(1), "drift left unrepaired needs a person: {out}");
    let (_, out) = sakuin(&fleet, &["reconcile", &scope, "--json"]).await;
    let report = json_of(&out);
    let counts =
        |r: &serde_json::Value| ["missing", "changed", "orphaned"].map(|k| r[k].as_u64().unwrap());
    assert_eq!(counts(&report), [2, 2, 2], "{out}");
    assert_eq!(report["objects"], 9);
    let example = |kind: &str| -> Vec<String> {
        report["examples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"] == kind)
            .map(|d| d["key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(example("missing"), ["r/new-a.jsonl", "r/new-b.jsonl"]);
    assert_eq!(example("changed"), ["r/0.jsonl", "r/1.jsonl"]);
    assert_eq!(example("orphaned"), ["r/2.jsonl", "r/3.jsonl"]);

    let (code, out) = sakuin(&fleet, &["reconcile", &scope, "--fix", "--json"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(json_of(&out)["queued"], 6, "{out}");
    fleet
        .run_until_quiet(Duration::from_secs(120))
        .await
        .unwrap();
    let after = assert_settled(&fleet).await;
    println!("reconcile: before the repair {before}; after {after}");
    let (code, out) = sakuin(&fleet, &["reconcile", &scope, "--json"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(counts(&json_of(&out)), [0, 0, 0], "{out}");

    // The withheld notifications arrive after all, late: the repairs stand, and the real events
    // apply over them or are found superseded.
    fleet.deliver(&withheld).await.unwrap();
    fleet
        .run_until_quiet(Duration::from_secs(120))
        .await
        .unwrap();
    assert_settled(&fleet).await;

    // The scheduled run (the probe function with `{"reconcile": ...}`) after one more change
    // behind the pipeline's back: it repairs it, and says so in its metrics.
    fleet.put("r/4.jsonl", records("r4", 3, 5)).await.unwrap();
    let log = fleet.stack.work_dir.join("probe.log");
    let env: Vec<(String, String)> = fleet.env.clone();
    let probe = sakuin_local::runtime::FunctionProcess::spawn(
        &sakuin_local::pipeline::require(&sakuin_local::pipeline::binary_dir(), "probe").unwrap(),
        "sakuin-probe",
        &env,
        Some(&log),
    )
    .await
    .unwrap();
    let answer = probe
        .invoke(
            &json!({"reconcile": {"fix": true}}),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(counts(&answer), [0, 1, 0], "{answer}");
    assert_eq!(answer["queued"], 1);
    assert_eq!(answer["complete"], true);
    // The function's output reaches its log file a moment after the answer.
    let mut drifted = 0.0;
    for _ in 0..50 {
        drifted = sakuin_local::pipeline::emf_sum(&log, "ObjectsDrifted", None);
        if drifted > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(drifted, 1.0, "the drift as a metric");
    probe.stop().await;
    fleet
        .run_until_quiet(Duration::from_secs(120))
        .await
        .unwrap();
    assert_settled(&fleet).await;
    fleet.stop().await;
}

/// The whole index against the whole bucket (every record in all its pieces, nothing else,
/// both DLQs empty), and `sakuin reconcile` agreeing.
async fn assert_reconciled(fleet: &Fleet, scope: &str) {
    assert_settled(fleet).await;
    let (code, out) = sakuin(fleet, &["reconcile", scope, "--json"]).await;
    assert_eq!(code, Some(0), "index ≠ bucket: {out}");
    assert_eq!(json_of(&out)["objects"], 40);
}

/// JSON Lines of `n` records of varied length (some longer than a chunk), ids `{prefix}-{i}`.
fn varied_records(prefix: &str, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            let sentence = format!("Sentence {i} of {prefix} says something worth finding. ");
            let text = sentence.repeat(1 + (i * 7) % 40);
            json!({"id": format!("{prefix}-{i}"), "text": text}).to_string() + "\n"
        })
        .collect::<String>()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_is_estimated_run_to_the_end_and_free_to_repeat() {
    let _one = ONE_AT_A_TIME.lock().await;
    let fleet = start(
        "backfill",
        FleetOptions {
            // Batches of large objects run for seconds: a visibility timeout longer than an
            // invocation, as the template sets it, so no batch is received twice while it runs.
            pipeline: PipelineOptions {
                chunk_visibility_secs: 120,
                ..PipelineOptions::default()
            },
            ingest_containers: 2,
            embed_index_containers: 2,
        },
    )
    .await;
    // Objects that were in the bucket before any notification: nothing has seen them.
    const OBJECTS: usize = 40;
    const RECORDS: usize = 75;
    for i in 0..OBJECTS {
        fleet
            .put(
                &format!("bf/{i:02}.jsonl"),
                varied_records(&format!("b{i}"), RECORDS),
            )
            .await
            .unwrap();
    }
    let scope = format!("s3://{BUCKET}/bf/");
    let (code, out) = sakuin(&fleet, &["backfill", &scope, "--rpm", "600"]).await;
    println!("{out}");
    assert_eq!(code, Some(0));
    assert!(
        out.contains("Nothing was queued: add --yes to start it."),
        "{out}"
    );
    // An estimate queues nothing; Bedrock counts the tokens of a few of the sample's chunks.
    let counted = fleet.texts_embedded().await.unwrap();
    assert!(
        (1..=sakuin::survey::TEXTS_KEPT as u64).contains(&counted),
        "{counted} texts embedded by an estimate"
    );
    assert!(out.contains("the model's own count of"), "{out}");

    let texts_before = fleet.texts_embedded().await.unwrap();
    let (code, out) = sakuin(
        &fleet,
        &["backfill", &scope, "--yes", "--json", "--bulk-load"],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    let run = json_of(&out);
    // Bulk-load mode ended with the backfill: the new index's defaults (the backfill created it
    // as embed-index would, to relax it from the first chunk), its record gone.
    let settings_before = index_settings(&fleet).await;
    assert_eq!(settings_before, (None, Some("1".to_owned())));
    assert_eq!(fleet.es().bulk_load().await.unwrap(), None);
    fleet
        .run_until_quiet(Duration::from_secs(300))
        .await
        .unwrap();
    assert_reconciled(&fleet, &scope).await;
    let estimate = &run["estimate"];
    let actual = &run["actual"];
    // Less the sample chunks this run's estimate had Bedrock count.
    let sample_counted = estimate["tokens_counted"]["texts"].as_u64().unwrap();
    let texts = fleet.texts_embedded().await.unwrap() - texts_before - sample_counted;
    // The estimate's tokens (the model's count of a sample, scaled) against Bedrock's count
    // over the whole backfill.
    let tokens = emf_sum(&fleet, "InputTokens");
    let estimated_tokens = estimate["input_tokens"].as_f64().unwrap();
    println!(
        "tokens: estimated {estimated_tokens}, counted by Bedrock over the backfill {tokens} ({:+.1} %; counted on {} sample chunks)",
        (estimated_tokens - tokens) / tokens * 100.0,
        estimate["tokens_counted"]["texts"]
    );
    assert!(
        ((estimated_tokens - tokens) / tokens).abs() < 0.1,
        "{estimated_tokens} tokens estimated, {tokens} counted"
    );
    let records = (OBJECTS * RECORDS) as u64;
    let chunks = fleet
        .es()
        .count_matching(&json!({"prefix": {"source.key": "bf/"}}))
        .await
        .unwrap();
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    println!(
        "backfill of {OBJECTS} objects, estimate vs actual: records {} vs {records} (the CLI saw {}), \
         chunks {} vs {chunks} (the CLI saw {}), Bedrock calls {} vs {texts} texts embedded, {:.1} s",
        n(estimate, "records"),
        n(actual, "records"),
        n(estimate, "chunks"),
        n(actual, "chunks"),
        n(estimate, "bedrock_calls"),
        run["seconds"].as_f64().unwrap(),
    );
    println!(
        "embed-index: {} embedded, {} reused, {} write conflicts, {} compensated, {} requeued, {} failed; ingest {:?}",
        emf_sum(&fleet, "ChunksEmbedded"),
        emf_sum(&fleet, "ChunksReused"),
        emf_sum(&fleet, "WriteConflicts"),
        emf_sum(&fleet, "ChunksCompensated"),
        emf_sum(&fleet, "ChunksRequeued"),
        emf_sum(&fleet, "ChunksFailed") + 0.0,
        fleet.ingest.stats(),
    );
    assert_eq!(n(estimate, "to_ingest"), OBJECTS as u64);
    assert_eq!(
        n(actual, "records"),
        records,
        "the CLI followed it to the end"
    );
    assert_eq!(n(actual, "chunks"), chunks);
    let close =
        |estimated: u64, real: u64| (estimated as f64 - real as f64).abs() <= real as f64 * 0.2;
    assert!(close(n(estimate, "records"), records), "{estimate}");
    assert!(close(n(estimate, "chunks"), chunks), "{estimate}");
    assert!(close(n(estimate, "bedrock_calls"), texts), "{estimate}");
    assert_eq!(texts, chunks, "each chunk embedded once");

    // The same backfill again: every object is in the index at its eTag, so nothing is embedded.
    let (_, out) = sakuin(&fleet, &["backfill", &scope, "--json"]).await;
    let again = json_of(&out);
    assert_eq!(n(&again["estimate"], "unchanged"), OBJECTS as u64, "{out}");
    assert_eq!(n(&again["estimate"], "chunks"), 0);
    assert_eq!(again["estimate"]["cost_usd"], 0.0);
    let (code, _) = sakuin(&fleet, &["backfill", &scope, "--yes", "--detach"]).await;
    assert_eq!(code, Some(0));
    fleet
        .run_until_quiet(Duration::from_secs(300))
        .await
        .unwrap();
    assert_reconciled(&fleet, &scope).await;
    assert_eq!(
        fleet.texts_embedded().await.unwrap() - texts_before,
        texts + sample_counted,
        "a repeated backfill embeds nothing (nor counts tokens: there is nothing to ingest)"
    );

    // A backfill in bulk-load mode killed mid-way: the index stays relaxed while the lease runs,
    // and the scheduled probe restores it once the lease has run out.
    for i in 0..8 {
        fleet
            .put(
                &format!("bf2/{i:02}.jsonl"),
                varied_records(&format!("c{i}"), RECORDS),
            )
            .await
            .unwrap();
    }
    let bin = sakuin_local::pipeline::require(&sakuin_local::pipeline::binary_dir(), "sakuin")
        .expect("cargo build --workspace builds the sakuin CLI");
    let scope2 = format!("s3://{BUCKET}/bf2/");
    let mut running = tokio::process::Command::new(bin)
        .args(["backfill", &scope2, "--yes", "--bulk-load"])
        .envs(fleet.env.iter().cloned())
        .env("BULK_LOAD_LEASE_SECS", "5")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let es = fleet.es();
    let waiting = std::time::Instant::now();
    let mode = loop {
        if let Some(mode) = es.bulk_load().await.unwrap() {
            break mode;
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "bulk-load mode never came on"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The settings change just after the record: wait for them too.
    while index_settings(&fleet).await.0.as_deref() != Some("-1") {
        assert!(waiting.elapsed() < Duration::from_secs(60), "never relaxed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.kill().await.unwrap();
    let probe_index = |out: String| {
        json_of(&out)["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "elasticsearch.index")
            .cloned()
            .unwrap_or_else(|| panic!("no index check in {out}"))
    };
    let (_, out) = sakuin(&fleet, &["probe", "--checks", "elasticsearch", "--json"]).await;
    let check = probe_index(out);
    assert!(
        check["detail"]
            .as_str()
            .unwrap()
            .contains("bulk-load mode on since"),
        "{check}"
    );
    assert_eq!(
        index_settings(&fleet).await.0.as_deref(),
        Some("-1"),
        "the lease still runs"
    );
    let lease_left = chrono::DateTime::parse_from_rfc3339(&mode.lease_until)
        .unwrap()
        .with_timezone(&chrono::Utc)
        - chrono::Utc::now();
    tokio::time::sleep(lease_left.to_std().unwrap_or_default() + Duration::from_secs(6)).await;
    let (_, out) = sakuin(&fleet, &["probe", "--checks", "elasticsearch", "--json"]).await;
    let check = probe_index(out);
    let detail = check["detail"].as_str().unwrap();
    assert!(
        detail.contains("bulk-load mode was left on by `sakuin backfill s3://")
            && detail.contains("its refresh_interval and replicas restored"),
        "{check}"
    );
    println!("the probe after a killed bulk-load backfill: {detail}");
    assert_eq!(index_settings(&fleet).await, settings_before);
    assert_eq!(fleet.es().bulk_load().await.unwrap(), None);
    fleet
        .run_until_quiet(Duration::from_secs(300))
        .await
        .unwrap();

    // A heavy-tailed prefix: sixty objects of twenty short records (a chunk each) and two of
    // 300 long ones (several chunks each), which hold most of the bytes. The estimate reads the
    // largest objects always, so it does not depend on whether a sample by count happens to
    // meet them.
    for i in 0..60 {
        let records: String = (0..20)
            .map(|j| {
                let text = format!("Short note {j} of {i}.");
                json!({"id": format!("h-small-{i}-{j}"), "text": text}).to_string() + "\n"
            })
            .collect();
        fleet
            .put(&format!("ht/small-{i:02}.jsonl"), records.into_bytes())
            .await
            .unwrap();
    }
    for i in 0..2 {
        fleet
            .put(
                &format!("ht/large-{i}.jsonl"),
                varied_records(&format!("h{i}"), 300),
            )
            .await
            .unwrap();
    }
    let scope3 = format!("s3://{BUCKET}/ht/");
    let (code, out) = sakuin(&fleet, &["backfill", &scope3, "--yes", "--json"]).await;
    assert_eq!(code, Some(0), "{out}");
    let run = json_of(&out);
    let (estimated, actual) = (n(&run["estimate"], "chunks"), n(&run["actual"], "chunks"));
    let error = (estimated as f64 - actual as f64) / actual as f64 * 100.0;
    println!(
        "heavy-tailed backfill (62 objects, 2 of them {:.0} % of the bytes): estimated {estimated} chunks, actual {actual} ({error:+.2} %)",
        100.0 * (2.0 * varied_records("h0", 300).len() as f64)
            / n(&run["estimate"], "bytes_to_ingest") as f64
    );
    assert!(error.abs() < 2.0, "{run:#}");
    fleet.stop().await;
}

/// The index's `refresh_interval` and `number_of_replicas` (`None`: unset).
async fn index_settings(fleet: &Fleet) -> (Option<String>, Option<String>) {
    let es = fleet.es();
    let (_, body) = es
        .send(
            reqwest::Method::GET,
            &format!("/{}/_settings?flat_settings=true", es.index),
            None,
        )
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let settings = answer.as_object().unwrap().values().next().unwrap()["settings"].clone();
    let text = |k: &str| settings[k].as_str().map(str::to_owned);
    (
        text("index.refresh_interval"),
        text("index.number_of_replicas"),
    )
}
