//! The `probe`: checks each dependency layer by layer (for Elasticsearch: name resolution, TCP,
//! TLS, HTTP, authentication and authorisation, cluster health, the index mapping; then S3, SQS,
//! Bedrock and Secrets Manager), times every check, and says where the path breaks and what to
//! look at.
//!
//! Which checks run: every group whose configuration is present, or the subset an event (or the
//! CLI's `--checks`) asks for. Which checks matter: `PROBE_REQUIRED_CHECKS` (default `all`). A
//! failing check that is not required is still reported `ok:false` (and still counts in its
//! group's `CheckFailed` metric, so its alarm fires), but it does not fail the invocation.

mod elasticsearch;
mod link;
mod path_mtu;
mod services;
pub mod tls;
pub mod vpc_path;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::{ConfigError, Env, ProbeConfig};
use crate::es::EsClient;
use crate::metrics::MetricSet;

pub use tls::TlsTrust;

use crate::checks::group_of;
pub use crate::checks::{CHECKS, GROUPS, Layer, is_known_selector};

/// One check's result, as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    pub ms: u64,
    /// What was found, in one sentence.
    pub detail: String,
    /// The layer a failed check broke at (written as `dns`, `tls`, `model_access`, ...).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub layer: Option<Layer>,
    /// Passed, but needs a look (a yellow cluster, a certificate expiring soon, a non-empty
    /// dead-letter queue, certificate verification turned off).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub warning: bool,
    /// What to check, in the operator's terms.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hint: Option<String>,
    /// `false` when `PROBE_REQUIRED_CHECKS` leaves the check out: reported, never fails the probe.
    #[serde(skip_serializing_if = "is_true", default = "yes")]
    pub required: bool,
    /// Figures the check measured (`CertDaysLeft`, `QueueBacklog`, ...), also sent as metrics.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub metrics: BTreeMap<String, f64>,
}

fn is_true(b: &bool) -> bool {
    *b
}

fn yes() -> bool {
    true
}

impl CheckResult {
    pub fn pass(name: &str, ms: u64, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ok: true,
            ms,
            detail: detail.into(),
            layer: None,
            warning: false,
            hint: None,
            required: true,
            metrics: BTreeMap::new(),
        }
    }

    pub fn fail(name: &str, layer: Layer, ms: u64, detail: impl Into<String>) -> Self {
        Self {
            ok: false,
            layer: Some(layer),
            ..Self::pass(name, ms, detail)
        }
    }

    pub fn warn(name: &str, ms: u64, detail: impl Into<String>) -> Self {
        Self {
            warning: true,
            ..Self::pass(name, ms, detail)
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn metric(mut self, name: &str, value: f64) -> Self {
        self.metrics.insert(name.into(), value);
        self
    }

    /// The sentence the invocation's error carries for this check.
    pub fn failure_sentence(&self) -> String {
        format!(
            "{} failed at {}: {}{}",
            self.name,
            self.layer.map_or("?", Layer::as_str),
            self.detail,
            if self.required { "" } else { " (not required)" }
        )
    }
}

/// The probe's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// No required check failed.
    pub ok: bool,
    pub checks: Vec<CheckResult>,
    /// Groups that did not run because their configuration is absent.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub skipped: Vec<String>,
}

impl ProbeReport {
    /// Every failed check and the layer it broke at, one sentence per check; required ones first.
    pub fn failures(&self) -> Vec<String> {
        let failed = |required: bool| {
            self.checks
                .iter()
                .filter(move |c| !c.ok && c.required == required)
                .map(CheckResult::failure_sentence)
        };
        failed(true).chain(failed(false)).collect()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("probe failed: {}", .0.join("; "))]
pub struct ProbeError(pub Vec<String>);

/// The AWS clients the probe calls.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    /// With the SDK's retries off (see `aws::bedrock_client`): one call answers the question.
    pub bedrock: aws_sdk_bedrockruntime::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    /// The functions' own network, read when TCP to the cluster fails (see `vpc_path`).
    pub ec2: crate::aws::ec2::Ec2,
    /// Bedrock's batch inference jobs (`sakuin backfill --mode batch`).
    pub batch: crate::aws::bedrock_batch::BedrockBatch,
}

