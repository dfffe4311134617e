//! A backfill through Bedrock batch inference on the local stack: the objects read with
//! ingest's code into a run's parts (`sakuin::batch`), the jobs run by the Bedrock stand-in
//! (one failed, records in error, more parts than jobs allowed in flight), an overwrite and a
//! delete of backfilled keys while the jobs run, and the collection stopped half-way through a
//! part — and in the end the index equals the bucket, and Bedrock embedded on demand only the
//! chunks batch did not (no chunk twice).
//!
//! `cargo test -p sakuin-local --test batch_backfill -- --nocapture` prints the figures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sakuin::aws::bedrock_batch::records::BatchModel;
use sakuin::batch::{
    BatchSettings, PartState, Run, Runner, Staging, StagingLocation, advance, stage,
};
use sakuin::config::{Env, IngestConfig};
use sakuin::queue::{ChunkQueue, EntryFailure, QueueEntry, QueueError, SqsQueue};
use sakuin::store::S3Store;
use sakuin_local::fleet::{Fleet, FleetOptions};
use sakuin_local::pipeline::{BUCKET, PipelineOptions};
use sakuin_local::stack::{LocalStack, create_bucket};
use sakuin_local::truth::compare_index_with_bucket;
use serde_json::json;

const STAGING_BUCKET: &str = "sakuin-batch-staging";
const OBJECTS: usize = 30;
const RECORDS_PER_OBJECT: usize = 80;
/// Parts of at most this many records (whole messages: an object's 80 records each).
const RECORDS_PER_JOB: usize = 300;
/// The stand-in allows two jobs in flight per model; the run would submit three.
const STAND_IN_JOBS: &str = "2";
const RUN_JOBS: usize = 3;

/// The chunk queue, failing every send after the first `sends` once `armed`: the collecting
/// process dies half-way through a part.
struct Crashing<'a> {
    queue: &'a SqsQueue,
    sends_left: AtomicU32,
}

impl ChunkQueue for Crashing<'_> {
    async fn send_batch(&self, entries: &[QueueEntry]) -> Result<Vec<EntryFailure>, QueueError> {
        if self
            .sends_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            return Err(QueueError::Refused {
                code: "Crashed".into(),
                message: "the collecting process stopped here".into(),
            });
        }
        self.queue.send_batch(entries).await
    }
}

/// The bucket as it was before sakuin: no notification was ever sent for these objects.
async fn put_objects(fleet: &Fleet) {
    for object in 0..OBJECTS {
        let body: String = (0..RECORDS_PER_OBJECT)
            .map(|i| record(object, i) + "\n")
            .collect();
        fleet
            .put(&format!("docs/{object:03}.jsonl"), body.into_bytes())
            .await
            .unwrap();
    }
}

/// A fleet of one ingest and two embed-index containers on a stack whose stand-in takes
/// `bedrock_args`.
async fn start_fleet(bedrock_args: &[&str]) -> Fleet {
    let stack = LocalStack::start(bedrock_args)
        .await
        .expect("the local stack starts");
    Fleet::start(
        stack,
        FleetOptions {
            pipeline: PipelineOptions {
                index: "batch".into(),
                // Longer than an invocation, as in the template: a batch is never taken by a
                // second container while the first still works on it (which would embed its
                // chunks twice, and this test counts them).
                chunk_visibility_secs: 60,
                ..PipelineOptions::default()
            },
            ingest_containers: 1,
            embed_index_containers: 2,
        },
    )
    .await
    .expect("the fleet starts")
}

