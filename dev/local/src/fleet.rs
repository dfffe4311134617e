//! The deployment the template creates, at scale: S3 notifications on the intake queue, and
//! several containers of `ingest` and of `embed-index` fed by event source mappings at once
//! (each container a real function process under its own Runtime API, each mapping's pollers
//! receiving, invoking, deleting what succeeded and leaving failures to reappear and move to
//! the DLQ). Containers start cold when first used, and a planned crash kills one in the middle
//! of an invocation, as an out-of-memory error or Lambda's timeout does.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use sakuin::es::EsClient;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::esfaults::EsFaults;
use crate::pipeline::{
    BUCKET, INTAKE_QUEUE, PipelineOptions, Provisioned, QUEUE, acknowledge, binary_dir,
    fault_proxy_if, provision, put_object, queue_depth, require, s3_event, sqs_event_from,
    with_version_id,
};
use crate::runtime::{FunctionError, FunctionProcess};
use crate::stack::LocalStack;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How many containers of each function run at once.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub pipeline: PipelineOptions,
    pub ingest_containers: usize,
    pub embed_index_containers: usize,
}

/// What one function's containers did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub invocations: u64,
    pub cold_starts: u64,
    pub messages: u64,
    pub deleted: u64,
    pub reported_failures: u64,
    pub function_errors: u64,
    pub crashes: u64,
}

/// A crash planned for the first invocation whose batch holds a message body containing
/// `body_contains`: the container is killed `after` into that invocation.
#[derive(Debug, Clone)]
pub struct Crash {
    pub body_contains: String,
    pub after: Duration,
}

/// One function's containers and the event source mapping that feeds them.
pub struct Pool {
    function: &'static str,
    binary: PathBuf,
    env: Vec<(String, String)>,
    log: Option<PathBuf>,
    queue_url: String,
    queue_name: &'static str,
    batch_size: i32,
    timeout: Duration,
    slots: Vec<Mutex<Option<FunctionProcess>>>,
    busy: AtomicUsize,
    crashes: std::sync::Mutex<Vec<Crash>>,
    stats: std::sync::Mutex<PoolStats>,
}

impl Pool {
    pub fn stats(&self) -> PoolStats {
        *self.stats.lock().unwrap()
    }

    pub fn containers(&self) -> usize {
        self.slots.len()
    }

    /// Containers in the middle of an invocation now.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
    }

    /// Plans a crash (see [`Crash`]).
    pub fn crash_when(&self, body_contains: &str, after: Duration) {
        self.crashes.lock().unwrap().push(Crash {
            body_contains: body_contains.to_owned(),
            after,
        });
    }

    /// Crashes planned and not yet happened.
    pub fn crashes_pending(&self) -> usize {
        self.crashes.lock().unwrap().len()
    }

    /// Stops every container: the next invocation of each starts cold.
    pub async fn recycle(&self) {
        for slot in &self.slots {
            if let Some(process) = slot.lock().await.take() {
                process.stop().await;
            }
        }
    }

    fn take_crash(&self, messages: &[Message]) -> Option<Duration> {
        let mut planned = self.crashes.lock().unwrap();
        let at = planned.iter().position(|c| {
            messages
                .iter()
                .any(|m| m.body().unwrap_or_default().contains(&c.body_contains))
        })?;
        Some(planned.remove(at).after)
    }

    fn count(&self, f: impl FnOnce(&mut PoolStats)) {
        f(&mut self.stats.lock().unwrap());
    }

    /// Invokes container `slot` with the batch as the event source mapping does, and deletes
    /// the messages that succeeded.
    async fn deliver(&self, sqs: &aws_sdk_sqs::Client, slot: usize, messages: Vec<Message>) {
        let mut container = self.slots[slot].lock().await;
        if container.is_none() {
            match self.start_container().await {
                Ok(process) => *container = Some(process),
                // Nothing is deleted: the batch reappears after the visibility timeout.
                Err(_) => return self.count(|s| s.function_errors += 1),
            }
            self.count(|s| s.cold_starts += 1);
        }
        let process = container.as_ref().expect("a container was just started");
        let event = sqs_event_from(self.queue_name, &messages);
        let crash = self.take_crash(&messages);
        let outcome = self.invoke_or_crash(process, &event, crash).await;
        self.count(|s| {
            s.invocations += 1;
            s.messages += messages.len() as u64;
        });
        let response = match outcome {
            Ok(response) => response,
            Err(e) => return self.fail_batch(&mut container, &e, crash.is_some()).await,
        };
        self.delete_succeeded(sqs, &messages, &response).await;
    }

    /// Starts a container cold: the function's process under a Runtime API of its own.
    async fn start_container(&self) -> std::io::Result<FunctionProcess> {
        FunctionProcess::spawn(&self.binary, self.function, &self.env, self.log.as_deref()).await
    }

    /// Invokes `process` with `event`; with a crash planned, kills the container that long
    /// into the invocation instead of waiting for its answer.
    async fn invoke_or_crash(
        &self,
        process: &FunctionProcess,
        event: &Value,
        crash: Option<Duration>,
    ) -> Result<Value, FunctionError> {
        match crash {
            Some(after) => {
                tokio::select! {
                    outcome = process.invoke(event, self.timeout) => outcome,
                    () = tokio::time::sleep(after) => {
                        process.kill().await;
                        Err(FunctionError {
                            error_type: "Runtime.ExitError".into(),
                            error_message: "the container was killed in the middle of the invocation".into(),
                        })
                    }
                }
            }
            None => process.invoke(event, self.timeout).await,
        }
    }

    /// A function error leaves the whole batch to reappear; a dead container is stopped, to be
    /// replaced by a cold one at the next invocation.
    async fn fail_batch(
        &self,
        container: &mut Option<FunctionProcess>,
        error: &FunctionError,
        crashed: bool,
    ) {
        self.count(|s| {
            s.function_errors += 1;
            s.crashes += u64::from(crashed);
        });
        let dead = matches!(
            error.error_type.as_str(),
            "Runtime.ExitError" | "Sandbox.Timedout"
        );
        if dead && let Some(process) = container.take() {
            process.stop().await;
        }
    }

    /// Deletes the messages the function's answer does not name as failures, and counts both.
    async fn delete_succeeded(
        &self,
        sqs: &aws_sdk_sqs::Client,
        messages: &[Message],
        response: &Value,
    ) {
        // A failed delete leaves the messages to reappear, as with Lambda.
        let (deleted, failed) = acknowledge(sqs, &self.queue_url, messages, response)
            .await
            .unwrap_or((0, 0));
        self.count(|s| {
            s.deleted += deleted;
            s.reported_failures += failed;
        });
    }
}

