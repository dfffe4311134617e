//! The `sakuin` command line: the probe's checks, a semantic search over the index and the
//! dead-letter redrive, run from a shell (an EC2 instance in the Lambda subnets, or a laptop)
//! with the Lambdas' variables.

pub mod backfill;
mod batch;
mod cli;
pub mod redrive;
pub mod stack;
pub mod status;

use sakuin::config::{Env, RedriveConfig};
use sakuin::embed::bedrock::BedrockEmbedder;
use sakuin::es::client::Hit;
use sakuin::probe::{self, ProbeDeps, ProbeReport};
use sakuin::reconcile;
use sakuin::search::{Found, Fusion, Ranked};
use serde_json::{Value, json};

/// The variables the commands read, shown under every `--help`.
const CONFIGURATION: &str = "\
Configuration: the same environment variables as the Lambda functions (or, with --stack NAME,
the deployed probe function's; a variable the shell sets explicitly still wins):
  ES_HOST, ES_PORT, ES_USE_SSL, ES_VERIFY_CERTS, ES_CA_CERT, ES_INDEX, ES_SECRET_ID (or
  ES_API_KEY, or ES_USERNAME and ES_PASSWORD), ES_CLIENT_CERT and ES_CLIENT_KEY,
  ES_TIMEOUT_SECS, ES_CONNECT_TIMEOUT_SECS,
  EMBEDDING_MODEL_ID, EMBEDDING_DIMENSIONS, SOURCE_BUCKET, SOURCE_PREFIX, REJECTS_PREFIX,
  CHUNK_QUEUE_URL, DEAD_LETTER_QUEUE_URL, INGEST_QUEUE_URL, INGEST_DEAD_LETTER_QUEUE_URL,
  PROBE_TIMEOUT_SECS, PROBE_REQUIRED_CHECKS, PROBE_CERT_WARN_DAYS, and the AWS SDK's own
  (AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL_*, ...).

Exit status: 0 when all is well, 1 when something needs a person (a failed check, drift left
unrepaired, a dead letter, a move that failed), 2 for a usage or configuration error.";

/// sakuin: check the path to Elasticsearch and the other dependencies, see where the pipeline
/// stands, search the index, backfill a prefix, find and repair drift, or redrive dead letters.
#[derive(Debug, Clone, PartialEq, clap::Parser)]
#[command(name = "sakuin", version, after_long_help = CONFIGURATION, max_term_width = 100)]
pub struct Cli {
    /// Read the configuration from the deployed stack NAME instead of the variables: the probe
    /// function's variables, found by the tags CloudFormation puts on it, in the Region of the
    /// AWS SDK's configuration. Needs lambda:ListFunctions and lambda:ListTags, and what the
    /// command itself reads.
    #[arg(long, global = true, value_name = "NAME")]
    pub stack: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, clap::Subcommand)]
