//! `sakuin backfill --mode batch`: the backfill's chunks embedded by Bedrock batch inference
//! ([`sakuin::batch`]). The objects are read and cut here, with ingest's own code, into a run's
//! staged parts; jobs are submitted within the in-flight limit and followed; each ended job's
//! vectors go onto the chunk queue in the chunk messages, for embed-index to index. Whatever
//! stops the command, `sakuin backfill --resume RUN` goes on from the run's state on S3.

use std::time::Duration;

use sakuin::aws::bedrock_batch::BedrockBatch;
use sakuin::aws::bedrock_batch::records::BatchModel;
use sakuin::batch::{BatchSettings, Run, Runner, Staging, StagingLocation, advance, stage};
use sakuin::config::{Env, IngestConfig};
use sakuin::queue::SqsQueue;
use sakuin::store::S3Store;
use serde_json::json;

/// The run's settings from the environment (the deployed probe function's, with `--stack`).
pub struct BatchEnv {
    pub settings: BatchSettings,
    /// Between two looks at the jobs while following a run.
    pub poll: Duration,
}

impl BatchEnv {
    pub fn from_env(env: &mut Env) -> Result<Self, String> {
        let staging = env.get("BATCH_STAGING").ok_or(
            "--mode batch needs BATCH_STAGING (s3://bucket/prefix/ where the run's files go: the stack's BatchStagingUri output)",
        )?;
        let role = env.get("BATCH_ROLE_ARN").ok_or(
            "--mode batch needs BATCH_ROLE_ARN (the role Bedrock assumes for the jobs: the stack's BatchRoleArn output)",
        )?;
        let mut settings = BatchSettings::new(StagingLocation::parse(&staging)?, role);
        let (per_job, least, in_flight) = (
            BatchSettings::DEFAULT_MAX_RECORDS_PER_JOB,
            BatchSettings::DEFAULT_MIN_RECORDS_PER_JOB,
            BatchSettings::DEFAULT_MAX_JOBS_IN_FLIGHT,
        );
        settings.max_records_per_job = env.parse("BATCH_MAX_RECORDS_PER_JOB", per_job);
        settings.min_records_per_job = env.parse("BATCH_MIN_RECORDS_PER_JOB", least);
        settings.max_jobs_in_flight = env.parse("BATCH_MAX_JOBS_IN_FLIGHT", in_flight).max(1);
        settings.timeout_hours = env.optional("BATCH_TIMEOUT_HOURS");
        let poll = Duration::from_secs(env.parse::<u64>("BATCH_POLL_SECS", 60).max(1));
        Ok(Self { settings, poll })
    }
}

/// What a batch run needs from the walk: where it reads, the clients, ingest's settings.
pub struct BatchContext<'a> {
    pub bucket: &'a str,
    pub prefix: &'a str,
    pub source: String,
    pub store: S3Store,
    pub sqs: aws_sdk_sqs::Client,
    pub bedrock: BedrockBatch,
    pub config: IngestConfig,
}

/// The model's batch form, the run's files and the chunk queue; `Err` is the exit status.
fn open(
    ctx: &BatchContext<'_>,
    env: &BatchEnv,
) -> Result<(BatchModel, Staging<S3Store>, SqsQueue), i32> {
    let model = BatchModel::new(ctx.config.model.clone()).map_err(|e| {
        eprintln!("sakuin: {e}");
        2
    })?;
    let staging = Staging::new(ctx.store.clone(), env.settings.staging.clone());
    let queue = SqsQueue::new(ctx.sqs.clone(), ctx.config.queue_url.clone());
    Ok((model, staging, queue))
}

