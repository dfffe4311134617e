//! The whole pipeline on the local stack, driven as AWS drives it: S3 notifications invoke
//! `ingest`; an SQS event source mapping (receive, invoke `embed-index`, delete what succeeded,
//! let failures reappear and move to the DLQ) feeds `embed-index`; a schedule invokes `probe`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};
use sakuin::es::EsClient;
use serde_json::{Value, json};

use crate::esfaults::EsFaults;
use crate::runtime::{FunctionError, FunctionProcess};
use crate::stack::{LocalStack, REGION};

/// Names used on the local stack.
pub const BUCKET: &str = "sakuin-demo";
pub const QUEUE: &str = "sakuin-chunks";
pub const DEAD_LETTER_QUEUE: &str = "sakuin-chunks-dlq";
/// The intake queue S3 notifications (and ingest's continuations) go through, when provisioned.
pub const INTAKE_QUEUE: &str = "sakuin-intake";
pub const INTAKE_DEAD_LETTER_QUEUE: &str = "sakuin-intake-dlq";
/// Receives before a message moves to the DLQ (the template uses 5; fewer keeps tests quick).
pub const MAX_RECEIVE_COUNT: u32 = 3;
/// Short, so failed messages come back quickly in local runs.
pub const VISIBILITY_TIMEOUT_SECS: u32 = 2;
/// The intake queue's: longer than an ingest invocation that runs to `INGEST_TIME_LIMIT_SECS`,
/// so a message is not received again while a container still works on it (the template keeps
/// the same order: 1800 s against a 300 s timeout).
pub const INTAKE_VISIBILITY_TIMEOUT_SECS: u32 = 6;

/// Where the built function binaries are: `SAKUIN_BIN_DIR`, else beside the running program
/// (`target/release/sakuin-local` uses the release build), else `target/debug`.
pub fn binary_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SAKUIN_BIN_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        && dir.join("ingest").exists()
    {
        return dir;
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| crate::stack::repo_root().join("target"));
    target.join("debug")
}

/// Settings for the functions beyond the stack's endpoints.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub model_id: String,
    pub dimensions: Option<usize>,
    pub index: String,
    pub extra_env: Vec<(String, String)>,
    pub log: Option<PathBuf>,
    /// Put the fault-injecting proxy between the functions and Elasticsearch.
    pub es_faults: bool,
    /// Create the intake queue and its DLQ and give ingest `INGEST_QUEUE_URL`, as the template
    /// does (continuations then go through the queue, not through self-invocations).
    pub intake_queue: bool,
    /// Turn on versioning for the bucket (`EnableBucketVersioning`).
    pub versioned_bucket: bool,
    /// The chunk queue's visibility timeout: short, so failures come back quickly, unless
    /// invocations run long (the template keeps it at six times the function's timeout).
    pub chunk_visibility_secs: u32,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            model_id: "amazon.titan-embed-text-v2:0".into(),
            dimensions: Some(256),
            index: "documents".into(),
            extra_env: Vec::new(),
            log: None,
            es_faults: false,
            intake_queue: false,
            versioned_bucket: false,
            chunk_visibility_secs: VISIBILITY_TIMEOUT_SECS,
        }
    }
}

/// What one drain of the chunk queue did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DrainStats {
    pub invocations: u64,
    pub messages: u64,
    pub deleted: u64,
    pub reported_failures: u64,
    pub function_errors: u64,
    /// From the start of the drain to the end of its last invocation (without the quiet wait
    /// that proves the queue empty).
    pub busy: Duration,
}

/// The bucket, queues and function environment on a running stack, before any function starts.
pub struct Provisioned {
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub dlq_url: String,
    /// The intake queue and its DLQ, when `PipelineOptions::intake_queue`.
    pub intake: Option<(String, String)>,
    pub env: Vec<(String, String)>,
}

pub struct Pipeline {
    pub stack: LocalStack,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub dlq_url: String,
    pub env: Vec<(String, String)>,
    pub ingest: FunctionProcess,
    pub embed_index: FunctionProcess,
    pub probe: FunctionProcess,
    pub options: PipelineOptions,
    /// The proxy the functions reach Elasticsearch through, when `options.es_faults`.
    pub es_faults: Option<EsFaults>,
}

