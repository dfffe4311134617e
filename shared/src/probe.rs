//! The `probe`: checks each dependency layer by layer (for Elasticsearch: name resolution, TCP,
//! TLS and HTTP, authentication, cluster health, the index mapping), times every check, and says
//! where the path breaks.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpStream;

use crate::config::ProbeConfig;
use crate::embed::bedrock::{BedrockEmbedder, error_chain};
use crate::embed::{Embedder, InputPurpose};
use crate::es::document::mapped_dimensions;
use crate::es::{EsClient, EsError};
use crate::metrics::MetricSet;

/// One check's result, as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    pub ms: u64,
    pub detail: String,
    /// The layer a failed check broke at (dns, tcp, tls, http, auth, cluster, mapping, s3, sqs,
    /// bedrock).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub layer: Option<String>,
    /// Passed, but needs a look (a yellow cluster, a non-empty dead-letter queue).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub warning: bool,
}

/// The probe's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub ok: bool,
    pub checks: Vec<CheckResult>,
}

impl ProbeReport {
    /// Every failed check and the layer it broke at, in one sentence per check.
    pub fn failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| {
                format!(
                    "{} failed at {}: {}",
                    c.name,
                    c.layer.as_deref().unwrap_or("?"),
                    c.detail
                )
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("probe failed: {}", .0.join("; "))]
pub struct ProbeError(pub Vec<String>);

/// Clients built once per container. `es` is an error when the client could not be built (a bad
/// CA bundle, say): the probe reports it instead of refusing to start.
pub struct ProbeDeps {
    pub config: ProbeConfig,
    pub es: Result<EsClient, String>,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub bedrock: BedrockEmbedder,
}

/// Which dependency groups to check; an event may ask for a subset with `{"checks": [...]}`.
const GROUPS: &[&str] = &["elasticsearch", "s3", "sqs", "bedrock"];

fn requested_groups(event: &Value) -> Vec<&'static str> {
    let asked: Vec<String> = event
        .get("checks")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    GROUPS
        .iter()
        .copied()
        .filter(|g| asked.is_empty() || asked.iter().any(|a| a == g))
        .collect()
}

/// Runs the checks (all groups at once), emits metrics and returns the report.
pub async fn run(deps: &ProbeDeps, event: &Value) -> ProbeReport {
    let groups = requested_groups(event);
    let want = |g: &str| groups.contains(&g);
    let (es, s3, sqs, bedrock) = tokio::join!(
        async {
            if want("elasticsearch") {
                check_elasticsearch(deps).await
            } else {
                Vec::new()
            }
        },
        async {
            if want("s3") {
                check_s3(deps).await
            } else {
                Vec::new()
            }
        },
        async {
            if want("sqs") {
                check_queues(deps).await
            } else {
                Vec::new()
            }
        },
        async {
            if want("bedrock") {
                check_bedrock(deps).await
            } else {
                Vec::new()
            }
        },
    );
    let checks: Vec<CheckResult> = [es, s3, sqs, bedrock].into_iter().flatten().collect();
    let report = ProbeReport {
        ok: checks.iter().all(|c| c.ok),
        checks,
    };
    emit(&report, &groups);
    report
}

/// The Lambda handler: the report, or an error naming every failed check.
pub async fn handle_event(deps: &ProbeDeps, event: Value) -> Result<ProbeReport, ProbeError> {
    let report = run(deps, &event).await;
    // One structured line with the whole report, for Logs Insights.
    tracing::info!(report = %serde_json::to_string(&report).unwrap_or_default(), ok = report.ok, "probe report");
    if report.ok {
        Ok(report)
    } else {
        Err(ProbeError(report.failures()))
    }
}

async fn timed<T, F: Future<Output = T>>(f: F) -> (T, u64) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed().as_millis() as u64)
}

fn pass(name: &str, ms: u64, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        name: name.into(),
        ok: true,
        ms,
        detail: detail.into(),
        layer: None,
        warning: false,
    }
}

fn fail(name: &str, layer: &str, ms: u64, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        name: name.into(),
        ok: false,
        ms,
        detail: detail.into(),
        layer: Some(layer.into()),
        warning: false,
    }
}

fn warn(name: &str, ms: u64, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        warning: true,
        ..pass(name, ms, detail)
    }
}

