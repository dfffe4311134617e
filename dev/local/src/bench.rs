//! `make bench`: figures, never pass/fail. Cold starts, ingest throughput and memory against
//! object size, embed-index throughput against the Bedrock stand-in with 50 ms latency.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::pipeline::{Pipeline, PipelineOptions};
use crate::runtime::FunctionProcess;
use crate::stack::LocalStack;

/// CPU seconds (user + system) and peak resident set of a process, from /proc.
pub fn process_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?;
    // USER_HZ is 100 on Linux.
    Some((ticks / 100.0, hwm_kb * 1024))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// JSON Lines of about `bytes` bytes: mixed Japanese and English records of realistic length.
pub fn jsonl_corpus(bytes: usize) -> (Vec<u8>, u64) {
    let mut out = Vec::with_capacity(bytes + 4096);
    let mut n = 0u64;
    while out.len() < bytes {
        let text = if n.is_multiple_of(3) {
            format!(
                "文書{n}の本文です。東京と大阪の支店で使われる手順書の一部で、申請の流れと承認の条件を説明します。担当者は内容を確認してから次の段階に進みます。"
            )
        } else {
            format!(
                "Record {n}. This paragraph describes how the operations team handles a request, who approves it, and what happens when a step fails. It is long enough to look like a real document."
            )
        };
        out.extend_from_slice(json!({"id": format!("r{n}"), "title": format!("Title {n}"), "text": text, "tags": ["bench", n % 10]}).to_string().as_bytes());
        out.push(b'\n');
        n += 1;
    }
    (out, n)
}

/// A JSON array (`array`) or JSON Lines corpus of about `bytes` bytes, and its record count.
fn corpus(bytes: usize, array: bool) -> (Vec<u8>, u64) {
    if array {
        array_corpus(bytes)
    } else {
        jsonl_corpus(bytes)
    }
}

/// A pretty JSON array of about `bytes` bytes.
pub fn array_corpus(bytes: usize) -> (Vec<u8>, u64) {
    let (lines, n) = jsonl_corpus(bytes);
    let mut out = Vec::with_capacity(lines.len() + n as usize * 4);
    out.extend_from_slice(b"[\n");
    for (i, line) in lines
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.extend_from_slice(b",\n");
        }
        out.extend_from_slice(b"  ");
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b"\n]\n");
    (out, n)
}

async fn cold_starts(stack: &LocalStack) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "\n## Cold start: process start → first call to the Runtime API (release build, 10 runs each)"
    );
    let mut env = stack.env();
    env.extend([
        ("CHUNK_QUEUE_URL".into(), "http://127.0.0.1:1/queue".into()),
        ("SOURCE_BUCKET".into(), "bench".into()),
    ]);
    let bin = crate::pipeline::binary_dir();
    for name in ["ingest", "embed-index", "probe"] {
        let mut times = Vec::new();
        for _ in 0..10 {
            let f = FunctionProcess::spawn(&bin.join(name), name, &env, None).await?;
            if let Some(t) = f.ready_after(Duration::from_secs(10)).await {
                times.push(t.as_secs_f64() * 1e3);
            }
            f.stop().await;
        }
        times.sort_by(f64::total_cmp);
        if times.is_empty() {
            println!("  {name:<12} did not start");
            continue;
        }
        println!(
            "  {name:<12} median {:>6.1} ms   min {:>6.1} ms   max {:>6.1} ms",
            times[times.len() / 2],
            times[0],
            times[times.len() - 1]
        );
    }
    binary_sizes(&bin);
    Ok(())
}

