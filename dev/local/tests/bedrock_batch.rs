//! The batch inference client and the job files on the wire, against the local stack: the job's
//! input and output in moto's S3, the job run by the Bedrock stand-in (`dev/bedrock_stub.py`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use sakuin::aws::bedrock_batch::records::{BatchModel, Manifest, OutputLocation, RecordError};
use sakuin::aws::bedrock_batch::{
    BatchError, BedrockBatch, Job, JobArn, JobFilter, JobStatus, NewJob, Operation,
};
use sakuin::embed::EmbeddingModel;
use sakuin_local::stack::{LocalStack, REGION, create_bucket};
use serde_json::json;

const ROLE: &str = "arn:aws:iam::123456789012:role/sakuin-batch";
const BUCKET: &str = "sakuin-batch";
const TITAN_V2: &str = "amazon.titan-embed-text-v2:0";
const DIMENSIONS: usize = 512;
const RECORDS: usize = 300;
/// The stand-in fails every this many records (counted in input order from 1) with an
/// InternalServerException (500) in the record's `error`.
const ERROR_EVERY: usize = 7;
/// A record whose text InvokeModel would refuse (empty): a 400 in its `error`.
const EMPTY_AT: usize = 2;

fn s3_client(conf: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(conf)
            .force_path_style(true)
            .build(),
    )
}

fn new_job(name: &str, token: Option<&str>) -> NewJob {
    NewJob {
        name: name.into(),
        role_arn: ROLE.into(),
        model_id: TITAN_V2.into(),
        input_uri: format!("s3://{BUCKET}/in/run1/"),
        output_uri: format!("s3://{BUCKET}/out"),
        client_request_token: token.map(str::to_owned),
        timeout_hours: Some(24),
    }
}

