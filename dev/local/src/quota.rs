//! `sakuin-local bench quota`: a backfill against an account's Bedrock quota. Four embed-index
//! containers drain a few thousand chunks while the stand-in enforces a requests-per-minute
//! (Titan) or tokens-per-minute (Cohere) quota, once with adaptive pacing and once with a fixed
//! `EMBED_CONCURRENCY`; the figures are printed side by side.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fleet::{Fleet, FleetOptions};
use crate::pipeline::{BUCKET, PipelineOptions};
use crate::stack::LocalStack;
use crate::truth::compare_index_with_bucket;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One quota scenario.
struct Scenario {
    model: &'static str,
    dimensions: Option<usize>,
    chunks: usize,
    /// The stand-in's flags for the quota.
    quota: (&'static str, u64),
}

/// What one run measured.
#[derive(Debug, Default)]
pub struct QuotaRun {
    pub minutes: f64,
    pub calls: u64,
    pub ok: u64,
    pub throttled: u64,
    /// Calls and throttles after the first `SETTLE` of the run.
    pub settled_calls: u64,
    pub settled_throttled: u64,
    pub tokens: u64,
    pub dead_letters: u64,
    pub timeouts: u64,
    pub mismatches: usize,
}

/// The start of a run, before the pace has settled.
const SETTLE: Duration = Duration::from_secs(30);
const CONTAINERS: usize = 4;

/// What `bench quota` runs.
#[derive(Debug, Default)]
pub struct QuotaOptions {
    /// Skip the runs with a fixed concurrency.
    pub adaptive_only: bool,
    /// Print successful and throttled calls every [`TIMELINE_STEP`].
    pub timeline: bool,
    /// Only the scenarios whose model id contains this.
    pub model: Option<String>,
}

const TIMELINE_STEP: Duration = Duration::from_secs(15);

/// The scenarios: Titan at a requests-per-minute quota, Cohere at a tokens-per-minute one.
const SCENARIOS: [Scenario; 2] = [
    Scenario {
        model: "amazon.titan-embed-text-v2:0",
        dimensions: Some(256),
        chunks: 3000,
        quota: ("--quota-rpm", 600),
    },
    Scenario {
        model: "us.cohere.embed-v4:0",
        dimensions: Some(256),
        chunks: 10_000,
        quota: ("--quota-tpm", 30_000),
    },
];

/// Runs every scenario with adaptive pacing, and with the fixed concurrency too unless
/// `adaptive_only`.
pub async fn run(options: QuotaOptions) -> Result<(), BoxError> {
    print_header();
    let picked = SCENARIOS
        .iter()
        .filter(|s| options.model.as_deref().is_none_or(|m| s.model.contains(m)));
    for scenario in picked {
        for adaptive in [true, false] {
            if options.adaptive_only && !adaptive {
                continue;
            }
            let run = run_one(scenario, adaptive, options.timeline).await?;
            print_row(scenario, adaptive, &run);
        }
    }
    Ok(())
}

/// The section's heading, what its figures mean, and the table's header.
fn print_header() {
    println!(
        "\n## Bedrock at the quota: {CONTAINERS} embed-index containers, the stand-in at 50 ms per call and the quota below"
    );
    println!(
        "  quota used = successful calls (Titan) or tokens (Cohere) per minute ÷ the quota, less the stand-in's opening burst (ten seconds' worth; 16,384 tokens at least); throttled after {}s = the share once settled",
        SETTLE.as_secs()
    );
    println!(
        "  {:<30} {:<22} {:<8} {:>7} {:>10} {:>10} {:>10} {:>11} {:>5} {:>8} {:>6}",
        "model",
        "quota",
        "pacing",
        "chunks",
        "minutes",
        "quota used",
        "chunks/min",
        "throttled",
        "DLQ",
        "timeouts",
        "lost"
    );
}

/// The share of the quota a run used per minute, less what the stand-in's opening burst let
/// through on top of it.
fn quota_used(scenario: &Scenario, run: &QuotaRun) -> f64 {
    let (flag, limit) = scenario.quota;
    // What the bucket held at the start passes on top of the quota; as the stand-in
    // sizes it (dev/bedrock_stub.py, QUOTA_BURST_SECONDS and the floors).
    let (used, burst) = if flag == "--quota-rpm" {
        (run.ok as f64, (limit as f64 / 6.0).max(1.0))
    } else {
        (run.tokens as f64, (limit as f64 / 6.0).max(16_384.0))
    };
    (used - burst).max(0.0) / run.minutes / limit as f64
}

/// Prints one run's row of the table.
fn print_row(scenario: &Scenario, adaptive: bool, run: &QuotaRun) {
    let (flag, limit) = scenario.quota;
    let used = quota_used(scenario, run);
    println!(
        "  {:<30} {:<22} {:<8} {:>7} {:>10.2} {:>9.0}% {:>10.0} {:>4.0}%/{:>3.0}% {:>5} {:>8} {:>6}",
        scenario.model,
        format!("{} {}", flag.trim_start_matches("--"), limit),
        if adaptive { "adaptive" } else { "fixed 8" },
        scenario.chunks,
        run.minutes,
        used * 100.0,
        scenario.chunks as f64 / run.minutes,
        share(run.throttled, run.calls) * 100.0,
        share(run.settled_throttled, run.settled_calls) * 100.0,
        run.dead_letters,
        run.timeouts,
        run.mismatches,
    );
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// One run of `scenario` on a fresh stack, with adaptive pacing or the fixed concurrency: the
/// backfill drained to the end, then measured.
async fn run_one(
    scenario: &Scenario,
    adaptive: bool,
    timeline: bool,
) -> Result<QuotaRun, BoxError> {
    let fleet = start_fleet(scenario, adaptive).await?;
    queue_backfill(&fleet, scenario.chunks).await?;
    let (took, at_settle) = drain(&fleet, timeline).await?;
    let run = measure(&fleet, took, &at_settle).await?;
    fleet.stop().await;
    Ok(run)
}

/// A stack whose stand-in enforces the scenario's quota, and a fleet of [`CONTAINERS`]
/// embed-index containers paced adaptively or at a fixed concurrency of 8.
async fn start_fleet(scenario: &Scenario, adaptive: bool) -> Result<Fleet, BoxError> {
    let (flag, limit) = scenario.quota;
    let limit = limit.to_string();
    let stack = LocalStack::start(&["--latency-ms", "50", flag, &limit])
        .await
        .map_err(|e| e.to_string())?;
    let log = stack.work_dir.join("functions.log");
    Fleet::start(
        stack,
        FleetOptions {
            pipeline: PipelineOptions {
                model_id: scenario.model.into(),
                dimensions: scenario.dimensions,
                index: "quota".into(),
                extra_env: vec![
                    ("EMBED_ADAPTIVE".into(), adaptive.to_string()),
                    ("EMBED_CONCURRENCY".into(), "8".into()),
                    // Many small messages, so all four containers have work.
                    ("MESSAGE_MAX_BYTES".into(), "4096".into()),
                    // Handed-back work returns in seconds here, not the default minute.
                    ("REQUEUE_DELAY_SECS".into(), "5".into()),
                    ("REQUEUE_MAX_DELAY_SECS".into(), "20".into()),
                ],
                log: Some(log),
                // Longer than an invocation at the quota, as in the template (6 x the timeout):
                // a batch is never taken by a second container while the first still works.
                chunk_visibility_secs: 150,
                ..PipelineOptions::default()
            },
            ingest_containers: 1,
            embed_index_containers: CONTAINERS,
        },
    )
    .await
}

/// Puts one object of `chunks` one-chunk records and delivers its notification.
async fn queue_backfill(fleet: &Fleet, chunks: usize) -> Result<(), BoxError> {
    let body: String = (0..chunks)
        .map(|i| {
            json!({"id": format!("q{i}"), "text": format!("Backfill record {i}: a short paragraph about item {} in the catalogue, for the quota run.", i % 89)})
                .to_string()
                + "\n"
        })
        .collect();
    let note = fleet.put("quota/backfill.jsonl", body.into_bytes()).await?;
    fleet.deliver(&[note]).await?;
    Ok(())
}

/// Runs the fleet until the queues are quiet (printing the timeline meanwhile when asked);
/// returns how long the work took and the stand-in's counters [`SETTLE`] into it.
async fn drain(fleet: &Fleet, timeline: bool) -> Result<(Duration, Value), BoxError> {
    let settle = async {
        tokio::time::sleep(SETTLE).await;
        fleet.stack.bedrock_stats().await.map_err(|e| e.to_string())
    };
    let watch = async {
        if timeline {
            print_timeline(fleet).await;
        }
        std::future::pending::<()>().await;
    };
    let (took, at_settle) = tokio::select! {
        both = async { tokio::join!(fleet.run_until_quiet(Duration::from_secs(1800)), settle) } => both,
        () = watch => unreachable!("the timeline runs until the work is done"),
    };
    let took = took?;
    let at_settle = at_settle?;
    Ok((took, at_settle))
}

/// What the run did: the stand-in's counters at the end and since [`SETTLE`], the tokens, the
/// dead letters, the timeouts, and the index compared with the bucket.
async fn measure(fleet: &Fleet, took: Duration, at_settle: &Value) -> Result<QuotaRun, BoxError> {
    let end = fleet
        .stack
        .bedrock_stats()
        .await
        .map_err(|e| e.to_string())?;
    let comparison = compare_index_with_bucket(&fleet.s3, BUCKET, &fleet.es()).await?;
    let (dlq, intake_dlq) = fleet.dead_letters().await?;
    let tokens = tokens_used(fleet);
    let stats = fleet.embed_index.stats();
    Ok(QuotaRun {
        minutes: took.as_secs_f64() / 60.0,
        calls: counter(&end, "calls"),
        ok: counter(&end, "ok"),
        throttled: counter(&end, "throttled"),
        settled_calls: counter(&end, "calls").saturating_sub(counter(at_settle, "calls")),
        settled_throttled: counter(&end, "throttled")
            .saturating_sub(counter(at_settle, "throttled")),
        tokens,
        dead_letters: dlq + intake_dlq,
        timeouts: stats.function_errors,
        mismatches: comparison.mismatches(),
    })
}

/// One of the stand-in's counters (`GET /_stub/stats`).
fn counter(stats: &Value, key: &str) -> u64 {
    stats[key].as_u64().unwrap_or_default()
}

/// Input tokens the containers accounted for (`InputTokens` in their EMF lines).
fn tokens_used(fleet: &Fleet) -> u64 {
    let log = fleet.stack.work_dir.join("functions.log");
    crate::pipeline::emf_sum(&log, "InputTokens", None) as u64
}

/// Successful and throttled calls, and containers at work, every [`TIMELINE_STEP`] (until
/// dropped).
async fn print_timeline(fleet: &Fleet) {
    let (mut ok, mut throttled) = (0, 0);
    let mut at = Duration::ZERO;
    loop {
        tokio::time::sleep(TIMELINE_STEP).await;
        at += TIMELINE_STEP;
        let Ok(stats) = fleet.stack.bedrock_stats().await else {
            continue;
        };
        let (now_ok, now_throttled) = (counter(&stats, "ok"), counter(&stats, "throttled"));
        println!(
            "    {:>4} s: {:>5} ok, {:>4} throttled, {} containers at work",
            at.as_secs(),
            now_ok - ok,
            now_throttled - throttled,
            fleet.embed_index.busy()
        );
        (ok, throttled) = (now_ok, now_throttled);
    }
}
