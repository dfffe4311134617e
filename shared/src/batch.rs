//! Backfills through Bedrock batch inference: the chunk messages a backfill would queue are
//! written to a staging location instead, their texts as the input files of batch jobs, and
//! once a job has ended its vectors ride in those very messages onto the chunk queue, where
//! embed-index indexes them (without calling Bedrock) through the same per-object ordering as
//! every other write: a live upload newer than the backfill's read still wins.
//!
//! A run's files, under the staging prefix:
//!
//! - `<run>/run.json`: the run's state ([`Run`]), rewritten after every step, so whatever
//!   stops the command (a crash, Ctrl-C, `--detach`) is resumed from it;
//! - `<run>/input/<part>.jsonl`: one job's input, a record per chunk to embed;
//! - `<run>/messages/<part>.jsonl`: the chunk messages of that part, one a line, as ingest made
//!   them; a chunk's record id is its message's line and its place in the message;
//! - `<run>/output/<job id>/<part>.jsonl.out`: what Bedrock wrote.
//!
//! Jobs are submitted within [`BatchSettings::max_jobs_in_flight`] with the part's name as the
//! idempotency token, so a submission retried after a crash answers the job already made. A job
//! that failed, stopped or expired, and each record in error, falls back to on-demand: its
//! chunks go on the queue without a vector, and embed-index embeds them as usual. The input
//! and message files are removed when every part has been collected; `run.json` stays as the
//! run's record.
//!
//! <https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference.html>

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tracing::{info, warn};

use crate::aws::bedrock_batch::records::{BatchModel, OutputLocation};
use crate::aws::bedrock_batch::{BatchError, BedrockBatch, JobArn, JobStatus, NewJob};
use crate::config::IngestConfig;
use crate::documents::AsyncBody;
use crate::ingest::{Continuation, IngestDeps, IngestSummary, handle_event};
use crate::message::{CarriedVector, ChunkMessage, MessagePacker, Operation};
use crate::queue::{BatchLimits, ChunkQueue, EntryFailure, QueueEntry, QueueError, send_all};
use crate::retry::Deadline;
use crate::store::{ObjectRef, ObjectStore};

/// Chunk messages collected before they are sent.
const SEND_AT_ONCE: usize = 100;

/// The version of `run.json`'s layout.
const RUN_VERSION: u32 = 1;

/// Where and how a run uses Bedrock batch inference.
#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// Where the run's files go: `s3://bucket/prefix/` (`BATCH_STAGING`).
    pub staging: StagingLocation,
    /// The service role Bedrock assumes to read the input and write the output
    /// (`BATCH_ROLE_ARN`; the template's `BatchRoleArn` output).
    pub role_arn: String,
    /// Records (chunks) in one job. Bedrock takes at most 50,000 a job (a quota per model).
    pub max_records_per_job: usize,
    /// Fewer records than this in all are not worth a job (Bedrock refuses jobs under its
    /// minimum, 100 by default): they go on the queue to be embedded on demand.
    pub min_records_per_job: usize,
    /// Jobs submitted and not yet ended, at most (a quota per model and Region).
    pub max_jobs_in_flight: usize,
    /// How long a job may wait and run before Bedrock expires it, 24 to 168 hours.
    pub timeout_hours: Option<u32>,
}

impl BatchSettings {
    pub const DEFAULT_MAX_RECORDS_PER_JOB: usize = 50_000;
    pub const DEFAULT_MIN_RECORDS_PER_JOB: usize = 100;
    pub const DEFAULT_MAX_JOBS_IN_FLIGHT: usize = 10;

    pub fn new(staging: StagingLocation, role_arn: impl Into<String>) -> Self {
        Self {
            staging,
            role_arn: role_arn.into(),
            max_records_per_job: Self::DEFAULT_MAX_RECORDS_PER_JOB,
            min_records_per_job: Self::DEFAULT_MIN_RECORDS_PER_JOB,
            max_jobs_in_flight: Self::DEFAULT_MAX_JOBS_IN_FLIGHT,
            timeout_hours: None,
        }
    }
}

/// `s3://bucket/prefix/`: where runs keep their files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagingLocation {
    pub bucket: String,
    /// Empty or ending with `/`.
    pub prefix: String,
}

