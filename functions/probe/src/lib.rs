//! The `sakuin` command line: the probe's checks, a semantic search over the index and the
//! dead-letter redrive, run from a shell (an EC2 instance in the Lambda subnets, or a laptop)
//! with the Lambdas' variables.

pub mod redrive;
pub mod stack;
pub mod status;

use sakuin::config::{Env, RedriveConfig};
use sakuin::embed::bedrock::BedrockEmbedder;
use sakuin::embed::{EmbedError, Embedder, InputPurpose};
use sakuin::es::client::Hit;
use sakuin::es::{EsClient, EsError};
use sakuin::probe::{self, ProbeDeps, ProbeReport};
use serde_json::{Value, json};

pub const USAGE: &str = "\
sakuin: check the path to Elasticsearch and the other dependencies, see where the pipeline
stands, search the index, or redrive dead letters.

Usage:
  sakuin probe [--checks LIST] [--json]
      Runs the probe's checks and prints a table (or, with --json, the report the Lambda
      returns). LIST is a comma list of groups (elasticsearch, s3, sqs, bedrock,
      secretsmanager) or check names; default: every configured group.
      Exit status: 0 when every required check passed (PROBE_REQUIRED_CHECKS), 1 when one
      failed, 2 for a usage or configuration error.
  sakuin status [--json]
      Where the pipeline stands, on one screen: what each queue holds (waiting, in flight,
      delayed) and each dead-letter queue, the chunks, documents and objects in ES_INDEX and
      the newest indexed_at, and the probe's checks run now. The queues' oldest-message age is
      a CloudWatch metric: see the stack's dashboard (output DashboardUrl).
      Exit status: 0 when nothing needs a person, 1 when something does (a dead-letter queue
      holds messages, a required check failed, a queue or the index cannot be read), 2 for a
      usage or configuration error.
  sakuin search QUERY... [-k N] [--json]
      Embeds QUERY with the configured model (as a search query: `search_query` for Cohere)
      and prints the N nearest chunks of ES_INDEX (default 10): score, source key, text.
  sakuin redrive [--queue chunk|intake|all] [--detach] [--json]
      Moves each dead-letter queue's messages back to the queue they failed on
      (DEAD_LETTER_QUEUE_URL → CHUNK_QUEUE_URL, INGEST_DEAD_LETTER_QUEUE_URL → INGEST_QUEUE_URL;
      default: every pair configured) with an SQS message move task, follows the task until it
      completes and prints the count moved; --detach starts it and returns. Where the endpoint
      has no move tasks (a local emulator) it moves them by hand and says so. Fix the cause
      first: messages that fail again go back to the dead-letter queue.
      Exit status: 0 when every move completed (or was started, with --detach), 1 when one
      failed, 2 for a usage or configuration error.
  sakuin --help | --version

  --stack NAME (with any command): read the configuration from the deployed stack instead of
      the variables below: the probe function's variables, found by the tags CloudFormation
      puts on it, in the Region of the AWS SDK's configuration; a variable the shell sets
      explicitly still wins. Needs lambda:ListFunctions and lambda:ListTags, and what the
      command itself reads (the secret, the queues).

Configuration: the same environment variables as the Lambda functions:
  ES_HOST, ES_PORT, ES_USE_SSL, ES_VERIFY_CERTS, ES_CA_CERT, ES_INDEX, ES_SECRET_ID (or
  ES_API_KEY, or ES_USERNAME and ES_PASSWORD), ES_TIMEOUT_SECS, ES_CONNECT_TIMEOUT_SECS,
  EMBEDDING_MODEL_ID, EMBEDDING_DIMENSIONS, SOURCE_BUCKET, CHUNK_QUEUE_URL,
  DEAD_LETTER_QUEUE_URL, INGEST_QUEUE_URL, INGEST_DEAD_LETTER_QUEUE_URL, PROBE_TIMEOUT_SECS,
  PROBE_REQUIRED_CHECKS, PROBE_CERT_WARN_DAYS, and the AWS SDK's own (AWS_REGION,
  AWS_PROFILE, AWS_ENDPOINT_URL_*, ...). `redrive` needs only the queue variables.
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Probe {
        checks: Vec<String>,
        json: bool,
    },
    Status {
        json: bool,
    },
    Search {
        query: String,
        k: usize,
        json: bool,
    },
    /// `queue` is chunk, intake or all.
    Redrive {
        queue: String,
        detach: bool,
        json: bool,
    },
    Help,
    Version,
}