pub enum Command {
    /// Run the probe's checks and print a table (or the report the Lambda returns).
    ///
    /// Exit status 0 when every required check passed (PROBE_REQUIRED_CHECKS), 1 when one failed.
    Probe {
        /// Groups (elasticsearch, s3, sqs, bedrock, secretsmanager) or check names, comma
        /// separated; default: every configured group.
        #[arg(long, short = 'c', value_delimiter = ',', value_name = "LIST")]
        checks: Vec<String>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Where the pipeline stands, on one screen.
    ///
    /// What each queue holds (waiting, in flight, delayed) and each dead-letter queue, the
    /// chunks, documents and objects in ES_INDEX and the newest indexed_at, and the probe's
    /// checks run now (or, with --last, the probe function's last report). The queues'
    /// oldest-message age comes from CloudWatch (cloudwatch:GetMetricData). Exit status 1 when
    /// something needs a person (a
    /// dead-letter queue holds messages, a required check failed, a queue or the index cannot
    /// be read).
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Show the probe function's last report from its log group instead of running the
        /// checks now (from a shell that cannot reach the cluster, or to see what the schedule
        /// saw).
        #[arg(long)]
        last: bool,
        /// The probe function's log group (default: PROBE_LOG_GROUP, or with --stack the
        /// function's own).
        #[arg(long, value_name = "NAME")]
        log_group: Option<String>,
    },
    /// Search the index by meaning, by words, or both (the default), and print the best chunks.
    ///
    /// knn embeds QUERY with the configured model (as a search query: `search_query` for
    /// Cohere) and finds the nearest chunks; keyword matches it against `text` (BM25, with the
    /// index's analyzer); hybrid runs both and fuses them by reciprocal rank. Filters apply
    /// inside each search. Each hit shows its score, source key and text.
    Search {
        /// The query text.
        #[arg(required = true, num_args = 1.., value_name = "QUERY")]
        query: Vec<String>,
        /// How many chunks to show.
        #[arg(short = 'k', long = "k", visible_alias = "top", default_value_t = 10,
              value_parser = clap::value_parser!(u16).range(1..=1000))]
        k: u16,
        /// knn, keyword or hybrid.
        #[arg(long, value_enum, default_value_t = SearchMode::Hybrid)]
        mode: SearchMode,
        /// Only chunks whose metadata.<field> or source.<field> equals VALUE (repeatable).
        #[arg(long = "filter", value_name = "FIELD=VALUE", value_parser = sakuin::search::parse_filter)]
        filters: Vec<(String, String)>,
        /// Only chunks of objects under s3://bucket/prefix.
        #[arg(long, value_name = "S3_URL", value_parser = reconcile::parse_s3_url)]
        prefix: Option<(String, String)>,
        /// Who fuses a hybrid search: the cluster's rrf retriever where its release and licence
        /// allow (auto), the client, or the cluster only.
        #[arg(long, value_enum, default_value_t = SearchFusion::Auto)]
        fusion: SearchFusion,
        /// Show each hit's kNN rank, keyword rank and fused score (a hybrid search with
        /// --fusion auto is then fused in the client, where each list's rank is known).
        #[arg(long)]
        explain: bool,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Ingest every object under a prefix: an estimate first, then (with --yes) the run with
    /// a progress bar.
    ///
    /// The estimate lists the prefix and reads a sample of its objects with ingest's own reader
    /// and chunker: objects, bytes, records, chunks, input tokens, Bedrock calls, their cost at
    /// the model's on-demand list price, and the time at the account's quota. Objects the index
    /// already holds at the same eTag cost nothing: their chunks are not embedded again.
    /// With --yes the backfill is queued on the intake queue and followed until the queues
    /// drain (or, with --detach, left to run).
    Backfill {
        /// s3://bucket/prefix (default: SOURCE_BUCKET and SOURCE_PREFIX).
        #[arg(value_name = "S3_URL")]
        target: Option<String>,
        #[command(flatten)]
        options: backfill::Options,
    },
    /// Switch ES_INDEX to another embedding model without downtime: `start` creates the new
    /// model's index beside the current one (embed-index then writes both, and a backfill fills
    /// the new one), `status` compares it with the bucket (`--fix` queues what it lacks),
    /// `swap` moves the alias once it equals the bucket, `remove-old` deletes the former index.
    Migrate {
        #[command(subcommand)]
        action: cli::MigrateAction,
    },
    /// Is the index equal to the bucket? Find objects missing, changed or orphaned, and with
    /// --fix queue exactly the work that repairs them.
    ///
    /// Compares the bucket's listing (key and eTag) with what the index holds of each object,
    /// page by page in key order, in bounded memory. With --fix, missing and changed objects
    /// are ingested again and orphans removed, through the intake queue (INGEST_QUEUE_URL).
    /// Exit status 1 when drift is found and not queued for repair.
    Reconcile {
        /// s3://bucket/prefix (default: SOURCE_BUCKET and SOURCE_PREFIX).
        #[arg(value_name = "S3_URL")]
        target: Option<String>,
        /// Queue the repairs.
        #[arg(long)]
        fix: bool,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Move each dead-letter queue's messages back to the queue they failed on.
    ///
    /// DEAD_LETTER_QUEUE_URL → CHUNK_QUEUE_URL, INGEST_DEAD_LETTER_QUEUE_URL → INGEST_QUEUE_URL,
    /// with an SQS message move task, followed until it completes. Where the endpoint has no
    /// move tasks (a local emulator) the messages are moved by hand, and it says so. Fix the
    /// cause first: messages that fail again go back to the dead-letter queue. Exit status 1
    /// when a move failed.
    Redrive {
        /// Which pair.
        #[arg(long, short = 'q', value_enum, default_value_t = RedriveQueue::All)]
        queue: RedriveQueue,
        /// Start the move task and return.
        #[arg(long)]
        detach: bool,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SearchMode {
    Knn,
    Keyword,
    Hybrid,
}

impl From<SearchMode> for sakuin::search::Mode {
    fn from(m: SearchMode) -> Self {
        match m {
            SearchMode::Knn => Self::Knn,
            SearchMode::Keyword => Self::Keyword,
            SearchMode::Hybrid => Self::Hybrid,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SearchFusion {
    Auto,
    Client,
    Cluster,
}

impl From<SearchFusion> for sakuin::search::Fusion {
    fn from(f: SearchFusion) -> Self {
        match f {
            SearchFusion::Auto => Self::Auto,
            SearchFusion::Client => Self::Client,
            SearchFusion::Cluster => Self::Cluster,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RedriveQueue {
    Chunk,
    Intake,
    All,
}

impl RedriveQueue {
    fn name(self) -> &'static str {
        match self {
            RedriveQueue::Chunk => "chunk",
            RedriveQueue::Intake => "intake",
            RedriveQueue::All => "all",
        }
    }
}

/// Reads the arguments (with the program name first).
pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::Parser;
    let cli = Cli::try_parse_from(args)?;
    if let Command::Probe { checks, .. } = &cli.command {
        let (_, unknown) = probe::select_groups(checks);
        if !unknown.is_empty() {
            use clap::CommandFactory;
            return Err(Cli::command().error(
                clap::error::ErrorKind::InvalidValue,
                format!(
                    "unknown checks {}; known: {}, {}",
                    unknown.join(", "),
                    probe::GROUPS.join(", "),
                    probe::CHECKS.join(", ")
                ),
            ));
        }
    }
    Ok(cli)
}

/// Runs the command line (arguments without the program name) and returns the exit status.
pub async fn run(args: &[String]) -> i32 {
    let cli = match parse_args(std::iter::once("sakuin".to_owned()).chain(args.iter().cloned())) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are answers, not errors.
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match environment(cli.stack.as_deref()).await {
        Ok(env) => run_command(cli.command, env).await,
        Err(e) => {
            eprintln!("sakuin: {e}");
            2
        }
    }
}

/// The variables the commands read: the shell's, or with `--stack` the deployed probe
/// function's, with any the shell sets explicitly on top.
async fn environment(stack: Option<&str>) -> Result<Env, String> {
    let Some(stack) = stack else {
        return Ok(Env::from_process());
    };
    let sdk = sakuin::aws::sdk_config().await;
    let mut vars = stack::variables(&sakuin::aws::lambda_client(&sdk), stack).await?;
    vars.extend(std::env::vars());
    Ok(Env::from_map(vars))
}

async fn run_command(command: Command, mut env: Env) -> i32 {
    match command {
        Command::Probe { checks, json } => run_probe(&mut env, &checks, json).await,
        Command::Redrive {
            queue,
            detach,
            json,
        } => run_redrive(&mut env, queue.name(), detach, json).await,
        Command::Reconcile { target, fix, json } => {
            cli::reconcile(&mut env, target.as_deref(), fix, json).await
        }
        Command::Backfill { target, options } => {
            cli::backfill(&mut env, target.as_deref(), options).await
        }
        Command::Migrate { action } => cli::migrate(&mut env, action).await,
        Command::Status {
            json,
            last,
            log_group,
        } => run_status(&mut env, json, last, log_group).await,
        Command::Search {
            query,
            k,
            mode,
            filters,
            prefix,
            fusion,
            explain,
            json,
        } => {
            let fusion = match fusion {
                SearchFusion::Auto if explain => SearchFusion::Client,
                f => f,
            };
            let query = sakuin::search::Query {
                text: query.join(" ").trim().to_owned(),
                k: usize::from(k),
                mode: mode.into(),
                fusion: fusion.into(),
                filters,
                under: prefix,
            };
            run_search(&mut env, &query, explain, json).await
        }
    }
}

/// `sakuin probe`: the report on stdout, 1 when a required check failed.
async fn run_probe(env: &mut Env, checks: &[String], json: bool) -> i32 {
    let deps = match ProbeDeps::from_env(env).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("sakuin: {e}");
            return 2;
        }
    };
    let (groups, _) = probe::select_groups(checks);
    let report = probe::run(&deps, &groups).await;
    if json {
        let text = serde_json::to_string_pretty(&report).expect("the report serialises");
        println!("{text}");
    } else {
        print!("{}", render_report(&report));
    }
    if report.ok { 0 } else { 1 }
}

/// `sakuin status`: the queues, the index and the checks (now, or the probe's last report).
async fn run_status(env: &mut Env, json: bool, last: bool, log_group: Option<String>) -> i32 {
    let deps = match ProbeDeps::from_env(env).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("sakuin: {e}");
            return 2;
        }
    };
    let group = log_group.or_else(|| env.get("PROBE_LOG_GROUP"));
    if last && group.is_none() {
        eprintln!(
            "sakuin: status --last reads the probe function's log group: give --log-group NAME, \
             set PROBE_LOG_GROUP, or use --stack NAME"
        );
        return 2;
    }
    let sdk = sakuin::aws::sdk_config().await;
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&sdk);
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    let checks = match (&group, last) {
        (Some(group), true) => status::Checks::Last { logs: &logs, group },
        _ => status::Checks::Now,
    };
    let ids_bucket_wide = env.get("ID_SCOPE").as_deref() == Some("bucket");
    let rejects_prefix = env
        .get("REJECTS_PREFIX")
        .unwrap_or_else(|| "rejects/".into());
    let gathered =
        status::Status::gather(&deps, &cloudwatch, checks, ids_bucket_wide, &rejects_prefix);
    let mut status = match gathered.await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sakuin: {e}");
            return 1;
        }
    };
    if let Some(uri) = env.get("BATCH_STAGING") {
        status.batch_runs = Some(match sakuin::batch::StagingLocation::parse(&uri) {
            Ok(location) => {
                let staging = sakuin::batch::Staging::new(
                    sakuin::store::S3Store::new(deps.aws.s3.clone()),
                    location,
                );
                staging.runs().await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e),
        });
    }
    if json {
        let text = serde_json::to_string_pretty(&status.to_json()).expect("the status serialises");
        println!("{text}");
    } else {
        print!("{}", status.render());
    }
    if status.attention().is_empty() { 0 } else { 1 }
}