impl AwsClients {
    /// The clients, from the shared SDK configuration (Region, credentials and
    /// `AWS_ENDPOINT_URL_*` as every SDK reads them).
    pub fn from_sdk(conf: &aws_config::SdkConfig, env: &mut Env) -> Self {
        Self {
            s3: crate::aws::s3_client(conf, env),
            sqs: crate::aws::sqs_client(conf),
            bedrock: crate::aws::bedrock_client(conf),
            secrets: aws_sdk_secretsmanager::Client::new(conf),
            ec2: crate::aws::ec2::Ec2::from_sdk(conf),
            batch: crate::aws::bedrock_batch::BedrockBatch::from_sdk(conf),
        }
    }
}

/// Clients built once per container. Problems building them are probe findings, reported by the
/// checks that need them, never a refusal to start.
pub struct ProbeDeps {
    pub config: ProbeConfig,
    pub es: Result<EsClient, String>,
    pub tls: Result<TlsTrust, String>,
    /// Why the credentials named by `ES_SECRET_ID` could not be loaded at start-up.
    pub es_credentials_problem: Option<String>,
    pub aws: AwsClients,
}

impl ProbeDeps {
    /// Builds the Elasticsearch client and the TLS trust from the configuration. Set
    /// `config.es.auth` first when the credentials come from Secrets Manager.
    pub fn new(config: ProbeConfig, aws: AwsClients) -> Self {
        let es = EsClient::new(&config.es).map_err(|e| e.to_string());
        let tls = if config.es.use_ssl {
            TlsTrust::new(config.es.ca_cert_pem.as_deref()).and_then(|trust| {
                match &config.es.client_identity {
                    Some(identity) => trust.with_client_identity(identity),
                    None => Ok(trust),
                }
            })
        } else {
            Err("ES_USE_SSL is false".into())
        };
        Self {
            config,
            es,
            tls,
            es_credentials_problem: None,
            aws,
        }
    }

    pub fn with_credentials_problem(mut self, problem: Option<String>) -> Self {
        self.es_credentials_problem = problem;
        self
    }

    /// Everything from the environment, the same way for the Lambda and the `sakuin` CLI. A
    /// secret that cannot be read is a finding for the checks, not a refusal to start.
    pub async fn from_env(env: &mut Env) -> Result<Self, ConfigError> {
        let mut config = ProbeConfig::from_env(env)?;
        let sdk = crate::aws::sdk_config().await;
        let aws = AwsClients::from_sdk(&sdk, env);
        env.check()?;
        let mut problem = None;
        if let Some(id) = &config.es_secret_id {
            let read = crate::aws::es_credentials_from_secret(&sdk, id);
            match tokio::time::timeout(config.timeout, read).await {
                Ok(Ok(credentials)) => {
                    config.es.auth = credentials.auth.or(config.es.auth.take());
                    if credentials.identity.is_some() {
                        config.es.client_identity = credentials.identity;
                    }
                }
                Ok(Err(e)) => problem = Some(e.problems.join(", ")),
                Err(_) => {
                    problem = Some(format!(
                        "ES_SECRET_ID {id}: Secrets Manager did not answer within {} s",
                        config.timeout.as_secs()
                    ))
                }
            }
        }
        let secret_id = config.es_secret_id.clone();
        let timeout = config.timeout;
        let mut deps = Self::new(config, aws).with_credentials_problem(problem);
        // A warm probe container after a rotation: re-read the secret on a 401, as embed-index does.
        if let (Some(id), Ok(es)) = (secret_id, deps.es.as_mut()) {
            *es = es.clone().with_auth_refresh(
                EsClient::AUTH_REFRESH_INTERVAL,
                crate::aws::es_auth_refresher(&sdk, &id, timeout),
            );
        }
        Ok(deps)
    }
}

