//! The commands that walk the bucket from a shell: `sakuin reconcile` and `sakuin backfill`.
//! Results go to stdout, progress and problems to stderr.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use sakuin::config::{Env, IngestConfig};
use sakuin::embed::bedrock::BedrockEmbedder;
use sakuin::ingest::{Continuation, QueueContinuation};
use sakuin::probe::ProbeDeps;
use sakuin::queue::SqsQueue;
use sakuin::store::S3Store;
use sakuin::survey::survey_object;
use serde_json::{Value, json};

use crate::backfill::{
    Bar, Estimate, Mode, Options, Progress, SAMPLE_BYTES_PER_OBJECT, Sample, Sampler, count_tokens,
    duration, thousands, written_since,
};
use crate::batch::{self, BatchContext, BatchEnv};
use sakuin::reconcile::{Kind, Reconciler, Report, Scope, intake, walking_client};

/// What every walking command needs: the probe's dependencies, the scope, a client for walks.
struct Walk {
    deps: ProbeDeps,
    scope: Scope,
    es: sakuin::es::EsClient,
    store: S3Store,
}

async fn walk(env: &mut Env, target: Option<&str>) -> Result<Walk, String> {
    let deps = ProbeDeps::from_env(env).await.map_err(|e| e.to_string())?;
    if deps.config.es.use_ssl && !deps.config.es.verify_certs {
        eprintln!(
            "sakuin: warning: ES_VERIFY_CERTS=false, the cluster's certificate is NOT verified"
        );
    }
    let scope = Scope::from_env(env, target)?;
    let es = walking_client(&deps, env)?;
    let store = S3Store::new(deps.aws.s3.clone());
    Ok(Walk {
        deps,
        scope,
        es,
        store,
    })
}

/// A line on stderr redrawn in place while a walk runs, on a terminal only.
fn walking(report: &Report) {
    let mut err = std::io::stderr().lock();
    if err.is_terminal() {
        let _ = write!(
            err,
            "\r\x1b[2Kcompared {} objects ({} differ) in {:.0} s",
            thousands(report.objects),
            thousands(report.drifted()),
            report.seconds
        );
        let _ = err.flush();
    }
}

fn done_walking() {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
}

/// `sakuin reconcile`: exit 0 when the index equals the bucket or every repair was queued, 1
/// when drift is left (or the walk failed), 2 for a configuration error.
pub(crate) async fn reconcile(env: &mut Env, target: Option<&str>, fix: bool, json: bool) -> i32 {
    let w = match walk(env, target).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("sakuin: {e}");
            return 2;
        }
    };
    let queue = match fix.then(|| intake(&w.deps)).transpose() {
        Ok(q) => q,
        Err(e) => {
            eprintln!("sakuin: {e}");
            return 2;
        }
    };
    match compare_with_bucket(&w, &w.es, queue.as_ref()).await {
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("the report serialises")
                );
            } else {
                print!("{}", report.render());
            }
            if report.drifted() > 0 && !fix { 1 } else { 0 }
        }
        Err(e) => {
            eprintln!("sakuin: {e}");
            1
        }
    }
}