/// Reads the arguments (without the program name).
pub fn parse_args(args: &[String]) -> Result<Command, String> {
    let Some((first, rest)) = args.split_first() else {
        return Err("no command given".into());
    };
    match first.as_str() {
        "-h" | "--help" | "help" => Ok(Command::Help),
        "-V" | "--version" => Ok(Command::Version),
        "probe" => {
            let (mut checks, mut json) = (Vec::new(), false);
            let mut it = rest.iter();
            while let Some(arg) = it.next() {
                match arg.as_str() {
                    "--json" => json = true,
                    "-h" | "--help" => return Ok(Command::Help),
                    "--checks" | "-c" => {
                        let list = it.next().ok_or("--checks needs a list")?;
                        checks.extend(split_list(list));
                    }
                    a if a.starts_with("--checks=") => checks.extend(split_list(&a[9..])),
                    other => return Err(format!("probe: unexpected argument {other:?}")),
                }
            }
            let (_, unknown) = probe::select_groups(&checks);
            if !unknown.is_empty() {
                return Err(format!(
                    "probe: unknown checks {}; known: {}, {}",
                    unknown.join(", "),
                    probe::GROUPS.join(", "),
                    probe::CHECKS.join(", ")
                ));
            }
            Ok(Command::Probe { checks, json })
        }
        "status" => {
            let mut json = false;
            for arg in rest {
                match arg.as_str() {
                    "--json" => json = true,
                    "-h" | "--help" => return Ok(Command::Help),
                    other => return Err(format!("status: unexpected argument {other:?}")),
                }
            }
            Ok(Command::Status { json })
        }
        "search" => {
            let (mut words, mut k, mut json) = (Vec::new(), 10usize, false);
            let mut it = rest.iter();
            while let Some(arg) = it.next() {
                let number = |v: &str| {
                    v.parse::<usize>()
                        .ok()
                        .filter(|k| (1..=1000).contains(k))
                        .ok_or_else(|| {
                            format!("search: -k takes a number from 1 to 1000, not {v:?}")
                        })
                };
                match arg.as_str() {
                    "--json" => json = true,
                    "-h" | "--help" => return Ok(Command::Help),
                    "-k" | "--k" | "--top" => k = number(it.next().ok_or("-k needs a number")?)?,
                    a if a.starts_with("-k=") => k = number(&a[3..])?,
                    a if a.starts_with("--k=") => k = number(&a[4..])?,
                    "--" => words.extend(it.by_ref().cloned()),
                    a if a.starts_with('-') && a.len() > 1 => {
                        return Err(format!("search: unexpected option {a:?}"));
                    }
                    word => words.push(word.to_owned()),
                }
            }
            let query = words.join(" ").trim().to_owned();
            if query.is_empty() {
                return Err("search: give the query text, e.g. sakuin search \"how do I reset my password\"".into());
            }
            Ok(Command::Search { query, k, json })
        }
        "redrive" => {
            let (mut queue, mut detach, mut json) = ("all".to_owned(), false, false);
            let mut it = rest.iter();
            while let Some(arg) = it.next() {
                match arg.as_str() {
                    "--json" => json = true,
                    "--detach" => detach = true,
                    "-h" | "--help" => return Ok(Command::Help),
                    "--queue" | "-q" => {
                        queue = it
                            .next()
                            .ok_or("--queue needs chunk, intake or all")?
                            .clone()
                    }
                    a if a.starts_with("--queue=") => queue = a[8..].to_owned(),
                    other => return Err(format!("redrive: unexpected argument {other:?}")),
                }
            }
            if !["chunk", "intake", "all"].contains(&queue.as_str()) {
                return Err(format!(
                    "redrive: --queue takes chunk, intake or all, not {queue:?}"
                ));
            }
            Ok(Command::Redrive {
                queue,
                detach,
                json,
            })
        }
        other => Err(format!("unknown command {other:?}")),
    }
}