/// The groups an event asks for (`{"checks": ["elasticsearch", "s3.bucket"]}` or
/// `{"checks": "elasticsearch,s3"}`; a check name selects its group), and the names it did not
/// recognise. Any other event shape asks for everything.
pub fn requested_groups(event: &Value) -> (Vec<&'static str>, Vec<String>) {
    let asked: Vec<String> = match event.get("checks") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(|s| s.trim().to_owned()))
            .collect(),
        Some(Value::String(s)) => s.split(',').map(|s| s.trim().to_owned()).collect(),
        _ => Vec::new(),
    };
    let asked: Vec<String> = asked.into_iter().filter(|s| !s.is_empty()).collect();
    select_groups(&asked)
}

/// Groups selected by names of groups or checks (`all` or nothing = every group).
pub fn select_groups(names: &[String]) -> (Vec<&'static str>, Vec<String>) {
    let unknown: Vec<String> = names
        .iter()
        .filter(|n| !is_known_selector(n) || n.as_str() == "none")
        .cloned()
        .collect();
    let everything = names.is_empty() || names.iter().any(|n| n == "all");
    let groups = GROUPS
        .iter()
        .copied()
        .filter(|g| {
            everything
                || names
                    .iter()
                    .any(|n| is_known_selector(n) && group_of(n) == *g)
        })
        .collect();
    (groups, unknown)
}

fn is_required(required: &[String], check: &str) -> bool {
    required
        .iter()
        .any(|r| r == "all" || r == check || r == group_of(check))
}

/// Runs the selected groups concurrently and returns the report (no output).
pub async fn run(deps: &ProbeDeps, groups: &[&str]) -> ProbeReport {
    let want = |g: &str| groups.contains(&g);
    let config = &deps.config;
    let mut skipped = Vec::new();
    let queues = services::queue_checks(config);
    let no_queue = queues.iter().all(|q| q.url.is_none());
    for (group, missing) in [
        ("s3", config.bucket.is_none().then_some("SOURCE_BUCKET")),
        (
            "sqs",
            no_queue.then_some(
                "CHUNK_QUEUE_URL / DEAD_LETTER_QUEUE_URL / INGEST_QUEUE_URL / INGEST_DEAD_LETTER_QUEUE_URL",
            ),
        ),
        (
            "secretsmanager",
            config.es_secret_id.is_none().then_some("ES_SECRET_ID"),
        ),
    ] {
        if let (true, Some(var)) = (want(group), missing) {
            skipped.push(format!("{group} ({var} is not set)"));
        }
    }
    // Some queues configured: the others are named one by one (a deployment from before the
    // intake queue has no INGEST_* variables, and says so instead of hiding the checks).
    if want("sqs") && !no_queue {
        for q in queues.iter().filter(|q| q.url.is_none()) {
            skipped.push(format!("{} ({} is not set)", q.name, q.var));
        }
    }
    // Boxed: the SDK and reqwest futures are large, and five of them side by side would
    // otherwise sit on the caller's stack.
    let (es, s3, sqs, bedrock, secret) = tokio::join!(
        maybe(want("elasticsearch"), Box::pin(elasticsearch::check(deps))),
        maybe(want("s3"), Box::pin(services::check_s3(deps))),
        maybe(want("sqs"), Box::pin(services::check_queues(deps))),
        maybe(want("bedrock"), Box::pin(services::check_bedrock(deps))),
        maybe(
            want("secretsmanager"),
            Box::pin(services::check_secret(deps))
        ),
    );
    let mut checks: Vec<CheckResult> = [es, s3, sqs, bedrock, secret]
        .into_iter()
        .flatten()
        .collect();
    for c in &mut checks {
        c.required = is_required(&config.required_checks, &c.name);
    }
    ProbeReport {
        ok: checks.iter().all(|c| c.ok || !c.required),
        checks,
        skipped,
    }
}