/// One function's event source mapping, and how many containers it feeds.
struct Mapping<'a> {
    function: &'static str,
    /// The function's binary, in the directory of built binaries.
    binary: &'static str,
    queue_url: &'a str,
    queue_name: &'static str,
    containers: usize,
    batch_size: i32,
    timeout: Duration,
}

impl<'a> Mapping<'a> {
    /// ingest fed by the intake queue: batches of 5 as in the template, its 300 s timeout.
    fn ingest(queue_url: &'a str, containers: usize) -> Self {
        Self {
            function: "sakuin-ingest",
            binary: "ingest",
            queue_url,
            queue_name: INTAKE_QUEUE,
            containers,
            batch_size: 5,
            timeout: Duration::from_secs(300),
        }
    }

    /// embed-index fed by the chunk queue: batches of 10 as in the template, its 120 s timeout.
    fn embed_index(queue_url: &'a str, containers: usize) -> Self {
        Self {
            function: "sakuin-embed-index",
            binary: "embed-index",
            queue_url,
            queue_name: QUEUE,
            containers,
            batch_size: 10,
            timeout: Duration::from_secs(120),
        }
    }
}

/// Where every container starts from: the built binaries, the functions' variables and log.
struct Functions<'a> {
    bin: PathBuf,
    env: &'a [(String, String)],
    log: &'a Option<PathBuf>,
}

impl Functions<'_> {
    /// The containers of `mapping`'s function (none started yet), or an error when its
    /// binary is not built.
    fn pool(&self, mapping: Mapping<'_>) -> Result<Arc<Pool>, BoxError> {
        let binary = require(&self.bin, mapping.binary).map_err(|e| e.to_string())?;
        Ok(Arc::new(Pool {
            function: mapping.function,
            binary,
            env: self.env.to_vec(),
            log: self.log.clone(),
            queue_url: mapping.queue_url.to_owned(),
            queue_name: mapping.queue_name,
            batch_size: mapping.batch_size,
            timeout: mapping.timeout,
            slots: (0..mapping.containers.max(1))
                .map(|_| Mutex::new(None))
                .collect(),
            busy: AtomicUsize::new(0),
            crashes: Default::default(),
            stats: Default::default(),
        }))
    }
}