fn split_list(list: &str) -> impl Iterator<Item = String> + '_ {
    list.split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Runs the command line and returns the exit status.
pub async fn run(args: &[String]) -> i32 {
    let parsed = stack::take_stack_flag(args)
        .and_then(|(stack, rest)| parse_args(&rest).map(|command| (stack, command)));
    let (stack, command) = match parsed {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sakuin: {e}\n\n{USAGE}");
            return 2;
        }
    };
    if matches!(command, Command::Help | Command::Version) {
        return run_command(command, Env::from_process()).await;
    }
    match environment(stack.as_deref()).await {
        Ok(env) => run_command(command, env).await,
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
        Command::Help => {
            print!("{USAGE}");
            0
        }
        Command::Version => {
            println!("sakuin {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Command::Probe { checks, json } => {
            let deps = match ProbeDeps::from_env(&mut env).await {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("sakuin: {e}");
                    return 2;
                }
            };
            let (groups, _) = probe::select_groups(&checks);
            let report = probe::run(&deps, &groups).await;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("the report serialises")
                );
            } else {
                print!("{}", render_report(&report));
            }
            if report.ok { 0 } else { 1 }
        }
        Command::Redrive {
            queue,
            detach,
            json,
        } => run_redrive(&mut env, &queue, detach, json).await,
        Command::Status { json } => {
            let deps = match ProbeDeps::from_env(&mut env).await {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("sakuin: {e}");
                    return 2;
                }
            };
            let status = status::Status::gather(&deps).await;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status.to_json()).expect("the status serialises")
                );
            } else {
                print!("{}", status.render());
            }
            if status.attention().is_empty() { 0 } else { 1 }
        }
        Command::Search { query, k, json } => {
            let deps = match ProbeDeps::from_env(&mut env).await {
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
            let embedder =
                BedrockEmbedder::new(deps.aws.bedrock.clone(), deps.config.model.clone());
            match search(&embedder, es, &query, k).await {
                Ok(hits) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&hits_json(&hits))
                                .expect("hits serialise")
                        );
                    } else {
                        print!("{}", render_hits(&query, &es.index, &hits));
                    }
                    0
                }
                Err(e) => {
                    eprintln!("sakuin: {e}");
                    1
                }
            }
        }
    }
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

/// Why a search gave no hits list.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("embedding the query with {0} failed: {1}")]
    Embed(String, EmbedError),
    #[error(transparent)]
    Index(EsError),
}