/// What the probe's handler runs: the checks of the selected groups. [`ProbeDeps`] runs them
/// against the real dependencies; a test answers with the report it wants to see handled.
pub trait Checks: Sync {
    fn run(&self, groups: &[&'static str]) -> impl Future<Output = ProbeReport> + Send;
}

impl Checks for ProbeDeps {
    fn run(&self, groups: &[&'static str]) -> impl Future<Output = ProbeReport> + Send {
        run(self, groups)
    }
}

async fn maybe<F: Future<Output = Vec<CheckResult>>>(on: bool, f: F) -> Vec<CheckResult> {
    if on { f.await } else { Vec::new() }
}

/// The Lambda handler: runs what the event asks for, writes the metrics and one report line,
/// and fails when a required check failed (so the function's `Errors` alarm fires).
pub async fn handle_event<C: Checks>(checks: &C, event: Value) -> Result<ProbeReport, ProbeError> {
    let (groups, unknown) = requested_groups(&event);
    let mut report = checks.run(&groups).await;
    if !unknown.is_empty() {
        report.checks.insert(
            0,
            CheckResult::fail(
                "probe.request",
                Layer::Config,
                0,
                format!("the event asks for unknown checks: {}", unknown.join(", ")),
            )
            .hint(format!(
                "known: all, {}, {}",
                GROUPS.join(", "),
                CHECKS.join(", ")
            )),
        );
        report.ok = false;
    }
    emit_metrics(&report, &groups);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", report_line(&report));
    drop(out);
    if report.ok {
        Ok(report)
    } else {
        Err(ProbeError(report.failures()))
    }
}

/// One JSON object on one line with the whole report, for Logs Insights
/// (`filter message = "probe report" and not ok`).
pub fn report_line(report: &ProbeReport) -> String {
    json!({
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "level": if report.ok { "INFO" } else { "ERROR" },
        "message": "probe report",
        "ok": report.ok,
        "failures": report.failures(),
        "checks": report.checks,
        "skipped": report.skipped,
    })
    .to_string()
}

/// The EMF lines: per group `CheckFailed` (0/1, dimension exactly `Check=<group>`, which the
/// template's alarm watches) and `CheckLatencyMs`; per check `Up` (0/1), `LatencyMs` and what it
/// measured (`CertDaysLeft`, `QueueBacklog`, `QueueInFlight`, `DeadLetterQueueDepth`), with
/// dimension `Check=<check name>`: the intake queues' figures carry the same metric names under
/// their own checks (`sqs.intake_queue`, `sqs.intake_dead_letter_queue`), so the chunk queue's
/// series (`Check=sqs.queue`, `Check=sqs.dead_letter_queue`) stay what the alarms watch.
pub fn metric_sets(report: &ProbeReport, groups: &[&str]) -> Vec<MetricSet> {
    let mut sets = Vec::new();
    for group in groups {
        let checks: Vec<&CheckResult> = report
            .checks
            .iter()
            .filter(|c| group_of(&c.name) == *group)
            .collect();
        if checks.is_empty() {
            continue;
        }
        let mut m = MetricSet::dimensions_only(&[("Check", group)]);
        m.count("CheckFailed", u64::from(checks.iter().any(|c| !c.ok)))
            .value(
                "CheckLatencyMs",
                checks.iter().map(|c| c.ms).sum::<u64>() as f64,
                "Milliseconds",
            );
        sets.push(m);
    }
    for c in &report.checks {
        let mut m = MetricSet::dimensions_only(&[("Check", &c.name)]);
        m.count("Up", u64::from(c.ok))
            .value("LatencyMs", c.ms as f64, "Milliseconds");
        for (name, value) in &c.metrics {
            let unit = if name == "CertDaysLeft" {
                "None"
            } else {
                "Count"
            };
            m.value(name, *value, unit);
        }
        sets.push(m);
    }
    sets
}

fn emit_metrics(report: &ProbeReport, groups: &[&str]) {
    for m in metric_sets(report, groups) {
        m.emit();
    }
}

async fn timed<T, F: Future<Output = T>>(f: F) -> (T, u64) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed().as_millis() as u64)
}

/// A duration as the checks' details print it: whole seconds, or to a tenth.
fn secs(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;

    /// Answers every run with the same checks, and keeps the groups each run asked for.
    struct Answer {
        checks: Vec<CheckResult>,
        asked: Mutex<Vec<Vec<&'static str>>>,
    }

    impl Checks for Answer {
        async fn run(&self, groups: &[&'static str]) -> ProbeReport {
            self.asked.lock().unwrap().push(groups.to_vec());
            let mut checks = self.checks.clone();
            for c in &mut checks {
                c.required = c.name != "s3.bucket";
            }
            ProbeReport {
                ok: checks.iter().all(|c| c.ok || !c.required),
                checks,
                skipped: Vec::new(),
            }
        }
    }

    fn answer(checks: Vec<CheckResult>) -> Answer {
        Answer {
            checks,
            asked: Mutex::new(Vec::new()),
        }
    }

    #[tokio::test]
    async fn the_handler_runs_what_the_event_asks_for_and_fails_on_required_checks_only() {
        let healthy = answer(vec![CheckResult::pass("elasticsearch.http", 3, "200")]);
        let scheduled: Value =
            serde_json::from_str(include_str!("../../events/schedule-scheduler.json")).unwrap();
        let report = handle_event(&healthy, scheduled).await.unwrap();
        assert!(report.ok);
        let asked = json!({"checks": ["sqs.queue", "elasticsearch"]});
        handle_event(&healthy, asked).await.unwrap();
        assert_eq!(
            *healthy.asked.lock().unwrap(),
            [GROUPS.to_vec(), vec!["elasticsearch", "sqs"]]
        );

        // A failing check that is not required is reported, and the invocation succeeds.
        let optional = answer(vec![CheckResult::fail(
            "s3.bucket",
            Layer::NotFound,
            2,
            "no such bucket",
        )]);
        let report = handle_event(&optional, json!({})).await.unwrap();
        assert_eq!(report.checks[0].layer, Some(Layer::NotFound));

        // A required one fails the invocation: its sentence first, then the tolerated ones.
        let broken = answer(vec![
            CheckResult::fail("elasticsearch.tcp", Layer::Tcp, 5000, "timed out"),
            CheckResult::fail("s3.bucket", Layer::NotFound, 2, "no such bucket"),
        ]);
        let ProbeError(failures) = handle_event(&broken, json!({})).await.unwrap_err();
        assert_eq!(
            failures,
            [
                "elasticsearch.tcp failed at tcp: timed out",
                "s3.bucket failed at not_found: no such bucket (not required)"
            ]
        );

        // Unknown names are the first finding, and fail the invocation even when all else passes.
        let ProbeError(failures) = handle_event(&healthy, json!({"checks": ["elasticsaerch"]}))
            .await
            .unwrap_err();
        assert_eq!(
            failures,
            ["probe.request failed at config: the event asks for unknown checks: elasticsaerch"]
        );
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn any_event_shape_checks_everything_unless_told() {
        let file = |text: &str| serde_json::from_str::<Value>(text).unwrap();
        for event in [
            json!({}),
            // The schedules of `events/`: EventBridge Scheduler's (a string `detail`) and a rule's.
            file(include_str!("../../events/schedule-scheduler.json")),
            file(include_str!("../../events/schedule-rule.json")),
            json!(null),
            json!({"checks": []}),
            json!({"checks": ["all"]}),
        ] {
            assert_eq!(requested_groups(&event), (GROUPS.to_vec(), vec![]));
        }
        assert_eq!(
            requested_groups(&json!({"checks": ["bedrock", "elasticsearch", "nope"]})),
            (vec!["elasticsearch", "bedrock"], names(&["nope"]))
        );
        assert_eq!(
            requested_groups(&json!({"checks": "s3.bucket, sqs"})).0,
            vec!["s3", "sqs"]
        );
    }

    #[test]
    fn required_checks_by_group_or_name() {
        assert!(is_required(&names(&["all"]), "s3.bucket"));
        assert!(is_required(&names(&["elasticsearch"]), "elasticsearch.tls"));
        assert!(!is_required(&names(&["elasticsearch"]), "s3.bucket"));
        assert!(is_required(&names(&["s3.bucket"]), "s3.bucket"));
        assert!(!is_required(&names(&["none"]), "elasticsearch.tcp"));
        assert!(is_known_selector("sqs.dead_letter_queue") && !is_known_selector("sqs.dlq"));
    }

    #[test]
    fn failures_name_check_and_layer_required_first() {
        let mut optional = CheckResult::fail("s3.bucket", Layer::NotFound, 3, "gone");
        optional.required = false;
        let report = ProbeReport {
            ok: false,
            checks: vec![
                CheckResult::pass("elasticsearch.dns", 1, "ok"),
                optional,
                CheckResult::fail("elasticsearch.tcp", Layer::Tcp, 5, "refused"),
            ],
            skipped: vec![],
        };
        assert_eq!(
            report.failures(),
            vec![
                "elasticsearch.tcp failed at tcp: refused",
                "s3.bucket failed at not_found: gone (not required)"
            ]
        );
        let text = ProbeError(report.failures()).to_string();
        assert!(text.starts_with("probe failed: elasticsearch.tcp failed at tcp"));
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(
            v["checks"][0],
            json!({"name": "elasticsearch.dns", "ok": true, "ms": 1, "detail": "ok"})
        );
        assert_eq!(v["checks"][1]["required"], false);
        let back: ProbeReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn metrics_keep_the_alarm_dimension_and_add_per_check_figures() {
        let report = ProbeReport {
            ok: false,
            checks: vec![
                CheckResult::pass("elasticsearch.tls", 7, "ok").metric("CertDaysLeft", 40.0),
                CheckResult::fail("elasticsearch.http", Layer::Http, 9, "no"),
                CheckResult::pass("sqs.dead_letter_queue", 2, "0")
                    .metric("DeadLetterQueueDepth", 0.0),
            ],
            skipped: vec![],
        };
        let lines: Vec<Value> = metric_sets(&report, &["elasticsearch", "sqs", "s3"])
            .iter()
            .map(|m| serde_json::from_str(&m.to_line()).unwrap())
            .collect();
        assert_eq!(lines.len(), 2 + 3);
        let es = &lines[0];
        assert_eq!(
            es["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Check"]])
        );
        assert_eq!(es["_aws"]["CloudWatchMetrics"][0]["Namespace"], "sakuin");
        assert_eq!(
            (es["Check"].clone(), es["CheckFailed"].clone()),
            (json!("elasticsearch"), json!(1.0))
        );
        assert_eq!(lines[1]["CheckFailed"], 0.0);
        let tls = &lines[2];
        assert_eq!(
            (
                tls["Check"].clone(),
                tls["Up"].clone(),
                tls["CertDaysLeft"].clone()
            ),
            (json!("elasticsearch.tls"), json!(1.0), json!(40.0))
        );
        assert_eq!(lines[3]["Up"], 0.0);
        assert_eq!(lines[4]["DeadLetterQueueDepth"], 0.0);
        assert_eq!(
            lines[4]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Check"]])
        );
    }

    #[test]
    fn the_report_line_is_one_json_object() {
        let report = ProbeReport {
            ok: false,
            checks: vec![
                CheckResult::fail("elasticsearch.tcp", Layer::Tcp, 5, "refused").hint("look"),
            ],
            skipped: vec!["s3 (SOURCE_BUCKET is not set)".into()],
        };
        let line = report_line(&report);
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["message"], "probe report");
        assert_eq!(v["level"], "ERROR");
        assert_eq!(v["failures"][0], "elasticsearch.tcp failed at tcp: refused");
        assert_eq!(v["checks"][0]["hint"], "look");
    }
}
