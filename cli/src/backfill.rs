//! `sakuin backfill s3://bucket/prefix`: what a backfill will cost and how long it will take,
//! before anything is queued; then the backfill itself, followed with a progress bar.
//!
//! The estimate walks the listing with `sakuin reconcile`'s comparison, so objects the index
//! already holds at the listed eTag are counted apart: ingest reads them again, but their
//! chunks are unchanged and are not embedded again. Of the rest, a sample (spread over the
//! listing by reservoir sampling) is read with ingest's own reader and chunker, and its records,
//! chunks and characters per stored byte are scaled to the bytes to ingest.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use sakuin::batch::BatchSettings;
use sakuin::embed::model::{EmbeddingModel, ModelFamily};
use sakuin::es::EsClient;
use sakuin::survey::Survey;
use serde::Serialize;
use serde_json::{Value, json};

use sakuin::reconcile::Report;

/// What the command line asked for.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct Options {
    /// Start the backfill after the estimate.
    #[arg(long = "yes", short = 'y')]
    pub start: bool,
    /// With --yes: queue it and return without following it.
    #[arg(long)]
    pub detach: bool,
    /// With --yes: bulk-load mode while it runs — the index's refresh_interval -1 and 0
    /// replicas, restored when the queues drain (or on Ctrl-C; after a crash, by the scheduled
    /// probe once BULK_LOAD_LEASE_SECS pass). New chunks become searchable at the end. Not
    /// with --detach.
    #[arg(long)]
    pub bulk_load: bool,
    /// The account's Bedrock requests-per-minute quota for the model ("On-demand InvokeModel
    /// requests per minute"); without it (or --tpm) the time is not estimated.
    #[arg(long, value_name = "N")]
    pub rpm: Option<u32>,
    /// The account's Bedrock tokens-per-minute quota for the model.
    #[arg(long, value_name = "N")]
    pub tpm: Option<u32>,
    /// Price in USD per million input tokens, instead of the built-in list price.
    #[arg(long, value_name = "USD")]
    pub price: Option<f64>,
    /// Price in USD per million input tokens through Bedrock batch inference, instead of
    /// half the on-demand price.
    #[arg(long, value_name = "USD")]
    pub batch_price: Option<f64>,
    /// Objects read for the estimate (spread over the listing).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub sample: usize,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
    /// With --yes: how the chunks are embedded. `on-demand`: InvokeModel from embed-index, at
    /// the account's quota. `batch`: Bedrock batch inference (Titan Text Embeddings V2) — about
    /// half the price and outside the on-demand quota, but hours a job; the objects are read
    /// here, the jobs followed, and their vectors queued for embed-index to index (needs
    /// BATCH_STAGING and BATCH_ROLE_ARN). `auto`: batch from --batch-above chunks on.
    #[arg(long, value_enum, default_value_t = Mode::OnDemand)]
    pub mode: Mode,
    /// The estimated chunks from which `--mode auto` picks batch inference.
    #[arg(long, default_value_t = 50_000, value_name = "CHUNKS")]
    pub batch_above: u64,
    /// Go on with batch run RUN (stopped by --detach, Ctrl-C or a crash): collect the jobs
    /// that ended, submit the parts that wait.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<String>,
    /// Chunks in one batch job, and jobs in flight, for the estimate (`BATCH_MAX_RECORDS_PER_JOB`
    /// and `BATCH_MAX_JOBS_IN_FLIGHT`).
    /// (0: the defaults.)
    #[arg(skip)]
    pub batch_records_per_job: usize,
    #[arg(skip)]
    pub batch_jobs_in_flight: usize,
}

/// How a backfill's chunks are embedded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    #[default]
    OnDemand,
    Batch,
    Auto,
}

impl Mode {
    /// Whether a backfill of `chunks` goes through batch inference with `model`; `Err` says
    /// why `batch` cannot.
    pub fn picks_batch(
        self,
        chunks: u64,
        above: u64,
        model: &EmbeddingModel,
    ) -> Result<bool, String> {
        match self {
            Mode::OnDemand => Ok(false),
            Mode::Batch if model.supports_batch() => Ok(true),
            Mode::Batch => Err(format!(
                "Bedrock batch inference does not take {}: use --mode on-demand",
                model.id
            )),
            Mode::Auto => Ok(model.supports_batch() && chunks >= above),
        }
    }
}