/// `sakuin redrive`: each configured pair in turn; results on stdout, progress on stderr.
async fn run_redrive(env: &mut Env, queue: &str, detach: bool, json: bool) -> i32 {
    let config = match RedriveConfig::from_env(env, queue) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sakuin: {e}");
            return 2;
        }
    };
    let sdk = sakuin::aws::sdk_config().await;
    let sqs = sakuin::aws::sqs_client(&sdk);
    let options = redrive::Options {
        detach,
        ..Default::default()
    };
    for name in &config.not_configured {
        eprintln!("sakuin: {name} dead-letter queue not configured, skipped");
    }
    let mut failed = false;
    let mut answers = Vec::new();
    for pair in &config.pairs {
        let mut progress = |line: String| eprintln!("sakuin: {line}");
        match redrive::redrive(&sqs, pair, &options, &mut progress).await {
            Ok(outcome) => {
                if json {
                    answers.push(outcome.to_json());
                } else {
                    print!("{}", outcome.render());
                }
            }
            Err(e) => {
                failed = true;
                if json {
                    answers.push(e.to_json());
                }
                eprintln!("sakuin: {e}");
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Array(answers)).expect("answers serialise")
        );
    }
    if failed { 1 } else { 0 }
}

/// The model to embed the query by: the one whose vectors the index holds (see
/// `sakuin::search::model_for_index`), said on stderr when it is not `EMBEDDING_MODEL_ID`. An
/// index that cannot be read yet keeps the configured model: the search says what is wrong.
async fn query_model(
    es: &sakuin::es::EsClient,
    configured: &sakuin::embed::EmbeddingModel,
    query: &sakuin::search::Query,
) -> Result<sakuin::embed::EmbeddingModel, String> {
    if query.mode == sakuin::search::Mode::Keyword {
        return Ok(configured.clone());
    }
    let Ok(held) = sakuin::search::models_held(es).await else {
        return Ok(configured.clone());
    };
    let mapped = es.mapping().await.ok().and_then(|m| {
        sakuin::es::document::mapped_dimensions(&m)
            .first()
            .and_then(|(_, d)| *d)
            .map(|d| d as usize)
    });
    let (model, note) = sakuin::search::model_for_index(&es.index, configured, &held, mapped)?;
    if let Some(note) = note {
        eprintln!("sakuin: {note}");
    }
    Ok(model)
}