/// What each function weighs: the host's release binary, and the arm64 `bootstrap` that
/// `make lambda` / `make sam-build` leave under `target/lambda/` when there is one.
fn binary_sizes(bin: &std::path::Path) {
    println!("\n## Binary size (release, symbols stripped)");
    let lambda = bin.join("../lambda");
    for name in ["ingest", "embed-index", "probe"] {
        let size = |path: std::path::PathBuf| std::fs::metadata(path).ok().map(|m| mib(m.len()));
        let host = size(bin.join(name)).map_or("—".into(), |m| format!("{m:.2} MiB"));
        let arm = size(lambda.join(name).join("bootstrap"))
            .map_or("not built".into(), |m| format!("{m:.2} MiB"));
        println!("  {name:<12} host {host:>10}   lambda bootstrap {arm:>10}");
    }
}

async fn ingest_sizes(sizes: &[(&str, usize, bool)]) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "\n## Ingest: one invocation per object, a fresh process each (peak RSS is the process's high-water mark)"
    );
    println!(
        "  {:<22} {:>9} {:>9} {:>10} {:>9} {:>11} {:>13} {:>12}",
        "object",
        "records",
        "MB/s",
        "records/s",
        "CPU s",
        "CPU s/10k",
        "peak RSS MiB",
        "SQS req/1k"
    );
    for &(label, bytes, array) in sizes {
        let stack = LocalStack::start(&[]).await?;
        let pipeline = Pipeline::start(stack, PipelineOptions::default()).await?;
        let (body, records) = corpus(bytes, array);
        let size = body.len() as u64;
        let key = if array {
            "bench/array.json"
        } else {
            "bench/lines.jsonl"
        };
        let event = pipeline.put_object(key, body).await?;
        let pid = pipeline.ingest.pid().await;
        let (cpu_before, _) = pid.and_then(process_usage).unwrap_or_default();
        let started = Instant::now();
        let summary = pipeline
            .ingest
            .invoke(&event, Duration::from_secs(900))
            .await?;
        let wall = started.elapsed().as_secs_f64();
        let (cpu_after, peak) = pid.and_then(process_usage).unwrap_or_default();
        let cpu = cpu_after - cpu_before;
        assert_eq!(summary["records"].as_u64(), Some(records), "{summary}");
        let chunks = summary["chunks"].as_u64().unwrap_or(0).max(1);
        println!(
            "  {label:<22} {records:>9} {:>9.1} {:>10.0} {cpu:>9.2} {:>11.3} {:>13.1} {:>12.1}",
            mib(size) / wall,
            records as f64 / wall,
            cpu / records as f64 * 10_000.0,
            mib(peak),
            summary["sqs_requests"].as_u64().unwrap_or(0) as f64 * 1000.0 / chunks as f64
        );
        pipeline.stop().await;
    }
    println!(
        "  (wall time includes moto's SQS, a single Python process; CPU s is the function's own)"
    );
    Ok(())
}

/// The EMF metric lines `function` wrote to its log, one map per invocation.
fn emf_lines(log: &std::path::Path, function: &str) -> Vec<serde_json::Map<String, Value>> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v.get("_aws").is_some() && v["Function"] == function)
        .filter_map(|v| v.as_object().cloned())
        .collect()
}

/// One run of embed-index over `chunks_wanted` one-chunk records on a fresh stack; prints its
/// row and returns its achieved / theoretical ratio in percent.
async fn embed_throughput(
    model: &str,
    dims: Option<usize>,
    chunks_wanted: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let concurrency = 8;
    let stack = LocalStack::start(&["--latency-ms", "50"]).await?;
    let log = stack.work_dir.join("functions.log");
    let options = PipelineOptions {
        model_id: model.into(),
        dimensions: dims,
        index: format!("bench-{}", model.replace([':', '.'], "-")),
        extra_env: vec![("EMBED_CONCURRENCY".into(), concurrency.to_string())],
        log: Some(log.clone()),
        ..PipelineOptions::default()
    };
    let pipeline = Pipeline::start(stack, options).await?;
    ingest_short_records(&pipeline, chunks_wanted).await?;

    let pid = pipeline.embed_index.pid().await;
    let (cpu_before, _) = pid.and_then(process_usage).unwrap_or_default();
    let run = deliver_all(&pipeline).await?;
    let (cpu_after, peak) = pid.and_then(process_usage).unwrap_or_default();
    let figures = EmbedFigures::from_log(&log, concurrency);
    let ratio = figures.ratio();
    let usage = (cpu_after - cpu_before, peak);
    print_embed_row(model, &figures, &run, usage);
    pipeline.stop().await;
    Ok(ratio)
}