impl Pipeline {
    /// A fresh local stack with the pipeline on it, the functions logging to the stack's
    /// `functions.log`; panics with what to do when the stack or the binaries are missing.
    pub async fn start_logged(options: PipelineOptions) -> Self {
        let stack = LocalStack::start(&[])
            .await
            .expect("the local stack starts (make venv installs it)");
        let log = stack.work_dir.join("functions.log");
        Self::start(
            stack,
            PipelineOptions {
                log: Some(log),
                ..options
            },
        )
        .await
        .expect("the functions start (cargo build --workspace builds them)")
    }

    /// Creates the bucket and queues, then starts the three functions.
    pub async fn start(
        stack: LocalStack,
        options: PipelineOptions,
    ) -> Result<Self, Box<dyn std::error::Error>> {
        let Provisioned {
            s3,
            sqs,
            queue_url,
            dlq_url,
            mut env,
            ..
        } = provision(&stack, &options).await?;
        let es_faults = fault_proxy_if(options.es_faults, &stack, &mut env).await?;
        let bin = binary_dir();
        let log = options.log.as_deref();
        let ingest =
            FunctionProcess::spawn(&require(&bin, "ingest")?, "sakuin-ingest", &env, log).await?;
        let embed_index = FunctionProcess::spawn(
            &require(&bin, "embed-index")?,
            "sakuin-embed-index",
            &env,
            log,
        )
        .await?;
        let probe =
            FunctionProcess::spawn(&require(&bin, "probe")?, "sakuin-probe", &env, log).await?;
        Ok(Self {
            stack,
            s3,
            sqs,
            queue_url,
            dlq_url,
            env,
            ingest,
            embed_index,
            probe,
            options,
            es_faults,
        })
    }

    /// A client for the local Elasticsearch, on the pipeline's index.
    pub fn es(&self) -> EsClient {
        self.stack.es(&self.options.index)
    }

    /// Puts an object and returns the S3 notification S3 would send for it.
    pub async fn put_object(
        &self,
        key: &str,
        body: Vec<u8>,
    ) -> Result<Value, Box<dyn std::error::Error>> {
        Ok(put_object(&self.s3, key, body).await?.0)
    }

    pub async fn invoke_ingest(&self, event: &Value) -> Result<Value, FunctionError> {
        self.ingest.invoke(event, Duration::from_secs(300)).await
    }

    pub async fn invoke_probe(&self, event: &Value) -> Result<Value, FunctionError> {
        self.probe.invoke(event, Duration::from_secs(60)).await
    }

