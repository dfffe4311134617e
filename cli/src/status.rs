//! `sakuin status`: where the pipeline stands, on one screen — what each queue holds, what the
//! index holds and how fresh it is, and the probe's checks — and whether a person is needed.

use std::fmt::Write;

use aws_sdk_sqs::types::QueueAttributeName as A;
use sakuin::es::EsClient;
use sakuin::probe::{self, ProbeDeps, ProbeReport};
use serde_json::{Value, json};

/// One queue's messages, by state.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDepth {
    /// `intake`, `intake DLQ`, `chunk`, `chunk DLQ`.
    pub name: &'static str,
    pub url: String,
    pub dead_letter: bool,
    /// The counts, or why they could not be read.
    pub depth: Result<Depth, String>,
    /// The age of its oldest message in seconds (`ApproximateAgeOfOldestMessage`, the newest
    /// datapoint of the last 15 minutes); `None` when CloudWatch has none.
    pub oldest_secs: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Depth {
    pub waiting: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

/// What the index holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFigures {
    pub chunks: u64,
    /// Distinct `doc_id`s and `source.key`s (Elasticsearch's cardinality: approximate above
    /// a few thousand).
    pub documents: u64,
    pub objects: u64,
    /// The newest `indexed_at`.
    pub newest: Option<String>,
    /// Record ids that more than one object holds (up to `SHARED_SHOWN`), with the objects;
    /// `None` when the cluster could not say. With `ID_SCOPE=bucket` each is a collision.
    pub shared: Option<Vec<SharedId>>,
    /// Bulk-load mode's record when it is on (a backfill with `--bulk-load`).
    pub bulk_load: Option<sakuin::es::bulk_load::BulkLoad>,
}

/// A record id held by several objects.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SharedId {
    pub doc_id: String,
    pub keys: Vec<String>,
}

/// How many shared record ids status lists.
const SHARED_SHOWN: usize = 20;

/// A document ingest could not read, from its record under `<REJECTS_PREFIX>skipped/`, while
/// the object still holds the content that was skipped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SkippedDocument {
    pub key: String,
    /// `ExtractError::kind`, or `unsupported`.
    pub kind: String,
    pub reason: String,
    pub skipped_at: String,
}

/// How many skipped documents status reads and lists.
const SKIPPED_SHOWN: usize = 50;

/// Everything `sakuin status` shows.
#[derive(Debug, Clone)]
pub struct Status {
    pub queues: Vec<QueueDepth>,
    /// Why the oldest-message ages are missing, when CloudWatch could not be read.
    pub ages_unreadable: Option<String>,
    /// embed-index's requests sent again because the path had cut their pooled connection
    /// while idle (`EsStaleConnections`), in the last hour; `None` when CloudWatch has none.
    pub idle_cuts: Option<f64>,
    pub index_name: String,
    pub index: Result<IndexFigures, String>,
    pub probe: ProbeReport,
    /// Where the checks come from: `None` when run now, else the log line's time.
    pub probe_logged_at: Option<String>,
    /// Record ids were declared unique across the bucket (`ID_SCOPE=bucket`): a shared one is
    /// a collision that needs a person.
    pub ids_bucket_wide: bool,
    /// Documents skipped because they yield no text (encrypted, image-only, damaged,
    /// unsupported); `None` without a source bucket or a rejects prefix.
    pub skipped: Option<Result<Vec<SkippedDocument>, String>>,
    /// Batch backfills (`sakuin backfill --mode batch`) under `BATCH_STAGING`; `None` without it.
    pub batch_runs: Option<Result<Vec<sakuin::batch::Run>, String>>,
}

/// Where the probe's checks come from.
pub enum Checks<'a> {
    /// Run them now.
    Now,
    /// The probe function's last report in its log group.
    Last {
        logs: &'a aws_sdk_cloudwatchlogs::Client,
        group: &'a str,
    },
}

