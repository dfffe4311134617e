//! A fault for every Elasticsearch layer, made real on loopback, and the layer and cause the
//! probe names for it. Also the required / not-required semantics, the search path, and the
//! `sakuin` binary against a mock cluster.

mod common;

use sakuin::probe::Layer;
use std::time::{Duration, Instant};

use common::*;
use sakuin::embed::{Embedder, InputPurpose};
use sakuin::probe::{self, ProbeReport, handle_event};
use serde_json::{Value, json};

const ES: &[&str] = &["elasticsearch"];

async fn probe_es(vars: &[(&str, &str)]) -> ProbeReport {
    let deps = es_deps(vars).await;
    tokio::time::timeout(Duration::from_secs(60), probe::run(&deps, ES))
        .await
        .expect("the probe finishes within its budget")
}

fn assert_stopped_at(report: &ProbeReport, name: &str, layer: &str, needles: &[&str]) {
    let c = last(report);
    assert_eq!(
        (c.name.as_str(), c.ok, c.layer.map(Layer::as_str)),
        (name, false, Some(layer)),
        "{report:#?}"
    );
    for n in needles {
        assert!(
            c.detail.contains(n) || c.hint.as_deref().unwrap_or("").contains(n),
            "{n:?} not in {c:#?}"
        );
    }
    assert!(!report.ok);
    assert!(
        report.checks[..report.checks.len() - 1]
            .iter()
            .all(|c| c.ok),
        "the layers before the failing one pass: {report:#?}"
    );
}

#[tokio::test]
async fn a_name_that_does_not_resolve_fails_at_dns() {
    let report = probe_es(&[
        ("ES_HOST", "sakuin-probe-test.invalid"),
        ("PROBE_TIMEOUT_SECS", "2"),
    ])
    .await;
    assert_eq!(report.checks.len(), 1);
    let c = last(&report);
    assert_eq!(
        (c.name.as_str(), c.layer.map(Layer::as_str)),
        ("elasticsearch.dns", Some("dns"))
    );
    // Without a resolver the lookup may hang instead of failing: both are the DNS layer.
    assert!(
        c.detail.contains("does not resolve") || c.detail.contains("did not finish"),
        "{c:#?}"
    );
    assert!(c.hint.as_deref().unwrap().contains("Route 53 Resolver"));
}

#[tokio::test]
async fn a_closed_port_is_refused_at_tcp() {
    let port = closed_port().to_string();
    let report = probe_es(&[("ES_HOST", "127.0.0.1"), ("ES_PORT", &port)]).await;
    assert_stopped_at(
        &report,
        "elasticsearch.tcp",
        "tcp",
        &["refused", "nothing accepts port"],
    );
    assert!(
        check(&report, "elasticsearch.dns")
            .detail
            .contains("IP address")
    );
}

#[tokio::test]
async fn a_blackholed_connect_times_out_within_the_budget() {
    let hole = blackhole().await;
    let port = hole.addr.port().to_string();
    let started = Instant::now();
    let report = probe_es(&[
        ("ES_HOST", "127.0.0.1"),
        ("ES_PORT", &port),
        ("PROBE_TIMEOUT_SECS", "1"),
    ])
    .await;
    let elapsed = started.elapsed();
    assert_stopped_at(
        &report,
        "elasticsearch.tcp",
        "tcp",
        &[
            "did not answer within 1 s",
            "route table",
            "security group",
            "on-premises firewall",
        ],
    );
    // Bounded by the budget, with generous slack for a loaded machine.
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
}

async fn tls_report(certs: &Certs, cert: &str, extra: &[(&str, &str)]) -> ProbeReport {
    let server = serve(Cluster::default().responder(), Some(certs.acceptor(cert))).await;
    let port = server.port();
    let ca = certs.path("ca.pem");
    let mut vars = vec![
        ("ES_HOST", "127.0.0.1"),
        ("ES_PORT", port.as_str()),
        ("ES_USE_SSL", "true"),
        ("ES_CA_CERT", ca.as_str()),
        ("PROBE_TIMEOUT_SECS", "5"),
    ];
    for (k, v) in extra {
        vars.retain(|(name, _)| name != k);
        vars.push((k, v));
    }
    probe_es(&vars).await
}