    /// Receives one batch (up to `batch_size`) and invokes `embed-index` with it as the event
    /// source mapping would; returns the function's outcome and the batch's message ids.
    pub async fn deliver_batch(
        &self,
        batch_size: i32,
    ) -> Result<Option<(Result<Value, FunctionError>, Vec<String>)>, Box<dyn std::error::Error>>
    {
        let received = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(batch_size)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(None);
        }
        let event = sqs_event(&messages);
        let ids: Vec<String> = messages
            .iter()
            .filter_map(|m| m.message_id.clone())
            .collect();
        let outcome = self
            .embed_index
            .invoke(&event, Duration::from_secs(120))
            .await;
        if let Ok(response) = &outcome {
            acknowledge(&self.sqs, &self.queue_url, &messages, response).await?;
        }
        Ok(Some((outcome, ids)))
    }

    /// Feeds `embed-index` until the queue stays empty (failed messages reappear after the
    /// visibility timeout, so it waits that long before deciding the queue is drained).
    pub async fn drain(&self, limit: Duration) -> Result<DrainStats, Box<dyn std::error::Error>> {
        let mut stats = DrainStats::default();
        let started = Instant::now();
        let give_up = started + limit;
        let mut quiet_since: Option<Instant> = None;
        while Instant::now() < give_up {
            match self.deliver_batch(10).await? {
                Some((outcome, ids)) => {
                    stats.busy = started.elapsed();
                    quiet_since = None;
                    stats.invocations += 1;
                    stats.messages += ids.len() as u64;
                    match outcome {
                        Ok(response) => {
                            let failed =
                                response["batchItemFailures"].as_array().map_or(0, Vec::len) as u64;
                            stats.reported_failures += failed;
                            stats.deleted += ids.len() as u64 - failed;
                        }
                        Err(_) => stats.function_errors += 1,
                    }
                }
                None => {
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(u64::from(VISIBILITY_TIMEOUT_SECS) + 1)
                        && self.in_flight().await? == 0
                    {
                        break;
                    }
                }
            }
        }
        Ok(stats)
    }

    /// Messages waiting, in flight, or delayed (chunks requeued during an outage).
    async fn in_flight(&self) -> Result<u64, Box<dyn std::error::Error>> {
        let mut total = 0;
        for attribute in [
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesDelayed,
        ] {
            total += queue_depth(&self.sqs, &self.queue_url, attribute).await?;
        }
        Ok(total)
    }

    /// Messages waiting in the dead-letter queue.
    pub async fn dead_letters(&self) -> Result<u64, Box<dyn std::error::Error>> {
        queue_depth(
            &self.sqs,
            &self.dlq_url,
            QueueAttributeName::ApproximateNumberOfMessages,
        )
        .await
    }

    /// Starts ingest again with `changes` to its environment, as a deployment whose settings
    /// changed (chunk size, the scope of record ids) starts new containers.
    pub async fn restart_ingest(
        &mut self,
        changes: &[(&str, &str)],
    ) -> Result<(), Box<dyn std::error::Error>> {
        for (name, value) in changes {
            self.env.retain(|(n, _)| n != name);
            self.env.push((name.to_string(), value.to_string()));
        }
        let binary = require(&binary_dir(), "ingest")?;
        let log = self.options.log.as_deref();
        let fresh = FunctionProcess::spawn(&binary, "sakuin-ingest", &self.env, log).await?;
        std::mem::replace(&mut self.ingest, fresh).stop().await;
        Ok(())
    }

    pub async fn stop(self) {
        self.ingest.stop().await;
        self.embed_index.stop().await;
        self.probe.stop().await;
    }
}

/// Sum of `metric` over the EMF lines the functions wrote to `log`, only those with dimension
/// `Reason` = `reason` when given.
pub fn emf_sum(log: &Path, metric: &str, reason: Option<&str>) -> f64 {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .filter(|v| reason.is_none_or(|r| v["Reason"] == r))
        .filter_map(|v| v[metric].as_f64())
        .sum()
}

/// Starts the fault-injecting proxy in front of the stack's Elasticsearch and points the
/// functions' `ES_PORT` at it.
pub async fn fault_proxy(
    stack: &LocalStack,
    env: &mut [(String, String)],
) -> std::io::Result<EsFaults> {
    let proxy = EsFaults::start(stack.elasticsearch.port).await?;
    for (name, value) in env.iter_mut() {
        if name == "ES_PORT" {
            *value = proxy.port.to_string();
        }
    }
    Ok(proxy)
}

/// The fault-injecting proxy (see [`fault_proxy`]) when `wanted`, else none.
pub async fn fault_proxy_if(
    wanted: bool,
    stack: &LocalStack,
    env: &mut [(String, String)],
) -> std::io::Result<Option<EsFaults>> {
    if wanted {
        Ok(Some(fault_proxy(stack, env).await?))
    } else {
        Ok(None)
    }
}

/// Puts an object into the bucket; returns the notification S3 sends for it
/// (`ObjectCreated:Put`) and the version it created, in a versioned bucket.
pub async fn put_object(
    s3: &aws_sdk_s3::Client,
    key: &str,
    body: Vec<u8>,
) -> Result<(Value, Option<String>), aws_sdk_s3::Error> {
    let size = body.len();
    let out = s3
        .put_object()
        .bucket(BUCKET)
        .key(key)
        .body(body.into())
        .send()
        .await?;
    let etag = out.e_tag().unwrap_or_default().trim_matches('"');
    let event = s3_event("ObjectCreated:Put", BUCKET, key, Some(size), Some(etag));
    Ok((
        with_version_id(event, out.version_id()),
        out.version_id().map(str::to_owned),
    ))
}