impl Status {
    /// Reads the queues, their ages and the index, and the probe's checks (run now, or its last
    /// report). Fails only when `--last` finds no report.
    pub async fn gather(
        deps: &ProbeDeps,
        cloudwatch: &aws_sdk_cloudwatch::Client,
        checks: Checks<'_>,
        ids_bucket_wide: bool,
        rejects_prefix: &str,
    ) -> Result<Self, String> {
        let config = &deps.config;
        let mut queues = queue_depths(deps).await;
        let index = match &deps.es {
            Ok(es) => index_figures(es).await,
            Err(e) => Err(e.clone()),
        };
        let read = cloudwatch_figures(cloudwatch, &queues, &config.model.id);
        let (ages, idle_cuts) = match bounded(config.timeout, read).await {
            Ok((ages, cuts)) => (Ok(ages), cuts),
            Err(e) => (Err(e), None),
        };
        let ages_unreadable = record_ages(&mut queues, ages);
        let (probe, probe_logged_at) = checks.read(deps).await?;
        let skipped = match &config.bucket {
            Some(bucket) if !rejects_prefix.is_empty() => {
                let store = sakuin::store::S3Store::new(deps.aws.s3.clone());
                let read = skipped_documents(&store, bucket, rejects_prefix);
                Some(bounded(config.timeout, read).await)
            }
            _ => None,
        };
        Ok(Self {
            queues,
            ages_unreadable,
            idle_cuts,
            index_name: config.es.index.clone(),
            index,
            probe,
            probe_logged_at,
            ids_bucket_wide,
            skipped,
            batch_runs: None,
        })
    }

    /// What needs a person, in words; empty when nothing does.
    pub fn attention(&self) -> Vec<String> {
        let mut needs = Vec::new();
        for q in &self.queues {
            match &q.depth {
                Ok(d) if q.dead_letter && d.waiting + d.in_flight > 0 => {
                    let n = d.waiting + d.in_flight;
                    let plural = if n == 1 { "" } else { "s" };
                    needs.push(format!(
                        "the {} holds {n} message{plural}: fix the cause, then `sakuin redrive`",
                        q.name
                    ));
                }
                Ok(_) => {}
                Err(e) => needs.push(format!("the {} queue cannot be read: {e}", q.name)),
            }
        }
        match &self.index {
            Err(e) => needs.push(format!("the index cannot be read: {e}")),
            Ok(IndexFigures {
                shared: Some(shared),
                ..
            }) if self.ids_bucket_wide && !shared.is_empty() => needs.push(format!(
                "{} record id(s) collide across objects although ID_SCOPE=bucket declares them unique \
                 (e.g. {}): each object keeps its own document; fix the ids, or use ID_SCOPE=object",
                shared.len(),
                describe_shared(&shared[0])
            )),
            Ok(_) => {}
        }
        for check in self.probe.checks.iter().filter(|c| !c.ok && c.required) {
            needs.push(format!("{} failed: {}", check.name, check.detail));
        }
        needs
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_queues(&mut out);
        let _ = writeln!(out);
        self.render_index(&mut out);
        self.render_skipped(&mut out);
        self.render_batch_runs(&mut out);
        let _ = writeln!(out);
        if let Some(at) = &self.probe_logged_at {
            let _ = writeln!(out, "the probe's last report, logged at {at}:");
        }
        out.push_str(&crate::render_report(&self.probe));
        let _ = writeln!(out);
        self.render_attention(&mut out);
        out
    }

    /// The queue table, one row per queue, and why the oldest-message ages are missing.
    fn render_queues(&self, out: &mut String) {
        queue_row(out, "queue", "waiting", "in flight", "delayed", "oldest");
        for q in &self.queues {
            match &q.depth {
                Ok(d) => {
                    let oldest = q.oldest_secs.map_or("-".to_owned(), |s| {
                        crate::backfill::duration(std::time::Duration::from_secs_f64(s.max(0.0)))
                    });
                    queue_row(out, q.name, d.waiting, d.in_flight, d.delayed, oldest);
                }
                Err(e) => {
                    let _ = writeln!(out, "{:<12} unreadable: {e}", q.name);
                }
            }
        }
        match &self.ages_unreadable {
            Some(e) => {
                let _ = writeln!(out, "oldest: CloudWatch could not be read: {e}");
            }
            None if self.queues.iter().all(|q| q.oldest_secs.is_none()) => {
                let _ = writeln!(
                    out,
                    "oldest: CloudWatch has no ApproximateAgeOfOldestMessage of the last 15 minutes"
                );
            }
            None => {}
        }
    }