/// `sakuin backfill`: the estimate; with `--yes` the backfill, followed until the queues drain.
pub(crate) async fn backfill(env: &mut Env, target: Option<&str>, mut options: Options) -> i32 {
    if options.bulk_load && (options.detach || !options.start) {
        eprintln!(
            "sakuin: --bulk-load needs --yes and the backfill followed to its end (no --detach): the index's settings are restored when the queues drain"
        );
        return 2;
    }
    if options.bulk_load && (options.mode != Mode::OnDemand || options.resume.is_some()) {
        eprintln!(
            "sakuin: --bulk-load is for on-demand backfills, which the command follows to the end"
        );
        return 2;
    }
    // A batch run's settings; `auto` without them stays on demand.
    let batch_env = if options.mode == Mode::OnDemand && options.resume.is_none() {
        None
    } else {
        match BatchEnv::from_env(env) {
            Ok(b) => Some(b),
            Err(e) if options.mode == Mode::Auto && options.resume.is_none() => {
                eprintln!("sakuin: --mode auto stays on demand: {e}");
                None
            }
            Err(e) => {
                eprintln!("sakuin: {e}");
                return 2;
            }
        }
    };
    if let Some(b) = &batch_env {
        options.batch_records_per_job = b.settings.max_records_per_job;
        options.batch_jobs_in_flight = b.settings.max_jobs_in_flight;
    }
    let lease = Duration::from_secs(env.parse::<u64>("BULK_LOAD_LEASE_SECS", 600).max(5));
    // The index as embed-index would create it, for bulk-load mode to apply to from the start.
    let vectors = env.vector_settings();
    let (w, config, queue) = match backfill_setup(env, target, &options).await {
        Ok(set) => set,
        Err(e) => {
            eprintln!("sakuin: {e}");
            return 2;
        }
    };
    if let (Some(id), Some(benv)) = (&options.resume, &batch_env) {
        let ctx = batch_context(&w, config);
        return batch::resume(ctx, benv, id, options.detach, options.json).await;
    }
    let estimate = match estimate(&w, &config, &options).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("sakuin: {e}");
            return 1;
        }
    };
    let Some(queue) = queue else {
        print_estimate_only(&estimate, &options);
        return 0;
    };
    if !options.json {
        print!("{}", estimate.render());
    }
    let by_batch =
        options
            .mode
            .picks_batch(estimate.chunks, options.batch_above, &w.deps.config.model);
    match (by_batch, &batch_env) {
        (Err(e), _) => {
            eprintln!("sakuin: {e}");
            return 2;
        }
        (Ok(true), Some(benv)) => {
            let ctx = batch_context(&w, config);
            return batch::start(ctx, benv, options.detach, options.json).await;
        }
        _ => {}
    }
    let bulk_load = if options.bulk_load {
        match BulkLoadMode::start(&w, &vectors, lease).await {
            Ok(mode) => Some(mode),
            Err(e) => {
                eprintln!("sakuin: bulk-load mode could not be turned on: {e}");
                return 1;
            }
        }
    } else {
        None
    };
    let code = match start_backfill(&w, &queue).await {
        Ok(_) if options.detach => {
            print_detached(&w, &estimate, &options);
            0
        }
        Ok((since, started)) => {
            tokio::select! {
                code = follow_to_the_end(&w, &estimate, &since, started, &options) => code,
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("sakuin: interrupted; the backfill goes on (`sakuin status` follows it)");
                    130
                }
            }
        }
        Err(e) => {
            eprintln!("sakuin: {e}");
            1
        }
    };
    match bulk_load {
        Some(mode) => mode.end(&w).await.map_or(1, |()| code),
        None => code,
    }
}

/// What a batch run reads with: the walk's scope and clients, ingest's settings.
fn batch_context(w: &Walk, config: IngestConfig) -> BatchContext<'_> {
    BatchContext {
        bucket: &w.scope.bucket,
        prefix: &w.scope.prefix,
        source: w.scope.url(),
        store: w.store.clone(),
        sqs: w.deps.aws.sqs.clone(),
        bedrock: w.deps.aws.batch.clone(),
        config,
    }
}

/// Bulk-load mode for the length of a followed backfill: on before the first chunk is queued,
/// its lease renewed meanwhile, and off at the end whatever the outcome.
struct BulkLoadMode {
    renewal: tokio::task::JoinHandle<()>,
}