/// Stored bytes read of one sampled object at most: a large object's first megabytes stand for
/// the rest.
pub const SAMPLE_BYTES_PER_OBJECT: u64 = 8 * 1024 * 1024;

/// On-demand list price of input tokens, USD per million, in US East (N. Virginia), from
/// <https://aws.amazon.com/bedrock/pricing/> as listed in December 2026. Prices differ by Region
/// and change: `--price` overrides this table.
pub fn list_price(model: &EmbeddingModel) -> f64 {
    match model.family {
        ModelFamily::TitanV2 => 0.02,
        ModelFamily::TitanV1 => 0.10,
        ModelFamily::CohereV3 => 0.10,
        ModelFamily::CohereV4 => 0.12,
    }
}

/// Bedrock batch inference's price as a part of the on-demand price: "charged at a 50% discount
/// compared to On-Demand pricing" (AWS Machine Learning Blog, *Automate Amazon Bedrock batch
/// inference*, October 2024,
/// <https://aws.amazon.com/blogs/machine-learning/automate-amazon-bedrock-batch-inference-building-a-scalable-and-efficient-pipeline/>).
/// The post names no model, and the pricing page's batch rate for each embedding model could
/// not be checked: `--batch-price` overrides it.
pub const BATCH_SHARE_OF_ON_DEMAND: f64 = 0.5;

/// What the same backfill costs through Bedrock batch inference (only for the models it takes).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchEstimate {
    pub usd_per_million_tokens: f64,
    pub price_source: String,
    pub cost_usd: f64,
    /// Jobs of at most `BATCH_MAX_RECORDS_PER_JOB` chunks, and how many times the jobs in
    /// flight (`BATCH_MAX_JOBS_IN_FLIGHT`) must turn over to run them all.
    pub jobs: u64,
    pub rounds: u64,
}

/// A token is about four ASCII characters, and about one CJK character (the ratio the pacing
/// starts from, too, before Bedrock's counts correct it).
pub fn tokens(survey: &Survey) -> f64 {
    survey.ascii_chars as f64 / 4.0 + survey.other_chars as f64
}

/// Bedrock's own count of the input tokens of some of the sample's chunk texts, beside the
/// estimate from their characters: the ratio corrects the estimate of the whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TokenCount {
    /// Chunk texts counted.
    pub texts: u64,
    /// Bedrock's count of their input tokens ...
    pub counted: u64,
    /// ... and [`tokens`] of the same texts.
    pub from_chars: f64,
}

impl TokenCount {
    /// Of `texts`, counted `counted` tokens by the model.
    pub fn of(texts: &[String], counted: u64) -> Self {
        let mut survey = Survey::default();
        for t in texts {
            let ascii = t.chars().filter(char::is_ascii).count() as u64;
            survey.ascii_chars += ascii;
            survey.other_chars += t.chars().count() as u64 - ascii;
        }
        Self {
            texts: texts.len() as u64,
            counted,
            from_chars: tokens(&survey),
        }
    }

    /// What the model counts for each token estimated from characters.
    pub fn ratio(&self) -> f64 {
        if self.from_chars > 0.0 && self.counted > 0 {
            self.counted as f64 / self.from_chars
        } else {
            1.0
        }
    }
}