    /// The index's line: its chunks, documents, objects and newest chunk, or why it is unreadable.
    fn render_index(&self, out: &mut String) {
        match &self.index {
            Ok(i) => {
                let _ = writeln!(
                    out,
                    "index {}: {} chunks of {} documents from {} objects; newest indexed at {}",
                    self.index_name,
                    i.chunks,
                    i.documents,
                    i.objects,
                    i.newest.as_deref().unwrap_or("-")
                );
                if let Some(mode) = &i.bulk_load {
                    let _ = writeln!(out, "{}", bulk_load_line(mode, chrono::Utc::now()));
                }
                if let Some(shared) = i.shared.as_ref().filter(|s| !s.is_empty()) {
                    let more = if shared.len() >= SHARED_SHOWN {
                        " or more"
                    } else {
                        ""
                    };
                    let what = if self.ids_bucket_wide {
                        "collisions"
                    } else {
                        "shared by objects"
                    };
                    let examples: Vec<String> =
                        shared.iter().take(3).map(describe_shared).collect();
                    let _ = writeln!(
                        out,
                        "record ids {what}: {}{more} ({})",
                        shared.len(),
                        examples.join("; ")
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "index {}: unreadable: {e}", self.index_name);
            }
        }
        if let Some(line) = idle_cuts_line(self.idle_cuts) {
            let _ = writeln!(out, "{line}");
        }
    }

    /// The documents ingest skipped, one line each.
    fn render_skipped(&self, out: &mut String) {
        match &self.skipped {
            None => {}
            Some(Ok(docs)) if docs.is_empty() => {
                let _ = writeln!(out, "documents skipped: none");
            }
            Some(Ok(docs)) => {
                let more = if docs.len() >= SKIPPED_SHOWN {
                    " or more"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "documents skipped (no text to index): {}{more}",
                    docs.len()
                );
                for d in docs {
                    let _ = writeln!(
                        out,
                        "  {}: {} ({}, {})",
                        d.key, d.reason, d.kind, d.skipped_at
                    );
                }
            }
            Some(Err(e)) => {
                let _ = writeln!(out, "documents skipped: unreadable: {e}");
            }
        }
    }

    /// Batch runs under way, and the last one done.
    fn render_batch_runs(&self, out: &mut String) {
        match &self.batch_runs {
            None => {}
            Some(Ok(runs)) => {
                let going: Vec<_> = runs.iter().filter(|r| !r.cleaned).collect();
                for run in &going {
                    let _ = writeln!(out, "{}", run.describe());
                }
                if going.is_empty() {
                    match runs.last() {
                        Some(last) => {
                            let _ = writeln!(out, "{}", last.describe());
                        }
                        None => {
                            let _ = writeln!(out, "batch runs: none");
                        }
                    }
                }
            }
            Some(Err(e)) => {
                let _ = writeln!(out, "batch runs: unreadable: {e}");
            }
        }
    }

    /// The verdict: each thing that needs a person, or that nothing does.
    fn render_attention(&self, out: &mut String) {
        let needs = self.attention();
        if needs.is_empty() {
            let _ = writeln!(out, "nothing needs a person");
        } else {
            for need in needs {
                let _ = writeln!(out, "NEEDS A PERSON: {need}");
            }
        }
    }

    pub fn to_json(&self) -> Value {
        let queues: Vec<Value> = self
            .queues
            .iter()
            .map(|q| match &q.depth {
                Ok(d) => json!({
                    "queue": q.name, "dead_letter": q.dead_letter,
                    "waiting": d.waiting, "in_flight": d.in_flight, "delayed": d.delayed,
                    "oldest_seconds": q.oldest_secs,
                }),
                Err(e) => json!({"queue": q.name, "dead_letter": q.dead_letter, "error": e}),
            })
            .collect();
        let index = match &self.index {
            Ok(i) => json!({
                "name": self.index_name, "chunks": i.chunks, "documents": i.documents,
                "objects": i.objects, "newest_indexed_at": i.newest,
                "shared_record_ids": i.shared, "ids_bucket_wide": self.ids_bucket_wide,
                "bulk_load": i.bulk_load,
            }),
            Err(e) => json!({"name": self.index_name, "error": e}),
        };
        json!({
            "queues": queues,
            "index": index,
            "oldest_unreadable": self.ages_unreadable,
            "es_idle_cuts_last_hour": self.idle_cuts,
            "probe": self.probe,
            "probe_logged_at": self.probe_logged_at,
            "batch_runs": self.batch_runs.as_ref().map(|r| match r {
                Ok(runs) => json!(runs.iter().map(|run| json!({"run": run, "progress": run.progress()})).collect::<Vec<_>>()),
                Err(e) => json!({"error": e}),
            }),
            "skipped_documents": match &self.skipped {
                None => Value::Null,
                Some(Ok(docs)) => json!(docs),
                Some(Err(e)) => json!({"error": e}),
            },
            "attention": self.attention(),
        })
    }
}

impl Checks<'_> {
    /// The probe's checks, and when they were logged (`None` when run now).
    async fn read(self, deps: &ProbeDeps) -> Result<(ProbeReport, Option<String>), String> {
        match self {
            Checks::Now => {
                let (groups, _) = probe::select_groups(&[]);
                Ok((probe::run(deps, &groups).await, None))
            }
            Checks::Last { logs, group } => {
                let (at, report) = last_report(logs, group).await?;
                Ok((report, Some(at)))
            }
        }
    }
}