/// Puts an object into the bucket, without a notification.
pub async fn upload(
    s3: &aws_sdk_s3::Client,
    key: &str,
    body: Vec<u8>,
) -> Result<(), Box<dyn std::error::Error>> {
    s3.put_object()
        .bucket(BUCKET)
        .key(key)
        .body(body.into())
        .send()
        .await?;
    Ok(())
}

/// A notification naming the object version it is about (versioned buckets).
pub fn with_version_id(mut event: Value, version_id: Option<&str>) -> Value {
    if let Some(version) = version_id {
        event["Records"][0]["s3"]["object"]["versionId"] = json!(version);
    }
    event
}

/// What the event source mapping does with a function's answer to a batch: deletes the
/// messages its partial batch response does not name; returns how many it deleted and how many
/// were named (those reappear after the visibility timeout).
pub async fn acknowledge(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    messages: &[aws_sdk_sqs::types::Message],
    response: &Value,
) -> Result<(u64, u64), aws_sdk_sqs::Error> {
    let failed: Vec<&str> = response["batchItemFailures"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["itemIdentifier"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let done: Vec<DeleteMessageBatchRequestEntry> = messages
        .iter()
        .filter(|m| !failed.contains(&m.message_id().unwrap_or_default()))
        .enumerate()
        .map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .build()
                .expect("id and receipt handle are set")
        })
        .collect();
    let deleted = done.len() as u64;
    if !done.is_empty() {
        sqs.delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(done))
            .send()
            .await?;
    }
    Ok((deleted, failed.len() as u64))
}

/// Creates the bucket and the queues (with a redrive policy to the DLQ) and returns the
/// environment the functions need.
pub async fn provision(
    stack: &LocalStack,
    options: &PipelineOptions,
) -> Result<Provisioned, Box<dyn std::error::Error>> {
    let (s3, sqs) = moto_clients(stack).await;
    create_bucket(&s3, options.versioned_bucket).await?;
    let (queue_url, dlq_url) = queue_with_dlq(
        &sqs,
        QUEUE,
        DEAD_LETTER_QUEUE,
        options.chunk_visibility_secs,
    )
    .await?;
    let intake = if options.intake_queue {
        Some(
            queue_with_dlq(
                &sqs,
                INTAKE_QUEUE,
                INTAKE_DEAD_LETTER_QUEUE,
                INTAKE_VISIBILITY_TIMEOUT_SECS,
            )
            .await?,
        )
    } else {
        None
    };
    let env = function_env(stack, options, (&queue_url, &dlq_url), intake.as_ref());
    Ok(Provisioned {
        s3,
        sqs,
        queue_url,
        dlq_url,
        intake,
        env,
    })
}

/// S3 (path-style) and SQS clients for the stack's moto.
async fn moto_clients(stack: &LocalStack) -> (aws_sdk_s3::Client, aws_sdk_sqs::Client) {
    let sdk = crate::stack::sdk_config_loader().load().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .endpoint_url(stack.moto.url())
            .force_path_style(true)
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&sdk)
            .endpoint_url(stack.moto.url())
            .build(),
    );
    (s3, sqs)
}