/// How long one counting call may take: the estimate goes on from characters rather than wait.
const COUNT_CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Asks the model to count the input tokens of `texts` (some of the sample's chunks), in calls
/// of its batch size: a few hundredths of a cent for what the estimate then rests on. Fails,
/// naming why, when Bedrock refuses or does not say how many tokens it read.
pub async fn count_tokens<E: sakuin::embed::Embedder>(
    embedder: &E,
    texts: &[String],
) -> Result<TokenCount, String> {
    if texts.is_empty() {
        return Err("the sample has no chunk text".into());
    }
    let mut counted = 0;
    for group in texts.chunks(embedder.model().max_batch().max(1)) {
        let refs: Vec<&str> = group.iter().map(String::as_str).collect();
        let call = embedder.invoke(&refs, sakuin::embed::model::InputPurpose::Document);
        let output = tokio::time::timeout(COUNT_CALL_TIMEOUT, call)
            .await
            .map_err(|_| format!("no answer within {} s", COUNT_CALL_TIMEOUT.as_secs()))?
            .map_err(|e| e.to_string())?;
        counted += output
            .input_tokens
            .ok_or("Bedrock did not report the input token count")?;
    }
    Ok(TokenCount::of(texts, counted))
}

/// The estimate, and what it rests on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Estimate {
    pub scope: String,
    pub model: String,
    /// Data objects under the prefix, and their bytes.
    pub objects: u64,
    pub bytes: u64,
    /// Objects the index holds at their listed eTag: read again, nothing embedded.
    pub unchanged: u64,
    /// Objects to ingest (missing or changed in the index), and their bytes.
    pub to_ingest: u64,
    pub bytes_to_ingest: u64,
    /// Objects the index holds and the bucket does not (a backfill leaves them; `sakuin
    /// reconcile --fix` removes them).
    pub orphaned: u64,
    pub sampled_objects: u64,
    pub sampled_bytes: u64,
    pub records: u64,
    pub rejected: u64,
    pub chunks: u64,
    pub input_tokens: u64,
    /// The model's count of some sample texts' tokens, which `input_tokens` is scaled by;
    /// `None`: estimated from characters alone (Bedrock could not be asked).
    pub tokens_counted: Option<TokenCount>,
    pub bedrock_calls: u64,
    pub usd_per_million_tokens: f64,
    pub price_source: String,
    pub cost_usd: f64,
    /// Through Bedrock batch inference; `None` for a model it does not take.
    pub batch: Option<BatchEstimate>,
    /// At the quotas given (`--rpm`, `--tpm`); `None` when none was given.
    pub minutes: Option<f64>,
    pub seconds_to_estimate: f64,
}

impl Estimate {
    /// Scales the sample to the bytes to ingest.
    pub fn from_sample(
        report: &Report,
        sample: &Survey,
        sampled_objects: u64,
        model: &EmbeddingModel,
        options: &Options,
        counted: Option<TokenCount>,
    ) -> Self {
        let to_ingest = report.missing + report.changed;
        let scale = if sample.bytes > 0 {
            report.bytes_to_ingest as f64 / sample.bytes as f64
        } else {
            0.0
        };
        let scaled = |n: u64| (n as f64 * scale).round() as u64;
        let chunks = scaled(sample.chunks);
        let ratio = counted.map_or(1.0, |c| c.ratio());
        let input_tokens = (tokens(sample) * scale * ratio).round() as u64;
        let per_call = model.max_batch() as u64;
        let bedrock_calls = chunks.div_ceil(per_call);
        let (usd_per_million_tokens, price_source) = match options.price {
            Some(p) => (p, "--price".to_owned()),
            None => (
                list_price(model),
                "on-demand list price, us-east-1, December 2026".to_owned(),
            ),
        };
        let batch = model.supports_batch().then(|| {
            let (usd, source) = match options.batch_price {
                Some(p) => (p, "--batch-price".to_owned()),
                None => (
                    usd_per_million_tokens * BATCH_SHARE_OF_ON_DEMAND,
                    format!(
                        "half the on-demand price ({}), as AWS announced batch inference in October 2024; check the model's batch rate",
                        price_source
                    ),
                ),
            };
            let or = |n: usize, default: usize| if n == 0 { default } else { n } as u64;
            let per_job = or(
                options.batch_records_per_job,
                BatchSettings::DEFAULT_MAX_RECORDS_PER_JOB,
            );
            let in_flight = or(
                options.batch_jobs_in_flight,
                BatchSettings::DEFAULT_MAX_JOBS_IN_FLIGHT,
            );
            let jobs = chunks.div_ceil(per_job);
            BatchEstimate {
                usd_per_million_tokens: usd,
                price_source: source,
                cost_usd: input_tokens as f64 / 1e6 * usd,
                jobs,
                rounds: jobs.div_ceil(in_flight),
            }
        });
        let by_calls = options
            .rpm
            .map(|rpm| bedrock_calls as f64 / f64::from(rpm.max(1)));
        let by_tokens = options
            .tpm
            .map(|tpm| input_tokens as f64 / f64::from(tpm.max(1)));
        let minutes = match (by_calls, by_tokens) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Self {
            scope: report.scope.clone(),
            model: model.id.clone(),
            objects: report.objects,
            bytes: report.bytes,
            unchanged: report.in_sync + report.empty,
            to_ingest,
            bytes_to_ingest: report.bytes_to_ingest,
            orphaned: report.orphaned,
            sampled_objects,
            sampled_bytes: sample.bytes,
            records: scaled(sample.records),
            rejected: scaled(sample.rejected),
            chunks,
            input_tokens,
            tokens_counted: counted,
            bedrock_calls,
            usd_per_million_tokens,
            price_source,
            cost_usd: input_tokens as f64 / 1e6 * usd_per_million_tokens,
            batch,
            minutes,
            seconds_to_estimate: report.seconds,
        }
    }