impl BulkLoadMode {
    async fn start(
        w: &Walk,
        vectors: &sakuin::es::VectorSettings,
        lease: Duration,
    ) -> Result<Self, String> {
        let model = &w.deps.config.model;
        w.es.ensure_index(model.dimensions, vectors, &model.id)
            .await
            .map_err(|e| e.to_string())?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "this machine".into());
        let by = format!(
            "`sakuin backfill {}` on {host}, pid {}",
            w.scope.url(),
            std::process::id()
        );
        let record =
            w.es.start_bulk_load(&by, lease)
                .await
                .map_err(|e| e.to_string())?;
        eprintln!(
            "bulk-load mode on for {}: refresh_interval -1 and 0 replicas until the queues drain",
            w.es.index
        );
        let es = w.es.clone();
        let renewal = tokio::spawn(async move {
            let mut record = record;
            loop {
                tokio::time::sleep(lease / 3).await;
                match es.renew_bulk_load(&record, lease).await {
                    Ok(renewed) => record = renewed,
                    Err(e) => eprintln!("sakuin: renewing bulk-load mode's lease: {e}"),
                }
            }
        });
        Ok(Self { renewal })
    }

    /// Restores the index's settings; an error says how to restore them by hand.
    async fn end(self, w: &Walk) -> Result<(), ()> {
        // Stopped before the end, so no renewal writes the record back after it.
        self.renewal.abort();
        let _ = self.renewal.await;
        match w.es.end_bulk_load().await {
            Ok(_) => {
                eprintln!(
                    "bulk-load mode off for {}: its refresh_interval and replicas restored",
                    w.es.index
                );
                Ok(())
            }
            Err(e) => {
                eprintln!(
                    "sakuin: restoring {} after bulk-load mode: {e}; the scheduled probe restores it once the lease runs out",
                    w.es.index
                );
                Err(())
            }
        }
    }
}

/// A value on stdout as pretty JSON.
fn print_json(value: Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(&value).expect("serialises")
    );
}

/// The estimate of a backfill that was not asked to start, and how to start it.
fn print_estimate_only(estimate: &Estimate, options: &Options) {
    if options.json {
        print_json(json!({ "estimate": estimate }));
    } else {
        print!("{}", estimate.render());
        println!("Nothing was queued: add --yes to start it.");
    }
}

/// Puts the backfill's request on the intake queue; returns the time from which chunks
/// refreshed or written are the backfill's, and when it started.
async fn start_backfill(
    w: &Walk,
    queue: &QueueContinuation<SqsQueue>,
) -> Result<(String, Instant), String> {
    // A minute of leeway for the clocks of this machine and Lambda's.
    let since = (chrono::Utc::now() - chrono::Duration::seconds(60))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let started = Instant::now();
    let request = json!({"backfill": {"bucket": w.scope.bucket, "prefix": w.scope.prefix}});
    queue.hand_over(request).await?;
    Ok((since, started))
}

/// What a backfill left running says: the estimate, or where to watch it.
fn print_detached(w: &Walk, estimate: &Estimate, options: &Options) {
    if options.json {
        print_json(json!({"estimate": estimate, "started": true}));
    } else {
        let url = w.scope.url();
        println!("Backfill of {url} queued; `sakuin status` shows the queues drain.");
    }
}

/// Follows the backfill until the queues drain and prints what it did against the estimate;
/// returns the exit status.
async fn follow_to_the_end(
    w: &Walk,
    estimate: &Estimate,
    since: &str,
    started: Instant,
    options: &Options,
) -> i32 {
    match follow(w, estimate, since, options.bulk_load).await {
        Ok(progress) => {
            let seconds = started.elapsed().as_secs_f64();
            if options.json {
                print_json(json!({"estimate": estimate, "actual": progress, "seconds": seconds}));
            } else {
                print!("{}", render_done(w, estimate, &progress, seconds));
            }
            0
        }
        Err(e) => {
            eprintln!("sakuin: {e} (the backfill goes on; `sakuin status` follows it)");
            1
        }
    }
}