/// `sakuin search`: the hits on stdout, 1 when the search failed.
async fn run_search(
    env: &mut Env,
    query: &sakuin::search::Query,
    explain: bool,
    json: bool,
) -> i32 {
    let deps = match ProbeDeps::from_env(env).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("sakuin: {e}");
            return 2;
        }
    };
    if deps.config.es.use_ssl && !deps.config.es.verify_certs {
        eprintln!(
            "sakuin: warning: ES_VERIFY_CERTS=false, the cluster's certificate is NOT verified"
        );
    }
    if let Some(problem) = &deps.es_credentials_problem {
        eprintln!("sakuin: warning: no credentials: {problem}");
    }
    let es = match &deps.es {
        Ok(es) => es,
        Err(e) => {
            eprintln!("sakuin: {e}");
            return 2;
        }
    };
    // The one index the alias names now, read for the model and searched: an alias moved by a
    // migration between the two must not pair one model's query with the other's vectors.
    let concrete;
    let es = match es.routing().await {
        Ok(r) if r.indices.len() == 1 && r.is_alias(&es.index) => {
            concrete = es.for_index(&r.indices[0]);
            &concrete
        }
        _ => es,
    };
    let model = match query_model(es, &deps.config.model, query).await {
        Ok(model) => model,
        Err(e) => {
            eprintln!("sakuin: {e}");
            return 1;
        }
    };
    let embedder = BedrockEmbedder::new(deps.aws.bedrock.clone(), model);
    match sakuin::search::search(es, &embedder, query).await {
        Ok(Found {
            hits,
            fused_by,
            note,
        }) => {
            match (fused_by, note) {
                (Some(Fusion::Cluster), _) => {
                    eprintln!("sakuin: hybrid: fused by the cluster's rrf retriever")
                }
                (Some(_), Some(why)) => eprintln!("sakuin: hybrid: fused in the client: {why}"),
                (Some(_), None) => eprintln!("sakuin: hybrid: fused in the client"),
                _ => {}
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&hits_json(&hits)).expect("hits serialise")
                );
            } else {
                print!("{}", render_hits(&query.text, &es.index, &hits, explain));
            }
            0
        }
        Err(e) => {
            eprintln!("sakuin: {e}");
            1
        }
    }
}