/// Puts an object of `records` short records (one chunk each, so chunks = records) and
/// invokes ingest with its notification.
async fn ingest_short_records(
    pipeline: &Pipeline,
    records: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let body: String = (0..records)
        .map(|i| json!({"id": format!("e{i}"), "text": format!("Benchmark chunk {i}: a short paragraph about item {} in the catalogue.", i % 97)}).to_string() + "\n")
        .collect();
    let event = pipeline
        .put_object("bench/embed.jsonl", body.into_bytes())
        .await?;
    pipeline.invoke_ingest(&event).await?;
    Ok(())
}

/// embed-index's invocations in one run, and the seconds they took together.
#[derive(Default)]
struct InvocationRun {
    invocations: u64,
    seconds: f64,
}

/// Invokes embed-index with batches of 10 until the chunk queue is empty.
async fn deliver_all(pipeline: &Pipeline) -> Result<InvocationRun, Box<dyn std::error::Error>> {
    let mut run = InvocationRun::default();
    loop {
        let started = Instant::now();
        let Some((outcome, _)) = pipeline.deliver_batch(10).await? else {
            break;
        };
        outcome?;
        run.seconds += started.elapsed().as_secs_f64();
        run.invocations += 1;
    }
    Ok(run)
}

/// What embed-index's EMF lines add up to over a run, and the floor its Bedrock calls allow.
struct EmbedFigures {
    embedded: f64,
    calls: f64,
    bulk_requests: f64,
    embed_ms: f64,
    /// Each invocation's calls in waves of `concurrency`, 50 ms a wave.
    floor_ms: f64,
}

impl EmbedFigures {
    /// Sums embed-index's EMF lines in `log`; `concurrency` is its `EMBED_CONCURRENCY`.
    fn from_log(log: &std::path::Path, concurrency: usize) -> Self {
        let lines = emf_lines(log, "embed-index");
        let get = |m: &serde_json::Map<String, Value>, k: &str| {
            m.get(k).and_then(Value::as_f64).unwrap_or(0.0)
        };
        let sum = |k: &str| lines.iter().map(|m| get(m, k)).sum::<f64>();
        Self {
            embedded: sum("ChunksEmbedded"),
            calls: sum("BedrockCalls"),
            bulk_requests: sum("BulkRequests"),
            embed_ms: sum("EmbedMillis"),
            floor_ms: lines
                .iter()
                .map(|m| (get(m, "BedrockCalls") / concurrency as f64).ceil() * 50.0)
                .sum(),
        }
    }

    /// The floor's share of the time spent embedding, in percent.
    fn ratio(&self) -> f64 {
        100.0 * self.floor_ms / self.embed_ms
    }
}

/// Prints one row of the embed-index table; `usage` is embed-index's CPU seconds in the run
/// and its peak RSS.
fn print_embed_row(model: &str, figures: &EmbedFigures, run: &InvocationRun, usage: (f64, u64)) {
    let EmbedFigures {
        embedded,
        calls,
        bulk_requests,
        embed_ms,
        floor_ms,
    } = *figures;
    let (cpu, peak) = usage;
    println!(
        "  {model:<30} {embedded:>7.0} {:>10.0} {:>12.0} {:>7.1} % {:>10.1} {:>9.2} {:>12.0} {:>10.0} {:>8.1}",
        embedded / (embed_ms / 1e3),
        embedded / (floor_ms / 1e3),
        figures.ratio(),
        calls * 1000.0 / embedded.max(1.0),
        bulk_requests / run.invocations.max(1) as f64,
        embedded / run.seconds,
        cpu * 1e3 * 1000.0 / embedded.max(1.0),
        mib(peak)
    );
}