/// A cluster whose HTTP layer requires client certificates: none offered is named as such, a
/// certificate it does not trust is named as refused, and the right one passes every layer.
#[tokio::test]
async fn a_cluster_that_requires_client_certificates_is_named() {
    let certs = Certs::make();
    let server = serve(
        Cluster::default().responder(),
        Some(certs.acceptor_requiring_clients()),
    )
    .await;
    let port = server.port();
    let ca = certs.path("ca.pem");
    let report_with = |cert: Option<&str>| {
        let (port, ca) = (port.clone(), ca.clone());
        let files = cert.map(|c| {
            (
                certs.path(&format!("{c}.pem")),
                certs.path(&format!("{c}.key")),
            )
        });
        async move {
            let mut vars = vec![
                ("ES_HOST", "127.0.0.1".to_owned()),
                ("ES_PORT", port),
                ("ES_USE_SSL", "true".to_owned()),
                ("ES_CA_CERT", ca),
                ("PROBE_TIMEOUT_SECS", "5".to_owned()),
            ];
            if let Some((cert, key)) = files {
                vars.push(("ES_CLIENT_CERT", cert));
                vars.push(("ES_CLIENT_KEY", key));
            }
            let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            probe_es(&vars).await
        }
    };
    let report = report_with(None).await;
    assert_stopped_at(
        &report,
        "elasticsearch.tls",
        "tls",
        &[
            "asks for a client certificate and none is configured",
            "client_certificate and client_key",
        ],
    );
    let report = report_with(Some("stranger")).await;
    assert_stopped_at(
        &report,
        "elasticsearch.tls",
        "tls",
        &["refused the client certificate", "certificate_authorities"],
    );
    let report = report_with(Some("client")).await;
    assert!(report.ok, "{report:#?}");
    let tls = check(&report, "elasticsearch.tls");
    assert!(
        tls.detail.contains("client certificate accepted"),
        "{tls:#?}"
    );
    // The client's own requests carry it too: the cluster answered over it.
    assert!(check(&report, "elasticsearch.index").ok || check(&report, "elasticsearch.http").ok);
    // The key is never shown.
    let key = std::fs::read_to_string(certs.path("client.key")).unwrap();
    let shown = format!("{report:?}");
    assert!(!shown.contains(key.lines().nth(1).unwrap()));
}