fn record(object: usize, i: usize) -> String {
    json!({
        "id": format!("o{object}-r{i}"),
        "text": format!("Backfilled record {i} of object {object}: notes about catalogue item {} and where it is kept.", (object * 31 + i) % 97),
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_backfill_ends_with_the_index_equal_to_the_bucket_and_no_chunk_embedded_twice() {
    let fleet = start_fleet(&[
        "--batch-seconds",
        "1",
        "--batch-max-jobs",
        STAND_IN_JOBS,
        "--batch-record-error-every",
        "97",
        "--batch-fail-job-every",
        "3",
    ])
    .await;
    create_bucket(&fleet.s3, STAGING_BUCKET).await.unwrap();
    put_objects(&fleet).await;

    let env_map: HashMap<String, String> = fleet.env.iter().cloned().collect();
    let config = IngestConfig::from_env(&mut Env::from_map(env_map)).expect("ingest's settings");
    let model = BatchModel::new(config.model.clone()).expect("Titan V2 takes batch inference");
    let bedrock = fleet.stack.bedrock_batch().await;
    let store = S3Store::new(fleet.s3.clone());
    let staging = Staging::new(
        store.clone(),
        StagingLocation::parse(&format!("s3://{STAGING_BUCKET}/runs/")).unwrap(),
    );
    let mut settings = BatchSettings::new(
        staging.location.clone(),
        "arn:aws:iam::123456789012:role/sakuin-batch",
    );
    settings.max_records_per_job = RECORDS_PER_JOB;
    settings.max_jobs_in_flight = RUN_JOBS;
    let chunk_queue = SqsQueue::new(fleet.sqs.clone(), fleet.queue_url.clone());

    let started = Instant::now();
    let run = Run::new(
        Run::new_id(chrono::Utc::now()),
        format!("s3://{BUCKET}/docs/"),
        &model.model().id,
    );
    let (mut run, summary) = stage(
        store.clone(),
        &staging,
        config.clone(),
        model.clone(),
        run,
        &settings,
        (BUCKET, "docs/"),
    )
    .await
    .expect("the backfill is staged");
    let staged_in = started.elapsed();
    let total = OBJECTS * RECORDS_PER_OBJECT;
    assert_eq!(summary.records as usize, total);
    assert_eq!(run.progress().records as usize, total, "one record a chunk");
    assert!(run.parts.len() >= total.div_ceil(RECORDS_PER_JOB));
    assert!(
        run.parts
            .iter()
            .all(|p| p.records as usize <= RECORDS_PER_JOB),
        "{:?}",
        run.parts
    );

    let runner = Runner {
        staging: &staging,
        bedrock: &bedrock,
        queue: &chunk_queue,
        settings: &settings,
        model: &model,
        max_payload_bytes: config.sqs_max_payload_bytes,
    };
    // First step: three jobs submitted, the stand-in takes two; the third waits for room.
    let first = advance(&runner, &mut run).await.expect("a step");
    assert_eq!(first.submitted, 2, "{first:?}");
    assert!(first.waiting_for_room);

    // Live changes while the jobs run: one backfilled key rewritten, one removed.
    let rewritten: String = (0..5).map(|i| record(900, i) + "\n").collect();
    let overwrite = fleet
        .put("docs/004.jsonl", rewritten.into_bytes())
        .await
        .unwrap();
    let removal = fleet.delete("docs/007.jsonl").await.unwrap();
    fleet.deliver(&[overwrite, removal]).await.unwrap();

    // The process collecting the first job to end stops after two of its sends.
    let stopping = Crashing {
        queue: &chunk_queue,
        sends_left: AtomicU32::new(2),
    };
    let crashing = Runner {
        staging: &staging,
        bedrock: &bedrock,
        queue: &stopping,
        settings: &settings,
        model: &model,
        max_payload_bytes: config.sqs_max_payload_bytes,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let crashed = loop {
        match advance(&crashing, &mut run).await {
            Err(e) => break e,
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "no job ended: {}",
                    run.describe()
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    println!("collection stopped: {crashed}");

    // A new process resumes from the run's state on S3.
    let mut run = staging
        .load(&run.id)
        .await
        .unwrap()
        .expect("the run's state is kept");
    while !run.cleaned {
        assert!(Instant::now() < deadline, "{}", run.describe());
        advance(&runner, &mut run).await.expect("a step");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let collected_in = started.elapsed();
    fleet
        .run_until_quiet(Duration::from_secs(180))
        .await
        .expect("the queues drain");
    let took = started.elapsed();

    let progress = run.progress();
    let failed_jobs: Vec<_> = run
        .parts
        .iter()
        .filter(|p| p.ended.as_deref() == Some("Failed"))
        .map(|p| p.name.clone())
        .collect();
    let on_demand_texts = fleet.texts_embedded().await.unwrap();
    println!(
        "{total} chunks in {} parts, staged in {:.1} s, collected at {:.1} s, indexed at {:.1} s: {} embedded by batch, {} left to on-demand (failed jobs {failed_jobs:?}); Bedrock embedded {on_demand_texts} texts on demand",
        run.parts.len(),
        staged_in.as_secs_f64(),
        collected_in.as_secs_f64(),
        took.as_secs_f64(),
        progress.from_batch,
        progress.on_demand
    );
    assert!(run.parts.iter().all(|p| p.state == PartState::Collected));
    let jobs = run.parts.iter().filter(|p| p.job.is_some()).count();
    assert_eq!(failed_jobs.len(), jobs / 3, "every third job fails");
    assert!(
        progress.on_demand > (failed_jobs.len() * RECORDS_PER_JOB / 2) as u64,
        "{progress:?}"
    );
    assert!(progress.from_batch > 0);
    assert_eq!(progress.from_batch + progress.on_demand, total as u64);

    let comparison = compare_index_with_bucket(&fleet.s3, BUCKET, &fleet.es())
        .await
        .unwrap();
    assert!(comparison.is_equal(), "{comparison:?}");
    // Each chunk embedded at most once on demand: the ones batch did not embed, and the
    // overwrite's five (at most: the removed and rewritten keys' backfilled chunks lose to
    // the live changes before they are embedded).
    assert!(
        on_demand_texts <= progress.on_demand + 5,
        "{on_demand_texts} texts embedded on demand for {} chunks batch left",
        progress.on_demand
    );
    assert!(
        on_demand_texts + 2 * RECORDS_PER_OBJECT as u64 >= progress.on_demand,
        "{on_demand_texts} texts embedded on demand for {} chunks batch left",
        progress.on_demand
    );
    assert_eq!(fleet.dead_letters().await.unwrap(), (0, 0));

    // The staging files are gone; the run's record stays.
    let left = fleet
        .s3
        .list_objects_v2()
        .bucket(STAGING_BUCKET)
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = left.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, [format!("runs/{}/run.json", run.id)]);
    fleet.stop().await;
}

/// The same bucket backfilled on demand, for the figures beside the batch run's: every chunk
/// one InvokeModel call (Titan takes one text a call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_backfill_on_demand_calls_bedrock_for_every_chunk() {
    let fleet = start_fleet(&[]).await;
    put_objects(&fleet).await;
    let started = Instant::now();
    fleet
        .deliver(&[sakuin_local::fleet::Notification {
            event: json!({"backfill": {"bucket": BUCKET, "prefix": "docs/"}}),
            version_id: None,
        }])
        .await
        .unwrap();
    fleet
        .run_until_quiet(Duration::from_secs(180))
        .await
        .expect("the queues drain");
    let took = started.elapsed();
    let texts = fleet.texts_embedded().await.unwrap();
    println!(
        "{} chunks on demand: indexed at {:.1} s, Bedrock embedded {texts} texts on demand",
        OBJECTS * RECORDS_PER_OBJECT,
        took.as_secs_f64()
    );
    assert_eq!(texts as usize, OBJECTS * RECORDS_PER_OBJECT);
    let comparison = compare_index_with_bucket(&fleet.s3, BUCKET, &fleet.es())
        .await
        .unwrap();
    assert!(comparison.is_equal(), "{comparison:?}");
    fleet.stop().await;
}