/// Runs of each embed-index measurement: the stand-in shares the cores, so one run can be noisy.
const EMBED_RUNS: usize = 3;

/// Documents per second through the whole pipeline: objects in S3 → ingest → SQS → embed-index
/// → Elasticsearch, from the first upload until the last chunk is indexed.
async fn end_to_end(documents: usize) -> Result<(), Box<dyn std::error::Error>> {
    let stack = LocalStack::start(&[]).await?;
    let pipeline = Pipeline::start(
        stack,
        PipelineOptions {
            index: "bench-e2e".into(),
            ..PipelineOptions::default()
        },
    )
    .await?;
    let per_object = 250;
    let started = Instant::now();
    for (n, first) in (0..documents).step_by(per_object).enumerate() {
        let body: String = (first..(first + per_object).min(documents))
            .map(|i| json!({"id": format!("e2e-{i}"), "text": format!("文書{i}。Document {i} of the end-to-end run, with a second sentence.")}).to_string() + "\n")
            .collect();
        let event = pipeline
            .put_object(&format!("e2e/{n:03}.jsonl"), body.into_bytes())
            .await?;
        pipeline.invoke_ingest(&event).await?;
    }
    let mut last_batch = started.elapsed();
    loop {
        let Some((outcome, _)) = pipeline.deliver_batch(10).await? else {
            break;
        };
        outcome?;
        last_batch = started.elapsed();
    }
    let es = pipeline.es();
    es.refresh().await?;
    let chunks = es.count().await?;
    println!(
        "  {documents} documents ({chunks} chunks, {} objects) in {:.2} s: {:.0} documents/s",
        documents.div_ceil(per_object),
        last_batch.as_secs_f64(),
        documents as f64 / last_batch.as_secs_f64()
    );
    pipeline.stop().await;
    Ok(())
}

/// The benchmark's sections, in the order they run; `bench embed e2e` runs only those.
pub const SECTIONS: [&str; 8] = [
    "cold",
    "ingest",
    "memory",
    "documents",
    "embed",
    "e2e",
    "quota",
    "retrieval",
];

/// `sakuin-local bench`: prints the figures of the sections the command line chooses, in the
/// order of [`SECTIONS`].
pub async fn run(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let large = args.iter().any(|a| a == "--large");
    let chosen = Chosen::from_args(args)?;
    println!(
        "# sakuin benchmarks ({} cores; figures, not pass/fail)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    if chosen.runs("cold") {
        let stack = LocalStack::start(&[]).await?;
        cold_starts(&stack).await?;
    }
    if chosen.runs("ingest") {
        ingest_sizes(&[
            ("10 MB JSON Lines", 10 << 20, false),
            ("100 MB JSON Lines", 100 << 20, false),
            ("50 MiB JSON array", 50 << 20, true),
        ])
        .await?;
    }
    if chosen.runs("memory") {
        ingest_memory_by_size(&memory_sizes(large)).await?;
    }
    if chosen.runs("documents") {
        ingest_documents().await?;
    }
    if chosen.runs("embed") {
        embed_section().await?;
    }
    if chosen.runs("e2e") {
        println!(
            "\n## End to end on the local stack (stand-in without latency; moto and noida-db are single processes)"
        );
        end_to_end(2000).await?;
    }
    if chosen.runs("quota") {
        crate::quota::run(quota_options(args))
            .await
            .map_err(|e| e.to_string())?;
    }
    if chosen.runs("retrieval") {
        let flag = |f: &str| args.iter().any(|a| a == f);
        crate::retrieval::run(flag("--quick"), flag("--hashed")).await?;
    }
    Ok(())
}

/// The sections a `bench` command line names, and whether it says `--memory`.
struct Chosen<'a> {
    named: Vec<&'a str>,
    memory_only: bool,
}