impl StagingLocation {
    pub fn parse(uri: &str) -> Result<Self, String> {
        let rest = uri
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{uri}: a staging location is s3://bucket/prefix/"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{uri}: no bucket"));
        }
        let prefix = prefix.trim_end_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix,
        })
    }

    fn key(&self, run: &str, rest: &str) -> String {
        format!("{}{run}/{rest}", self.prefix)
    }

    fn uri(&self, run: &str, rest: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(run, rest))
    }
}

impl fmt::Display for StagingLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// A run's state, as `run.json` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub v: u32,
    pub id: String,
    /// What the backfill read (`s3://bucket/prefix`).
    pub source: String,
    pub model_id: String,
    pub created_at: DateTime<Utc>,
    /// Every message has been written to a part: jobs may be submitted.
    pub staged: bool,
    pub parts: Vec<Part>,
    /// The staging files are gone: the run is over.
    #[serde(default)]
    pub cleaned: bool,
}

/// One job's worth of chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// `part-000001`: its files' names.
    pub name: String,
    /// Chunk messages (lines of its messages file).
    pub messages: u64,
    /// Records (chunks to embed) in its input.
    pub records: u64,
    #[serde(default)]
    pub state: PartState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// How the job ended (Bedrock's status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    /// Chunks queued with the vector the job made, and without one (to be embedded on demand).
    #[serde(default)]
    pub from_batch: u64,
    #[serde(default)]
    pub on_demand: u64,
    /// Input tokens the job counted for the records it embedded.
    #[serde(default)]
    pub input_tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartState {
    /// Written, waiting for a job.
    #[default]
    Staged,
    /// A job runs it.
    Submitted,
    /// Its messages are on the chunk queue.
    Collected,
}

impl Run {
    pub fn new(id: impl Into<String>, source: impl Into<String>, model_id: &str) -> Self {
        Self {
            v: RUN_VERSION,
            id: id.into(),
            source: source.into(),
            model_id: model_id.to_owned(),
            created_at: Utc::now(),
            staged: false,
            parts: Vec::new(),
            cleaned: false,
        }
    }

    /// A run id from the clock: sortable, and short enough for job names.
    pub fn new_id(now: DateTime<Utc>) -> String {
        format!("{}-{:04x}", now.format("%Y%m%dT%H%M%S"), fastrand::u16(..))
    }

    pub fn is_done(&self) -> bool {
        self.staged && self.parts.iter().all(|p| p.state == PartState::Collected)
    }

    /// Records in all parts, those whose job has ended and been collected, and jobs running.
    pub fn progress(&self) -> RunProgress {
        let mut p = RunProgress::default();
        for part in &self.parts {
            p.records += part.records;
            match part.state {
                PartState::Staged => p.jobs_waiting += 1,
                PartState::Submitted => p.jobs_running += 1,
                PartState::Collected => {
                    p.jobs_done += 1;
                    p.records_done += part.records;
                    p.from_batch += part.from_batch;
                    p.on_demand += part.on_demand;
                    p.input_tokens += part.input_tokens;
                }
            }
        }
        p
    }

