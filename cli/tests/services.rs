//! The AWS dependencies against real protocols on loopback: moto (S3, SQS, Secrets Manager) and
//! the project's Bedrock stand-in (the local stack of `dev/local`), each fault with its layer and cause; then the `sakuin`
//! binary's probe and search with the same environment as the Lambda.

mod common;

use sakuin::probe::Layer;
use std::time::Duration;

use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;
use common::*;
use sakuin::probe::{self, ProbeDeps, ProbeReport};
use sakuin_local::stack::LocalStack;
use serde_json::{Value, json};

const AWS_GROUPS: &[&str] = &["s3", "sqs", "bedrock", "secretsmanager"];

struct Fixture {
    stack: LocalStack,
    clients: sakuin::probe::AwsClients,
    queue_url: String,
    dlq_url: String,
    intake_url: String,
    intake_dlq_url: String,
}

impl Fixture {
    fn vars<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut vars = vec![
            ("ES_HOST", "127.0.0.1"),
            ("SOURCE_BUCKET", "sakuin-probe-src"),
            ("CHUNK_QUEUE_URL", self.queue_url.as_str()),
            ("DEAD_LETTER_QUEUE_URL", self.dlq_url.as_str()),
            ("INGEST_QUEUE_URL", self.intake_url.as_str()),
            ("INGEST_DEAD_LETTER_QUEUE_URL", self.intake_dlq_url.as_str()),
            ("ES_SECRET_ID", "sakuin/es"),
            ("EMBEDDING_DIMENSIONS", "256"),
            ("PROBE_TIMEOUT_SECS", "3"),
        ];
        for (k, v) in extra {
            vars.retain(|(name, _)| name != k);
            vars.push((k, v));
        }
        vars
    }

    async fn probe(&self, extra: &[(&str, &str)], groups: &[&str]) -> ProbeReport {
        let deps = ProbeDeps::new(config(&self.vars(extra)), self.clients.clone());
        tokio::time::timeout(Duration::from_secs(60), probe::run(&deps, groups))
            .await
            .expect("the probe finishes within its budget")
    }
}

async fn fixture() -> Fixture {
    let stack = LocalStack::start(&["--deny-models", "amazon.titan-embed-text-v1"])
        .await
        .expect("the local stack starts (make venv installs it)");
    let clients = aws_clients(Some(&stack.moto.url()), Some(&stack.bedrock.url())).await;
    clients
        .s3
        .create_bucket()
        .bucket("sakuin-probe-src")
        .create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(REGION))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let dlq_url = clients
        .sqs
        .create_queue()
        .queue_name("sakuin-probe-dlq")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue_url = clients
        .sqs
        .create_queue()
        .queue_name("sakuin-probe-chunks")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": format!("arn:aws:sqs:{REGION}:123456789012:sakuin-probe-dlq"), "maxReceiveCount": 5}).to_string(),
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    // The intake queue and its dead-letter queue, as the template pairs them.
    let intake_dlq_url = clients
        .sqs
        .create_queue()
        .queue_name("sakuin-probe-intake-dlq")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let intake_url = clients
        .sqs
        .create_queue()
        .queue_name("sakuin-probe-intake")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": format!("arn:aws:sqs:{REGION}:123456789012:sakuin-probe-intake-dlq"), "maxReceiveCount": 3}).to_string(),
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    for (name, value) in [
        (
            "sakuin/es",
            r#"{"username":"probe","password":"pw-SECRET-123"}"#,
        ),
        ("sakuin/bad", "hunter2-not-json"),
    ] {
        clients
            .secrets
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .unwrap();
    }
    Fixture {
        stack,
        clients,
        queue_url,
        dlq_url,
        intake_url,
        intake_dlq_url,
    }
}