/// What a backfill needs before it estimates: the listing's scope and clients, ingest's
/// settings (the reader's and chunker's), and the intake queue when it is to start.
async fn backfill_setup(
    env: &mut Env,
    target: Option<&str>,
    options: &Options,
) -> Result<(Walk, IngestConfig, Option<QueueContinuation<SqsQueue>>), String> {
    let w = walk(env, target).await.map_err(|e| e.to_string())?;
    let mut config = IngestConfig::from_env(env).map_err(|e| e.to_string())?;
    // While a model switch runs, what a backfill embeds is the new index's: the current one
    // finds its chunks unchanged. Its estimate and a batch run are of the new model.
    if let Ok(sakuin::es::migration::Routing {
        migration: Some(m), ..
    }) = w.es.routing().await
    {
        let model = sakuin::embed::model::EmbeddingModel::resolve(&m.model, Some(m.dimensions))
            .map_err(|e| format!("the migration's model: {e}"))?;
        eprintln!(
            "sakuin: a migration to {} is under way: the backfill fills {} with it (the current index finds its chunks unchanged)",
            m.model, m.to
        );
        config.model = model;
    }
    let queue = options.start.then(|| intake(&w.deps)).transpose()?;
    Ok((w, config, queue))
}

/// The summary of a finished backfill, against its estimate.
fn render_done(w: &Walk, estimate: &Estimate, progress: &Progress, seconds: f64) -> String {
    format!(
        "done in {}: {} objects, {} records, {} chunks written or refreshed (estimated: {} records, {} chunks)\n\
         Every object read now holds exactly its current chunks under the current settings. A backfill reads what the bucket holds: \
         documents of objects that left it while no notification reached the pipeline are not removed by it — \
         `sakuin reconcile {} --fix` finds and removes them.\n",
        duration(Duration::from_secs_f64(seconds)),
        thousands(progress.objects),
        thousands(progress.records),
        thousands(progress.chunks),
        thousands(estimate.records),
        thousands(estimate.chunks),
        w.scope.url()
    )
}

/// Walks the listing, samples the objects to ingest, and reads the sample.
async fn estimate(w: &Walk, config: &IngestConfig, options: &Options) -> Result<Estimate, String> {
    let mut sampler = Sampler::new(options.sample, 0x005a_6b1d);
    let reconciler: Reconciler<
        '_,
        S3Store,
        sakuin::ingest::QueueContinuation<sakuin::queue::SqsQueue>,
    > = Reconciler {
        store: &w.store,
        es: &w.es,
        fix: None,
        stop_at: None,
    };
    let report = reconciler
        .run(&w.scope, &mut |report, outcome| {
            walking(report);
            for d in &outcome.drift {
                if d.kind != Kind::Orphaned && d.size > 0 {
                    sampler.offer(d.size, d.key.clone(), d.etag.clone());
                }
            }
        })
        .await;
    done_walking();
    let report = report?;
    let mut sample = Sample::default();
    for (size, key, etag, among_largest) in sampler.chosen() {
        match survey_object(
            &w.store,
            config,
            &w.scope.bucket,
            &key,
            etag.as_deref(),
            SAMPLE_BYTES_PER_OBJECT,
        )
        .await
        {
            Ok(s) => sample.add(size, s, among_largest),
            Err(e) => eprintln!(
                "sakuin: the sample skips s3://{}/{key}: {e}",
                w.scope.bucket
            ),
        }
    }
    let extrapolated = sample.extrapolate(report.bytes_to_ingest);
    // Tokens as the model counts them, from a few of the sample's chunks.
    let embedder = BedrockEmbedder::new(w.deps.aws.bedrock.clone(), config.model.clone());
    let counted = match count_tokens(&embedder, &extrapolated.texts).await {
        Ok(count) => Some(count),
        Err(e) if report.bytes_to_ingest > 0 => {
            eprintln!(
                "sakuin: tokens estimated from characters; {} did not count a sample: {e}",
                config.model.id
            );
            None
        }
        Err(_) => None,
    };
    let estimate = Estimate::from_sample(
        &report,
        &extrapolated,
        sample.objects,
        &config.model,
        options,
        counted,
    );
    Ok(Estimate {
        sampled_bytes: sample.read,
        ..estimate
    })
}