    /// One line for `status` and the command's progress.
    pub fn describe(&self) -> String {
        let p = self.progress();
        let state = if self.cleaned {
            "done"
        } else if !self.staged {
            "staging"
        } else {
            "running"
        };
        format!(
            "batch run {} ({state}) of {} with {}: {} jobs done, {} running, {} waiting; {} of {} records collected ({} embedded by batch, {} left to on-demand)",
            self.id,
            self.source,
            self.model_id,
            p.jobs_done,
            p.jobs_running,
            p.jobs_waiting,
            p.records_done,
            p.records,
            p.from_batch,
            p.on_demand
        )
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RunProgress {
    pub records: u64,
    pub records_done: u64,
    pub from_batch: u64,
    pub on_demand: u64,
    pub input_tokens: u64,
    pub jobs_done: u64,
    pub jobs_running: u64,
    pub jobs_waiting: u64,
}

/// Why a step of a run failed; the run's state on S3 is as the last step left it.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("staging s3://{bucket}/{key}: {detail}")]
    Staging {
        bucket: String,
        key: String,
        detail: String,
    },
    #[error("{0}")]
    Batch(#[from] BatchError),
    #[error("sending the chunks of {part} to the chunk queue: {source}")]
    Queue {
        part: String,
        #[source]
        source: QueueError,
    },
    #[error("{0}")]
    Other(String),
}

/// Runs' files on S3.
pub struct Staging<S> {
    pub store: S,
    pub location: StagingLocation,
}

impl<S: ObjectStore> Staging<S> {
    pub fn new(store: S, location: StagingLocation) -> Self {
        Self { store, location }
    }

    fn staging_error(&self, key: &str, detail: impl fmt::Display) -> RunError {
        RunError::Staging {
            bucket: self.location.bucket.clone(),
            key: key.to_owned(),
            detail: detail.to_string(),
        }
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), RunError> {
        self.store
            .put(&self.location.bucket, key, body)
            .await
            .map_err(|e| self.staging_error(key, e))
    }

    /// The object at `key` of the staging bucket; `None` when there is none.
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, RunError> {
        let Some(mut body) = self.open(bucket, key).await? else {
            return Ok(None);
        };
        let mut read = Vec::new();
        body.read_to_end(&mut read)
            .await
            .map_err(|e| self.staging_error(key, e))?;
        Ok(Some(read))
    }

    /// The lines of the object at `key`, read as they come: a part's output holds a vector a
    /// line, hundreds of megabytes for a job of 50,000 records.
    async fn lines(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Lines<BufReader<AsyncBody>>>, RunError> {
        Ok(self
            .open(bucket, key)
            .await?
            .map(|body| BufReader::new(body).lines()))
    }

    async fn open(&self, bucket: &str, key: &str) -> Result<Option<AsyncBody>, RunError> {
        let object = ObjectRef {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            version_id: None,
            etag: None,
            range_start: None,
        };
        match self.store.open(&object).await {
            Ok(opened) => Ok(Some(opened.body)),
            Err(crate::store::StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.staging_error(key, e)),
        }
    }

    pub async fn save(&self, run: &Run) -> Result<(), RunError> {
        let key = self.location.key(&run.id, "run.json");
        let body = serde_json::to_vec_pretty(run).expect("a run serialises");
        self.put(&key, body).await
    }

    pub async fn load(&self, id: &str) -> Result<Option<Run>, RunError> {
        let key = self.location.key(id, "run.json");
        match self.get(&self.location.bucket, &key).await? {
            Some(body) => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| self.staging_error(&key, e)),
            None => Ok(None),
        }
    }

    /// Every run under the staging prefix, oldest first.
    pub async fn runs(&self) -> Result<Vec<Run>, RunError> {
        let mut ids = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list(
                    &self.location.bucket,
                    &self.location.prefix,
                    after.as_deref(),
                )
                .await
                .map_err(|e| self.staging_error(&self.location.prefix, e))?;
            for listed in &page.objects {
                let rest = &listed.key[self.location.prefix.len()..];
                if let Some(id) = rest.strip_suffix("/run.json")
                    && !id.contains('/')
                {
                    ids.push(id.to_owned());
                }
            }
            after = page.objects.last().map(|o| o.key.clone());
            if !page.truncated || after.is_none() {
                break;
            }
        }
        let mut runs = Vec::new();
        for id in ids {
            if let Some(run) = self.load(&id).await? {
                runs.push(run);
            }
        }
        runs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(runs)
    }
}

/// The record id of a message's chunk: its line in the part's messages file and its place in
/// the message, eleven digits (what Bedrock's examples use; letters and digits are what every
/// version of its documentation allows).
pub fn record_id(line: usize, chunk: usize) -> String {
    format!("{line:07}{chunk:04}")
}

/// The part being written: its messages and its input lines.
#[derive(Default)]
struct PartBuffer {
    messages: Vec<String>,
    input: Vec<String>,
}

/// Takes the chunk messages ingest sends and writes them into parts instead of onto the queue,
/// in the order ingest sent them: an object's sweep (which removes what its older versions
/// left) travels in the part of its last chunks, and is queued with them, since a sweep that
/// arrived hours before its chunks would wait for them past `MAX_REQUEUES`.
pub struct StagingQueue<'a, S> {
    staging: &'a Staging<S>,
    model: BatchModel,
    max_records: usize,
    state: tokio::sync::Mutex<(Run, PartBuffer)>,
}