    /// What the tokens figure rests on.
    fn tokens_basis(&self) -> String {
        match self.tokens_counted {
            Some(c) => format!(
                "the characters' estimate × {:.2}, the model's own count of {} sample chunks",
                c.ratio(),
                c.texts
            ),
            None => "estimated from the characters; Bedrock did not count a sample".into(),
        }
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "backfill of {} with {}\n\
             \x20 objects     {:>12}  ({})\n\
             \x20 unchanged   {:>12}  (the index holds them at this eTag: read again, nothing embedded)\n\
             \x20 to ingest   {:>12}  ({}; {} sampled, {} read)\n\
             \x20 records     {:>12}  (about; {} of them rejected)\n\
             \x20 chunks      {:>12}\n\
             \x20 tokens      {:>12}  (input tokens: {})\n\
             \x20 Bedrock     {:>12}  calls\n\
             \x20 cost        {:>12}  (at ${}/million tokens: {})\n",
            self.scope,
            self.model,
            thousands(self.objects),
            sakuin::reconcile::human_bytes(self.bytes),
            thousands(self.unchanged),
            thousands(self.to_ingest),
            sakuin::reconcile::human_bytes(self.bytes_to_ingest),
            self.sampled_objects,
            sakuin::reconcile::human_bytes(self.sampled_bytes),
            thousands(self.records),
            thousands(self.rejected),
            thousands(self.chunks),
            thousands(self.input_tokens),
            self.tokens_basis(),
            thousands(self.bedrock_calls),
            format!("${:.2}", self.cost_usd),
            self.usd_per_million_tokens,
            self.price_source,
        );
        match &self.batch {
            Some(b) => out.push_str(&format!(
                "  batch       {:>12}  (Bedrock batch inference at ${}/million tokens: {}; outside the on-demand quota)\n                 \x20             {} job{} in {} round{} of the jobs in flight: hours each (Bedrock ends most jobs within a day; --mode batch)\n",
                format!("${:.2}", b.cost_usd),
                b.usd_per_million_tokens,
                b.price_source,
                thousands(b.jobs),
                if b.jobs == 1 { "" } else { "s" },
                thousands(b.rounds),
                if b.rounds == 1 { "" } else { "s" },
            )),
            None => out.push_str(&format!(
                "  batch       {:>12}  (Bedrock batch inference does not take {})\n",
                "-", self.model
            )),
        }
        match self.minutes {
            Some(m) => out.push_str(&format!(
                "  time        {:>12}  (at the quota given; Bedrock is what bounds a backfill)\n",
                duration(Duration::from_secs_f64(m * 60.0))
            )),
            None => out.push_str(
                "  time        give --rpm (and for Cohere --tpm): the account's on-demand InvokeModel \
                 quotas for the model\n              (aws service-quotas list-service-quotas --service-code bedrock)\n",
            ),
        }
        if self.orphaned > 0 {
            out.push_str(&format!(
                "  note: the index holds {} object(s) the bucket does not; `sakuin reconcile --fix` removes them\n",
                self.orphaned
            ));
        }
        if self.to_ingest == 0 {
            out.push_str("Nothing to embed: every object is in the index at its current eTag.\n");
        }
        out
    }
}