/// Elasticsearch, layer by layer, stopping at the first layer that fails.
async fn check_elasticsearch(deps: &ProbeDeps) -> Vec<CheckResult> {
    let es = &deps.config.es;
    let budget = deps.config.timeout;
    let mut out = Vec::new();

    let (resolved, ms) = timed(tokio::time::timeout(
        budget,
        tokio::net::lookup_host((es.host.as_str(), es.port)),
    ))
    .await;
    let addrs: Vec<SocketAddr> = match resolved {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => {
            out.push(fail("elasticsearch.dns", "dns", ms, format!(
                "{} does not resolve ({e}); check the name, the VPC's DNS resolver and any Route 53 Resolver rule forwarding the on-premises domain",
                es.host
            )));
            return out;
        }
        Err(_) => {
            out.push(fail(
                "elasticsearch.dns",
                "dns",
                ms,
                format!("resolving {} timed out after {budget:?}", es.host),
            ));
            return out;
        }
    };
    let listed: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    out.push(pass(
        "elasticsearch.dns",
        ms,
        format!("{} → {}", es.host, listed.join(", ")),
    ));

    let (connected, ms) = timed(connect_any(&addrs, es.connect_timeout.min(budget))).await;
    match connected {
        Ok(addr) => out.push(pass(
            "elasticsearch.tcp",
            ms,
            format!("connected to {addr}"),
        )),
        Err(detail) => {
            out.push(fail("elasticsearch.tcp", "tcp", ms, detail));
            return out;
        }
    }

    let client = match &deps.es {
        Ok(c) => c,
        Err(e) => {
            out.push(fail("elasticsearch.http", "tls", 0, e.clone()));
            return out;
        }
    };
    let (answer, ms) = timed(client.send(Method::GET, "/", None)).await;
    let (status, body) = match answer {
        Ok(a) => a,
        Err(EsError::Unreachable {
            detail, timeout, ..
        }) => {
            let (layer, hint) = if es.use_ssl && !timeout {
                (
                    "tls",
                    "the TLS handshake failed: check ES_CA_CERT (the cluster's CA), that the certificate's names include ES_HOST, and its dates",
                )
            } else if timeout {
                (
                    "http",
                    "connected, but no HTTP answer in time: is this port Elasticsearch's HTTP port (and ES_USE_SSL right)?",
                )
            } else {
                (
                    "http",
                    "connected, but the HTTP exchange failed: if the cluster speaks TLS, set ES_USE_SSL=true",
                )
            };
            out.push(fail(
                "elasticsearch.http",
                layer,
                ms,
                format!("{hint} ({detail})"),
            ));
            return out;
        }
        Err(e) => {
            out.push(fail("elasticsearch.http", "http", ms, e.to_string()));
            return out;
        }
    };
    let version = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        v.pointer("/version/number")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    out.push(pass(
        "elasticsearch.http",
        ms,
        format!(
            "HTTP {} from {}{}",
            status.as_u16(),
            client.base_url(),
            version
                .map(|v| format!(", Elasticsearch {v}"))
                .unwrap_or_default()
        ),
    ));

    match status {
        StatusCode::UNAUTHORIZED => {
            out.push(fail("elasticsearch.auth", "auth", 0, "401: the credentials were refused; check ES_USERNAME / ES_PASSWORD, ES_API_KEY or the secret named by ES_SECRET_ID"));
            return out;
        }
        s if s.is_success() || s == StatusCode::FORBIDDEN => {
            out.push(pass("elasticsearch.auth", 0, "credentials accepted"))
        }
        s => {
            out.push(fail(
                "elasticsearch.auth",
                "http",
                0,
                format!(
                    "unexpected HTTP {} for GET /: is this Elasticsearch?",
                    s.as_u16()
                ),
            ));
            return out;
        }
    }

    let (health, ms) = timed(client.cluster_health()).await;
    match health {
        Ok(h) if h.status == "green" => out.push(pass("elasticsearch.cluster", ms, format!("green, {} node(s)", h.nodes))),
        Ok(h) if h.status == "yellow" => out.push(warn(
            "elasticsearch.cluster",
            ms,
            format!("yellow, {} node(s), {} unassigned shard(s): replicas are not allocated (normal for a single node)", h.nodes, h.unassigned_shards),
        )),
        Ok(h) => {
            out.push(fail("elasticsearch.cluster", "cluster", ms, format!("{}: some primary shards are not allocated; writes to them fail", h.status)));
            return out;
        }
        Err(EsError::Status { status: 403, reason, .. }) => {
            out.push(fail("elasticsearch.cluster", "auth", ms, format!("403: the user may not read cluster health (grant the `monitor` cluster privilege): {reason}")));
            return out;
        }
        Err(e) => {
            out.push(fail("elasticsearch.cluster", "cluster", ms, e.to_string()));
            return out;
        }
    }

    let (mapping, ms) = timed(client.mapping()).await;
    let want = deps.config.model.dimensions;
    match mapping {
        Ok(m) => {
            let dims = mapped_dimensions(&m);
            let wrong: Vec<String> = dims
                .iter()
                .filter(|(_, d)| *d != Some(want as u64))
                .map(|(i, d)| {
                    format!(
                        "{i} has {}",
                        d.map(|d| format!("{d} dimensions"))
                            .unwrap_or("no dense_vector `embedding`".into())
                    )
                })
                .collect();
            if wrong.is_empty() {
                let count = client
                    .count()
                    .await
                    .map(|c| format!(", {c} chunks"))
                    .unwrap_or_default();
                out.push(pass(
                    "elasticsearch.index",
                    ms,
                    format!("{}: embedding has {want} dimensions{count}", client.index),
                ));
            } else {
                out.push(fail("elasticsearch.index", "mapping", ms, format!(
                    "{} expects {want} dimensions but {}; point ES_INDEX at an index for this model",
                    deps.config.model.id,
                    wrong.join(", ")
                )));
            }
        }
        Err(EsError::Status { status: 404, .. }) => out.push(warn(
            "elasticsearch.index",
            ms,
            format!(
                "{} does not exist yet; embed-index creates it with the first batch",
                client.index
            ),
        )),
        Err(EsError::Status {
            status: 403,
            reason,
            ..
        }) => out.push(fail(
            "elasticsearch.index",
            "auth",
            ms,
            format!(
                "403 reading the mapping of {}: grant `view_index_metadata` on it ({reason})",
                client.index
            ),
        )),
        Err(e) => out.push(fail("elasticsearch.index", "mapping", ms, e.to_string())),
    }
    out
}