impl<'a, S: ObjectStore> StagingQueue<'a, S> {
    pub fn new(staging: &'a Staging<S>, model: BatchModel, run: Run, max_records: usize) -> Self {
        Self {
            staging,
            model,
            max_records: max_records.max(1),
            state: tokio::sync::Mutex::new((run, PartBuffer::default())),
        }
    }

    /// Writes the last part, marks the run staged and saves it; returns it.
    pub async fn finish(self) -> Result<Run, RunError> {
        let (mut run, mut buffer) = self.state.into_inner();
        if !buffer.messages.is_empty() {
            write_part(self.staging, &mut run, &mut buffer).await?;
        }
        run.staged = true;
        self.staging.save(&run).await?;
        Ok(run)
    }

    async fn add(&self, body: &str) -> Result<(), RunError> {
        let message = ChunkMessage::parse(body)
            .map_err(|e| RunError::Other(format!("a chunk message ingest made: {e}")))?;
        let mut state = self.state.lock().await;
        let (run, buffer) = &mut *state;
        let records = message.chunks.iter().filter(|c| c.vector.is_none()).count();
        if !buffer.messages.is_empty() && buffer.input.len() + records > self.max_records {
            // A part holds whole messages and never more records than a job takes.
            write_part(self.staging, run, buffer).await?;
        }
        let line = buffer.messages.len();
        for (i, chunk) in message.chunks.iter().enumerate() {
            if chunk.vector.is_none() {
                buffer
                    .input
                    .push(self.model.input_line(&record_id(line, i), &chunk.text));
            }
        }
        buffer.messages.push(body.to_owned());
        if buffer.input.len() >= self.max_records {
            write_part(self.staging, run, buffer).await?;
        }
        Ok(())
    }
}

impl<S: ObjectStore> ChunkQueue for StagingQueue<'_, S> {
    async fn send_batch(&self, entries: &[QueueEntry]) -> Result<Vec<EntryFailure>, QueueError> {
        for entry in entries {
            if let Err(e) = self.add(&entry.body).await {
                return Err(QueueError::Refused {
                    code: "Staging".into(),
                    message: e.to_string(),
                });
            }
        }
        Ok(Vec::new())
    }
}

/// Writes the buffered part's two files and records it in the run (saved).
async fn write_part<S: ObjectStore>(
    staging: &Staging<S>,
    run: &mut Run,
    buffer: &mut PartBuffer,
) -> Result<(), RunError> {
    let name = format!("part-{:06}", run.parts.len() + 1);
    let PartBuffer { messages, input } = std::mem::take(buffer);
    let lines = |lines: &[String]| {
        let mut body = lines.join("\n").into_bytes();
        body.push(b'\n');
        body
    };
    let loc = &staging.location;
    staging
        .put(
            &loc.key(&run.id, &format!("messages/{name}.jsonl")),
            lines(&messages),
        )
        .await?;
    if !input.is_empty() {
        staging
            .put(
                &loc.key(&run.id, &format!("input/{name}.jsonl")),
                lines(&input),
            )
            .await?;
    }
    run.parts.push(Part {
        name,
        messages: messages.len() as u64,
        records: input.len() as u64,
        state: PartState::Staged,
        job: None,
        ended: None,
        from_batch: 0,
        on_demand: 0,
        input_tokens: 0,
    });
    staging.save(run).await
}

/// Keeps the hand-overs of an ingest run in this process: what a Lambda invocation would hand to
/// the next, the staging loop runs next.
#[derive(Default)]
struct HandOvers(std::sync::Mutex<Vec<serde_json::Value>>);

impl Continuation for HandOvers {
    async fn hand_over(&self, event: serde_json::Value) -> Result<(), String> {
        self.0.lock().unwrap().push(event);
        Ok(())
    }
}

/// How long one round of in-process ingest runs before it hands the rest over (to itself).
const STAGING_ROUND: Duration = Duration::from_secs(600);