#[tokio::test]
async fn tls_faults_are_told_apart() {
    let certs = Certs::make();

    // Self-signed: untrusted, says so, and points at ES_CA_CERT.
    let report = tls_report(&certs, "self_signed.pem", &[]).await;
    assert_stopped_at(
        &report,
        "elasticsearch.tls",
        "tls",
        &["self-signed", "unknown issuer", "ES_CA_CERT"],
    );

    // The quick `openssl req -x509` kind: a CA certificate as the server's own.
    let report = tls_report(&certs, "self_signed_ca.pem", &[]).await;
    assert_stopped_at(
        &report,
        "elasticsearch.tls",
        "tls",
        &[
            "CA certificate (basicConstraints CA:TRUE)",
            "self-signed",
            "elasticsearch-certutil",
        ],
    );

    // Signed by a CA the probe is not told about.
    let report = tls_report(&certs, "good.pem", &[("ES_CA_CERT", "")]).await;
    assert_stopped_at(
        &report,
        "elasticsearch.tls",
        "tls",
        &["untrusted", "Sakuin Test CA", "ES_CA_CERT is not set"],
    );

    // Hostname mismatch, listing the names the certificate holds.
    let report = tls_report(&certs, "wrong_host.pem", &[]).await;
    assert_stopped_at(
        &report,
        "elasticsearch.tls",
        "tls",
        &[
            "hostname mismatch",
            "es.other.example",
            "es2.other.example",
            "not 127.0.0.1",
        ],
    );

    // Expired, with the date and a negative days-left figure.
    let report = tls_report(&certs, "expired.pem", &[]).await;
    assert_stopped_at(
        &report,
        "elasticsearch.tls",
        "tls",
        &["expired on 2021-01-01", "renew"],
    );
    assert!(
        last(&report).metrics["CertDaysLeft"] < -365.0,
        "{report:#?}"
    );

    // Not valid yet.
    let report = tls_report(&certs, "not_yet.pem", &[]).await;
    assert_stopped_at(
        &report,
        "elasticsearch.tls",
        "tls",
        &["not valid yet until 2099-01-01"],
    );

    // Trusted and valid, but expiring within PROBE_CERT_WARN_DAYS (14): a warning, and the rest
    // of the path runs over TLS.
    let report = tls_report(&certs, "good.pem", &[]).await;
    assert!(report.ok, "{report:#?}");
    let tls = check(&report, "elasticsearch.tls");
    assert!(tls.ok && tls.warning, "{tls:#?}");
    assert!(
        tls.detail.contains("days left")
            && tls
                .hint
                .as_deref()
                .unwrap()
                .contains("PROBE_CERT_WARN_DAYS=14"),
        "{tls:#?}"
    );
    // Valid for 5 days from (about) now: 4 whole days left, or 5 within the same second.
    let days = tls.metrics["CertDaysLeft"];
    assert!(days == 4.0 || days == 5.0, "{tls:#?}");
    assert!(check(&report, "elasticsearch.index").ok);
    assert!(
        check(&report, "elasticsearch.http")
            .detail
            .contains("https://127.0.0.1")
    );

    // The same, with a shorter warning window: a clean pass.
    let report = tls_report(&certs, "good.pem", &[("PROBE_CERT_WARN_DAYS", "2")]).await;
    let tls = check(&report, "elasticsearch.tls");
    assert!(tls.ok && !tls.warning, "{tls:#?}");

    // Verification off: loud, and still says what verification would have found.
    let report = tls_report(&certs, "self_signed.pem", &[("ES_VERIFY_CERTS", "false")]).await;
    let tls = check(&report, "elasticsearch.tls");
    assert!(tls.ok && tls.warning, "{tls:#?}");
    assert!(
        tls.detail.contains("verification is OFF")
            && tls.detail.contains("would FAIL verification")
            && tls.detail.contains("self-signed"),
        "{tls:#?}"
    );
    assert!(check(&report, "elasticsearch.cluster").ok, "{report:#?}");

    // A TLS cluster probed as plain HTTP: the HTTP layer says to set ES_USE_SSL.
    let report = tls_report(
        &certs,
        "good.pem",
        &[("ES_USE_SSL", "false"), ("ES_CA_CERT", "")],
    )
    .await;
    assert_stopped_at(&report, "elasticsearch.http", "http", &["ES_USE_SSL=true"]);
}

#[tokio::test]
async fn tls_against_a_plain_http_port_says_it_is_not_tls() {
    let server = serve(Cluster::default().responder(), None).await;
    let port = server.port();
    let report = probe_es(&[
        ("ES_HOST", "127.0.0.1"),
        ("ES_PORT", &port),
        ("ES_USE_SSL", "true"),
    ])
    .await;
    assert_stopped_at(
        &report,
        "elasticsearch.tls",
        "tls",
        &["does not speak TLS", "ES_USE_SSL=false"],
    );
}

async fn mock_report(cluster: Cluster, extra: &[(&str, &str)]) -> (ProbeReport, Vec<String>) {
    let server = serve(cluster.responder(), None).await;
    let port = server.port();
    let mut vars = vec![
        ("ES_HOST", "127.0.0.1"),
        ("ES_PORT", port.as_str()),
        ("ES_USERNAME", "probe"),
        ("ES_PASSWORD", "pr0be-pa55word"),
    ];
    vars.extend_from_slice(extra);
    let report = probe_es(&vars).await;
    (report, server.paths())
}

#[tokio::test]
async fn http_401_is_authentication() {
    let (report, _) = mock_report(
        Cluster {
            auth_status: Some(401),
            ..Default::default()
        },
        &[],
    )
    .await;
    assert_stopped_at(
        &report,
        "elasticsearch.auth",
        "auth",
        &["401", "refused user `probe`", "unable to authenticate"],
    );
    assert!(
        check(&report, "elasticsearch.http")
            .detail
            .contains("HTTP 401")
    );
    let text = serde_json::to_string(&report).unwrap();
    assert!(!text.contains("pr0be-pa55word"), "{text}");
}