/// The skipped documents whose object still holds the skipped content (the same eTag): a
/// record whose object changed since, or went, is history, not a problem. Reads one page of
/// the records, and up to [`SKIPPED_SHOWN`] of them.
pub async fn skipped_documents<S: sakuin::store::ObjectStore>(
    store: &S,
    bucket: &str,
    rejects_prefix: &str,
) -> Result<Vec<SkippedDocument>, String> {
    use tokio::io::AsyncReadExt;
    let prefix = format!("{rejects_prefix}{}", sakuin::ingest::SKIPPED_DIR);
    let page = store
        .list(bucket, &prefix, None)
        .await
        .map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    for listed in page.objects.iter().filter(|o| o.key.ends_with(".json")) {
        if found.len() >= SKIPPED_SHOWN {
            break;
        }
        let object = sakuin::store::ObjectRef {
            bucket: bucket.to_owned(),
            key: listed.key.clone(),
            version_id: None,
            etag: None,
            range_start: None,
        };
        let Ok(opened) = store.open(&object).await else {
            continue;
        };
        let mut bytes = Vec::new();
        let mut body = opened.body.take(64 * 1024);
        if body.read_to_end(&mut bytes).await.is_err() {
            continue;
        }
        let Ok(record) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        let text = |field: &str| record[field].as_str().unwrap_or_default().to_owned();
        let key = text("key");
        let current = store.head(bucket, &key).await.map_err(|e| e.to_string())?;
        if current.and_then(|h| h.etag) != record["etag"].as_str().map(str::to_owned) {
            continue;
        }
        found.push(SkippedDocument {
            key,
            kind: text("kind"),
            reason: text("reason"),
            skipped_at: text("skipped_at"),
        });
    }
    Ok(found)
}

/// One row of the queue table, the header's columns aligned with the counts'.
fn queue_row(
    out: &mut String,
    name: &str,
    waiting: impl std::fmt::Display,
    in_flight: impl std::fmt::Display,
    delayed: impl std::fmt::Display,
    oldest: impl std::fmt::Display,
) {
    let _ = writeln!(
        out,
        "{name:<12} {waiting:>10} {in_flight:>10} {delayed:>10} {oldest:>12}"
    );
}

/// `call`'s answer, or an error once `timeout` passes without one: like the probe's own calls,
/// a status does not hang on one service.
async fn bounded<T>(
    timeout: std::time::Duration,
    call: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", timeout.as_secs())))
}

