//! The AWS dependencies against real protocols on loopback: moto (S3, SQS, Secrets Manager) and
//! the project's Bedrock stand-in (the local stack of `dev/local`), each fault with its layer and cause; then the `sakuin`
//! binary's probe and search with the same environment as the Lambda.

mod common;

use sakuin::probe::Layer;
use std::time::Duration;

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
    sakuin_local::stack::create_bucket(&clients.s3, "sakuin-probe-src")
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

/// The AWS side of the path, read from the local stack's EC2 (moto) with each missing piece in
/// turn, each in a VPC of its own: what the probe says when TCP to the cluster times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_side_of_the_path_names_the_missing_piece() {
    use sakuin::probe::vpc_path::{self, Placement};
    use sakuin_local::vpc::{Network, act};
    let f = fixture().await;
    let ec2 = &f.clients.ec2;
    let cluster: std::net::SocketAddr = "10.20.0.5:9200".parse().unwrap();
    let read = |net: Network| async move {
        let placement = Placement {
            subnets: vec![net.subnet.clone()],
            security_groups: vec![net.group.clone()],
        };
        let started = std::time::Instant::now();
        let reading = vpc_path::read(ec2, &placement, cluster)
            .await
            .expect("the local stack answers");
        let took = started.elapsed();
        let hint = reading.hint(cluster.port());
        println!("{hint} ({took:?})");
        // Within the probe's budget (PROBE_TIMEOUT_SECS, 5 s by default).
        assert!(took < Duration::from_secs(5), "{took:?}");
        (reading, hint)
    };

    // Complete: the hint turns to the on-premises side, with the VPC's CIDR.
    let net = Network::build(ec2, "10.1.0.0/16", "10.20.0.0/16").await;
    let (reading, hint) = read(net.clone()).await;
    assert!(reading.problems.is_empty(), "{reading:?}");
    assert!(
        hint.starts_with("the AWS side of the path is complete")
            && hint.contains(&format!("{} routes 10.20.0.0/16 to {}", net.table, net.vgw))
            && hint.contains(&format!(
                "{} allows egress tcp/9200 to 0.0.0.0/0",
                net.group
            ))
            && hint.contains("must let 10.1.0.0/16 in to tcp/9200"),
        "{hint}"
    );

    // No route to the cluster: propagation from the attached virtual private gateway.
    let net = Network::build(ec2, "10.2.0.0/16", "10.20.0.0/16").await;
    net.remove_route(ec2).await;
    let (reading, _) = read(net.clone()).await;
    assert_eq!(
        reading.problems,
        [format!(
            "no route to 10.20.0.5 in {} (subnet {}); enable route propagation from the virtual private gateway {}, or add a static route to it",
            net.table, net.subnet, net.vgw
        )]
    );

    // The security group lets only HTTPS out.
    let net = Network::build(ec2, "10.3.0.0/16", "10.20.0.0/16").await;
    let everything = [
        ("GroupId", net.group.as_str()),
        ("IpPermissions.1.IpProtocol", "-1"),
        ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
    ];
    act(ec2, "RevokeSecurityGroupEgress", &everything).await;
    let https = [
        ("GroupId", net.group.as_str()),
        ("IpPermissions.1.IpProtocol", "tcp"),
        ("IpPermissions.1.FromPort", "443"),
        ("IpPermissions.1.ToPort", "443"),
        ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
    ];
    act(ec2, "AuthorizeSecurityGroupEgress", &https).await;
    let (reading, _) = read(net.clone()).await;
    assert_eq!(
        reading.problems,
        [format!(
            "security group {} allows no egress to 10.20.0.5 on tcp/9200: add an outbound rule for tcp/9200 to the cluster's address or the on-premises CIDR",
            net.group
        )]
    );

    // A network ACL that lets the request out but half the answers' ports in.
    let net = Network::build(ec2, "10.4.0.0/16", "10.20.0.0/16").await;
    let acl = act(ec2, "CreateNetworkAcl", &[("VpcId", &net.vpc)]).await;
    let acl = acl.find("networkAclId").unwrap().text.clone();
    for (egress, protocol, from, to) in [
        ("true", "-1", "0", "65535"),
        ("false", "6", "1024", "32767"),
    ] {
        act(
            ec2,
            "CreateNetworkAclEntry",
            &[
                ("NetworkAclId", &acl),
                ("RuleNumber", "100"),
                ("Protocol", protocol),
                ("RuleAction", "allow"),
                ("Egress", egress),
                ("CidrBlock", "0.0.0.0/0"),
                ("PortRange.From", from),
                ("PortRange.To", to),
            ],
        )
        .await;
    }
    let acls = act(
        ec2,
        "DescribeNetworkAcls",
        &[("Filter.1.Name", "vpc-id"), ("Filter.1.Value.1", &net.vpc)],
    )
    .await;
    let association = acls
        .items("networkAclSet")
        .flat_map(|a| a.items("associationSet"))
        .find(|a| a.text_of("subnetId").as_deref() == Some(net.subnet.as_str()))
        .and_then(|a| a.text_of("networkAclAssociationId"))
        .expect("the subnet's association with the default ACL");
    act(
        ec2,
        "ReplaceNetworkAclAssociation",
        &[("AssociationId", &association), ("NetworkAclId", &acl)],
    )
    .await;
    let (reading, _) = read(net.clone()).await;
    assert_eq!(reading.problems.len(), 1, "{reading:?}");
    assert!(
        reading.problems[0].starts_with(&format!(
            "the network ACL {acl} of {} denies the return traffic from 10.20.0.5 on ephemeral ports (32768 of them, from 32768–65535",
            net.subnet
        )) && reading.problems[0].contains("allow inbound tcp 1024–65535"),
        "{reading:?}"
    );

    // The route goes to a transit gateway whose attachment has no subnet in the functions' zone.
    let net = Network::build(ec2, "10.5.0.0/16", "10.20.0.0/16").await;
    let tgw = act(ec2, "CreateTransitGateway", &[]).await;
    let tgw = tgw.find("transitGatewayId").unwrap().text.clone();
    let attachment = act(
        ec2,
        "CreateTransitGatewayVpcAttachment",
        &[
            ("TransitGatewayId", &tgw),
            ("VpcId", &net.vpc),
            ("SubnetIds.1", &net.other_subnet),
        ],
    )
    .await;
    let attachment = attachment
        .find("transitGatewayAttachmentId")
        .unwrap()
        .text
        .clone();
    net.remove_route(ec2).await;
    let via_tgw = [
        ("RouteTableId", net.table.as_str()),
        ("DestinationCidrBlock", "10.20.0.0/16"),
        ("TransitGatewayId", tgw.as_str()),
    ];
    act(ec2, "CreateRoute", &via_tgw).await;
    let (reading, _) = read(net.clone()).await;
    assert_eq!(
        reading.problems,
        [format!(
            "the transit gateway attachment {attachment} has no subnet in ap-northeast-1a, where {} is: the transit gateway drops traffic from a zone its attachment does not cover; add a subnet of ap-northeast-1a to the attachment",
            net.subnet
        )]
    );

    // The on-premises network routed to the internet gateway.
    let net = Network::build(ec2, "10.6.0.0/16", "10.20.0.0/16").await;
    let igw = act(ec2, "CreateInternetGateway", &[]).await;
    let igw = igw.find("internetGatewayId").unwrap().text.clone();
    act(
        ec2,
        "AttachInternetGateway",
        &[("InternetGatewayId", &igw), ("VpcId", &net.vpc)],
    )
    .await;
    net.remove_route(ec2).await;
    let via_igw = [
        ("RouteTableId", net.table.as_str()),
        ("DestinationCidrBlock", "0.0.0.0/0"),
        ("GatewayId", igw.as_str()),
    ];
    act(ec2, "CreateRoute", &via_igw).await;
    let (reading, _) = read(net.clone()).await;
    assert_eq!(reading.problems.len(), 1, "{reading:?}");
    assert!(
        reading.problems[0].starts_with(&format!(
            "the route for 10.20.0.5 in {} (subnet {}) is 0.0.0.0/0 to the internet gateway {igw}",
            net.table, net.subnet
        )),
        "{reading:?}"
    );
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