/// Polls the job until it ends; the statuses seen on the way, and the job at its end.
async fn wait_for_end(batch: &BedrockBatch, arn: &JobArn) -> (Vec<JobStatus>, Job) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen: Vec<JobStatus> = Vec::new();
    loop {
        let job = batch.get(arn.as_str()).await.expect("the job is there");
        if seen.last() != Some(&job.status) {
            seen.push(job.status.clone());
        }
        if job.status.has_ended() {
            return (seen, job);
        }
        assert!(Instant::now() < deadline, "still {}: {seen:?}", job.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn read_object(s3: &aws_sdk_s3::Client, key: &str) -> Vec<u8> {
    s3.get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key}: {e:?}"))
        .body
        .collect()
        .await
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_from_input_lines_to_vectors_and_record_errors() {
    let stack = LocalStack::start(&[])
        .await
        .expect("the local stack starts (make venv)");
    stack
        .bedrock_config(json!({"batch_seconds": 0.4, "batch_record_error_every": ERROR_EVERY}))
        .await
        .unwrap();
    let s3 = s3_client(&stack.moto_config().await);
    create_bucket(&s3, BUCKET).await.unwrap();

    // The input: one line per chunk, each chunk's id its record id.
    let model =
        BatchModel::new(EmbeddingModel::resolve(TITAN_V2, Some(DIMENSIONS)).unwrap()).unwrap();
    let chunks: Vec<(String, String)> = (0..RECORDS)
        .map(|i| {
            let text = match i {
                EMPTY_AT => String::new(),
                _ if i % 3 == 0 => format!("第{i}章 検索の索引を作る。"),
                _ => format!("Chunk {i} of the operator's manual: queues, retries and \"quotes\"."),
            };
            (sakuin::ids::chunk_id(&format!("doc-{i}"), 0), text)
        })
        .collect();
    let input: Vec<String> = chunks
        .iter()
        .map(|(id, text)| model.input_line(id, text))
        .collect();
    s3.put_object()
        .bucket(BUCKET)
        .key("in/run1/part-0001.jsonl")
        .body(ByteStream::from((input.join("\n") + "\n").into_bytes()))
        .send()
        .await
        .unwrap();

    let batch = stack.bedrock_batch().await;
    assert_eq!(batch.endpoint(), stack.bedrock.url());
    let job = new_job("sakuin-run1", Some("sakuinrun1"));
    let arn = batch.create(&job).await.expect("the job is created");
    assert_eq!(arn.id().len(), 12, "{arn}");
    assert!(
        arn.as_str().starts_with(&format!(
            "arn:aws:bedrock:{REGION}:123456789012:model-invocation-job/"
        )),
        "{arn}"
    );

    // The same token is the same request: its job, whatever else the request says now.
    assert_eq!(batch.create(&job).await.unwrap(), arn);
    assert_eq!(
        batch
            .create(&new_job("sakuin-run1-again", Some("sakuinrun1")))
            .await
            .unwrap(),
        arn
    );

    let (seen, ended) = wait_for_end(&batch, &arn).await;
    assert_eq!(ended.status, JobStatus::PartiallyCompleted, "{seen:?}");
    let order = [
        JobStatus::Submitted,
        JobStatus::Validating,
        JobStatus::Scheduled,
        JobStatus::InProgress,
        JobStatus::PartiallyCompleted,
    ];
    let positions: Vec<usize> = seen
        .iter()
        .map(|s| {
            order
                .iter()
                .position(|o| o == s)
                .expect("a documented status")
        })
        .collect();
    assert!(positions.is_sorted(), "in order: {seen:?}");
    assert_eq!(ended.name, "sakuin-run1");
    assert_eq!(ended.client_request_token.as_deref(), Some("sakuinrun1"));
    assert_eq!(ended.output_uri.as_deref(), Some(job.output_uri.as_str()));
    assert!(ended.submit_time.is_some() && ended.end_time.is_some());
    let injected: Vec<usize> = (0..RECORDS)
        .filter(|i| (i + 1) % ERROR_EVERY == 0)
        .collect();
    assert!(!injected.contains(&EMPTY_AT));
    let failed = injected.len() + 1;
    assert_eq!(ended.records.total, Some(RECORDS as u64));
    assert_eq!(ended.records.processed, Some(RECORDS as u64));
    assert_eq!(ended.records.succeeded, Some((RECORDS - failed) as u64));
    assert_eq!(ended.records.failed, Some(failed as u64));

    // The output: under the job's id, one `.out` per input file, and the manifest.
    let output = OutputLocation::new(&job.output_uri, &arn).unwrap();
    let listed = s3
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix(&output.prefix)
        .send()
        .await
        .unwrap();
    let mut keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [output.manifest_key(), output.records_key("part-0001.jsonl")]
    );
    let text =
        String::from_utf8(read_object(&s3, &output.records_key("part-0001.jsonl")).await).unwrap();
    let mut by_chunk: HashMap<String, Result<Vec<f32>, RecordError>> = HashMap::new();
    let mut output_order = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let record = model.output_line(line).expect("every line is a record");
        let chunk = record
            .chunk_id()
            .expect("a record id this client wrote")
            .into_owned();
        output_order.push(chunk.clone());
        let outcome = record.outcome.map(|e| e.vector);
        assert!(
            by_chunk.insert(chunk.clone(), outcome).is_none(),
            "{chunk} came back twice"
        );
    }
    assert_eq!(by_chunk.len(), RECORDS, "every record came back once");
    let input_order: Vec<&String> = chunks.iter().map(|(id, _)| id).collect();
    assert_ne!(
        output_order.iter().collect::<Vec<_>>(),
        input_order,
        "the output is in another order: joined on the record id"
    );
    for (i, (id, _)) in chunks.iter().enumerate() {
        match (&by_chunk[id], i) {
            (Err(RecordError::Model { code, message }), EMPTY_AT) => {
                assert_eq!(*code, Some(400), "{message}");
                assert!(message.contains("inputText"), "{message}");
            }
            (Err(RecordError::Model { code, .. }), i) if injected.contains(&i) => {
                assert_eq!(*code, Some(500), "record {i}");
            }
            (Ok(vector), i) if i != EMPTY_AT && !injected.contains(&i) => {
                assert_eq!(vector.len(), DIMENSIONS, "record {i}");
                let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
                assert!((norm - 1.0).abs() < 1e-3, "record {i} normalised: {norm}");
            }
            (other, i) => panic!("record {i}: {other:?}"),
        }
    }
    let manifest = Manifest::parse(&read_object(&s3, &output.manifest_key()).await).unwrap();
    assert_eq!(manifest.total_records, Some(RECORDS as u64));
    assert_eq!(manifest.processed_records, Some(RECORDS as u64));
    assert_eq!(manifest.succeeded_records, Some((RECORDS - failed) as u64));
    assert_eq!(manifest.failed_records, Some(failed as u64));
    assert!(manifest.input_tokens.is_some_and(|t| t > RECORDS as u64));

    // Listed by its name, once: the repeated creates made no other job.
    let listed = batch
        .list_all(&JobFilter {
            name_contains: Some("sakuin-run1".into()),
            max_results: Some(1),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|j| &j.arn).collect::<Vec<_>>(),
        [&arn],
        "{listed:?}"
    );
    let ended_jobs = batch
        .list_all(&JobFilter {
            status: Some(JobStatus::PartiallyCompleted),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ended_jobs, std::slice::from_ref(&ended));
    let stats = stack.bedrock_stats().await.unwrap();
    assert_eq!(stats["batch"]["jobs_created"], 1, "{stats}");
    assert_eq!(stats["batch"]["records_failed"], failed, "{stats}");

    // The quota of jobs in flight: its own error, which passes once a job ends.
    stack
        .bedrock_config(json!({"batch_max_jobs": 2, "batch_seconds": 30}))
        .await
        .unwrap();
    let first = batch.create(&new_job("sakuin-a", None)).await.unwrap();
    let second = batch.create(&new_job("sakuin-b", None)).await.unwrap();
    let refused = batch.create(&new_job("sakuin-c", None)).await.unwrap_err();
    match &refused {
        BatchError::TooManyJobs { at, message } => {
            assert_eq!(at.operation, Operation::Create);
            assert_eq!(at.job.as_deref(), Some("sakuin-c"));
            assert!(message.contains("quota"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!refused.is_transient());
    assert!(refused.to_string().contains("sakuin-c"), "{refused}");
    batch.stop(first.as_str()).await.unwrap();
    let (_, stopped) = wait_for_end(&batch, &first).await;
    assert_eq!(stopped.status, JobStatus::Stopped);
    let third = batch.create(&new_job("sakuin-c", None)).await.unwrap();
    // By id as well as by ARN.
    batch.stop(second.id()).await.unwrap();
    batch.stop(third.as_str()).await.unwrap();
    for arn in [&second, &third] {
        assert_eq!(wait_for_end(&batch, arn).await.1.status, JobStatus::Stopped);
    }

    // Bedrock's other refusals, each naming the call and the job.
    match batch.stop(first.as_str()).await.unwrap_err() {
        BatchError::Invalid { at, message } | BatchError::Conflict { at, message } => {
            assert_eq!(at.operation, Operation::Stop);
            assert!(message.contains("Stopped"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match batch.get("000000000000").await.unwrap_err() {
        BatchError::NotFound { at, .. } => {
            assert_eq!(
                (at.operation, at.job.as_deref()),
                (Operation::Get, Some("000000000000"))
            );
        }
        other => panic!("{other:?}"),
    }
    match batch.create(&new_job("sakuin-a", None)).await.unwrap_err() {
        BatchError::Conflict { message, .. } => assert!(message.contains("sakuin-a")),
        other => panic!("{other:?}"),
    }
    let v1 = NewJob {
        model_id: "amazon.titan-embed-text-v1".into(),
        ..new_job("sakuin-v1", None)
    };
    match batch.create(&v1).await.unwrap_err() {
        BatchError::Invalid { message, .. } => {
            assert!(message.contains("batch inference"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let bad_name = new_job("-leading-dash", None);
    assert!(matches!(
        batch.create(&bad_name).await.unwrap_err(),
        BatchError::Invalid { .. }
    ));
}