/// Creates the bucket in the stack's Region, with versioning turned on when `versioned`.
async fn create_bucket(
    s3: &aws_sdk_s3::Client,
    versioned: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    crate::stack::create_bucket(s3, BUCKET).await?;
    if versioned {
        s3.put_bucket_versioning()
            .bucket(BUCKET)
            .versioning_configuration(
                aws_sdk_s3::types::VersioningConfiguration::builder()
                    .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await?;
    }
    Ok(())
}

/// The functions' environment: the stack's endpoints, the chunk queue and its DLQ, the
/// bucket, model and index, the intake queue and its DLQ when given, then `options.extra_env`.
fn function_env(
    stack: &LocalStack,
    options: &PipelineOptions,
    (queue_url, dlq_url): (&str, &str),
    intake: Option<&(String, String)>,
) -> Vec<(String, String)> {
    let mut env = stack.env();
    env.extend(
        [
            ("CHUNK_QUEUE_URL", queue_url.to_owned()),
            ("DEAD_LETTER_QUEUE_URL", dlq_url.to_owned()),
            ("SOURCE_BUCKET", BUCKET.to_owned()),
            ("EMBEDDING_MODEL_ID", options.model_id.clone()),
            (
                "EMBEDDING_DIMENSIONS",
                options
                    .dimensions
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
            ),
            ("ES_INDEX", options.index.clone()),
            ("RUST_LOG", "info".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v)),
    );
    if let Some((intake_url, intake_dlq_url)) = intake {
        env.push(("INGEST_QUEUE_URL".into(), intake_url.clone()));
        env.push((
            "INGEST_DEAD_LETTER_QUEUE_URL".into(),
            intake_dlq_url.clone(),
        ));
    }
    env.extend(options.extra_env.iter().cloned());
    env
}

/// Creates `name` with a redrive policy to `dlq_name` (created first); returns both URLs.
async fn queue_with_dlq(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    dlq_name: &str,
    visibility_timeout_secs: u32,
) -> Result<(String, String), Box<dyn std::error::Error>> {
    let dlq_url = sqs
        .create_queue()
        .queue_name(dlq_name)
        .send()
        .await?
        .queue_url
        .unwrap_or_default();
    let dlq_arn = format!("arn:aws:sqs:{REGION}:123456789012:{dlq_name}");
    let queue_url = sqs
        .create_queue()
        .queue_name(name)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_timeout_secs.to_string(),
        )
        .attributes(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT})
                .to_string(),
        )
        .send()
        .await?
        .queue_url
        .unwrap_or_default();
    Ok((queue_url, dlq_url))
}

pub async fn queue_depth(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    attr: QueueAttributeName,
) -> Result<u64, Box<dyn std::error::Error>> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(attr.clone())
        .send()
        .await?;
    Ok(out
        .attributes()
        .and_then(|a| a.get(&attr))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// The built binary `name` in `dir`, or an error saying how to build it.
pub fn require(dir: &Path, name: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is not built: run `cargo build --workspace` (or set SAKUIN_BIN_DIR)",
            path.display()
        )
        .into())
    }
}

/// S3 writes keys form-URL-encoded into notifications: space as `+`, reserved bytes as `%XX`.
pub fn form_encode_key(key: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const KEEP: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'*')
        .remove(b' ');
    utf8_percent_encode(key, KEEP).to_string().replace(' ', "+")
}

/// A real-shaped S3 notification for one object.
pub fn s3_event(
    event_name: &str,
    bucket: &str,
    key: &str,
    size: Option<usize>,
    etag: Option<&str>,
) -> Value {
    let now = chrono::Utc::now();
    let sequencer = format!("{:016X}", now.timestamp_nanos_opt().unwrap_or_default());
    let mut object = json!({"key": form_encode_key(key), "sequencer": sequencer});
    if let Some(size) = size {
        object["size"] = json!(size);
    }
    if let Some(etag) = etag {
        object["eTag"] = json!(etag);
    }
    json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": REGION,
        "eventTime": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "LOCAL", "x-amz-id-2": "LOCAL"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "sakuin-ingest",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "EXAMPLE"}, "arn": format!("arn:aws:s3:::{bucket}")},
            "object": object
        }
    }]})
}

/// The SQS event Lambda's event source mapping builds from messages received from the chunk queue.
pub fn sqs_event(messages: &[aws_sdk_sqs::types::Message]) -> Value {
    sqs_event_from(QUEUE, messages)
}

/// The SQS event Lambda's event source mapping builds from messages received from `queue`.
pub fn sqs_event_from(queue: &str, messages: &[aws_sdk_sqs::types::Message]) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, Value> = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_owned(), Value::String(v.clone())))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": attributes,
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:{REGION}:123456789012:{queue}"),
                "awsRegion": REGION
            })
        })
        .collect();
    json!({ "Records": records })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_the_way_s3_does() {
        assert_eq!(
            form_encode_key("docs/2024 annual report+q4日本.jsonl"),
            "docs/2024+annual+report%2Bq4%E6%97%A5%E6%9C%AC.jsonl"
        );
        assert_eq!(
            sakuin::s3key::decode_key(&form_encode_key("a b+c%d/é.json")).unwrap(),
            "a b+c%d/é.json"
        );
    }
}