/// Stages a new run and follows it (unless `detach`); returns the exit status.
pub async fn start(ctx: BatchContext<'_>, env: &BatchEnv, detach: bool, json: bool) -> i32 {
    let (model, staging, queue) = match open(&ctx, env) {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let run = Run::new(
        Run::new_id(chrono::Utc::now()),
        ctx.source.clone(),
        &model.model().id,
    );
    if let Err(e) = staging.save(&run).await {
        eprintln!("sakuin: {e}");
        return 1;
    }
    eprintln!(
        "batch run {}: reading {} with ingest's reader and chunker into {}",
        run.id, ctx.source, env.settings.staging
    );
    let staged = stage(
        ctx.store.clone(),
        &staging,
        ctx.config.clone(),
        model.clone(),
        run.clone(),
        &env.settings,
        (ctx.bucket, ctx.prefix),
    )
    .await;
    let (run, summary) = match staged {
        Ok(done) => done,
        Err(e) => {
            eprintln!(
                "sakuin: staging batch run {}: {e} (nothing was submitted; start the backfill again)",
                run.id
            );
            return 1;
        }
    };
    eprintln!(
        "batch run {}: {} objects, {} records, {} chunks in {} parts",
        run.id,
        summary.objects,
        summary.records,
        summary.chunks,
        run.parts.len()
    );
    follow(&ctx, env, &staging, &queue, &model, run, detach, json).await
}

/// Goes on with run `id`; returns the exit status.
pub async fn resume(
    ctx: BatchContext<'_>,
    env: &BatchEnv,
    id: &str,
    detach: bool,
    json: bool,
) -> i32 {
    let (model, staging, queue) = match open(&ctx, env) {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let run = match staging.load(id).await {
        Ok(Some(run)) => run,
        Ok(None) => {
            eprintln!("sakuin: no batch run {id} under {}", env.settings.staging);
            return 2;
        }
        Err(e) => {
            eprintln!("sakuin: {e}");
            return 1;
        }
    };
    if run.model_id != model.model().id {
        eprintln!(
            "sakuin: batch run {id} embeds with {}, the pipeline with {}: its vectors would not match the index",
            run.model_id,
            model.model().id
        );
        return 2;
    }
    if !run.staged {
        eprintln!(
            "sakuin: batch run {id} stopped while staging; nothing of it was submitted: start the backfill again"
        );
        return 1;
    }
    follow(&ctx, env, &staging, &queue, &model, run, detach, json).await
}

/// Advances the run until every part is collected (or once, with `detach`).
#[allow(clippy::too_many_arguments)]
async fn follow(
    ctx: &BatchContext<'_>,
    env: &BatchEnv,
    staging: &Staging<S3Store>,
    queue: &SqsQueue,
    model: &BatchModel,
    mut run: Run,
    detach: bool,
    json: bool,
) -> i32 {
    let runner = Runner {
        staging,
        bedrock: &ctx.bedrock,
        queue,
        settings: &env.settings,
        model,
        max_payload_bytes: ctx.config.sqs_max_payload_bytes,
    };
    let mut last = String::new();
    loop {
        let step = advance(&runner, &mut run);
        let result = tokio::select! {
            r = step => r,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("sakuin: interrupted; the jobs go on: `sakuin backfill --resume {}` collects them", run.id);
                return 130;
            }
        };
        if let Err(e) = result {
            eprintln!(
                "sakuin: batch run {}: {e} (its state is kept: `sakuin backfill --resume {}` goes on)",
                run.id, run.id
            );
            return 1;
        }
        let line = run.describe();
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        if run.cleaned || detach {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(env.poll) => {}
            _ = tokio::signal::ctrl_c() => {
                eprintln!("sakuin: interrupted; the jobs go on: `sakuin backfill --resume {}` collects them", run.id);
                return 130;
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"run": run, "progress": run.progress()}))
                .expect("serialises")
        );
    } else if run.cleaned {
        let p = run.progress();
        println!(
            "batch run {} collected: {} chunks embedded by batch inference, {} left to embed on demand; embed-index indexes them from the chunk queue (`sakuin status` shows it drain)",
            run.id, p.from_batch, p.on_demand
        );
    } else {
        println!(
            "batch run {} submitted; `sakuin backfill --resume {}` follows and collects it",
            run.id, run.id
        );
    }
    0
}