#[tokio::test]
async fn http_401_without_credentials_says_none_are_configured() {
    let server = serve(
        Cluster {
            auth_status: Some(401),
            ..Default::default()
        }
        .responder(),
        None,
    )
    .await;
    let port = server.port();
    let report = probe_es(&[("ES_HOST", "127.0.0.1"), ("ES_PORT", &port)]).await;
    assert_stopped_at(
        &report,
        "elasticsearch.auth",
        "auth",
        &["none are configured", "ES_SECRET_ID"],
    );
}

#[tokio::test]
async fn http_403_on_cluster_health_is_authorization() {
    let (report, _) = mock_report(
        Cluster {
            health: "forbidden",
            ..Default::default()
        },
        &[],
    )
    .await;
    assert_stopped_at(
        &report,
        "elasticsearch.cluster",
        "authz",
        &[
            "403",
            "not allowed to read cluster health",
            "`monitor` cluster privilege",
        ],
    );
    let auth = check(&report, "elasticsearch.auth");
    assert!(
        auth.ok
            && auth.detail.contains("authenticated as `probe`")
            && auth.detail.contains("sakuin_probe"),
        "{auth:#?}"
    );
}

#[tokio::test]
async fn a_red_cluster_fails_with_the_reason() {
    let (report, paths) = mock_report(
        Cluster {
            health: "red",
            ..Default::default()
        },
        &[],
    )
    .await;
    assert_stopped_at(
        &report,
        "elasticsearch.cluster",
        "cluster",
        &[
            "red",
            "1 primary shard(s) unassigned",
            "red indices: documents",
            "the target index documents is red",
            "NODE_LEFT",
            "no longer be found",
        ],
    );
    assert!(
        paths
            .iter()
            .any(|p| p == "POST /_cluster/allocation/explain"),
        "{paths:?}"
    );
}

#[tokio::test]
async fn a_yellow_cluster_is_a_warning() {
    let (report, _) = mock_report(
        Cluster {
            health: "yellow",
            ..Default::default()
        },
        &[],
    )
    .await;
    assert!(report.ok, "{report:#?}");
    let c = check(&report, "elasticsearch.cluster");
    assert!(
        c.ok && c.warning && c.detail.starts_with("yellow"),
        "{c:#?}"
    );
}

#[tokio::test]
async fn an_index_with_the_wrong_dimensions_fails_at_mapping() {
    let (report, _) = mock_report(
        Cluster {
            dims: Some(384),
            ..Default::default()
        },
        &[],
    )
    .await;
    assert_stopped_at(
        &report,
        "elasticsearch.index",
        "mapping",
        &[
            "amazon.titan-embed-text-v2:0 produces 1024 dimensions",
            "documents maps `embedding` with 384 dimensions",
            "ES_INDEX",
        ],
    );
}

#[tokio::test]
async fn a_healthy_cluster_reports_every_layer() {
    let (report, _) = mock_report(Cluster::default(), &[("EMBEDDING_DIMENSIONS", "1024")]).await;
    assert!(report.ok, "{report:#?}");
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "elasticsearch.dns",
            "elasticsearch.tcp",
            "elasticsearch.http",
            "elasticsearch.path_mtu",
            "elasticsearch.auth",
            "elasticsearch.cluster",
            "elasticsearch.link",
            "elasticsearch.index"
        ]
    );
    // Loopback carries a 10 MiB _bulk in a blink.
    let link = check(&report, "elasticsearch.link");
    assert!(
        link.ok
            && link
                .detail
                .contains("a 10.0 MiB _bulk (ES_BULK_MAX_BYTES) crosses in"),
        "{link:#?}"
    );
    assert!(link.metrics["LinkUploadMbps"] > 100.0, "{link:#?}");
    assert!(
        check(&report, "elasticsearch.http")
            .detail
            .contains("Elasticsearch 8.15.0")
    );
    let index = check(&report, "elasticsearch.index");
    assert!(
        index.detail.contains("1024 dimensions") && index.detail.contains("42 documents"),
        "{index:#?}"
    );
    assert_eq!(index.metrics["DocumentCount"], 42.0);

    // A missing index is a warning: embed-index creates it.
    let (report, _) = mock_report(
        Cluster {
            dims: None,
            ..Default::default()
        },
        &[],
    )
    .await;
    let index = check(&report, "elasticsearch.index");
    assert!(
        report.ok && index.warning && index.detail.contains("does not exist yet"),
        "{index:#?}"
    );
}