/// Connects to the first address that answers; says whether the others refused or timed out.
async fn connect_any(addrs: &[SocketAddr], timeout: Duration) -> Result<SocketAddr, String> {
    let mut problems = Vec::new();
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(_)) => return Ok(*addr),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => problems.push(format!(
                "{addr} refused the connection: the host is reachable but nothing listens on port {} (or a firewall rejects it)",
                addr.port()
            )),
            Ok(Err(e)) => problems.push(format!("{addr}: {e}")),
            Err(_) => problems.push(format!(
                "{addr} did not answer within {timeout:?}: usually routing (the subnet's route to the on-premises CIDR over the VPN / Direct Connect), \
                 the security group's egress, or the on-premises firewall dropping the traffic"
            )),
        }
    }
    Err(problems.join("; "))
}

async fn check_s3(deps: &ProbeDeps) -> Vec<CheckResult> {
    let Some(bucket) = &deps.config.bucket else {
        return Vec::new();
    };
    let (result, ms) = timed(deps.s3.head_bucket().bucket(bucket).send()).await;
    vec![match result {
        Ok(_) => pass("s3.bucket", ms, format!("{bucket} is readable")),
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            let detail = match status {
                Some(404) => format!("{bucket} does not exist"),
                Some(403) => format!(
                    "{bucket}: access denied; check the function role's s3:ListBucket permission and the bucket policy"
                ),
                _ => format!(
                    "{bucket}: {}; if the function is in a VPC, check the S3 gateway endpoint or NAT route",
                    error_chain(&e)
                ),
            };
            fail("s3.bucket", "s3", ms, detail)
        }
    }]
}