/// Each configured queue's messages by state, read one queue after another.
async fn queue_depths(deps: &ProbeDeps) -> Vec<QueueDepth> {
    let config = &deps.config;
    let named = [
        ("intake", false, &config.intake_queue_url),
        ("intake DLQ", true, &config.intake_dead_letter_queue_url),
        ("chunk", false, &config.queue_url),
        ("chunk DLQ", true, &config.dead_letter_queue_url),
    ];
    let mut queues = Vec::new();
    for (name, dead_letter, url) in named {
        if let Some(url) = url {
            queues.push(QueueDepth {
                name,
                url: url.clone(),
                dead_letter,
                oldest_secs: None,
                depth: bounded(config.timeout, depth(&deps.aws.sqs, url)).await,
            });
        }
    }
    queues
}

/// Gives each queue the age of its oldest message; returns why the ages are missing when
/// CloudWatch could not be read.
fn record_ages(
    queues: &mut [QueueDepth],
    ages: Result<Vec<Option<f64>>, String>,
) -> Option<String> {
    match ages {
        Ok(ages) => {
            for (q, age) in queues.iter_mut().zip(ages) {
                q.oldest_secs = age;
            }
            None
        }
        Err(e) => Some(crate::one_line(&e, 200)),
    }
}

/// A queue's messages by state, from one GetQueueAttributes.
pub(crate) async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<Depth, String> {
    let answer = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(A::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(|e| sakuin::error::error_chain(&e))?;
    let attributes = answer.attributes.unwrap_or_default();
    let count = |name: A| {
        attributes
            .get(&name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Depth {
        waiting: count(A::ApproximateNumberOfMessages),
        in_flight: count(A::ApproximateNumberOfMessagesNotVisible),
        delayed: count(A::ApproximateNumberOfMessagesDelayed),
    })
}

/// One search: the chunk count, distinct documents and objects, and the newest chunk.
async fn index_figures(es: &EsClient) -> Result<IndexFigures, String> {
    let answer = es
        .search(&json!({
            "size": 1,
            "track_total_hits": true,
            "sort": [{"indexed_at": {"order": "desc"}}],
            "_source": ["indexed_at"],
            "aggs": {
                "documents": {"cardinality": {"field": "doc_id"}},
                "objects": {"cardinality": {"field": "source.key"}},
            },
        }))
        .await
        .map_err(|e| e.to_string())?;
    let count = |pointer: &str| answer.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
    let shared = shared_ids(es).await.ok();
    let bulk_load = es.bulk_load().await.ok().flatten();
    Ok(IndexFigures {
        shared,
        bulk_load,
        chunks: count("/hits/total/value"),
        documents: count("/aggregations/documents/value"),
        objects: count("/aggregations/objects/value"),
        newest: answer
            .pointer("/hits/hits/0/_source/indexed_at")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// Record ids whose first chunk more than one object holds, with those objects.
async fn shared_ids(es: &EsClient) -> Result<Vec<SharedId>, String> {
    let answer = es
        .search(&json!({
            "size": 0,
            "query": {"term": {"chunk_index": 0}},
            "aggs": {"shared": {
                "terms": {"field": "doc_id", "min_doc_count": 2, "size": SHARED_SHOWN},
                "aggs": {"keys": {"terms": {"field": "source.key", "size": 5}}}
            }},
        }))
        .await
        .map_err(|e| e.to_string())?;
    let buckets = answer
        .pointer("/aggregations/shared/buckets")
        .and_then(Value::as_array)
        .ok_or("no aggregation in the answer")?;
    Ok(buckets
        .iter()
        .map(|b| SharedId {
            doc_id: b["key"].as_str().unwrap_or_default().to_owned(),
            keys: b["keys"]["buckets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k["key"].as_str().map(str::to_owned))
                .collect(),
        })
        .filter(|s| s.keys.len() > 1)
        .collect())
}

/// The status line of bulk-load mode: on for a running backfill, or left by one that stopped.
fn bulk_load_line(
    mode: &sakuin::es::bulk_load::BulkLoad,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    if mode.expired(now) {
        format!(
            "{}: its lease ran out, so the backfill that turned it on stopped; the scheduled probe restores the settings",
            mode.describe()
        )
    } else {
        format!(
            "{}: new chunks become searchable when it ends",
            mode.describe()
        )
    }
}

/// The status line for embed-index's connections cut while idle, when there were any.
fn idle_cuts_line(cuts: Option<f64>) -> Option<String> {
    let cuts = cuts.filter(|n| *n > 0.0)?;
    Some(format!(
        "connections to Elasticsearch cut while idle, last hour: {cuts:.0} (something on the path — a NAT, firewall or VPN \
         concentrator — drops connections idle for less than the pool's {} s; each request was sent again at once on a \
         fresh connection: raise that device's idle timeout to stop it)",
        sakuin::es::client::POOL_IDLE.as_secs()
    ))
}

fn describe_shared(s: &SharedId) -> String {
    format!("{} in {}", s.doc_id, s.keys.join(", "))
}

/// The figures status reads from CloudWatch. Each queue's `ApproximateAgeOfOldestMessage`, in one GetMetricData call: the newest
/// datapoint of the last 15 minutes (SQS sends it every minute while the queue is active).
/// <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-available-cloudwatch-metrics.html>
/// In the same call, embed-index's `EsStaleConnections` of the last hour (its EMF metric,
/// dimensions `Function` and `Model`).
async fn cloudwatch_figures(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    queues: &[QueueDepth],
    model: &str,
) -> Result<(Vec<Option<f64>>, Option<f64>), String> {
    use aws_sdk_cloudwatch::primitives::DateTime;
    use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
    let dimension = |name: &str, value: &str| Dimension::builder().name(name).value(value).build();
    let cuts = MetricDataQuery::builder()
        .id("cuts")
        .metric_stat(
            MetricStat::builder()
                .metric(
                    Metric::builder()
                        .namespace(sakuin::metrics::NAMESPACE)
                        .metric_name("EsStaleConnections")
                        .dimensions(dimension("Function", "embed-index"))
                        .dimensions(dimension("Model", model))
                        .build(),
                )
                .period(3600)
                .stat("Sum")
                .build(),
        )
        .build();
    let queries = queues.iter().enumerate().map(|(i, q)| {
        let name = q.url.rsplit('/').next().unwrap_or(&q.url);
        let metric = Metric::builder()
            .namespace("AWS/SQS")
            .metric_name("ApproximateAgeOfOldestMessage")
            .dimensions(Dimension::builder().name("QueueName").value(name).build())
            .build();
        MetricDataQuery::builder()
            .id(format!("q{i}"))
            .metric_stat(
                MetricStat::builder()
                    .metric(metric)
                    .period(60)
                    .stat("Maximum")
                    .build(),
            )
            .build()
    });
    let now = std::time::SystemTime::now();
    let answer = cloudwatch
        .get_metric_data()
        .set_metric_data_queries(Some(queries.chain([cuts]).collect()))
        .start_time(DateTime::from(
            now - std::time::Duration::from_secs(60 * 60),
        ))
        .end_time(DateTime::from(now + std::time::Duration::from_secs(60)))
        .scan_by(ScanBy::TimestampDescending)
        .send()
        .await
        .map_err(|e| sakuin::error::error_chain(&e))?;
    let mut ages = vec![None; queues.len()];
    let mut idle_cuts = None;
    let recent = now - std::time::Duration::from_secs(15 * 60);
    let recent = DateTime::from(recent).secs();
    for result in answer.metric_data_results() {
        if result.id() == Some("cuts") {
            let sum: f64 = result.values().iter().sum();
            idle_cuts = (!result.values().is_empty()).then_some(sum);
            continue;
        }
        let i = result
            .id()
            .and_then(|id| id.strip_prefix('q'))
            .and_then(|i| i.parse::<usize>().ok());
        let newest = result
            .timestamps()
            .iter()
            .zip(result.values())
            .filter(|(t, _)| t.secs() >= recent)
            .max_by_key(|(t, _)| t.secs())
            .map(|(_, v)| *v);
        if let Some(i) = i.filter(|i| *i < ages.len()) {
            ages[i] = newest;
        }
    }
    Ok((ages, idle_cuts))
}

/// The probe function's newest report line in `group` within the last day, and its time.
async fn last_report(
    logs: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
) -> Result<(String, ProbeReport), String> {
    let now = chrono::Utc::now();
    let mut newest: Option<(i64, String)> = None;
    let mut token = None;
    loop {
        let page = logs
            .filter_log_events()
            .log_group_name(group)
            // A phrase term: lines holding it (a JSON filter pattern would do, but a phrase is
            // what every Logs implementation answers alike).
            .filter_pattern("\"probe report\"")
            .start_time((now - chrono::Duration::days(1)).timestamp_millis())
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "reading log group {group}: {} (the caller needs logs:FilterLogEvents)",
                    sakuin::error::error_chain(&e)
                )
            })?;
        for event in page.events() {
            let (Some(t), Some(message)) = (event.timestamp(), event.message()) else {
                continue;
            };
            if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                newest = Some((t, message.to_owned()));
            }
        }
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    let (t, line) = newest.ok_or_else(|| {
        format!("no probe report in log group {group} in the last day: is the probe's schedule on?")
    })?;
    let report: ProbeReport = serde_json::from_str(&line)
        .map_err(|e| format!("the probe report logged in {group} could not be read: {e}"))?;
    let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(t)
        .map(|t| {
            let ago = (now - t).num_minutes();
            format!(
                "{} ({ago} min ago)",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        })
        .unwrap_or_default();
    Ok((at, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sakuin::test_util::MemoryStore;

    #[test]
    fn bulk_load_mode_says_whether_its_backfill_still_runs() {
        let mode = sakuin::es::bulk_load::BulkLoad {
            by: "`sakuin backfill s3://b/` on host, pid 7".into(),
            since: "2026-12-07T00:00:00Z".into(),
            lease_until: "2026-12-07T00:10:00Z".into(),
            replaced: Default::default(),
        };
        let at = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        let running = bulk_load_line(&mode, at("2026-12-07T00:05:00Z"));
        assert_eq!(
            running,
            "bulk-load mode on since 2026-12-07T00:00:00Z by `sakuin backfill s3://b/` on host, pid 7 \
             (refresh_interval -1, 0 replicas; lease until 2026-12-07T00:10:00Z): new chunks become searchable when it ends"
        );
        let left = bulk_load_line(&mode, at("2026-12-07T00:11:00Z"));
        assert!(
            left.ends_with("the scheduled probe restores the settings"),
            "{left}"
        );
    }

    #[test]
    fn connections_cut_while_idle_are_named_only_when_there_were_some() {
        assert_eq!(idle_cuts_line(None), None);
        assert_eq!(idle_cuts_line(Some(0.0)), None);
        let line = idle_cuts_line(Some(12.0)).unwrap();
        assert!(
            line.starts_with("connections to Elasticsearch cut while idle, last hour: 12 (")
                && line.contains("idle for less than the pool's 50 s"),
            "{line}"
        );
    }

    #[tokio::test]
    async fn skipped_documents_are_listed_while_the_object_still_holds_them() {
        let store = MemoryStore::default();
        let put = |key: &str, body: Value| {
            let id = ("b".to_string(), key.to_string());
            store
                .objects
                .lock()
                .unwrap()
                .insert(id, body.to_string().into_bytes());
        };
        // MemoryStore answers HEAD with the eTag "e2".
        put("in/a.pdf", json!("the encrypted file"));
        put("in/b.pdf", json!("a new version that reads"));
        let record = |key: &str, etag: &str| {
            json!({"bucket": "b", "key": key, "etag": etag, "kind": "encrypted",
                   "reason": "the PDF is encrypted with a password", "skipped_at": "2026-12-07T00:00:00Z"})
        };
        put("rejects/skipped/in/a.pdf.json", record("in/a.pdf", "e2"));
        put("rejects/skipped/in/b.pdf.json", record("in/b.pdf", "e1"));
        put(
            "rejects/skipped/in/gone.pdf.json",
            record("in/gone.pdf", "e2"),
        );
        // A rejects object of records under a key named skipped/: not a skipped document.
        put("rejects/skipped/x.jsonl/e1.jsonl", json!({"record": 1}));
        let found = skipped_documents(&store, "b", "rejects/").await.unwrap();
        assert_eq!(
            found,
            [SkippedDocument {
                key: "in/a.pdf".into(),
                kind: "encrypted".into(),
                reason: "the PDF is encrypted with a password".into(),
                skipped_at: "2026-12-07T00:00:00Z".into(),
            }]
        );
    }
}
