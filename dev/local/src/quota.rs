//! `sakuin-local bench quota`: a backfill against an account's Bedrock quota. Four embed-index
//! containers drain a few thousand chunks while the stand-in enforces a requests-per-minute
//! (Titan) or tokens-per-minute (Cohere, English and Japanese) quota with a minute's burst, once
//! with adaptive pacing and once with a fixed `EMBED_CONCURRENCY`; then Titan with no quota,
//! unthrottled and with every third call refused whatever the rate. The figures are printed
//! side by side: the share of the quota used net of the burst, the share of calls throttled, the
//! seconds the quota sat idle (no call succeeded), and the invocations and containers used.

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
    /// Japanese records (about 45 tokens a chunk) rather than English ones.
    japanese: bool,
    /// The stand-in's quota flag and limit (`None`: no quota).
    quota: Option<(&'static str, u64)>,
    /// Every this many calls the stand-in refuses one whatever the rate (0: none).
    throttle_every: u64,
}

/// Seconds of its quota the stand-in lets through at once.
const BURST_SECS: u64 = 60;
/// A run stops here if it has not drained; its pace is measured on what was embedded by then.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// What one run measured.
#[derive(Debug, Default)]
pub struct QuotaRun {
    /// Until the queues were quiet (the sweeps done too).
    pub minutes: f64,
    /// Until Bedrock embedded the last text: the span chunks a minute are measured over. A
    /// sweep that came before its chunks were indexed waits a requeue delay after them, which in
    /// a run of seconds would weigh as much as the embedding.
    pub embedding_minutes: f64,
    pub calls: u64,
    pub ok: u64,
    pub throttled: u64,
    /// Calls and throttles after the first `SETTLE` of the run.
    pub settled_calls: u64,
    pub settled_throttled: u64,
    pub tokens: u64,
    /// Texts Bedrock embedded.
    pub texts: u64,
    /// Whether the queues drained within [`RUN_LIMIT`].
    pub drained: bool,
    /// Seconds in which no call succeeded while work was left.
    pub idle_secs: u64,
    pub invocations: u64,
    pub containers: u64,
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
    /// Only the scenarios without a quota (unthrottled, and refusals at any rate).
    pub without_quota: bool,
    /// Print successful and throttled calls every [`TIMELINE_STEP`].
    pub timeline: bool,
    /// Only the scenarios whose model id contains this.
    pub model: Option<String>,
}

const TIMELINE_STEP: Duration = Duration::from_secs(15);

/// The scenarios: Titan at a requests-per-minute quota, Cohere (v3 multilingual on Japanese,
/// v4 on English) at a tokens-per-minute one, and Titan without a quota, unthrottled and with
/// every third call refused.
const SCENARIOS: [Scenario; 5] = [
    Scenario {
        model: "amazon.titan-embed-text-v2:0",
        dimensions: Some(256),
        chunks: 2400,
        japanese: false,
        quota: Some(("--quota-rpm", 600)),
        throttle_every: 0,
    },
    Scenario {
        model: "cohere.embed-multilingual-v3",
        dimensions: None,
        chunks: 1200,
        japanese: true,
        quota: Some(("--quota-tpm", 12_000)),
        throttle_every: 0,
    },
    Scenario {
        model: "us.cohere.embed-v4:0",
        dimensions: Some(256),
        chunks: 2000,
        japanese: false,
        quota: Some(("--quota-tpm", 12_000)),
        throttle_every: 0,
    },
    Scenario {
        model: "amazon.titan-embed-text-v2:0",
        dimensions: Some(256),
        chunks: 2900,
        japanese: false,
        quota: None,
        throttle_every: 0,
    },
    Scenario {
        model: "amazon.titan-embed-text-v2:0",
        dimensions: Some(256),
        chunks: 2900,
        japanese: false,
        quota: None,
        throttle_every: 3,
    },
];