/// Follows the backfill until the intake and chunk queues have stayed empty for three readings
/// in a row and the index stopped changing.
/// In bulk-load mode nothing is searchable until a refresh: the index is refreshed every
/// `BULK_LOAD_REFRESH` for the progress shown, and at every look once the queues are empty, so
/// the end is judged on what was written.
async fn follow(
    w: &Walk,
    estimate: &Estimate,
    since: &str,
    bulk_load: bool,
) -> Result<Progress, String> {
    const BULK_LOAD_REFRESH: Duration = Duration::from_secs(30);
    let mut refreshed = Instant::now();
    let bar = Bar::new();
    let queues: Vec<&String> = [&w.deps.config.intake_queue_url, &w.deps.config.queue_url]
        .into_iter()
        .flatten()
        .collect();
    let mut quiet = 0;
    let mut last = Progress::default();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut queued = 0;
        for url in &queues {
            let d = crate::status::depth(&w.deps.aws.sqs, url)
                .await
                .map_err(|e| format!("reading {url}: {e}"))?;
            queued += d.waiting + d.in_flight + d.delayed;
        }
        if bulk_load && (queued == 0 || refreshed.elapsed() >= BULK_LOAD_REFRESH) {
            w.es.refresh().await.map_err(|e| e.to_string())?;
            refreshed = Instant::now();
        }
        let (objects, records, chunks) =
            written_since(&w.es, &w.scope.bucket, &w.scope.prefix, since).await?;
        let progress = Progress {
            objects,
            records,
            chunks,
            queued,
        };
        bar.draw(&progress, estimate);
        quiet = if queued == 0 && progress == last {
            quiet + 1
        } else {
            0
        };
        last = progress;
        if quiet >= 3 {
            // The end: the bar full at what was actually done.
            let done = Estimate {
                records: progress.records,
                ..estimate.clone()
            };
            bar.draw(&progress, &done);
            bar.finish();
            return Ok(progress);
        }
    }
}

/// What `sakuin migrate` does.
#[derive(Debug, Clone, PartialEq, clap::Subcommand)]
pub enum MigrateAction {
    /// Create the new model's index and record the migration: within 30 s embed-index writes
    /// every batch to both indices. Then run `sakuin backfill --yes` to fill the new one.
    Start {
        /// The new model (EMBEDDING_MODEL_ID's values).
        #[arg(long)]
        model: String,
        /// Its output size, for a model that offers several.
        #[arg(long)]
        dimensions: Option<usize>,
    },
    /// The migration under way, and the new index against the bucket (exit 1 while they
    /// differ); with --fix, queue what the new index lacks.
    Status {
        /// s3://bucket/prefix (default: SOURCE_BUCKET and SOURCE_PREFIX).
        #[arg(value_name = "S3_URL")]
        target: Option<String>,
        #[arg(long)]
        fix: bool,
    },
    /// Move the alias to the new index, once `status` finds it equal to the bucket.
    Swap {
        /// s3://bucket/prefix (default: SOURCE_BUCKET and SOURCE_PREFIX).
        #[arg(value_name = "S3_URL")]
        target: Option<String>,
    },
    /// Delete the former index (only one the alias has left).
    RemoveOld {
        /// The former index, as `swap` named it.
        index: String,
    },
}