async fn check_queues(deps: &ProbeDeps) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for (name, url, is_dlq) in [
        ("sqs.queue", &deps.config.queue_url, false),
        (
            "sqs.dead_letter_queue",
            &deps.config.dead_letter_queue_url,
            true,
        ),
    ] {
        let Some(url) = url else { continue };
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let (result, ms) = timed(
            deps.sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(A::ApproximateNumberOfMessages)
                .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
                .send(),
        )
        .await;
        out.push(match result {
            Ok(r) => {
                let attr = |a: A| r.attributes().and_then(|m| m.get(&a)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                let visible = attr(A::ApproximateNumberOfMessages);
                let in_flight = attr(A::ApproximateNumberOfMessagesNotVisible);
                let detail = format!("{visible} waiting, {in_flight} in flight");
                if is_dlq && visible > 0 {
                    warn(name, ms, format!("{detail}: messages that failed every retry; read the embed-index errors, fix, then redrive"))
                } else {
                    pass(name, ms, detail)
                }
            }
            Err(e) => fail(name, "sqs", ms, format!("{url}: {}; if the function is in a VPC, check the SQS interface endpoint or NAT route", error_chain(&e.into_service_error()))),
        });
    }
    out
}

async fn check_bedrock(deps: &ProbeDeps) -> Vec<CheckResult> {
    let model = deps.bedrock.model();
    let (result, ms) = timed(tokio::time::timeout(
        deps.config.timeout * 3,
        deps.bedrock.invoke(&["probe"], InputPurpose::Query),
    ))
    .await;
    vec![match result {
        Ok(Ok(out)) => pass(
            "bedrock.model",
            ms,
            format!(
                "{} answered a {}-dimension embedding",
                model.id,
                out.vectors[0].len()
            ),
        ),
        Ok(Err(e)) => fail("bedrock.model", "bedrock", ms, format!("{}: {e}", model.id)),
        Err(_) => fail(
            "bedrock.model",
            "bedrock",
            ms,
            format!(
                "{} did not answer in time; if the function is in a VPC, check the bedrock-runtime interface endpoint",
                model.id
            ),
        ),
    }]
}

/// EMF: per group, `CheckFailed` (0/1) and `CheckLatencyMs`; the queue depths as their own metrics.
fn emit(report: &ProbeReport, groups: &[&str]) {
    for group in groups {
        let checks: Vec<&CheckResult> = report
            .checks
            .iter()
            .filter(|c| c.name.split('.').next() == Some(group))
            .collect();
        if checks.is_empty() {
            continue;
        }
        let failed = checks.iter().any(|c| !c.ok);
        let ms: u64 = checks.iter().map(|c| c.ms).sum();
        let mut m = MetricSet::dimensions_only(&[("Check", group)]);
        m.count("CheckFailed", u64::from(failed)).value(
            "CheckLatencyMs",
            ms as f64,
            "Milliseconds",
        );
        m.emit();
    }
    for c in &report.checks {
        if let Some(waiting) = c
            .detail
            .split(' ')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
        {
            let metric = match c.name.as_str() {
                "sqs.queue" => "QueueDepth",
                "sqs.dead_letter_queue" => "DeadLetterQueueDepth",
                _ => continue,
            };
            let mut m = MetricSet::dimensions_only(&[("Function", "probe")]);
            m.count(metric, waiting);
            m.emit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn any_event_shape_checks_everything_unless_told() {
        for event in [
            json!({}),
            json!({"version": "0", "source": "aws.scheduler", "detail-type": "Scheduled Event", "detail": "{}"}),
            json!({"source": "aws.events", "detail": {}}),
            json!(null),
        ] {
            assert_eq!(requested_groups(&event), GROUPS.to_vec());
        }
        assert_eq!(
            requested_groups(&json!({"checks": ["bedrock", "elasticsearch", "nope"]})),
            vec!["elasticsearch", "bedrock"]
        );
    }

    #[test]
    fn failures_name_check_and_layer() {
        let report = ProbeReport {
            ok: false,
            checks: vec![
                pass("elasticsearch.dns", 1, "ok"),
                fail("elasticsearch.tcp", "tcp", 5, "refused"),
            ],
        };
        assert_eq!(
            report.failures(),
            vec!["elasticsearch.tcp failed at tcp: refused"]
        );
        let text = ProbeError(report.failures()).to_string();
        assert!(text.starts_with("probe failed: elasticsearch.tcp failed at tcp"));
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(
            v["checks"][0],
            json!({"name": "elasticsearch.dns", "ok": true, "ms": 1, "detail": "ok"})
        );
    }

    #[tokio::test]
    async fn closed_port_is_refused_and_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = connect_any(&[addr], Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(err.contains("refused"), "{err}");
    }
}