/// A hit's source key, or its document id when the key is missing.
fn hit_key(hit: &Hit) -> String {
    let key = hit.source.pointer("/source/key").and_then(Value::as_str);
    let doc = hit.source.get("doc_id").and_then(Value::as_str);
    match (key, doc) {
        (Some(k), _) => k.to_owned(),
        (None, Some(d)) => d.to_owned(),
        (None, None) => hit.id.clone(),
    }
}

/// The text on one line, cut at `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

pub fn render_hits(query: &str, index: &str, hits: &[Ranked], explain: bool) -> String {
    let mut out = format!("{} hit(s) in {index} for {query:?}\n", hits.len());
    for (i, ranked) in hits.iter().enumerate() {
        let hit = &ranked.hit;
        let why = if explain {
            let rank = |r: Option<usize>| r.map_or("-".to_owned(), |r| r.to_string());
            format!(
                "  (knn rank {}, keyword rank {})",
                rank(ranked.knn_rank),
                rank(ranked.keyword_rank)
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{:>3}. {:.4}  {}{}{why}\n     {}\n",
            i + 1,
            ranked.score,
            hit_key(hit),
            position(hit),
            one_line(passage(hit), 200)
        ));
    }
    out
}

/// Where a hit's chunk sits in its object: for a document, where in it (`, page 14`,
/// `, § 導入 > 2.1 Network`, `, sheet "価格", row 12`); for JSON, the record (JSON Lines line,
/// or array element); then the chunk of that text, as `, chunk 2/5`.
fn position(hit: &Hit) -> String {
    let field = |path: &str| hit.source.pointer(path).and_then(Value::as_u64);
    let citation = hit.source.get("citation").filter(|c| c.is_object());
    let place = match citation {
        Some(c) => {
            let label = c["label"].as_str().unwrap_or_default();
            let headings = c.get("headings").is_some();
            Some(if headings {
                format!(", § {label}")
            } else {
                format!(", {label}")
            })
        }
        None => field("/source/record").map(|r| format!(", record {r}")),
    };
    let chunk = match (field("/chunk_index"), field("/chunk_count")) {
        (Some(i), Some(n)) => Some(format!(", chunk {}/{n}", i + 1)),
        (Some(i), None) => Some(format!(", chunk {}", i + 1)),
        _ => None,
    };
    format!("{}{}", place.unwrap_or_default(), chunk.unwrap_or_default())
}

/// The passage to show: the one the query's words matched (terms between « and »), else the
/// chunk's text.
fn passage(hit: &Hit) -> &str {
    hit.highlight
        .as_deref()
        .or_else(|| hit.source["text"].as_str())
        .unwrap_or("")
}