impl<'a> Chosen<'a> {
    /// Reads the section names (an unknown one is an error) and `--memory` from `args`.
    fn from_args(args: &'a [String]) -> Result<Self, Box<dyn std::error::Error>> {
        let named: Vec<&str> = args
            .iter()
            .map(String::as_str)
            .filter(|a| !a.starts_with("--"))
            .collect();
        if let Some(unknown) = named.iter().find(|a| !SECTIONS.contains(a)) {
            return Err(format!(
                "unknown section {unknown:?}; sections: {}",
                SECTIONS.join(" ")
            )
            .into());
        }
        // `--memory` is the memory section alone, as before sections existed.
        let memory_only = args.iter().any(|a| a == "--memory");
        Ok(Self { named, memory_only })
    }

    /// Whether `section` runs: with `--memory` only memory; else those named, or every
    /// section but quota when none is.
    fn runs(&self, section: &str) -> bool {
        if self.memory_only {
            section == "memory"
        } else if matches!(section, "quota" | "retrieval" | "documents") {
            // Minutes against a throttling stand-in, or a real model: only when asked for.
            self.named.contains(&section)
        } else {
            self.named.is_empty() || self.named.contains(&section)
        }
    }
}

/// The memory section's objects: 1 GiB only with `--large` (uploading it takes a while).
fn memory_sizes(large: bool) -> Vec<(&'static str, usize, bool)> {
    let mut sizes = vec![
        ("10 MB JSON Lines", 10 << 20, false),
        ("100 MB JSON Lines", 100 << 20, false),
    ];
    if large {
        sizes.push(("1 GiB JSON Lines", 1 << 30, false));
    }
    sizes.push(("200 MiB JSON array", 200 << 20, true));
    sizes
}

/// The embed-index section: its table, [`EMBED_RUNS`] runs of each model, and each model's
/// median ratio.
async fn embed_section() -> Result<(), Box<dyn std::error::Error>> {
    print_embed_header();
    let mut medians = Vec::new();
    for (model, dims, chunks) in [
        ("amazon.titan-embed-text-v2:0", Some(256), 2000),
        ("cohere.embed-multilingual-v3", None, 4000),
    ] {
        let mut ratios = Vec::with_capacity(EMBED_RUNS);
        for _ in 0..EMBED_RUNS {
            ratios.push(embed_throughput(model, dims, chunks).await?);
        }
        ratios.sort_by(f64::total_cmp);
        medians.push(format!("{model} {:.1} %", ratios[EMBED_RUNS / 2]));
    }
    println!(
        "  median ratio of {EMBED_RUNS} runs: {}",
        medians.join(", ")
    );
    Ok(())
}

/// The embed-index section's heading, what its figures mean, and the table's header.
fn print_embed_header() {
    println!(
        "\n## Embed-index against the stand-in with 50 ms per call, EMBED_CONCURRENCY=8, batches of 10 messages"
    );
    println!(
        "  chunks/s while embedding against the floor its calls allow (concurrent waves of 50 ms), and per whole\n  invocation; embed-index's own CPU per 1,000 chunks and peak RSS"
    );
    println!(
        "  {:<30} {:>7} {:>10} {:>12} {:>9} {:>10} {:>9} {:>12} {:>10} {:>8}",
        "model",
        "chunks",
        "achieved",
        "theoretical",
        "ratio",
        "calls/1k",
        "bulk/inv",
        "invocation",
        "CPU ms/1k",
        "RSS MiB"
    );
}

/// The quota section's options: `--adaptive-only`, `--without-quota`, `--timeline` and
/// `--model=`.
fn quota_options(args: &[String]) -> crate::quota::QuotaOptions {
    let adaptive_only = args.iter().any(|a| a == "--adaptive-only");
    let without_quota = args.iter().any(|a| a == "--without-quota");
    let timeline = args.iter().any(|a| a == "--timeline");
    let model = args
        .iter()
        .find_map(|a| a.strip_prefix("--model="))
        .map(str::to_string);
    crate::quota::QuotaOptions {
        adaptive_only,
        without_quota,
        timeline,
        model,
    }
}