/// Stages a backfill of `bucket`/`prefix`: ingest reads and cuts every object as a backfill
/// would (`config`'s reader, chunker and fields), here, and its chunk messages are written as
/// the run's parts. Returns the run, staged and saved, and what ingest read.
pub async fn stage<R: ObjectStore, S: ObjectStore>(
    source: R,
    staging: &Staging<S>,
    config: IngestConfig,
    model: BatchModel,
    run: Run,
    settings: &BatchSettings,
    (bucket, prefix): (&str, &str),
) -> Result<(Run, IngestSummary), RunError> {
    let queue = StagingQueue::new(staging, model, run, settings.max_records_per_job);
    let deps = IngestDeps {
        store: source,
        queue,
        continuation: HandOvers::default(),
        config,
    };
    let mut summary = IngestSummary::default();
    let mut events = vec![serde_json::json!({"backfill": {"bucket": bucket, "prefix": prefix}})];
    while let Some(event) = events.pop() {
        let round = handle_event(&deps, event, Deadline::after(STAGING_ROUND))
            .await
            .map_err(|e| RunError::Other(format!("reading s3://{bucket}/{prefix}: {e}")))?;
        summary.add(&round);
        events.extend(std::mem::take(&mut *deps.continuation.0.lock().unwrap()));
    }
    let run = deps.queue.finish().await?;
    Ok((run, summary))
}

/// What moves runs on: their files, Bedrock's jobs, the chunk queue their messages go to (at
/// most `max_payload_bytes` a send), and the settings.
pub struct Runner<'a, S, Q> {
    pub staging: &'a Staging<S>,
    pub bedrock: &'a BedrockBatch,
    pub queue: &'a Q,
    pub settings: &'a BatchSettings,
    pub model: &'a BatchModel,
    pub max_payload_bytes: usize,
}

impl<S, Q> Clone for Runner<'_, S, Q> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S, Q> Copy for Runner<'_, S, Q> {}

/// What one [`advance`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Advanced {
    pub submitted: u64,
    pub collected: u64,
    pub waiting_for_room: bool,
    pub cleaned: bool,
}