#[tokio::test]
async fn only_required_checks_fail_the_invocation() {
    let port = closed_port().to_string();
    let vars = [("ES_HOST", "127.0.0.1"), ("ES_PORT", port.as_str())];
    let event = json!({"checks": ["elasticsearch"]});

    // Required (the default): the handler fails with the contract's error.
    let deps = es_deps(&vars).await;
    let err = handle_event(&deps, event.clone()).await.unwrap_err();
    let diagnostic = lambda_runtime::Diagnostic::from(err);
    assert_eq!(diagnostic.error_type, "ProbeFailed");
    assert!(
        diagnostic
            .error_message
            .starts_with("probe failed: elasticsearch.tcp failed at tcp: "),
        "{}",
        diagnostic.error_message
    );

    // Not required: reported ok:false, but the invocation succeeds.
    let mut relaxed: Vec<(&str, &str)> = vars.to_vec();
    relaxed.push(("PROBE_REQUIRED_CHECKS", "s3,bedrock"));
    let deps = es_deps(&relaxed).await;
    let report = handle_event(&deps, event.clone())
        .await
        .expect("not required");
    let tcp = check(&report, "elasticsearch.tcp");
    assert!(!tcp.ok && !tcp.required, "{tcp:#?}");
    let v = as_json(&report);
    assert_eq!(v["ok"], true);
    assert_eq!(v["checks"][1]["required"], false);

    // A single check may be named.
    relaxed.pop();
    relaxed.push(("PROBE_REQUIRED_CHECKS", "elasticsearch.tcp"));
    let deps = es_deps(&relaxed).await;
    assert!(handle_event(&deps, event).await.is_err());

    // An event naming an unknown check is a failure of its own, not a silent no-op.
    let err = handle_event(&deps, json!({"checks": ["elasticsaerch"]}))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("probe.request failed at config"),
        "{err}"
    );
}

#[tokio::test]
async fn search_embeds_a_query_and_runs_knn() {
    let server = serve(Cluster::default().responder(), None).await;
    let port = server.port();
    let deps = es_deps(&[
        ("ES_HOST", "127.0.0.1"),
        ("ES_PORT", &port),
        ("EMBEDDING_MODEL_ID", "cohere.embed-multilingual-v3"),
    ])
    .await;
    let embedder = sakuin::test_util::MemoryEmbedder::new(deps.config.model.clone());
    let es = deps.es.as_ref().unwrap();
    let query = sakuin::search::Query {
        mode: sakuin::search::Mode::Knn,
        ..sakuin::search::Query::new("パスワードを忘れました", 2)
    };
    let found = sakuin::search::search(es, &embedder, &query).await.unwrap();
    assert_eq!(found.fused_by, None, "one list");
    let hits = found.hits;
    assert_eq!(hits.len(), 2);
    assert_eq!(
        embedder.calls(),
        vec![(
            vec!["パスワードを忘れました".to_owned()],
            InputPurpose::Query
        )]
    );
    // Cohere's body for a query says so.
    let body: Value =
        serde_json::from_slice(&embedder.model().request_body(&["q"], InputPurpose::Query))
            .unwrap();
    assert_eq!(body["input_type"], "search_query");
    let (_, path, request) = server.requests.lock().unwrap().last().cloned().unwrap();
    assert_eq!(path, "/documents/_search");
    let request: Value = serde_json::from_str(&request).unwrap();
    assert_eq!(request["knn"]["k"], 2);
    assert_eq!(
        request["knn"]["query_vector"].as_array().unwrap().len(),
        1024
    );
    let text = sakuin_cli::render_hits("q", "documents", &hits, false);
    assert!(
        text.contains("0.9100  faq/ja.jsonl, chunk 1\n")
            && text.contains("パスワードを忘れた場合は 再設定のリンクを使います。"),
        "{text}"
    );
}