/// Counts what ingest would send, and sends nothing: isolates ingest's own memory and CPU from
/// the queue it writes to.
struct NullQueue;

impl sakuin::queue::ChunkQueue for NullQueue {
    async fn send_batch(
        &self,
        _entries: &[sakuin::queue::QueueEntry],
    ) -> Result<Vec<sakuin::queue::EntryFailure>, sakuin::queue::QueueError> {
        Ok(Vec::new())
    }
}

struct NoContinuation;

impl sakuin::ingest::Continuation for NoContinuation {
    async fn hand_over(&self, _event: Value) -> Result<(), String> {
        Err("the memory benchmark runs each object in one invocation".into())
    }
}

/// `sakuin-local ingest-memory BUCKET KEY`: ingests one object from S3 (endpoint from the
/// environment) in this process, with a queue that drops what it is given, and prints the
/// process's own CPU seconds and peak RSS as JSON. Run as a child of the benchmark, so nothing
/// else lives in the measured process.
pub async fn ingest_memory(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let [bucket, key] = args else {
        return Err("usage: sakuin-local ingest-memory BUCKET KEY".into());
    };
    let mut env = sakuin::config::Env::from_process();
    let config = sakuin::config::IngestConfig::from_env(&mut env)?;
    let sdk = sakuin::aws::sdk_config().await;
    let store = sakuin::store::S3Store::new(sakuin::aws::s3_client(&sdk, &mut env));
    let deps = sakuin::ingest::IngestDeps {
        store,
        queue: NullQueue,
        continuation: NoContinuation,
        config,
    };
    let event = crate::pipeline::s3_event("ObjectCreated:Put", bucket, key, None, None);
    let started = Instant::now();
    let summary = sakuin::ingest::handle_event(
        &deps,
        event,
        sakuin::retry::Deadline::after(Duration::from_secs(3600)),
    )
    .await?;
    let (cpu, peak) = process_usage(std::process::id()).unwrap_or_default();
    println!(
        "{}",
        json!({"records": summary.records, "chunks": summary.chunks, "messages": summary.messages,
               "documents_skipped": summary.documents_skipped,
               "wall_s": started.elapsed().as_secs_f64(), "cpu_s": cpu, "peak_rss": peak})
    );
    Ok(())
}

/// Peak RSS of ingest against object size, on objects up to 1 GiB: S3 from moto, the queue a
/// null sink (moto's single-process SQS cannot absorb a gigabyte of chunks in reasonable time).
async fn ingest_memory_by_size(
    sizes: &[(&str, usize, bool)],
) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "\n## Ingest memory against object size (S3 read from moto, chunks to a null queue, one process per object)"
    );
    println!(
        "  {:<22} {:>9} {:>9} {:>10} {:>9} {:>11} {:>13}",
        "object", "records", "MB/s", "records/s", "CPU s", "CPU s/10k", "peak RSS MiB"
    );
    let stack = LocalStack::start(&[]).await?;
    let provisioned = crate::pipeline::provision(&stack, &PipelineOptions::default()).await?;
    for &(label, bytes, array) in sizes {
        let (body, records) = corpus(bytes, array);
        let size = body.len() as u64;
        let key = format!("memory/{}.{}", size, if array { "json" } else { "jsonl" });
        crate::pipeline::upload(&provisioned.s3, &key, body).await?;
        let out = ingest_in_child(&provisioned, &key).await?;
        let Some(v) = child_figures(&out) else {
            println!(
                "  {label:<22} failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or_default()
            );
            continue;
        };
        assert_eq!(v["records"].as_u64(), Some(records));
        print_memory_row(label, records, size, &v);
        provisioned
            .s3
            .delete_object()
            .bucket(crate::pipeline::BUCKET)
            .key(&key)
            .send()
            .await?;
    }
    Ok(())
}

