//! `make demo`: the sample documents through the whole pipeline, then a probe and a search.

use std::time::{Duration, Instant};

use sakuin::embed::bedrock::BedrockEmbedder;
use sakuin::embed::{Embedder, EmbeddingModel, InputPurpose};

use crate::pipeline::{Pipeline, PipelineOptions};
use crate::stack::LocalStack;

/// Gzip in memory (the samples ship plain; one is uploaded compressed to show it reads).
pub async fn gzip(data: &[u8]) -> Vec<u8> {
    use async_compression::tokio::write::GzipEncoder;
    use tokio::io::AsyncWriteExt;
    let mut enc = GzipEncoder::new(Vec::new());
    enc.write_all(data).await.expect("in-memory write");
    enc.shutdown().await.expect("in-memory write");
    enc.into_inner()
}

/// The sample objects: (key, body).
pub async fn samples() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let dir = crate::stack::repo_root().join("dev/samples");
    let read = |name: &str| std::fs::read(dir.join(name));
    Ok(vec![
        ("docs/faq/よくある質問.jsonl".into(), read("faq-ja.jsonl")?),
        (
            "docs/kb/articles 2026+en.json".into(),
            read("articles.json")?,
        ),
        ("docs/handbook.json".into(), read("handbook.json")?),
        (
            "docs/news/news.jsonl.gz".into(),
            gzip(&read("news.jsonl")?).await,
        ),
    ])
}

pub async fn run(queries: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    println!("▶ starting the local stack (moto, noida-db, Bedrock stand-in) on loopback");
    let stack = LocalStack::start(&[]).await?;
    let log = stack.work_dir.join("functions.log");
    let options = PipelineOptions {
        extra_env: vec![
            ("TEXT_FIELDS".into(), "text,body.text".into()),
            ("CHUNK_MAX_CHARS".into(), "200".into()),
            ("CHUNK_OVERLAP_CHARS".into(), "40".into()),
        ],
        log: Some(log.clone()),
        ..PipelineOptions::default()
    };
    let pipeline = Pipeline::start(stack, options).await?;
    for f in [&pipeline.ingest, &pipeline.embed_index, &pipeline.probe] {
        let ready = f.ready_after(Duration::from_secs(10)).await;
        println!(
            "  {:<20} ready for its first event after {}",
            f.name,
            ready
                .map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
                .unwrap_or("—".into())
        );
    }

    let started = Instant::now();
    let mut records = 0;
    let mut rejected = 0;
    println!("▶ uploading samples and invoking ingest with each S3 notification");
    for (key, body) in samples().await? {
        let event = pipeline.put_object(&key, body).await?;
        let summary = pipeline.invoke_ingest(&event).await?;
        records += summary["records"].as_u64().unwrap_or(0);
        rejected += summary["rejected"].as_u64().unwrap_or(0);
        println!("  s3://{}/{key:<34} → {summary}", crate::pipeline::BUCKET);
    }
    println!("▶ draining the chunk queue into embed-index (as the SQS event source mapping does)");
    let ingested = started.elapsed();
    let drained = pipeline.drain(Duration::from_secs(120)).await?;
    let elapsed = ingested + drained.busy;
    println!(
        "  {} invocation(s), {} message(s), {} reported failure(s), {} in the DLQ",
        drained.invocations,
        drained.messages,
        drained.reported_failures,
        pipeline.dead_letters().await?
    );
    let es = pipeline.es();
    es.refresh().await?;
    let chunks = es.count().await?;
    let indexed = records - rejected;
    println!(
        "  {indexed} documents ({rejected} rejected records, see {}) → {chunks} chunks in {:.2} s: {:.0} documents/s end to end",
        log.display(),
        elapsed.as_secs_f64(),
        indexed as f64 / elapsed.as_secs_f64()
    );

    println!("▶ probe");
    match pipeline
        .invoke_probe(&serde_json::json!({"source": "aws.scheduler", "detail": "{}"}))
        .await
    {
        Ok(report) => {
            for c in report["checks"].as_array().into_iter().flatten() {
                println!(
                    "  {} {:<28} {:>5} ms  {}",
                    if c["ok"] == true { "✓" } else { "✗" },
                    c["name"].as_str().unwrap_or(""),
                    c["ms"],
                    c["detail"].as_str().unwrap_or("")
                );
            }
        }
        Err(e) => println!("  ✗ {e}"),
    }

    println!("▶ semantic search (query embedded with the same model, then kNN)");
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(crate::stack::REGION))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "testing", "testing", None, None, "local",
        ))
        .endpoint_url(pipeline.stack.bedrock.url())
        .load()
        .await;
    let model = EmbeddingModel::resolve(&pipeline.options.model_id, pipeline.options.dimensions)?;
    let embedder = BedrockEmbedder::new(sakuin::aws::bedrock_client(&sdk), model);
    let defaults = [
        "パスワードを忘れました".to_string(),
        "export all data as CSV".into(),
        "TCP check times out".into(),
    ];
    let queries = if queries.is_empty() {
        &defaults[..]
    } else {
        queries
    };
    for q in queries {
        let vector = embedder
            .invoke(&[q.as_str()], InputPurpose::Query)
            .await?
            .vectors
            .remove(0);
        println!("  \"{q}\"");
        for hit in es.knn(&vector, 3).await? {
            let text: String = hit.source["text"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(60)
                .collect();
            println!(
                "    {:.3}  {:<36} {}",
                hit.score,
                hit.source["source"]["key"].as_str().unwrap_or(""),
                text.replace('\n', " ")
            );
        }
    }
    pipeline.stop().await;
    println!("✓ done");
    Ok(())
}

/// `sakuin-local stack`: the stack with the bucket, queues and the objects `events/s3-put*.json`
/// name, for `cargo lambda watch` and `cargo lambda invoke`; runs until Ctrl-C.
pub async fn serve_stack() -> Result<(), Box<dyn std::error::Error>> {
    let stack = LocalStack::start(&[]).await?;
    let options = PipelineOptions::default();
    let provisioned = crate::pipeline::provision(&stack, &options).await?;
    let dir = crate::stack::repo_root().join("dev/samples");
    for (key, file) in [
        ("docs/faq.jsonl", "faq-ja.jsonl"),
        ("docs/articles.json", "articles.json"),
        ("docs/2024 annual report+q4日本.jsonl", "news.jsonl"),
        ("docs/handbook.json", "handbook.json"),
    ] {
        let body = std::fs::read(dir.join(file))?;
        provisioned
            .s3
            .put_object()
            .bucket(crate::pipeline::BUCKET)
            .key(key)
            .body(body.into())
            .send()
            .await?;
    }
    let env_file = crate::stack::repo_root().join(".local/stack.env");
    std::fs::create_dir_all(env_file.parent().expect("has a parent"))?;
    let mut text = String::from("# Written by `sakuin-local stack`; valid while it runs.\n");
    for (k, v) in &provisioned.env {
        text.push_str(&format!("{k}={v}\n"));
    }
    std::fs::write(&env_file, text)?;
    println!(
        "local stack is up; environment written to {}",
        env_file.display()
    );
    for (k, v) in &provisioned.env {
        println!("  {k}={v}");
    }
    println!(
        "\nin another terminal:\n  cargo lambda watch --env-file .local/stack.env\n  cargo lambda invoke ingest --data-file events/s3-put.json\n\nCtrl-C stops the stack."
    );
    tokio::signal::ctrl_c().await?;
    drop(stack);
    Ok(())
}