/// `sakuin migrate`.
pub(crate) async fn migrate(env: &mut Env, action: MigrateAction) -> i32 {
    let vectors = env.vector_settings();
    let target = match &action {
        MigrateAction::Status { target, .. } | MigrateAction::Swap { target } => target.clone(),
        _ => None,
    };
    let w = match walk(env, target.as_deref()).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("sakuin: {e}");
            return 2;
        }
    };
    let es = &w.es;
    match action {
        MigrateAction::Start { model, dimensions } => {
            let model = match sakuin::embed::model::EmbeddingModel::resolve(&model, dimensions) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("sakuin: {e}");
                    return 2;
                }
            };
            match es
                .start_migration(&model.id, model.dimensions, &vectors)
                .await
            {
                Ok(m) => {
                    println!("{}", m.describe());
                    println!(
                        "embed-index writes every batch to both indices within 30 s. Then fill {} \
                         (the current index finds its chunks unchanged: only {} is called):\n  \
                         sakuin backfill {} --yes\n\
                         check it against the bucket (--fix queues what it lacks):\n  \
                         sakuin migrate status {}\n\
                         and move the alias once they are equal:\n  \
                         sakuin migrate swap {}",
                        m.to,
                        m.model,
                        w.scope.url(),
                        w.scope.url(),
                        w.scope.url()
                    );
                    0
                }
                Err(e) => {
                    eprintln!("sakuin: {e}");
                    1
                }
            }
        }
        MigrateAction::Status { fix, .. } => match under_way(es).await {
            Ok(m) => {
                println!("{}", m.describe());
                match compare_new_index(&w, &m, fix).await {
                    Ok(report) => {
                        print!("{}", report.render());
                        if report.drifted() == 0 && report.complete {
                            println!(
                                "{} equals the bucket: `sakuin migrate swap` moves the alias",
                                m.to
                            );
                            0
                        } else {
                            1
                        }
                    }
                    Err(e) => {
                        eprintln!("sakuin: {e}");
                        1
                    }
                }
            }
            Err(e) => {
                eprintln!("sakuin: {e}");
                1
            }
        },
        MigrateAction::Swap { .. } => {
            let m = match under_way(es).await {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("sakuin: {e}");
                    return 1;
                }
            };
            match compare_new_index(&w, &m, false).await {
                Ok(report) if report.drifted() == 0 && report.complete => {}
                Ok(report) => {
                    print!("{}", report.render());
                    eprintln!(
                        "sakuin: {} does not equal the bucket yet ({} objects differ): nothing moved; `sakuin migrate status --fix` queues what it lacks",
                        m.to,
                        report.drifted()
                    );
                    return 1;
                }
                Err(e) => {
                    eprintln!("sakuin: {e}");
                    return 1;
                }
            }
            match es.swap_migration(&m).await {
                Ok(done) => {
                    println!("{}", done.describe());
                    println!(
                        "search now reads {} with {}; embed-index follows within 30 s. Set the stack's EmbeddingModelId to {} at the next deploy.",
                        done.to, done.model, done.model
                    );
                    0
                }
                Err(e) => {
                    eprintln!("sakuin: {e}");
                    1
                }
            }
        }
        MigrateAction::RemoveOld { index } => match es.remove_former_index(&index).await {
            Ok(m) => {
                println!(
                    "deleted {index} (migrated to {} at {})",
                    m.to,
                    m.swapped.as_deref().unwrap_or("?")
                );
                0
            }
            Err(e) => {
                eprintln!("sakuin: {e}");
                1
            }
        },
    }
}

/// The migration under way, or why there is none.
async fn under_way(es: &sakuin::es::EsClient) -> Result<sakuin::es::migration::Migration, String> {
    let routing = es.routing().await.map_err(|e| e.to_string())?;
    routing.migration.ok_or_else(|| {
        format!(
            "no migration of {} is under way (it names {}{})",
            es.index,
            routing.indices.join(", "),
            routing
                .model
                .map(|m| format!(", holding {} with {} dimensions", m.model, m.dimensions))
                .unwrap_or_default()
        )
    })
}

/// The migration's new index compared with the bucket, as `reconcile` compares; with `fix`,
/// what it lacks queued on the intake queue (embed-index writes both indices meanwhile).
async fn compare_new_index(
    w: &Walk,
    m: &sakuin::es::migration::Migration,
    fix: bool,
) -> Result<Report, String> {
    let queue = fix.then(|| intake(&w.deps)).transpose()?;
    compare_with_bucket(w, &w.es.for_index(&m.to), queue.as_ref()).await
}

/// The walk's scope of the bucket compared with `es`'s index, as `reconcile` compares, with a
/// line of progress on a terminal; what drifted is queued on `fix` when given.
async fn compare_with_bucket(
    w: &Walk,
    es: &sakuin::es::EsClient,
    fix: Option<&QueueContinuation<SqsQueue>>,
) -> Result<Report, String> {
    let reconciler = Reconciler {
        store: &w.store,
        es,
        fix,
        stop_at: None,
    };
    let result = reconciler
        .run(&w.scope, &mut |report, _| walking(report))
        .await;
    done_walking();
    result.map_err(|e| e.to_string())
}