fn owned(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sakuin_cli(args: &[&str], vars: &[(String, String)]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sakuin"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("the sakuin binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_the_same_report_and_exits_by_it() {
    let (code, out, _) = sakuin_cli(&["--help"], &[]);
    assert_eq!(code, 0);
    for word in [
        "probe",
        "status",
        "search",
        "backfill",
        "reconcile",
        "redrive",
        "--stack",
        "PROBE_REQUIRED_CHECKS",
    ] {
        assert!(out.contains(word), "{word} not in the help: {out}");
    }
    let (code, out, _) = sakuin_cli(&["reconcile", "--help"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("--fix") && out.contains("S3_URL"), "{out}");
    let (code, _, err) = sakuin_cli(&["probe", "--checks", "elastic"], &[]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = sakuin_cli(&["probe"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("ES_HOST is required"), "{err}");

    // A 401 cluster: exit 1, and the JSON is the Lambda's report.
    let server = serve(
        Cluster {
            auth_status: Some(401),
            ..Default::default()
        }
        .responder(),
        None,
    )
    .await;
    let port = server.port();
    let vars = owned(&[
        ("ES_HOST", "127.0.0.1"),
        ("ES_PORT", &port),
        ("ES_API_KEY", "c2VjcmV0LWlkOnNlY3JldC1rZXk="),
    ]);
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        sakuin_cli(&["probe", "--checks", "elasticsearch", "--json"], &vars)
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{out}{err}");
    let report: ProbeReport = serde_json::from_str(&out).expect("--json prints the report");
    let auth = check(&report, "elasticsearch.auth");
    assert_eq!(
        (auth.ok, auth.layer.map(Layer::as_str)),
        (false, Some("auth"))
    );
    assert!(
        !out.contains("c2VjcmV0LWlkOnNlY3JldC1rZXk=")
            && !err.contains("c2VjcmV0LWlkOnNlY3JldC1rZXk=")
    );

    // A healthy cluster: exit 0 and a readable table.
    let server = serve(Cluster::default().responder(), None).await;
    let port = server.port();
    let vars = owned(&[("ES_HOST", "127.0.0.1"), ("ES_PORT", &port)]);
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        sakuin_cli(&["probe", "--checks", "elasticsearch"], &vars)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok    elasticsearch.index")
            && out.contains("OK: every required check passed"),
        "{out}"
    );
}

/// The Elasticsearch client the pipeline uses (not the probe's own handshake) trusts a private CA
/// given in `ES_CA_CERT`, and still checks the host name and refuses unknown issuers.
#[tokio::test]
async fn the_elasticsearch_client_trusts_the_private_ca_and_checks_the_host_name() {
    use sakuin::es::{EsClient, EsError, EsSettings};
    let certs = Certs::make();
    let ca = std::fs::read_to_string(certs.path("ca.pem")).unwrap();
    for (cert, trusted) in [
        ("good.pem", true),
        ("wrong_host.pem", false),
        ("self_signed.pem", false),
    ] {
        let server = serve(Cluster::default().responder(), Some(certs.acceptor(cert))).await;
        let settings = EsSettings {
            tcp_mss: None,
            host: "127.0.0.1".into(),
            port: server.port().parse().unwrap(),
            use_ssl: true,
            verify_certs: true,
            ca_cert_pem: Some(ca.clone()),
            auth: None,
            index: "documents".into(),
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            client_identity: None,
        };
        let result = EsClient::new(&settings).unwrap().cluster_health().await;
        match (trusted, result) {
            (true, Ok(health)) => assert!(!health.status.is_empty()),
            (false, Err(EsError::Unreachable { detail, .. })) => {
                assert!(
                    detail.to_lowercase().contains("certificate"),
                    "{cert}: {detail}"
                )
            }
            (_, other) => panic!("{cert}: {other:?}"),
        }
    }
}