/// Ingest on documents (PDF, Word, Excel, CSV, HTML, Markdown, text): each file of
/// `SAKUIN_DOCUMENTS_DIR` (default `dev/samples/documents`) read by ingest in a process of its
/// own, S3 from moto, chunks to a null queue: the throughput and the process's peak RSS.
async fn ingest_documents() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::var_os("SAKUIN_DOCUMENTS_DIR").map_or_else(
        || crate::stack::repo_root().join("dev/samples/documents"),
        std::path::PathBuf::from,
    );
    println!(
        "\n## Ingest on documents from {} (one process per file, S3 from moto, chunks to a null queue)",
        dir.display()
    );
    println!(
        "  {:<28} {:>10} {:>9} {:>8} {:>9} {:>9} {:>13}",
        "document", "KiB", "sections", "chunks", "MB/s", "CPU ms", "peak RSS MiB"
    );
    let stack = LocalStack::start(&[]).await?;
    let provisioned = crate::pipeline::provision(&stack, &PipelineOptions::default()).await?;
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for path in files {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let body = std::fs::read(&path)?;
        let size = body.len() as u64;
        let key = format!("documents/{name}");
        crate::pipeline::upload(&provisioned.s3, &key, body).await?;
        let out = ingest_in_child(&provisioned, &key).await?;
        let Some(v) = child_figures(&out) else {
            println!(
                "  {name:<28} failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or_default()
            );
            continue;
        };
        let wall = v["wall_s"].as_f64().unwrap_or(1.0);
        let skipped = v["documents_skipped"].as_u64().unwrap_or(0) > 0;
        println!(
            "  {name:<28} {:>10.1} {:>9} {:>8} {:>9.1} {:>9.0} {:>13.1}{}",
            size as f64 / 1024.0,
            v["records"].as_u64().unwrap_or(0),
            v["chunks"].as_u64().unwrap_or(0),
            size as f64 / 1e6 / wall,
            v["cpu_s"].as_f64().unwrap_or(0.0) * 1e3,
            mib(v["peak_rss"].as_u64().unwrap_or(0)),
            if skipped { "  (skipped: no text)" } else { "" }
        );
    }
    println!(
        "  (MB/s and CPU include the S3 read from moto and the process's start; the peak RSS includes the process's baseline, ≈16 MiB)"
    );
    Ok(())
}

/// Runs `sakuin-local ingest-memory` on `key` in a child process with the functions'
/// environment, and collects its output.
async fn ingest_in_child(
    provisioned: &crate::pipeline::Provisioned,
    key: &str,
) -> std::io::Result<std::process::Output> {
    tokio::process::Command::new(std::env::current_exe()?)
        .args(["ingest-memory", crate::pipeline::BUCKET, key])
        .envs(
            provisioned
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .env("RUST_LOG", "warn")
        .output()
        .await
}

/// The figures the child printed (its last line with `peak_rss`), if it printed them.
fn child_figures(out: &std::process::Output) -> Option<Value> {
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rfind(|l| l.contains("\"peak_rss\""))
        .unwrap_or_default()
        .to_owned();
    serde_json::from_str::<Value>(&line).ok()
}

/// Prints one row of the memory table from the child's figures `v`.
fn print_memory_row(label: &str, records: u64, size: u64, v: &Value) {
    let wall = v["wall_s"].as_f64().unwrap_or(1.0);
    let cpu = v["cpu_s"].as_f64().unwrap_or(0.0);
    println!(
        "  {label:<22} {records:>9} {:>9.1} {:>10.0} {cpu:>9.2} {:>11.3} {:>13.1}",
        mib(size) / wall,
        records as f64 / wall,
        cpu / records as f64 * 10_000.0,
        mib(v["peak_rss"].as_u64().unwrap_or(0))
    );
}