fn assert_failed(report: &ProbeReport, name: &str, layer: &str, needles: &[&str]) {
    let c = check(report, name);
    assert_eq!(
        (c.ok, c.layer.map(Layer::as_str)),
        (false, Some(layer)),
        "{c:#?}"
    );
    for n in needles {
        assert!(
            c.detail.contains(n) || c.hint.as_deref().unwrap_or("").contains(n),
            "{n:?} not in {c:#?}"
        );
    }
    assert!(!report.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_dependencies_fail_at_the_right_layer() {
    tokio::time::timeout(Duration::from_secs(300), scenarios())
        .await
        .expect("bounded");
}

async fn scenarios() {
    let f = fixture().await;

    // Everything in place: a pass per check, with the queue figures.
    let report = f.probe(&[], AWS_GROUPS).await;
    assert!(report.ok, "{report:#?}");
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "s3.bucket",
            "sqs.queue",
            "sqs.dead_letter_queue",
            "sqs.intake_queue",
            "sqs.intake_dead_letter_queue",
            "bedrock.model",
            "secretsmanager.secret"
        ]
    );
    let queue = check(&report, "sqs.queue");
    assert!(
        queue.detail.contains("0 waiting")
            && queue
                .detail
                .contains("move to sakuin-probe-dlq after 5 receives"),
        "{queue:#?}"
    );
    assert_eq!(queue.metrics["QueueBacklog"], 0.0);
    let intake = check(&report, "sqs.intake_queue");
    assert!(
        !intake.warning
            && intake
                .detail
                .contains("move to sakuin-probe-intake-dlq after 3 receives"),
        "{intake:#?}"
    );
    assert_eq!(intake.metrics["QueueBacklog"], 0.0);
    assert_eq!(
        check(&report, "sqs.intake_dead_letter_queue").metrics["DeadLetterQueueDepth"],
        0.0
    );
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert!(
        check(&report, "bedrock.model")
            .detail
            .contains("256 dimensions")
    );
    let secret = check(&report, "secretsmanager.secret");
    assert!(secret.detail.contains("user `probe`"), "{secret:#?}");
    assert!(
        !serde_json::to_string(&report)
            .unwrap()
            .contains("pw-SECRET-123")
    );

    // Dead letters: a warning and its depth, not a failure; one in the chunk DLQ, two in the
    // intake DLQ, each under its own check so the chunk queue's series stay as they were.
    for (url, n) in [(&f.dlq_url, 1), (&f.intake_dlq_url, 2)] {
        for _ in 0..n {
            f.clients
                .sqs
                .send_message()
                .queue_url(url)
                .message_body("{}")
                .send()
                .await
                .unwrap();
        }
    }
    let report = f.probe(&[], &["sqs"]).await;
    let dlq = check(&report, "sqs.dead_letter_queue");
    assert!(
        report.ok && dlq.warning && dlq.detail.starts_with("1 dead letter"),
        "{dlq:#?}"
    );
    assert_eq!(dlq.metrics["DeadLetterQueueDepth"], 1.0);
    assert!(
        dlq.hint.as_deref().unwrap_or("").contains("embed-index")
            && dlq
                .hint
                .as_deref()
                .unwrap_or("")
                .contains("sakuin redrive --queue chunk"),
        "{dlq:#?}"
    );
    let intake_dlq = check(&report, "sqs.intake_dead_letter_queue");
    assert!(
        intake_dlq.warning && intake_dlq.detail.starts_with("2 dead letter"),
        "{intake_dlq:#?}"
    );
    assert!(
        intake_dlq
            .hint
            .as_deref()
            .unwrap_or("")
            .contains("ingest's errors")
            && intake_dlq
                .hint
                .as_deref()
                .unwrap_or("")
                .contains("sakuin redrive --queue intake"),
        "{intake_dlq:#?}"
    );
    let emf: Vec<Value> = probe::metric_sets(&report, &["sqs"])
        .iter()
        .map(|m| serde_json::from_str(&m.to_line()).unwrap())
        .collect();
    let depth = |check: &str| {
        emf.iter()
            .find(|l| l["Check"] == check)
            .map(|l| l["DeadLetterQueueDepth"].clone())
    };
    assert_eq!(depth("sqs.dead_letter_queue"), Some(json!(1.0)), "{emf:?}");
    assert_eq!(
        depth("sqs.intake_dead_letter_queue"),
        Some(json!(2.0)),
        "{emf:?}"
    );
    assert!(
        emf.iter()
            .all(|l| l["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == json!([["Check"]])),
        "{emf:?}"
    );

    // Without the intake variables (a deployment from before the intake queue): skipped, by name.
    let report = f
        .probe(
            &[
                ("INGEST_QUEUE_URL", ""),
                ("INGEST_DEAD_LETTER_QUEUE_URL", ""),
            ],
            &["sqs"],
        )
        .await;
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["sqs.queue", "sqs.dead_letter_queue"]);
    assert_eq!(
        report.skipped,
        [
            "sqs.intake_queue (INGEST_QUEUE_URL is not set)",
            "sqs.intake_dead_letter_queue (INGEST_DEAD_LETTER_QUEUE_URL is not set)"
        ]
    );

    // The intake queue's redrive policy names another dead-letter queue than the variable.
    let report = f
        .probe(
            &[("INGEST_DEAD_LETTER_QUEUE_URL", f.dlq_url.as_str())],
            &["sqs"],
        )
        .await;
    let intake = check(&report, "sqs.intake_queue");
    assert!(
        intake.warning
            && intake.hint.as_deref().unwrap_or("").contains(
                "sends to sakuin-probe-intake-dlq, but INGEST_DEAD_LETTER_QUEUE_URL names sakuin-probe-dlq"
            ),
        "{intake:#?}"
    );

    // A missing bucket.
    let report = f
        .probe(&[("SOURCE_BUCKET", "sakuin-no-such-bucket")], &["s3"])
        .await;
    assert_failed(
        &report,
        "s3.bucket",
        "not_found",
        &["sakuin-no-such-bucket does not exist", "SOURCE_BUCKET"],
    );

    // A missing queue.
    let missing = f
        .queue_url
        .replace("sakuin-probe-chunks", "sakuin-no-such-queue");
    let report = f.probe(&[("CHUNK_QUEUE_URL", &missing)], &["sqs"]).await;
    assert_failed(
        &report,
        "sqs.queue",
        "not_found",
        &["does not exist", "CHUNK_QUEUE_URL"],
    );
    let missing = f
        .intake_url
        .replace("sakuin-probe-intake", "sakuin-no-such-intake");
    let report = f.probe(&[("INGEST_QUEUE_URL", &missing)], &["sqs"]).await;
    assert_failed(
        &report,
        "sqs.intake_queue",
        "not_found",
        &["does not exist", "INGEST_QUEUE_URL"],
    );
    assert!(check(&report, "sqs.queue").ok);

    // Bedrock: the model is not enabled (the stand-in's --deny-models) ...
    let report = f
        .probe(
            &[
                ("EMBEDDING_MODEL_ID", "amazon.titan-embed-text-v1"),
                ("EMBEDDING_DIMENSIONS", ""),
            ],
            &["bedrock"],
        )
        .await;
    assert_failed(
        &report,
        "bedrock.model",
        "model_access",
        &[
            "AccessDeniedException",
            "don't have access to the model",
            "Model access",
        ],
    );

    // ... and throttled.
    f.stack
        .bedrock_config(json!({"throttle_every": 1}))
        .await
        .unwrap();
    let report = f.probe(&[], &["bedrock"]).await;
    assert_failed(
        &report,
        "bedrock.model",
        "throttled",
        &["ThrottlingException", "Service Quotas"],
    );
    f.stack
        .bedrock_config(json!({"throttle_every": 0}))
        .await
        .unwrap();

    // Secrets Manager: no such secret, and a secret of the wrong shape (never printed).
    let report = f
        .probe(&[("ES_SECRET_ID", "sakuin/none")], &["secretsmanager"])
        .await;
    assert_failed(
        &report,
        "secretsmanager.secret",
        "not_found",
        &["sakuin/none", "ES_SECRET_ID"],
    );
    let report = f
        .probe(&[("ES_SECRET_ID", "sakuin/bad")], &["secretsmanager"])
        .await;
    assert_failed(
        &report,
        "secretsmanager.secret",
        "response",
        &["is not JSON"],
    );
    assert!(!serde_json::to_string(&report).unwrap().contains("hunter2"));

    // An endpoint nobody answers on: the network layer, within the budget.
    let offline = aws_clients(None, None).await;
    let deps = ProbeDeps::new(config(&f.vars(&[])), offline);
    let report = tokio::time::timeout(Duration::from_secs(60), probe::run(&deps, &["s3", "sqs"]))
        .await
        .unwrap();
    assert_failed(&report, "s3.bucket", "network", &["S3 gateway endpoint"]);
    assert_failed(
        &report,
        "sqs.queue",
        "network",
        &["interface endpoint for SQS"],
    );

    cli(&f).await;
}

/// The binary, configured only through the Lambda's environment variables.
async fn cli(f: &Fixture) {
    let es = serve(
        Cluster {
            dims: Some(256),
            ..Default::default()
        }
        .responder(),
        None,
    )
    .await;
    let es_port = es.port();
    let (moto, stub) = (f.stack.moto.url(), f.stack.bedrock.url());
    let mut vars = f.vars(&[("ES_PORT", &es_port)]);
    vars.extend([
        ("AWS_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_ENDPOINT_URL_S3", &moto),
        ("AWS_ENDPOINT_URL_SQS", &moto),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", &moto),
        ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", &stub),
        ("S3_FORCE_PATH_STYLE", "true"),
    ]);

    // Every check, as a table; the dead letter from above is a warning, not a failure.
    let (code, out, err) = run_cli(&["probe"], &vars).await;
    assert_eq!(code, 0, "{out}{err}");
    for needle in [
        "ok    elasticsearch.index",
        "ok    s3.bucket",
        "WARN  sqs.dead_letter_queue",
        "ok    sqs.intake_queue",
        "WARN  sqs.intake_dead_letter_queue",
        "ok    bedrock.model",
        "ok    secretsmanager.secret",
        "OK: every required check passed",
    ] {
        assert!(out.contains(needle), "{needle:?} not in\n{out}");
    }
    assert!(!out.contains("pw-SECRET-123"));
    // The credentials came from the secret.
    assert!(
        es.requests
            .lock()
            .unwrap()
            .iter()
            .any(|(_, p, _)| p == "/_security/_authenticate")
    );

    // A required check failing: exit 1 and the JSON report.
    let mut broken = vars.clone();
    broken.retain(|(k, _)| *k != "SOURCE_BUCKET");
    broken.push(("SOURCE_BUCKET", "sakuin-no-such-bucket"));
    let (code, out, err) = run_cli(&["probe", "--json", "--checks", "s3,bedrock"], &broken).await;
    assert_eq!(code, 1, "{out}{err}");
    let report: ProbeReport = serde_json::from_str(&out).unwrap();
    assert_eq!(report.checks.len(), 2);
    assert_eq!(
        check(&report, "s3.bucket").layer.map(Layer::as_str),
        Some("not_found")
    );

    // ... unless it is not required.
    broken.push(("PROBE_REQUIRED_CHECKS", "bedrock"));
    let (code, out, err) = run_cli(&["probe", "--checks", "s3,bedrock"], &broken).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("fail  s3.bucket") && out.contains("(not required)"),
        "{out}"
    );

    // A semantic search: the stand-in embeds the query with the configured 256 dimensions,
    // the cluster answers kNN hits.
    let (code, out, err) = run_cli(
        &[
            "search",
            "パスワードを忘れました",
            "-k",
            "2",
            "--mode",
            "knn",
        ],
        &vars,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("0.9100  faq/ja.jsonl, chunk 1\n") && out.contains("再設定のリンク"),
        "{out}"
    );
    let (_, path, body) = es.requests.lock().unwrap().last().cloned().unwrap();
    assert_eq!(path, "/documents/_search");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["knn"]["k"], 2);
    assert_eq!(body["knn"]["query_vector"].as_array().unwrap().len(), 256);

    // Bedrock refusing the query is an error naming the model.
    let mut denied = vars.clone();
    denied.retain(|(k, _)| !k.starts_with("EMBEDDING_"));
    denied.push(("EMBEDDING_MODEL_ID", "amazon.titan-embed-text-v1"));
    let (code, out, err) = run_cli(&["search", "q"], &denied).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("amazon.titan-embed-text-v1") && err.contains("AccessDenied"),
        "{err}"
    );
}