/// Moves a staged run on by one step: collects the parts whose job has ended, submits waiting
/// parts while fewer than the limit run, and removes the staging files once every part is
/// collected. Safe to repeat, and to run again after a crash at any point: a submission is
/// idempotent by its token, and a part collected twice queues the same messages again, which
/// embed-index finds already indexed.
pub async fn advance<S: ObjectStore, Q: ChunkQueue>(
    runner: &Runner<'_, S, Q>,
    run: &mut Run,
) -> Result<Advanced, RunError> {
    let Runner {
        staging,
        bedrock,
        queue,
        settings,
        model,
        max_payload_bytes,
    } = *runner;
    let mut did = Advanced::default();
    if !run.staged || run.cleaned {
        return Ok(did);
    }
    for i in 0..run.parts.len() {
        if run.parts[i].state != PartState::Submitted {
            continue;
        }
        let arn = run.parts[i]
            .job
            .clone()
            .expect("a submitted part has a job");
        let job = bedrock.get(&arn).await?;
        if !job.status.has_ended() {
            continue;
        }
        let ended = Ended::Job {
            arn: &job.arn,
            status: &job.status,
            message: job.message.as_deref(),
        };
        collect(staging, queue, model, run, i, ended, max_payload_bytes).await?;
        did.collected += 1;
    }
    let mut running = run
        .parts
        .iter()
        .filter(|p| p.state == PartState::Submitted)
        .count();
    for i in 0..run.parts.len() {
        if run.parts[i].state != PartState::Staged {
            continue;
        }
        if (run.parts[i].records as usize) < settings.min_records_per_job {
            // Bedrock refuses a job this small (a run's last part, a small run): on demand.
            let ended = Ended::NoJob("fewer records than a batch job takes");
            collect(staging, queue, model, run, i, ended, max_payload_bytes).await?;
            did.collected += 1;
            continue;
        }
        if running >= settings.max_jobs_in_flight {
            did.waiting_for_room = true;
            break;
        }
        let part = &run.parts[i];
        let job = NewJob {
            name: format!("sakuin-{}-{}", run.id, part.name),
            role_arn: settings.role_arn.clone(),
            model_id: run.model_id.clone(),
            input_uri: staging
                .location
                .uri(&run.id, &format!("input/{}.jsonl", part.name)),
            output_uri: staging.location.uri(&run.id, "output/"),
            client_request_token: Some(format!("{}-{}", run.id, part.name)),
            timeout_hours: settings.timeout_hours,
        };
        match bedrock.create(&job).await {
            Ok(arn) => {
                info!(run = %run.id, part = %part.name, job = %arn, records = part.records, "batch job submitted");
                run.parts[i].job = Some(arn.as_str().to_owned());
                run.parts[i].state = PartState::Submitted;
                staging.save(run).await?;
                running += 1;
                did.submitted += 1;
            }
            Err(BatchError::TooManyJobs { .. }) => {
                // Other jobs of the account hold the quota: the part waits for room.
                did.waiting_for_room = true;
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if run.is_done() {
        clean(staging, run).await?;
        did.cleaned = true;
    }
    Ok(did)
}

/// How a part's embedding ended.
enum Ended<'a> {
    /// Its job ended so.
    Job {
        arn: &'a JobArn,
        status: &'a JobStatus,
        message: Option<&'a str>,
    },
    /// It had no job, for this reason: its chunks are embedded on demand.
    NoJob(&'static str),
}

/// Puts a part's messages on the chunk queue, with the vectors its job made; chunks without one
/// (a record in error, a job that did not complete, a part with no job) go without, to be
/// embedded on demand.
async fn collect<S: ObjectStore, Q: ChunkQueue>(
    staging: &Staging<S>,
    queue: &Q,
    model: &BatchModel,
    run: &mut Run,
    i: usize,
    ended: Ended<'_>,
    max_payload_bytes: usize,
) -> Result<(), RunError> {
    let name = run.parts[i].name.clone();
    let loc = &staging.location;
    let mut vectors: HashMap<String, Vec<f32>> = HashMap::new();
    let mut tokens = 0;
    let outcome = match ended {
        Ended::Job { status, .. } => status.as_str().to_owned(),
        Ended::NoJob(_) => "on_demand".to_owned(),
    };
    if let Ended::Job {
        arn: job,
        status: JobStatus::Completed | JobStatus::PartiallyCompleted,
        ..
    } = ended
    {
        let output = OutputLocation::new(&loc.uri(&run.id, "output/"), job)
            .ok_or_else(|| RunError::Other(format!("{job}: no output location")))?;
        let key = output.records_key(&format!("{name}.jsonl"));
        match staging.lines(&output.bucket, &key).await? {
            Some(mut lines) => {
                while let Some(line) = lines
                    .next_line()
                    .await
                    .map_err(|e| staging.staging_error(&key, e))?
                {
                    if line.trim().is_empty() {
                        continue;
                    }
                    match model.output_line(&line) {
                        Ok(record) => match record.outcome {
                            Ok(embedding) => {
                                tokens += embedding.input_tokens.unwrap_or(0);
                                vectors.insert(record.record_id, embedding.vector);
                            }
                            Err(e) => {
                                warn!(run = %run.id, part = %name, record = %record.record_id, error = %e, "a record in error: embedded on demand")
                            }
                        },
                        Err(e) => {
                            warn!(run = %run.id, part = %name, key = %key, error = %e, "an output line could not be read")
                        }
                    }
                }
            }
            None => {
                warn!(run = %run.id, part = %name, key = %key, "the job wrote no output for the part: embedded on demand")
            }
        }
    } else if let Ended::Job {
        arn,
        status,
        message,
    } = ended
    {
        warn!(run = %run.id, part = %name, job = %arn, status = status.as_str(), reason = message.unwrap_or("-"), "the job did not complete: its chunks are embedded on demand");
    } else if let Ended::NoJob(why) = ended {
        info!(run = %run.id, part = %name, records = run.parts[i].records, "{why}: the part's chunks are embedded on demand");
    }
    let key = loc.key(&run.id, &format!("messages/{name}.jsonl"));
    let mut lines = staging
        .lines(&loc.bucket, &key)
        .await?
        .ok_or_else(|| staging.staging_error(&key, "the part's messages are gone"))?;
    let limits = BatchLimits {
        max_payload_bytes,
        max_attempts: 5,
        delay_seconds: 0,
    };
    let send = async |bodies: Vec<String>| {
        send_all(queue, bodies, limits)
            .await
            .map_err(|source| RunError::Queue {
                part: name.clone(),
                source,
            })
    };
    let (mut from_batch, mut on_demand, mut sent) = (0, 0, 0);
    let mut bodies = Vec::new();
    let mut next = 0;
    while let Some(text) = lines
        .next_line()
        .await
        .map_err(|e| staging.staging_error(&key, e))?
    {
        let line = next;
        next += 1;
        if bodies.len() >= SEND_AT_ONCE {
            // Sent as they fill, in order: the part's vectors are never all in memory twice.
            sent += send(std::mem::take(&mut bodies)).await?.messages;
        }
        if text.trim().is_empty() {
            continue;
        }
        let mut message = ChunkMessage::parse(&text)
            .map_err(|e| staging.staging_error(&key, format!("line {}: {e}", line + 1)))?;
        if message.op != Operation::Index || message.chunks.is_empty() {
            // A sweep or a removal: as ingest made it.
            bodies.push(text);
            continue;
        }
        for (c, chunk) in message.chunks.iter_mut().enumerate() {
            if chunk.vector.is_some() {
                continue;
            }
            match vectors.get(&record_id(line, c)) {
                Some(vector) => {
                    chunk.vector = Some(CarriedVector::new(&run.model_id, vector));
                    from_batch += 1;
                }
                None => on_demand += 1,
            }
        }
        let mut packer = MessagePacker::requeued(
            &message.source,
            message.scope,
            message.requeues,
            max_payload_bytes,
        );
        for chunk in &message.chunks {
            let closed = packer
                .push(&MessagePacker::encode(chunk))
                .map_err(|e| staging.staging_error(&key, format!("line {}: {e}", line + 1)))?;
            bodies.extend(closed);
        }
        bodies.extend(packer.finish());
    }
    sent += send(bodies).await?.messages;
    let part = &mut run.parts[i];
    part.state = PartState::Collected;
    part.ended = Some(outcome);
    part.from_batch = from_batch;
    part.on_demand = on_demand;
    part.input_tokens = tokens;
    info!(run = %run.id, part = %name, from_batch, on_demand, messages = sent, "batch part collected onto the chunk queue");
    staging.save(run).await
}

/// Removes the run's input, message and output files; `run.json` stays as its record.
async fn clean<S: ObjectStore>(staging: &Staging<S>, run: &mut Run) -> Result<(), RunError> {
    let prefix = staging.location.key(&run.id, "");
    let mut after: Option<String> = None;
    let mut keys = Vec::new();
    loop {
        let page = staging
            .store
            .list(&staging.location.bucket, &prefix, after.as_deref())
            .await
            .map_err(|e| staging.staging_error(&prefix, e))?;
        keys.extend(
            page.objects
                .iter()
                .map(|o| o.key.clone())
                .filter(|k| !k.ends_with("/run.json")),
        );
        after = page.objects.last().map(|o| o.key.clone());
        if !page.truncated || after.is_none() {
            break;
        }
    }
    for key in &keys {
        staging
            .store
            .delete(&staging.location.bucket, key)
            .await
            .map_err(|e| staging.staging_error(key, e))?;
    }
    run.cleaned = true;
    info!(run = %run.id, files = keys.len(), "batch run done: its staging files removed");
    staging.save(run).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn staging_locations_read_as_a_bucket_and_a_folder() {
        let l = StagingLocation::parse("s3://stage/runs").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("stage", "runs/"));
        assert_eq!(
            l.uri("r1", "input/part-000001.jsonl"),
            "s3://stage/runs/r1/input/part-000001.jsonl"
        );
        let bare = StagingLocation::parse("s3://stage").unwrap();
        assert_eq!(bare.key("r1", "run.json"), "r1/run.json");
        assert!(StagingLocation::parse("stage/runs").is_err());
        assert!(StagingLocation::parse("s3:///runs").is_err());
    }

    #[test]
    fn record_ids_are_eleven_digits_and_unique_per_line_and_chunk() {
        assert_eq!(record_id(0, 0), "00000000000");
        assert_eq!(record_id(12, 3), "00000120003");
        assert_ne!(record_id(1, 10), record_id(11, 0));
        assert_eq!(record_id(9_999_999, 9_999).len(), 11);
    }

    fn ingest_config() -> IngestConfig {
        let vars = [
            ("CHUNK_QUEUE_URL", "q"),
            ("EMBEDDING_MODEL_ID", "amazon.titan-embed-text-v2:0"),
            ("EMBEDDING_DIMENSIONS", "256"),
        ];
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        IngestConfig::from_env(&mut crate::config::Env::from_map(vars.collect())).unwrap()
    }

    #[tokio::test]
    async fn a_backfill_is_staged_as_parts_of_whole_messages_with_a_record_per_chunk() {
        use crate::test_util::MemoryStore;
        let source = MemoryStore::default();
        for object in 0..3 {
            let body: String = (0..40)
                .map(|i| {
                    format!(
                        "{{\"id\":\"o{object}r{i}\",\"text\":\"record {i} of object {object}\"}}\n"
                    )
                })
                .collect();
            source
                .put("docs", &format!("in/{object}.jsonl"), body.into_bytes())
                .await
                .unwrap();
        }
        let config = ingest_config();
        let model = BatchModel::new(config.model.clone()).unwrap();
        let staging = Staging::new(
            MemoryStore::default(),
            StagingLocation::parse("s3://stage/runs/").unwrap(),
        );
        let mut settings = BatchSettings::new(staging.location.clone(), "arn:role");
        settings.max_records_per_job = 50;
        let run = Run::new("r1", "s3://docs/in/", &model.model().id);
        let (run, summary) = stage(
            source,
            &staging,
            config,
            model,
            run,
            &settings,
            ("docs", "in/"),
        )
        .await
        .unwrap();
        assert_eq!((summary.objects, summary.records), (3, 120));
        assert!(run.staged);
        // Whole messages (an object's 40 records each, here), never more than 50 records a part.
        assert_eq!(
            run.parts
                .iter()
                .map(|p| (p.messages, p.records))
                .collect::<Vec<_>>(),
            [(1, 40), (1, 40), (1, 40)]
        );
        // The run's state and each part's two files are on the staging store.
        assert_eq!(staging.load("r1").await.unwrap().as_ref(), Some(&run));
        let objects = staging.store.objects.lock().unwrap().clone();
        let file = |name: &str| {
            String::from_utf8(objects[&("stage".to_string(), format!("runs/r1/{name}"))].clone())
                .unwrap()
        };
        let input = file("input/part-000001.jsonl");
        let messages = file("messages/part-000001.jsonl");
        let first: Value = serde_json::from_str(input.lines().next().unwrap()).unwrap();
        assert_eq!(first["recordId"], record_id(0, 0));
        assert_eq!(first["modelInput"]["dimensions"], 256);
        let message = ChunkMessage::parse(messages.lines().next().unwrap()).unwrap();
        assert_eq!(
            first["modelInput"]["inputText"],
            message.chunks[0].text.as_str()
        );
        assert_eq!(input.lines().count() as u64, run.parts[0].records);
        // Each message a line, in the order ingest sent them.
        assert_eq!(messages.lines().count() as u64, run.parts[0].messages);
    }

    #[test]
    fn a_run_counts_what_its_parts_did() {
        let mut run = Run::new("r", "s3://docs/", "amazon.titan-embed-text-v2:0");
        run.staged = true;
        for (state, records) in [
            (PartState::Collected, 100),
            (PartState::Submitted, 50),
            (PartState::Staged, 25),
        ] {
            run.parts.push(Part {
                name: format!("p{records}"),
                messages: 10,
                records,
                state,
                job: None,
                ended: None,
                from_batch: if state == PartState::Collected { 97 } else { 0 },
                on_demand: if state == PartState::Collected { 3 } else { 0 },
                input_tokens: 0,
            });
        }
        let p = run.progress();
        assert_eq!(
            (p.records, p.records_done, p.from_batch, p.on_demand),
            (175, 100, 97, 3)
        );
        assert_eq!((p.jobs_done, p.jobs_running, p.jobs_waiting), (1, 1, 1));
        assert!(!run.is_done());
        assert!(
            run.describe().contains("100 of 175 records collected"),
            "{}",
            run.describe()
        );
        let json = serde_json::to_string(&run).unwrap();
        assert_eq!(serde_json::from_str::<Run>(&json).unwrap(), run);
    }
}