/// Starts a poller for every container of each pool; they run until `stop` is set.
fn start_pollers(
    pools: &[&Arc<Pool>],
    sqs: &aws_sdk_sqs::Client,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<()>> {
    let mut pollers = Vec::new();
    for pool in pools {
        for slot in 0..pool.containers() {
            pollers.push(tokio::spawn(poll(
                Arc::clone(pool),
                sqs.clone(),
                slot,
                stop.clone(),
            )));
        }
    }
    pollers
}

/// One poller of an event source mapping, bound to one container.
async fn poll(pool: Arc<Pool>, sqs: aws_sdk_sqs::Client, slot: usize, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let received = sqs
            .receive_message()
            .queue_url(&pool.queue_url)
            .max_number_of_messages(pool.batch_size)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await;
        let messages = match received {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        pool.busy.fetch_add(1, Ordering::SeqCst);
        pool.deliver(&sqs, slot, messages).await;
        pool.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An S3 operation's notification, as S3 would put it on the intake queue.
#[derive(Debug, Clone)]
pub struct Notification {
    pub event: Value,
    /// The version the operation created (a put or a delete marker) or removed, in a
    /// versioned bucket.
    pub version_id: Option<String>,
}

pub struct Fleet {
    pub stack: LocalStack,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub dlq_url: String,
    pub intake_url: String,
    pub intake_dlq_url: String,
    pub options: PipelineOptions,
    /// The functions' variables (what `sakuin` reads, too).
    pub env: Vec<(String, String)>,
    pub es_faults: Option<EsFaults>,
    pub ingest: Arc<Pool>,
    pub embed_index: Arc<Pool>,
    stop: Arc<AtomicBool>,
    pollers: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Runs the `sakuin` command line (built by `cargo build --workspace`) with the fleet's
    /// environment: its exit code, standard output and standard error.
    pub async fn sakuin(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let bin = crate::pipeline::require(&crate::pipeline::binary_dir(), "sakuin")
            .expect("cargo build --workspace builds the sakuin CLI");
        let out = tokio::process::Command::new(bin)
            .args(args)
            .envs(self.env.iter().cloned())
            .output()
            .await
            .expect("the sakuin CLI runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Provisions the bucket and both queues with their DLQs, and starts the event source
    /// mappings' pollers (containers start cold at their first batch).
    pub async fn start(stack: LocalStack, options: FleetOptions) -> Result<Self, BoxError> {
        let pipeline = PipelineOptions {
            intake_queue: true,
            ..options.pipeline
        };
        let Provisioned {
            s3,
            sqs,
            queue_url,
            dlq_url,
            intake,
            mut env,
        } = provision(&stack, &pipeline)
            .await
            .map_err(|e| e.to_string())?;
        let (intake_url, intake_dlq_url) = intake.expect("the intake queue was asked for");
        let es_faults = fault_proxy_if(pipeline.es_faults, &stack, &mut env).await?;
        let functions = Functions {
            bin: binary_dir(),
            env: &env,
            log: &pipeline.log,
        };
        let ingest = functions.pool(Mapping::ingest(&intake_url, options.ingest_containers))?;
        let embed_index = functions.pool(Mapping::embed_index(
            &queue_url,
            options.embed_index_containers,
        ))?;
        let stop = Arc::new(AtomicBool::new(false));
        let pollers = start_pollers(&[&ingest, &embed_index], &sqs, &stop);
        Ok(Self {
            stack,
            s3,
            sqs,
            queue_url,
            dlq_url,
            intake_url,
            intake_dlq_url,
            options: pipeline,
            env,
            es_faults,
            ingest,
            embed_index,
            stop,
            pollers,
        })
    }

    /// A client for the local Elasticsearch (not through the fault proxy), on the index.
    pub fn es(&self) -> EsClient {
        self.stack.es(&self.options.index)
    }

    /// Puts an object; its notification is `ObjectCreated:Put`.
    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<Notification, BoxError> {
        let (event, version_id) = put_object(&self.s3, key, body).await?;
        Ok(Notification { event, version_id })
    }

    /// Deletes a key: in a versioned bucket a delete marker is created
    /// (`ObjectRemoved:DeleteMarkerCreated`), else the object goes (`ObjectRemoved:Delete`).
    pub async fn delete(&self, key: &str) -> Result<Notification, BoxError> {
        self.remove(key, None, "ObjectRemoved").await
    }

    /// Permanently deletes one version (a noncurrent one, or a delete marker: an undelete);
    /// its notification is `ObjectRemoved:Delete` with that `versionId`.
    pub async fn delete_version(&self, key: &str, version: &str) -> Result<Notification, BoxError> {
        self.remove(key, Some(version), "ObjectRemoved").await
    }

    /// What a lifecycle rule's expiration of the current object does: the same removal as
    /// [`Fleet::delete`], notified as `LifecycleExpiration:Delete` or
    /// `LifecycleExpiration:DeleteMarkerCreated`.
    pub async fn expire(&self, key: &str) -> Result<Notification, BoxError> {
        self.remove(key, None, "LifecycleExpiration").await
    }

    /// A lifecycle rule's expiration of a noncurrent version (`LifecycleExpiration:Delete`).
    pub async fn expire_version(&self, key: &str, version: &str) -> Result<Notification, BoxError> {
        self.remove(key, Some(version), "LifecycleExpiration").await
    }

    async fn remove(
        &self,
        key: &str,
        version: Option<&str>,
        family: &str,
    ) -> Result<Notification, BoxError> {
        let out = self
            .s3
            .delete_object()
            .bucket(BUCKET)
            .key(key)
            .set_version_id(version.map(str::to_owned))
            .send()
            .await?;
        // https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-how-to-event-types-and-destinations.html
        let marker_created = version.is_none() && out.delete_marker() == Some(true);
        let kind = if marker_created {
            "DeleteMarkerCreated"
        } else {
            "Delete"
        };
        let event = s3_event(&format!("{family}:{kind}"), BUCKET, key, None, None);
        Ok(notification(event, version.or(out.version_id())))
    }

    /// Puts notifications on the intake queue, in the order given, as S3 does.
    pub async fn deliver(&self, notifications: &[Notification]) -> Result<(), BoxError> {
        for n in notifications {
            self.sqs
                .send_message()
                .queue_url(&self.intake_url)
                .message_body(n.event.to_string())
                .send()
                .await?;
        }
        Ok(())
    }

    /// Waits until both queues hold nothing (waiting, in flight or delayed) and no container
    /// is busy, for longer than a visibility timeout; returns how long the work took (up to
    /// the last moment anything was left), or an error after `limit`.
    pub async fn run_until_quiet(&self, limit: Duration) -> Result<Duration, BoxError> {
        let started = Instant::now();
        let mut last_busy = started;
        // Messages a failed invocation left are counted while invisible, so a short quiet
        // spell (longer than a poll's wait) proves the queues drained.
        let quiet_for = Duration::from_secs(2);
        loop {
            let left = self.work_left().await?;
            let now = Instant::now();
            if left > 0 {
                last_busy = now;
            } else if now - last_busy >= quiet_for {
                return Ok(last_busy - started);
            }
            if started.elapsed() > limit {
                return Err(format!(
                    "{left} messages or invocations still pending after {limit:?}"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Messages on both queues (waiting, in flight, delayed) plus invocations under way.
    pub async fn work_left(&self) -> Result<u64, BoxError> {
        let mut left = (self.ingest.busy.load(Ordering::SeqCst)
            + self.embed_index.busy.load(Ordering::SeqCst)) as u64;
        for url in [&self.intake_url, &self.queue_url] {
            for attribute in [
                QueueAttributeName::ApproximateNumberOfMessages,
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                QueueAttributeName::ApproximateNumberOfMessagesDelayed,
            ] {
                left += queue_depth(&self.sqs, url, attribute)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(left)
    }

    /// Messages in the chunk DLQ and in the intake DLQ.
    pub async fn dead_letters(&self) -> Result<(u64, u64), BoxError> {
        let depth = async |url: &str| {
            queue_depth(
                &self.sqs,
                url,
                QueueAttributeName::ApproximateNumberOfMessages,
            )
            .await
            .map_err(|e| BoxError::from(e.to_string()))
        };
        Ok((
            depth(&self.dlq_url).await?,
            depth(&self.intake_dlq_url).await?,
        ))
    }

    /// Texts the Bedrock stand-in has embedded so far.
    pub async fn texts_embedded(&self) -> Result<u64, BoxError> {
        let stats = self
            .stack
            .bedrock_stats()
            .await
            .map_err(|e| e.to_string())?;
        Ok(stats["texts"].as_u64().unwrap_or_default())
    }

    /// Stops the pollers and every container.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for poller in self.pollers {
            let _ = poller.await;
        }
        self.ingest.recycle().await;
        self.embed_index.recycle().await;
    }
}

fn notification(event: Value, version_id: Option<&str>) -> Notification {
    Notification {
        event: with_version_id(event, version_id),
        version_id: version_id.map(str::to_owned),
    }
}

/// A small deterministic generator (SplitMix64), so a failing run can be replayed by its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Deliveries as S3 makes them: each notification at least once (some twice), and in an
/// order that is only roughly the order of the operations (shuffled within a `window`).
pub fn shuffled_deliveries(
    notifications: &[Notification],
    rng: &mut Rng,
    duplicate_one_in: usize,
    window: usize,
) -> Vec<Notification> {
    let mut out: Vec<Notification> = Vec::with_capacity(notifications.len() * 2);
    for n in notifications {
        out.push(n.clone());
        if rng.below(duplicate_one_in) == 0 {
            out.push(n.clone());
        }
    }
    for start in (0..out.len()).step_by(window.max(1)) {
        let end = (start + window).min(out.len());
        for i in (start + 1..end).rev() {
            let j = start + rng.below(i - start + 1);
            out.swap(i, j);
        }
    }
    out
}