fn hits_json(hits: &[Ranked]) -> Value {
    Value::Array(
        hits.iter()
            .map(|r| {
                let h = &r.hit;
                json!({
                    "score": r.score,
                    "knn_rank": r.knn_rank,
                    "keyword_rank": r.keyword_rank,
                    "id": h.id,
                    "key": h.source.pointer("/source/key"),
                    "record": h.source.pointer("/source/record"),
                    "citation": h.source.get("citation"),
                    "doc_id": h.source.get("doc_id"),
                    "chunk_index": h.source.get("chunk_index"),
                    "chunk_count": h.source.get("chunk_count"),
                    "highlight": h.highlight,
                    "text": h.source.get("text"),
                })
            })
            .collect(),
    )
}

/// The report as a table: one line per check, its hint under it, then the verdict.
pub fn render_report(report: &ProbeReport) -> String {
    let width = report
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(10)
        .max(10);
    let mut out = String::new();
    for c in &report.checks {
        let mark = match (c.ok, c.warning, c.required) {
            (true, false, _) => "ok  ",
            (true, true, _) => "WARN",
            (false, _, true) => "FAIL",
            (false, _, false) => "fail",
        };
        let layer = c.layer.map(|l| format!("at {l}: ")).unwrap_or_default();
        let optional = if !c.ok && !c.required {
            " (not required)"
        } else {
            ""
        };
        out.push_str(&format!(
            "{mark}  {:<width$}  {:>6} ms  {layer}{}{optional}\n",
            c.name, c.ms, c.detail
        ));
        if let Some(hint) = &c.hint {
            out.push_str(&format!("      {:<width$}  → {hint}\n", ""));
        }
    }
    for s in &report.skipped {
        out.push_str(&format!("skip  {s}\n"));
    }
    if report.ok {
        let warnings = report.checks.iter().filter(|c| c.warning).count();
        let tolerated = report.checks.iter().filter(|c| !c.ok).count();
        out.push_str(&format!(
            "\nOK: every required check passed ({} checks, {warnings} warning(s), {tolerated} failure(s) not required)\n",
            report.checks.len()
        ));
    } else {
        out.push_str(&format!("\n{}\n", probe::ProbeError(report.failures())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sakuin::probe::{CheckResult, Layer};

    #[test]
    fn a_document_hit_cites_where_it_is() {
        let hit = |source: Value| Ranked {
            hit: Hit {
                id: "x".into(),
                score: 0.5,
                source,
                highlight: None,
            },
            knn_rank: Some(1),
            keyword_rank: None,
            score: 0.5,
        };
        let hits = [
            hit(json!({"text": "第2章", "chunk_index": 0, "chunk_count": 2,
                "source": {"key": "docs/manual.pdf", "record": 2},
                "citation": {"format": "PDF", "label": "page 2", "page": 2}})),
            hit(json!({"text": "Run", "chunk_index": 0, "chunk_count": 1,
                "source": {"key": "guide.md", "record": 4},
                "citation": {"format": "Markdown", "label": "導入 > 2.1 Network", "headings": ["導入", "2.1 Network"]}})),
            hit(json!({"text": "t", "chunk_index": 1, "chunk_count": 3,
                "source": {"key": "faq.jsonl", "record": 7}})),
        ];
        let text = render_hits("q", "documents", &hits, false);
        assert!(
            text.contains("docs/manual.pdf, page 2, chunk 1/2\n"),
            "{text}"
        );
        assert!(
            text.contains("guide.md, § 導入 > 2.1 Network, chunk 1/1\n"),
            "{text}"
        );
        assert!(text.contains("faq.jsonl, record 7, chunk 2/3\n"), "{text}");
        assert_eq!(hits_json(&hits)[0]["citation"]["page"], 2);
    }

    /// The command lines of the README and `docs/`, inside their `sh` blocks.
    fn documented_commands() -> Vec<(String, String)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut pages = vec![root.join("README.md")];
        for entry in std::fs::read_dir(root.join("docs")).unwrap() {
            pages.push(entry.unwrap().path());
        }
        let mut commands = Vec::new();
        for page in pages {
            let text = std::fs::read_to_string(&page).unwrap();
            let mut in_sh = false;
            for line in text.lines() {
                if line.starts_with("```") {
                    in_sh = line == "```sh";
                    continue;
                }
                if in_sh {
                    let command = line.split(" # ").next().unwrap_or_default().trim();
                    let name = page.file_name().unwrap().to_string_lossy().into_owned();
                    commands.push((name, command.to_owned()));
                }
            }
        }
        commands
    }

    /// Splits a command line as a shell would, for the quoting the docs use.
    fn words(line: &str) -> Vec<String> {
        let (mut words, mut word, mut quoted) = (Vec::new(), String::new(), None);
        for c in line.chars() {
            match (quoted, c) {
                (None, '"' | '\'') => quoted = Some(c),
                (Some(q), c) if c == q => quoted = None,
                (None, ' ') => {
                    if !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                }
                _ => word.push(c),
            }
        }
        if !word.is_empty() {
            words.push(word);
        }
        words
    }

    /// Every `sakuin` command the docs show is one the command line takes, every `make` target
    /// they name exists, and every package they build is in the workspace.
    #[test]
    fn every_documented_command_is_one_that_runs() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let makefile = std::fs::read_to_string(root.join("Makefile")).unwrap();
        let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let mut sakuin = 0;
        for (page, command) in documented_commands() {
            let words = words(&command);
            let Some(program) = words.first() else {
                continue;
            };
            if program.ends_with("/sakuin") {
                sakuin += 1;
                let parsed = parse_args(&words);
                assert!(
                    parsed.is_ok(),
                    "{page}: `{command}`: {}",
                    parsed.unwrap_err()
                );
            } else if program == "make" {
                for target in &words[1..] {
                    assert!(
                        makefile.contains(&format!("\n{target}:")),
                        "{page}: `{command}`: no make target {target}"
                    );
                }
            } else if program == "cargo"
                && let Some(at) = words.iter().position(|w| w == "-p")
            {
                let package = &words[at + 1];
                let manifest = [
                    "shared",
                    "cli",
                    "dev/local",
                    "functions/ingest",
                    "functions/embed-index",
                    "functions/probe",
                ]
                .iter()
                .map(|dir| std::fs::read_to_string(root.join(dir).join("Cargo.toml")).unwrap())
                .any(|m| m.contains(&format!("name = \"{package}\"")));
                assert!(
                    manifest && !workspace.is_empty(),
                    "{page}: `{command}`: no package {package}"
                );
            }
        }
        assert!(
            sakuin > 10,
            "only {sakuin} sakuin commands found in the docs"
        );
    }

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn parse(v: &[&str]) -> Result<Command, clap::Error> {
        parse_args(std::iter::once("sakuin").chain(v.iter().copied())).map(|c| c.command)
    }

    #[test]
    fn command_lines() {
        use clap::error::ErrorKind;
        assert_eq!(
            parse(&["--help"]).unwrap_err().kind(),
            ErrorKind::DisplayHelp
        );
        assert_eq!(
            parse(&["probe"]).unwrap(),
            Command::Probe {
                checks: vec![],
                json: false
            }
        );
        assert_eq!(
            parse(&["probe", "--checks", "elasticsearch,s3.bucket", "--json"]).unwrap(),
            Command::Probe {
                checks: args(&["elasticsearch", "s3.bucket"]),
                json: true
            }
        );
        let err = parse(&["probe", "--checks=nope"]).unwrap_err().to_string();
        assert!(err.contains("unknown checks nope"), "{err}");
        assert_eq!(
            parse(&["status", "--json"]).unwrap(),
            Command::Status {
                json: true,
                last: false,
                log_group: None
            }
        );
        assert!(parse(&["status", "-k"]).is_err());
        assert_eq!(
            parse(&["search", "東京", "の", "首都", "-k", "3"]).unwrap(),
            Command::Search {
                query: args(&["東京", "の", "首都"]),
                k: 3,
                mode: SearchMode::Hybrid,
                filters: vec![],
                prefix: None,
                fusion: SearchFusion::Auto,
                explain: false,
                json: false
            }
        );
        assert_eq!(
            parse(&["search", "--json", "-k=5", "--", "-x query"]).unwrap(),
            Command::Search {
                query: args(&["-x query"]),
                k: 5,
                mode: SearchMode::Hybrid,
                filters: vec![],
                prefix: None,
                fusion: SearchFusion::Auto,
                explain: false,
                json: true
            }
        );
        assert_eq!(
            parse(&[
                "search",
                "SKU-4411",
                "--mode",
                "keyword",
                "--filter",
                "metadata.lang=ja",
                "--filter=source.etag=e1",
                "--prefix",
                "s3://b/faq/",
                "--fusion=cluster",
                "--explain"
            ])
            .unwrap(),
            Command::Search {
                query: args(&["SKU-4411"]),
                k: 10,
                mode: SearchMode::Keyword,
                filters: vec![
                    ("metadata.lang".into(), "ja".into()),
                    ("source.etag".into(), "e1".into())
                ],
                prefix: Some(("b".into(), "faq/".into())),
                fusion: SearchFusion::Cluster,
                explain: true,
                json: false
            }
        );
        let err = parse(&["search", "q", "--filter", "text=x"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("metadata.<name>"), "{err}");
        assert!(parse(&["search", "q", "-k", "0"]).is_err());
        assert_eq!(
            parse(&["search"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert!(parse(&[]).is_err());
        let err = parse(&["reconcle"]).unwrap_err().to_string();
        assert!(err.contains("reconcile"), "a suggestion: {err}");
        assert_eq!(
            parse(&["redrive"]).unwrap(),
            Command::Redrive {
                queue: RedriveQueue::All,
                detach: false,
                json: false
            }
        );
        assert_eq!(
            parse(&["redrive", "--queue", "intake", "--detach", "--json"]).unwrap(),
            Command::Redrive {
                queue: RedriveQueue::Intake,
                detach: true,
                json: true
            }
        );
        let err = parse(&["redrive", "--queue=dlq"]).unwrap_err().to_string();
        assert!(err.contains("chunk, intake, all"), "{err}");
        assert!(parse(&["redrive", "--queue"]).is_err());
        assert_eq!(
            parse(&["reconcile", "s3://b/p/", "--fix"]).unwrap(),
            Command::Reconcile {
                target: Some("s3://b/p/".into()),
                fix: true,
                json: false
            }
        );
        let cli = parse_args(["sakuin", "status", "--stack=prod"]).unwrap();
        assert_eq!(cli.stack.as_deref(), Some("prod"));
        let cli = parse_args([
            "sakuin", "--stack", "prod", "backfill", "-y", "--rpm", "600",
        ])
        .unwrap();
        assert_eq!(cli.stack.as_deref(), Some("prod"));
        assert!(matches!(
            cli.command,
            Command::Backfill {
                target: None,
                options: backfill::Options {
                    start: true,
                    rpm: Some(600),
                    sample: 20,
                    ..
                },
            }
        ));
        assert!(parse(&["status", "--stack"]).is_err());
        assert!(matches!(
            parse(&["backfill", "-y", "--mode", "batch"]).unwrap(),
            Command::Backfill {
                options: backfill::Options {
                    mode: backfill::Mode::Batch,
                    batch_above: 50_000,
                    ..
                },
                ..
            }
        ));
        assert!(matches!(
            parse(&["backfill", "--resume", "20261207T120000-0a1b"]).unwrap(),
            Command::Backfill {
                options: backfill::Options { resume: Some(run), mode: backfill::Mode::OnDemand, .. },
                ..
            } if run == "20261207T120000-0a1b"
        ));
        let err = parse(&["backfill", "--mode", "nightly"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("on-demand, batch, auto"), "{err}");
    }

    #[test]
    fn every_command_has_help() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        cli.build();
        for sub in cli.get_subcommands() {
            assert!(sub.get_about().is_some(), "{} has no help", sub.get_name());
        }
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("ES_SECRET_ID") && help.contains("Exit status"),
            "{help}"
        );
    }

    #[test]
    fn text_is_flattened_and_cut_on_characters() {
        assert_eq!(one_line("a\n b\t\tc", 10), "a b c");
        assert_eq!(one_line("東京は日本の首都です", 5), "東京は日…");
    }

    #[test]
    fn the_table_shows_layers_hints_and_the_verdict() {
        let mut optional = CheckResult::fail("s3.bucket", Layer::NotFound, 2, "gone");
        optional.required = false;
        let report = ProbeReport {
            ok: false,
            checks: vec![
                CheckResult::pass("elasticsearch.dns", 1, "h → 10.0.0.5"),
                CheckResult::fail(
                    "elasticsearch.tcp",
                    Layer::Tcp,
                    1000,
                    "10.0.0.5:9200 did not answer",
                )
                .hint("the route"),
                optional,
            ],
            skipped: vec!["sqs (CHUNK_QUEUE_URL / DEAD_LETTER_QUEUE_URL is not set)".into()],
        };
        let table = render_report(&report);
        assert!(table.contains("FAIL  elasticsearch.tcp"), "{table}");
        assert!(
            table.contains("at tcp: 10.0.0.5:9200 did not answer"),
            "{table}"
        );
        assert!(table.contains("→ the route"), "{table}");
        assert!(
            table.contains("fail  s3.bucket") && table.contains("(not required)"),
            "{table}"
        );
        assert!(table.contains("skip  sqs"), "{table}");
        assert!(
            table.contains("probe failed: elasticsearch.tcp failed at tcp"),
            "{table}"
        );
    }
}