/// Embeds `query` as a search query (Cohere's `search_query`) and runs kNN on the index.
pub async fn search<E: Embedder>(
    embedder: &E,
    es: &EsClient,
    query: &str,
    k: usize,
) -> Result<Vec<Hit>, SearchError> {
    let model = embedder.model().id.clone();
    let out = embedder
        .invoke(&[query], InputPurpose::Query)
        .await
        .map_err(|e| SearchError::Embed(model.clone(), e))?;
    let vector = out.vectors.into_iter().next().ok_or_else(|| {
        SearchError::Embed(
            model,
            EmbedError::Permanent {
                code: "UnexpectedResponse".into(),
                message: "no vector in the answer".into(),
            },
        )
    })?;
    es.knn(&vector, k).await.map_err(SearchError::Index)
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

pub fn render_hits(query: &str, index: &str, hits: &[Hit]) -> String {
    let mut out = format!("{} hit(s) in {index} for {query:?}\n", hits.len());
    for (i, hit) in hits.iter().enumerate() {
        let chunk = hit
            .source
            .get("chunk_index")
            .and_then(Value::as_u64)
            .map(|c| format!(" #{c}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:>3}. {:.4}  {}{chunk}\n     {}\n",
            i + 1,
            hit.score,
            hit_key(hit),
            one_line(hit.source["text"].as_str().unwrap_or(""), 160)
        ));
    }
    out
}

fn hits_json(hits: &[Hit]) -> Value {
    Value::Array(
        hits.iter()
            .map(|h| {
                json!({
                    "score": h.score,
                    "id": h.id,
                    "key": h.source.pointer("/source/key"),
                    "doc_id": h.source.get("doc_id"),
                    "chunk_index": h.source.get("chunk_index"),
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
        let layer = c
            .layer
            .as_deref()
            .map(|l| format!("at {l}: "))
            .unwrap_or_default();
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
    use sakuin::probe::CheckResult;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_lines() {
        assert_eq!(parse_args(&args(&["--help"])), Ok(Command::Help));
        assert_eq!(
            parse_args(&args(&["probe"])),
            Ok(Command::Probe {
                checks: vec![],
                json: false
            })
        );
        assert_eq!(
            parse_args(&args(&[
                "probe",
                "--checks",
                "elasticsearch,s3.bucket",
                "--json"
            ])),
            Ok(Command::Probe {
                checks: args(&["elasticsearch", "s3.bucket"]),
                json: true
            })
        );
        assert!(
            parse_args(&args(&["probe", "--checks=nope"]))
                .unwrap_err()
                .contains("nope")
        );
        assert_eq!(
            parse_args(&args(&["status", "--json"])),
            Ok(Command::Status { json: true })
        );
        assert!(parse_args(&args(&["status", "-k"])).is_err());
        assert_eq!(
            parse_args(&args(&["search", "東京", "の", "首都", "-k", "3"])),
            Ok(Command::Search {
                query: "東京 の 首都".into(),
                k: 3,
                json: false
            })
        );
        assert_eq!(
            parse_args(&args(&["search", "--json", "-k=5", "--", "-x query"])),
            Ok(Command::Search {
                query: "-x query".into(),
                k: 5,
                json: true
            })
        );
        assert!(parse_args(&args(&["search", "q", "-k", "0"])).is_err());
        assert!(parse_args(&args(&["search"])).is_err());
        assert!(parse_args(&args(&[])).is_err());
        assert!(parse_args(&args(&["frobnicate"])).is_err());
        assert_eq!(
            parse_args(&args(&["redrive"])),
            Ok(Command::Redrive {
                queue: "all".into(),
                detach: false,
                json: false
            })
        );
        assert_eq!(
            parse_args(&args(&[
                "redrive", "--queue", "intake", "--detach", "--json"
            ])),
            Ok(Command::Redrive {
                queue: "intake".into(),
                detach: true,
                json: true
            })
        );
        assert!(
            parse_args(&args(&["redrive", "--queue=dlq"]))
                .unwrap_err()
                .contains("chunk, intake or all")
        );
        assert!(parse_args(&args(&["redrive", "--queue"])).is_err());
    }

    #[test]
    fn text_is_flattened_and_cut_on_characters() {
        assert_eq!(one_line("a\n b\t\tc", 10), "a b c");
        assert_eq!(one_line("東京は日本の首都です", 5), "東京は日…");
    }

    #[test]
    fn the_table_shows_layers_hints_and_the_verdict() {
        let mut optional = CheckResult::fail("s3.bucket", "not_found", 2, "gone");
        optional.required = false;
        let report = ProbeReport {
            ok: false,
            checks: vec![
                CheckResult::pass("elasticsearch.dns", 1, "h → 10.0.0.5"),
                CheckResult::fail(
                    "elasticsearch.tcp",
                    "tcp",
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