/// 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "1h02m", "3m05s", "12s".
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The objects read for an estimate, chosen by bytes: the largest, always (in a heavy-tailed
/// bucket a few objects hold most of the bytes, and a sample by count would miss them), and a
/// uniform sample of the others. Bounded memory whatever the listing's length.
pub struct Sampler {
    largest_kept: usize,
    /// The largest so far, smallest first out (size, key, eTag).
    largest: std::collections::BinaryHeap<std::cmp::Reverse<(u64, String, Option<String>)>>,
    rest: Reservoir<(u64, String, Option<String>)>,
}

impl Sampler {
    /// Up to `k` objects: half of them the largest, the other half drawn from the rest.
    pub fn new(k: usize, seed: u64) -> Self {
        let largest_kept = k / 2;
        Self {
            largest_kept,
            largest: std::collections::BinaryHeap::with_capacity(largest_kept + 1),
            rest: Reservoir::new(k - largest_kept, seed),
        }
    }

    pub fn offer(&mut self, size: u64, key: String, etag: Option<String>) {
        self.largest.push(std::cmp::Reverse((size, key, etag)));
        if self.largest.len() > self.largest_kept
            && let Some(std::cmp::Reverse(smallest)) = self.largest.pop()
        {
            self.rest.offer(smallest);
        }
    }

    /// The largest objects, then the sample of the rest: (size, key, eTag, among the largest).
    pub fn chosen(self) -> Vec<(u64, String, Option<String>, bool)> {
        let largest = self
            .largest
            .into_iter()
            .map(|std::cmp::Reverse((s, k, e))| (s, k, e, true));
        let rest = self
            .rest
            .items
            .into_iter()
            .map(|(s, k, e)| (s, k, e, false));
        largest.chain(rest).collect()
    }
}

/// What the sample read, as two strata: each of the largest objects with its size, and the
/// other objects' surveys together.
#[derive(Debug, Default, Clone)]
pub struct Sample {
    pub largest: Vec<(u64, Survey)>,
    pub rest: Survey,
    /// Stored bytes read in all.
    pub read: u64,
    pub objects: u64,
}

impl Sample {
    pub fn add(&mut self, size: u64, survey: Survey, among_largest: bool) {
        self.read += survey.bytes;
        self.objects += 1;
        if among_largest {
            self.largest.push((size, survey));
        } else {
            self.rest.add(&survey);
        }
    }

    /// The survey of all `bytes_to_ingest`, extrapolated stratum by stratum: each of the largest
    /// objects from the share of it read (its first `SAMPLE_BYTES_PER_OBJECT`), the others'
    /// bytes at the density of their sample.
    pub fn extrapolate(&self, bytes_to_ingest: u64) -> Survey {
        let mut figures = [0.0f64; 5];
        let mut add = |s: &Survey, scale: f64| {
            let own = [
                s.records,
                s.rejected,
                s.chunks,
                s.ascii_chars,
                s.other_chars,
            ];
            for (sum, n) in figures.iter_mut().zip(own) {
                *sum += n as f64 * scale;
            }
        };
        let mut largest_bytes = 0;
        for (size, s) in &self.largest {
            largest_bytes += size;
            if s.bytes > 0 {
                add(s, *size as f64 / s.bytes as f64);
            }
        }
        let rest_bytes = bytes_to_ingest.saturating_sub(largest_bytes);
        if self.rest.bytes > 0 {
            add(&self.rest, rest_bytes as f64 / self.rest.bytes as f64);
        }
        let [records, rejected, chunks, ascii_chars, other_chars] =
            figures.map(|f| f.round() as u64);
        // The texts for the model to count: some of every object read, as far as they go.
        let texts = (self.largest.iter().map(|(_, s)| s))
            .chain([&self.rest])
            .flat_map(|s| s.texts.iter().take(sakuin::survey::TEXTS_KEPT_PER_OBJECT))
            .take(sakuin::survey::TEXTS_KEPT)
            .cloned()
            .collect();
        Survey {
            bytes: bytes_to_ingest,
            records,
            rejected,
            chunks,
            ascii_chars,
            other_chars,
            whole: false,
            texts,
        }
    }
}

/// Picks up to `k` items spread evenly over a stream of unknown length (Algorithm R, with a
/// seeded generator so a run can be repeated).
pub struct Reservoir<T> {
    k: usize,
    seen: u64,
    pub items: Vec<T>,
    rng: fastrand::Rng,
}

impl<T> Reservoir<T> {
    pub fn new(k: usize, seed: u64) -> Self {
        Self {
            k,
            seen: 0,
            items: Vec::with_capacity(k),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub fn offer(&mut self, item: T) {
        self.seen += 1;
        if self.items.len() < self.k {
            self.items.push(item);
        } else {
            let j = self.rng.u64(0..self.seen);
            if (j as usize) < self.k {
                self.items[j as usize] = item;
            }
        }
    }
}

/// Where a running backfill stands, read from the queues and the index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Objects, documents and chunks written (or refreshed) since the backfill started.
    pub objects: u64,
    pub records: u64,
    pub chunks: u64,
    /// Messages on the intake and chunk queues: waiting, in flight or delayed.
    pub queued: u64,
}

/// What the index received since `since` under the scope.
pub async fn written_since(
    es: &EsClient,
    bucket: &str,
    prefix: &str,
    since: &str,
) -> Result<(u64, u64, u64), String> {
    let mut filter = sakuin::search::under(bucket, prefix);
    filter.push(json!({"range": {"indexed_at": {"gte": since}}}));
    let answer = es
        .search(&json!({
            "size": 0,
            "track_total_hits": true,
            "query": {"bool": {"filter": filter}},
            "aggs": {
                "objects": {"cardinality": {"field": "source.key"}},
                "records": {"cardinality": {"field": "doc_id"}},
            },
        }))
        .await;
    let answer = match answer {
        Ok(a) => a,
        // The first chunk has not created the index yet.
        Err(sakuin::es::EsError::Status { status: 404, .. }) => return Ok((0, 0, 0)),
        Err(e) => return Err(e.to_string()),
    };
    let n = |p: &str| answer.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    Ok((
        n("/aggregations/objects/value"),
        n("/aggregations/records/value"),
        n("/hits/total/value"),
    ))
}

/// The progress bar: a line redrawn in place on stderr while a person watches (stdout and
/// stderr both terminals); nothing when either goes to a file or a pipe.
pub struct Bar {
    on: bool,
    started: Instant,
    width: usize,
}

impl Bar {
    pub fn new() -> Self {
        Self {
            on: std::io::stderr().is_terminal() && std::io::stdout().is_terminal(),
            started: Instant::now(),
            width: 30,
        }
    }

    pub fn line(&self, p: &Progress, estimate: &Estimate) -> String {
        let total = estimate.records.max(1);
        let done = p.records.min(total);
        let filled = (done as usize * self.width) / total as usize;
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = p.records as f64 / elapsed;
        let eta = if rate > 0.0 && done < total {
            duration(Duration::from_secs_f64((total - done) as f64 / rate))
        } else {
            "-".into()
        };
        format!(
            "[{}{}] {}/{} objects  {}/~{} records  {:.0} records/s  {} queued  ETA {eta}",
            "#".repeat(filled),
            "-".repeat(self.width - filled),
            thousands(p.objects),
            thousands(estimate.to_ingest + estimate.unchanged),
            thousands(p.records),
            thousands(estimate.records),
            rate,
            thousands(p.queued),
        )
    }

    pub fn draw(&self, p: &Progress, estimate: &Estimate) {
        if self.on {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{}", self.line(p, estimate));
            let _ = err.flush();
        }
    }

    pub fn finish(&self) {
        if self.on {
            let _ = writeln!(std::io::stderr());
        }
    }
}

impl Default for Bar {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heavy-tailed bucket: 4,000 small objects of short records (about a chunk per 300
    /// bytes, JSON's overhead) and 8 large ones of long texts (a chunk per 1,100 bytes) holding
    /// 80 % of the bytes. Twenty objects read: by bytes, within 2 % of the truth; by count (the
    /// uniform sample this replaced), far off, as it rarely meets a large object.
    #[test]
    fn a_heavy_tailed_bucket_is_estimated_by_bytes() {
        let survey_of = |size: u64, per_chunk: u64| {
            let read = size.min(SAMPLE_BYTES_PER_OBJECT);
            Survey {
                bytes: read,
                records: read / per_chunk,
                chunks: read / per_chunk,
                ascii_chars: read * 3 / 4,
                whole: read == size,
                ..Survey::default()
            }
        };
        let mut rng = fastrand::Rng::with_seed(7);
        let mut objects: Vec<(u64, u64)> =
            (0..4_000).map(|_| (rng.u64(2_000..8_000), 300)).collect();
        objects.extend((0..8).map(|_| (rng.u64(15_000_000..25_000_000), 1_100)));
        rng.shuffle(&mut objects);
        let total_bytes: u64 = objects.iter().map(|(s, _)| s).sum();
        let truth: u64 = objects.iter().map(|(s, d)| s / d).sum();

        let mut by_bytes = Sampler::new(20, 1);
        let mut by_count = Reservoir::new(20, 1);
        for (i, (size, density)) in objects.iter().enumerate() {
            by_bytes.offer(*size, format!("{i}:{density}"), None);
            by_count.offer((*size, *density));
        }
        let mut sample = Sample::default();
        for (size, key, _, largest) in by_bytes.chosen() {
            let density: u64 = key.split(':').nth(1).unwrap().parse().unwrap();
            sample.add(size, survey_of(size, density), largest);
        }
        let estimated = sample.extrapolate(total_bytes).chunks;
        let mut uniform = Survey::default();
        for (size, density) in &by_count.items {
            uniform.add(&survey_of(*size, *density));
        }
        let uniform = (uniform.chunks as f64 * total_bytes as f64 / uniform.bytes as f64) as u64;
        let error = |e: u64| (e as f64 - truth as f64) / truth as f64 * 100.0;
        println!(
            "heavy-tailed: {truth} chunks; by bytes {estimated} ({:+.2} %), by count {uniform} ({:+.1} %), {} MB read",
            error(estimated),
            error(uniform),
            sample.read / 1_000_000
        );
        assert!(error(estimated).abs() < 2.0);
        assert!(error(uniform).abs() > 10.0, "the case this guards against");
        assert_eq!(sample.largest.len(), 10);
        assert!(
            sample
                .largest
                .iter()
                .filter(|(s, _)| *s > 1_000_000)
                .count()
                == 8
        );
    }

    #[test]
    fn the_sample_is_scaled_to_the_bytes_to_ingest() {
        let report = Report {
            scope: "s3://b/p/".into(),
            objects: 100,
            bytes: 10_000,
            in_sync: 60,
            missing: 30,
            changed: 10,
            bytes_to_ingest: 4_000,
            ..Default::default()
        };
        let sample = Survey {
            bytes: 1_000,
            records: 50,
            rejected: 1,
            chunks: 60,
            ascii_chars: 40_000,
            other_chars: 0,
            whole: true,
            texts: vec![],
        };
        let titan = EmbeddingModel::resolve("amazon.titan-embed-text-v2:0", None).unwrap();
        let e = Estimate::from_sample(
            &report,
            &sample,
            5,
            &titan,
            &Options {
                rpm: Some(600),
                ..Default::default()
            },
            None,
        );
        assert_eq!((e.unchanged, e.to_ingest), (60, 40));
        assert_eq!((e.records, e.rejected, e.chunks), (200, 4, 240));
        assert_eq!(e.input_tokens, 40_000);
        assert_eq!(e.bedrock_calls, 240, "Titan: a call per chunk");
        assert!((e.cost_usd - 0.0008).abs() < 1e-9, "{}", e.cost_usd);
        let batch = e.batch.as_ref().expect("Titan V2 runs in batch jobs");
        assert!((batch.cost_usd - 0.0004).abs() < 1e-9, "{batch:?}");
        assert_eq!((batch.jobs, batch.rounds), (1, 1));
        let ten_million = Estimate::from_sample(
            &Report {
                bytes_to_ingest: 4_000 * 41_667,
                ..report.clone()
            },
            &sample,
            5,
            &titan,
            &Options::default(),
            None,
        );
        let batch = ten_million.batch.as_ref().unwrap();
        assert_eq!(ten_million.chunks, 10_000_080);
        assert_eq!(
            (batch.jobs, batch.rounds),
            (201, 21),
            "50,000 chunks a job, ten in flight"
        );
        assert!(
            ten_million.render().contains("201 jobs in 21 rounds"),
            "{}",
            ten_million.render()
        );
        assert!(
            e.render().contains("batch              $0.00"),
            "{}",
            e.render()
        );
        assert!((e.minutes.unwrap() - 0.4).abs() < 1e-9);
        let cohere = EmbeddingModel::resolve("cohere.embed-multilingual-v3", None).unwrap();
        let at_10k_tpm = Options {
            price: Some(1.0),
            tpm: Some(10_000),
            ..Default::default()
        };
        let e = Estimate::from_sample(&report, &sample, 5, &cohere, &at_10k_tpm, None);
        assert_eq!(e.bedrock_calls, 3, "Cohere: 96 texts a call");
        assert!((e.cost_usd - 0.04).abs() < 1e-9);
        assert_eq!(e.price_source, "--price");
        assert!(e.batch.is_none(), "Cohere: no batch inference");
        assert!((e.minutes.unwrap() - 4.0).abs() < 1e-9);
        // Bedrock counted 30 tokens where the characters said 40 (40 ASCII characters and one
        // CJK one — 10 + 1 — in two texts, say): every token figure is scaled by 0.75.
        let count = TokenCount {
            texts: 2,
            counted: 30,
            from_chars: 40.0,
        };
        let counted = Estimate::from_sample(&report, &sample, 5, &cohere, &at_10k_tpm, Some(count));
        assert_eq!(counted.input_tokens, 30_000);
        assert!((counted.cost_usd - 0.03).abs() < 1e-9);
        assert!((counted.minutes.unwrap() - 3.0).abs() < 1e-9);
        assert!(
            counted.render().contains(
                "the characters' estimate × 0.75, the model's own count of 2 sample chunks"
            ),
            "{}",
            counted.render()
        );
        assert_eq!(
            TokenCount::of(&["abcd".repeat(10), "文".into()], 12),
            TokenCount {
                texts: 2,
                counted: 12,
                from_chars: 11.0
            }
        );
        let text = e.render();
        assert!(
            text.contains("estimated from the characters; Bedrock did not count"),
            "{text}"
        );
        assert!(text.contains("unchanged             60"), "{text}");
        assert!(text.contains("Bedrock                3  calls"), "{text}");
        assert!(
            text.contains("batch                  -  (Bedrock batch inference does not take"),
            "{text}"
        );
    }

    #[test]
    fn a_finished_backfill_costs_nothing() {
        let report = Report {
            objects: 10,
            in_sync: 10,
            ..Default::default()
        };
        let titan = EmbeddingModel::resolve("amazon.titan-embed-text-v2:0", None).unwrap();
        let e = Estimate::from_sample(
            &report,
            &Survey::default(),
            0,
            &titan,
            &Options::default(),
            None,
        );
        assert_eq!((e.chunks, e.bedrock_calls), (0, 0));
        assert_eq!(e.cost_usd, 0.0);
        assert!(e.render().contains("Nothing to embed"));
    }

    #[test]
    fn the_reservoir_spreads_over_the_stream() {
        let mut r = Reservoir::new(10, 7);
        for i in 0..10_000u32 {
            r.offer(i);
        }
        assert_eq!(r.items.len(), 10);
        assert!(r.items.iter().any(|&i| i >= 5_000), "{:?}", r.items);
        assert!(r.items.iter().any(|&i| i < 5_000), "{:?}", r.items);
    }

    #[test]
    fn auto_takes_batch_from_its_size_on_and_only_for_a_model_batch_takes() {
        let titan = EmbeddingModel::resolve("amazon.titan-embed-text-v2:0", None).unwrap();
        let cohere = EmbeddingModel::resolve("cohere.embed-multilingual-v3", None).unwrap();
        assert_eq!(Mode::Auto.picks_batch(49_999, 50_000, &titan), Ok(false));
        assert_eq!(Mode::Auto.picks_batch(50_000, 50_000, &titan), Ok(true));
        assert_eq!(
            Mode::Auto.picks_batch(10_000_000, 50_000, &cohere),
            Ok(false)
        );
        assert_eq!(Mode::Batch.picks_batch(10, 50_000, &titan), Ok(true));
        assert!(Mode::Batch.picks_batch(10, 50_000, &cohere).is_err());
        assert_eq!(Mode::OnDemand.picks_batch(10_000_000, 1, &titan), Ok(false));
    }

    #[test]
    fn figures_read_well() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(duration(Duration::from_secs(3720)), "1h02m");
    }
}