/// Runs every scenario with adaptive pacing, and with the fixed concurrency too unless
/// `adaptive_only`.
pub async fn run(options: QuotaOptions) -> Result<(), BoxError> {
    print_header();
    let picked = SCENARIOS
        .iter()
        .filter(|s| options.model.as_deref().is_none_or(|m| s.model.contains(m)))
        .filter(|s| !options.without_quota || s.quota.is_none());
    for scenario in picked {
        for adaptive in [true, false] {
            if (options.adaptive_only || scenario.quota.is_none()) && !adaptive {
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
        "\n## Bedrock at the quota: {CONTAINERS} embed-index containers, the stand-in at 50 ms per call, a quota with {BURST_SECS} s of burst"
    );
    println!(
        "  quota used = successful calls (Titan) or tokens (Cohere) per minute ÷ the quota, net of the burst; chunks/min = texts embedded ÷ the minutes until the last; minutes = until the queues were quiet; throttled = share of calls (all / after {}s); idle = seconds no call succeeded while work was left",
        SETTLE.as_secs()
    );
    println!(
        "  {:<30} {:<22} {:<8} {:>6} {:>8} {:>10} {:>10} {:>11} {:>6} {:>12} {:>4} {:>6} {:>5}",
        "model",
        "quota or fault",
        "pacing",
        "chunks",
        "minutes",
        "quota used",
        "chunks/min",
        "throttled",
        "idle s",
        "invocations",
        "ctrs",
        "DLQ",
        "lost"
    );
}

/// The share of the quota a run used per minute, net of what the stand-in's opening burst let
/// through on top of it.
fn quota_used(scenario: &Scenario, run: &QuotaRun) -> Option<f64> {
    let (flag, limit) = scenario.quota?;
    // The burst as the stand-in sizes it (dev/bedrock_stub.py: the seconds, and the floors).
    let burst = |floor: f64| (limit as f64 * BURST_SECS as f64 / 60.0).max(floor);
    let (used, burst) = if flag == "--quota-rpm" {
        (run.ok as f64, burst(1.0))
    } else {
        (run.tokens as f64, burst(16_384.0))
    };
    Some((used - burst).max(0.0) / run.minutes / limit as f64)
}

/// Prints one run's row of the table.
fn print_row(scenario: &Scenario, adaptive: bool, run: &QuotaRun) {
    let condition = match scenario.quota {
        Some((flag, limit)) => format!("{} {limit}", flag.trim_start_matches("--")),
        None if scenario.throttle_every > 0 => {
            format!("every {}rd call refused", scenario.throttle_every)
        }
        None => "none".to_string(),
    };
    let model = if scenario.japanese {
        format!("{} (ja)", scenario.model)
    } else {
        scenario.model.to_string()
    };
    let used = quota_used(scenario, run).map_or("-".to_string(), |u| format!("{:.0}%", u * 100.0));
    let lost = if run.drained {
        run.mismatches.to_string()
    } else {
        "(cut)".to_string()
    };
    println!(
        "  {:<30} {:<22} {:<8} {:>6} {:>8.2} {:>10} {:>10.0} {:>4.0}%/{:>3.0}% {:>6} {:>12} {:>4} {:>6} {:>5}",
        model,
        condition,
        if adaptive { "adaptive" } else { "fixed 8" },
        scenario.chunks,
        run.minutes,
        used,
        run.texts as f64 / run.embedding_minutes.max(f64::EPSILON),
        share(run.throttled, run.calls) * 100.0,
        share(run.settled_throttled, run.settled_calls) * 100.0,
        run.idle_secs,
        run.invocations,
        run.containers,
        run.dead_letters,
        lost,
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
    queue_backfill(&fleet, scenario).await?;
    let (took, drained, at_settle, idle_secs, last_text) = drain(&fleet, timeline).await?;
    let mut run = measure(&fleet, took, &at_settle).await?;
    run.drained = drained;
    run.idle_secs = idle_secs;
    run.embedding_minutes = last_text.as_secs_f64() / 60.0;
    fleet.stop().await;
    Ok(run)
}

/// A stack whose stand-in enforces the scenario's quota, and a fleet of [`CONTAINERS`]
/// embed-index containers paced adaptively or at a fixed concurrency of 8.
async fn start_fleet(scenario: &Scenario, adaptive: bool) -> Result<Fleet, BoxError> {
    let mut flags: Vec<String> = vec!["--latency-ms".into(), "50".into()];
    if let Some((flag, limit)) = scenario.quota {
        flags.extend([flag.into(), limit.to_string()]);
        flags.extend(["--quota-burst-secs".into(), BURST_SECS.to_string()]);
    }
    if scenario.throttle_every > 0 {
        flags.extend([
            "--throttle-every".into(),
            scenario.throttle_every.to_string(),
        ]);
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let stack = LocalStack::start(&flags).await.map_err(|e| e.to_string())?;
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

/// Puts one object of the scenario's one-chunk records and delivers its notification.
async fn queue_backfill(fleet: &Fleet, scenario: &Scenario) -> Result<(), BoxError> {
    let body: String = (0..scenario.chunks)
        .map(|i| {
            let text = if scenario.japanese {
                format!(
                    "記録{i}：カタログの品目{}について、在庫と出荷の予定、保管場所、担当部署からの連絡事項をまとめた短い段落です。",
                    i % 89
                )
            } else {
                format!(
                    "Backfill record {i}: a short paragraph about item {} in the catalogue, for the quota run.",
                    i % 89
                )
            };
            json!({"id": format!("q{i}"), "text": text}).to_string() + "\n"
        })
        .collect();
    let note = fleet.put("quota/backfill.jsonl", body.into_bytes()).await?;
    fleet.deliver(&[note]).await?;
    Ok(())
}

/// Runs the fleet until the queues are quiet or [`RUN_LIMIT`] (printing the timeline meanwhile
/// when asked); returns how long the work took, whether it drained, the stand-in's counters
/// [`SETTLE`] into it, the seconds in which no call succeeded, and when the last text was
/// embedded.
async fn drain(
    fleet: &Fleet,
    timeline: bool,
) -> Result<(Duration, bool, Value, u64, Duration), BoxError> {
    let started = std::time::Instant::now();
    let settle = async {
        tokio::time::sleep(SETTLE).await;
        fleet.stack.bedrock_stats().await.map_err(|e| e.to_string())
    };
    let idle = std::sync::atomic::AtomicU64::new(0);
    let last_text = std::sync::Mutex::new(Duration::ZERO);
    let watch = async {
        tokio::join!(
            watch_idle(fleet, timeline, &idle),
            watch_texts(fleet, started, &last_text)
        );
        std::future::pending::<()>().await;
    };
    let (took, at_settle) = tokio::select! {
        both = async { tokio::join!(fleet.run_until_quiet(RUN_LIMIT), settle) } => both,
        () = watch => unreachable!("the watch runs until the work is done"),
    };
    let (took, drained) = match took {
        Ok(took) => (took, true),
        Err(_) => (started.elapsed(), false),
    };
    let idle = idle.load(std::sync::atomic::Ordering::SeqCst);
    let last_text = *last_text.lock().unwrap();
    Ok((took, drained, at_settle?, idle, last_text))
}

/// Keeps in `last` when (since `started`) the stand-in's count of texts embedded last grew,
/// to a tenth of a second; runs until dropped.
async fn watch_texts(
    fleet: &Fleet,
    started: std::time::Instant,
    last: &std::sync::Mutex<Duration>,
) {
    let mut texts = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(stats) = fleet.stack.bedrock_stats().await else {
            continue;
        };
        let now = counter(&stats, "texts");
        if now > texts {
            texts = now;
            *last.lock().unwrap() = started.elapsed();
        }
    }
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
    let texts = counter(&end, "texts");
    Ok(QuotaRun {
        minutes: took.as_secs_f64() / 60.0,
        calls: counter(&end, "calls"),
        ok: counter(&end, "ok"),
        throttled: counter(&end, "throttled"),
        settled_calls: counter(&end, "calls").saturating_sub(counter(at_settle, "calls")),
        settled_throttled: counter(&end, "throttled")
            .saturating_sub(counter(at_settle, "throttled")),
        tokens,
        texts,
        invocations: stats.invocations,
        containers: stats.cold_starts,
        dead_letters: dlq + intake_dlq,
        timeouts: stats.function_errors,
        mismatches: comparison.mismatches(),
        ..QuotaRun::default()
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

/// Counts the seconds in which no call succeeded while work was left (into `idle`), and prints
/// successful and throttled calls and containers at work every [`TIMELINE_STEP`] when
/// `timeline`; runs until dropped.
async fn watch_idle(fleet: &Fleet, timeline: bool, idle: &std::sync::atomic::AtomicU64) {
    let mut ok = 0;
    let (mut step_ok, mut step_throttled) = (0, 0);
    let mut at = Duration::ZERO;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        at += Duration::from_secs(1);
        let Ok(stats) = fleet.stack.bedrock_stats().await else {
            continue;
        };
        let (now_ok, now_throttled) = (counter(&stats, "ok"), counter(&stats, "throttled"));
        if now_ok == ok && fleet.work_left().await.is_ok_and(|left| left > 0) {
            idle.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        ok = now_ok;
        if timeline && at.as_secs().is_multiple_of(TIMELINE_STEP.as_secs()) {
            println!(
                "    {:>4} s: {:>5} ok, {:>4} throttled, {} containers at work",
                at.as_secs(),
                ok - step_ok,
                now_throttled - step_throttled,
                fleet.embed_index.busy()
            );
            (step_ok, step_throttled) = (ok, now_throttled);
        }
    }
}
