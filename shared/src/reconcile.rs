//! `sakuin reconcile`: is the index equal to the bucket? S3 notifications arrive late, and one
//! lost before sakuin saw it (a notification configuration changed, a stack redeployed, a
//! failure outside the pipeline) leaves drift that no event will repair. This compares the
//! bucket's listing with what the index holds of each object, and with `fix` queues exactly the
//! work that repairs the drift, through the normal pipeline (the intake queue).
//!
//! Both sides are read in key order, a listing page at a time: S3 lists keys in UTF-8 byte
//! order, and Elasticsearch orders keyword terms the same way, so each page of the listing is
//! compared with the index's objects in the same key range, `(previous page's last key, this
//! page's last key]`. The ranges tile the prefix, so an object the index holds and the bucket
//! does not is found in the range it falls in. Memory is bounded by one page.
//!
//! An object is in sync when every chunk the index holds of it carries the listed eTag. An object
//! without chunks is in sync when its marker (the newest event applied) is of that eTag: a file
//! with no records holds nothing. A repair of a missing or changed object carries a sequencer
//! just after the marker's ([`repair_sequencer`]): it replaces what the event it corrects left
//! (unchanged chunks are not embedded again), and a newer real event still wins over it.
//! An orphan is handed to ingest as a removal, which looks at the key again before it deletes.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::config::Env;
use crate::es::{EsClient, EsError};
use crate::ids::{repair_sequencer, source_marker_id};
use crate::ingest::QueueContinuation;
use crate::ingest::{Continuation, Work, is_data_key};
use crate::message::SourceRef;
use crate::probe::ProbeDeps;
use crate::queue::{BatchLimits, SqsQueue};
use crate::store::{ListPage, Listed, ObjectStore};
use serde::Serialize;
use serde_json::{Value, json};

/// Objects named in the report per kind of drift.
const EXAMPLES: usize = 5;
/// Objects per page of the index's side (a listing page holds at most 1,000).
const INDEX_PAGE: usize = 1000;

/// What is compared: the objects of `bucket` under `prefix`, as ingest's backfill sees them
/// (folder markers and ingest's rejects are not data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub bucket: String,
    pub prefix: String,
    pub rejects_prefix: String,
}

impl Scope {
    /// `target` (`s3://bucket/prefix`), or `SOURCE_BUCKET` and `SOURCE_PREFIX`; the rejects
    /// prefix from `REJECTS_PREFIX`, as ingest reads it.
    pub fn from_env(env: &Env, target: Option<&str>) -> Result<Self, String> {
        let (bucket, prefix) = match target {
            Some(url) => parse_s3_url(url)?,
            None => (
                env.get("SOURCE_BUCKET").ok_or(
                    "give the objects as s3://bucket/prefix, or set SOURCE_BUCKET (and SOURCE_PREFIX)",
                )?,
                env.get("SOURCE_PREFIX").unwrap_or_default(),
            ),
        };
        Ok(Self {
            bucket,
            prefix,
            rejects_prefix: env
                .get("REJECTS_PREFIX")
                .unwrap_or_else(|| "rejects/".into()),
        })
    }

    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

/// Reads `s3://bucket/prefix` (the prefix may be empty).
pub fn parse_s3_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| format!("{url:?} is not an s3://bucket/prefix address"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("{url:?} names no bucket"));
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// In the bucket, and the index holds nothing of it.
    Missing,
    /// In the bucket, and the index holds chunks of another version (or of several).
    Changed,
    /// Not in the bucket (or not data), and the index holds chunks of it.
    Orphaned,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Changed => "changed",
            Kind::Orphaned => "orphaned",
        }
    }
}

/// One object that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub kind: Kind,
    pub key: String,
    /// The listed eTag and size (none and 0 for an orphan).
    pub etag: Option<String>,
    pub size: u64,
    /// The eTags of the chunks the index holds, with their counts (`""`: chunks without one).
    pub indexed: Vec<(String, u64)>,
}

/// What the index holds of one object: chunks per eTag.
pub type Held = BTreeMap<String, Vec<(String, u64)>>;

/// The comparison of one listing page with the index's objects in the same key range.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PageOutcome {
    /// Data objects listed, and their bytes.
    pub objects: u64,
    pub bytes: u64,
    pub in_sync: u64,
    /// In sync with no chunks: the marker says this version was read and held no records.
    pub empty: u64,
    pub drift: Vec<Drift>,
}

/// An object's marker, as far as the comparison needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The sequencer of the newest event applied (empty: only a backfill's).
    pub sequencer: String,
    /// The eTag of the version it read; `None` when that event deleted the object.
    pub etag: Option<String>,
}

/// Whether the index holds chunks of `object` at its listed eTag, and of no other.
fn held_at_listed_etag(held: &Held, object: &Listed) -> bool {
    held.get(&object.key)
        .is_some_and(|etags| etags.len() == 1 && Some(&etags[0].0) == object.etag.as_ref())
}

/// Compares one page. `markers` holds the markers of listed keys without matching chunks.
pub fn compare(
    listed: &[Listed],
    held: &Held,
    markers: &HashMap<String, Marker>,
    rejects_prefix: &str,
) -> PageOutcome {
    let mut out = PageOutcome::default();
    let mut seen = std::collections::HashSet::new();
    for object in listed
        .iter()
        .filter(|o| is_data_key(&o.key, rejects_prefix))
    {
        seen.insert(object.key.as_str());
        out.objects += 1;
        out.bytes += object.size;
        if held_at_listed_etag(held, object) {
            out.in_sync += 1;
            continue;
        }
        let drift = |kind, indexed: &[(String, u64)]| Drift {
            kind,
            key: object.key.clone(),
            etag: object.etag.clone(),
            size: object.size,
            indexed: indexed.to_vec(),
        };
        match held.get(&object.key) {
            Some(etags) => out.drift.push(drift(Kind::Changed, etags)),
            None => match markers.get(&object.key) {
                Some(m) if m.etag.is_some() && m.etag == object.etag => out.empty += 1,
                _ => out.drift.push(drift(Kind::Missing, &[])),
            },
        }
    }
    for (key, etags) in held {
        if !seen.contains(key.as_str()) {
            out.drift.push(Drift {
                kind: Kind::Orphaned,
                key: key.clone(),
                etag: None,
                size: 0,
                indexed: etags.clone(),
            });
        }
    }
    out.drift.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The work that repairs one drift, as an intake message body. `marker_sequencer` is the
/// sequencer the object's marker holds (empty when none).
pub fn repair(scope: &Scope, drift: &Drift, marker_sequencer: &str) -> Value {
    let source = SourceRef {
        bucket: scope.bucket.clone(),
        key: drift.key.clone(),
        version_id: None,
        etag: drift.etag.clone(),
        sequencer: None,
        read_at: None,
    };
    // Every repair is ordered after the marker it found, like an event: an upload (or a
    // removal) S3 announces after that marker was read wins over it, whenever either lands.
    let source = SourceRef {
        sequencer: Some(repair_sequencer(marker_sequencer)),
        ..source
    };
    let unit = match drift.kind {
        Kind::Missing | Kind::Changed => Work::Object {
            source,
            resume: None,
            part: 0,
            queued: 0,
        },
        // Ingest looks at the key again: an object uploaded since is read, not removed.
        Kind::Orphaned => Work::Removed { source },
    };
    json!({ "work": [unit], "hops": 0 })
}

/// How the index compares with the bucket.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scope: String,
    pub index: String,
    /// Data objects listed.
    pub objects: u64,
    pub bytes: u64,
    pub in_sync: u64,
    /// In sync, holding no records.
    pub empty: u64,
    pub missing: u64,
    pub changed: u64,
    pub orphaned: u64,
    /// Bytes of the missing and changed objects: what a backfill would read.
    pub bytes_to_ingest: u64,
    /// Up to five objects of each kind.
    pub examples: Vec<Drift>,
    /// Repairs put on the intake queue (with `fix`).
    pub queued: u64,
    pub fixed: bool,
    /// False when the run stopped before the end of the listing (its time ran out).
    pub complete: bool,
    /// Where an incomplete run stopped: the last key compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_after: Option<String>,
    pub seconds: f64,
}

impl Report {
    pub fn drifted(&self) -> u64 {
        self.missing + self.changed + self.orphaned
    }

    fn add(&mut self, page: &PageOutcome) {
        self.objects += page.objects;
        self.bytes += page.bytes;
        self.bytes_to_ingest += page
            .drift
            .iter()
            .filter(|d| d.kind != Kind::Orphaned)
            .map(|d| d.size)
            .sum::<u64>();
        self.in_sync += page.in_sync;
        self.empty += page.empty;
        for d in &page.drift {
            let n = match d.kind {
                Kind::Missing => &mut self.missing,
                Kind::Changed => &mut self.changed,
                Kind::Orphaned => &mut self.orphaned,
            };
            *n += 1;
            if *n as usize <= EXAMPLES {
                self.examples.push(d.clone());
            }
        }
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "{} against index {}: {} objects ({}), {} in sync ({} without records)\n",
            self.scope,
            self.index,
            self.objects,
            human_bytes(self.bytes),
            self.in_sync + self.empty,
            self.empty
        );
        for (kind, n, what) in [
            (
                Kind::Missing,
                self.missing,
                "in the bucket, nothing in the index",
            ),
            (
                Kind::Changed,
                self.changed,
                "the index holds another version",
            ),
            (
                Kind::Orphaned,
                self.orphaned,
                "in the index, not in the bucket",
            ),
        ] {
            out.push_str(&format!("  {:<9} {n:>8}  ({what})\n", kind.label()));
            for d in self.examples.iter().filter(|d| d.kind == kind) {
                out.push_str(&example_line(d));
            }
        }
        if !self.complete {
            out.push_str(&format!(
                "INCOMPLETE: stopped after {} (time ran out); run it again from a shell to cover the rest\n",
                self.stopped_after.as_deref().unwrap_or("the start")
            ));
        }
        out.push_str(&format!("{} ({:.1} s)\n", self.verdict(), self.seconds));
        out
    }

    /// Whether the index equals the bucket, and if not, what `--fix` does or did about it.
    fn verdict(&self) -> String {
        match (self.drifted(), self.fixed) {
            (0, _) => "the index is equal to the bucket".to_owned(),
            (n, false) => format!(
                "{n} object(s) differ: `sakuin reconcile {} --fix` queues their repair",
                self.scope
            ),
            (n, true) => format!(
                "{n} object(s) differed: {} repair(s) queued on the intake queue; `sakuin status` shows them drain",
                self.queued
            ),
        }
    }

    /// The EMF line of a scheduled run: the drift by kind, so an alarm can watch it.
    pub fn metrics(&self) -> crate::metrics::MetricSet {
        let mut m = crate::metrics::MetricSet::new("reconcile");
        m.count("ObjectsMissing", self.missing)
            .count("ObjectsChanged", self.changed)
            .count("ObjectsOrphaned", self.orphaned)
            .count("ObjectsDrifted", self.drifted())
            .count("RepairsQueued", self.queued)
            .count("ReconcileIncomplete", u64::from(!self.complete))
            .property("scope", self.scope.clone());
        m
    }
}

/// One example of drift under its kind's line: the key, the listed eTag, and the chunks the
/// index holds per eTag (`?` for chunks without one).
fn example_line(d: &Drift) -> String {
    let indexed: Vec<String> = d
        .indexed
        .iter()
        .map(|(e, n)| format!("{n} chunk(s) of {}", if e.is_empty() { "?" } else { e }))
        .collect();
    let listed = d.etag.as_deref().map(|e| format!(" eTag {e}"));
    format!(
        "            {}{}{}\n",
        d.key,
        listed.unwrap_or_default(),
        if indexed.is_empty() {
            String::new()
        } else {
            format!(" — index: {}", indexed.join(", "))
        }
    )
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// What the run needs besides the scope.
pub struct Reconciler<'a, S, C> {
    pub store: &'a S,
    pub es: &'a EsClient,
    /// Where repairs go (the intake queue); `None` reports without fixing.
    pub fix: Option<&'a C>,
    /// Stop (reporting `complete: false`) once this instant has passed.
    pub stop_at: Option<Instant>,
}

impl<S: ObjectStore, C: Continuation> Reconciler<'_, S, C> {
    /// Compares the whole scope, page by page.
    pub async fn run(
        &self,
        scope: &Scope,
        visit: &mut dyn FnMut(&Report, &PageOutcome),
    ) -> Result<Report, String> {
        let started = Instant::now();
        let mut report = Report {
            scope: scope.url(),
            index: self.es.index.clone(),
            fixed: self.fix.is_some(),
            complete: true,
            ..Default::default()
        };
        // What was written a moment ago is compared too (a search sees only refreshed chunks).
        if let Err(e) = self.es.refresh().await
            && !matches!(e, EsError::Status { status: 404, .. })
        {
            tracing::warn!(error = %e, "refreshing the index before comparing failed; chunks written in the last second may show as missing");
        }
        let mut after: Option<String> = None;
        loop {
            if self.stop_at.is_some_and(|t| Instant::now() >= t) {
                report.complete = false;
                report.stopped_after = after.clone();
                break;
            }
            let (outcome, markers, upper) = self.compare_page(scope, after.as_deref()).await?;
            if let Some(queue) = self.fix
                && !outcome.drift.is_empty()
            {
                report.queued += repair_page(queue, scope, &outcome, &markers).await?;
            }
            report.seconds = started.elapsed().as_secs_f64();
            report.add(&outcome);
            visit(&report, &outcome);
            match upper {
                Some(upper) => after = Some(upper),
                None => break,
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Lists one page after `after` and compares it with what the index holds for the same key
    /// range; returns the outcome, the markers read for it, and the page's upper key (none for
    /// the last page).
    async fn compare_page(
        &self,
        scope: &Scope,
        after: Option<&str>,
    ) -> Result<(PageOutcome, HashMap<String, Marker>, Option<String>), String> {
        let page: ListPage = self
            .store
            .list(&scope.bucket, &scope.prefix, after)
            .await
            .map_err(|e| format!("listing {}: {e}", scope.url()))?;
        // The range this page covers ends at its last key; the last page's runs to the end.
        let last = page.objects.last().map(|o| o.key.clone());
        let upper = if page.truncated { last.clone() } else { None };
        if page.truncated && (last.is_none() || last.as_deref() <= after) {
            return Err(format!(
                "listing {} after {:?} is truncated but does not move on",
                scope.url(),
                after
            ));
        }
        let held = held_objects(self.es, scope, after, upper.as_deref())
            .await
            .map_err(|e| format!("reading what {} holds: {e}", self.es.index))?;
        // The markers of listed keys out of sync, and of keys held but not listed (orphans):
        // each repair is ordered after the marker it finds.
        let listed: std::collections::HashSet<&str> =
            page.objects.iter().map(|o| o.key.as_str()).collect();
        let unmatched: Vec<&str> = page
            .objects
            .iter()
            .filter(|o| {
                is_data_key(&o.key, &scope.rejects_prefix) && !held_at_listed_etag(&held, o)
            })
            .map(|o| o.key.as_str())
            .chain(
                held.keys()
                    .map(String::as_str)
                    .filter(|k| !listed.contains(k)),
            )
            .collect();
        let markers = markers(self.es, &scope.bucket, &unmatched)
            .await
            .map_err(|e| format!("reading the source markers: {e}"))?;
        let outcome = compare(&page.objects, &held, &markers, &scope.rejects_prefix);
        Ok((outcome, markers, upper))
    }
}

/// Queues the repairs of a page's drift on the intake queue, each ordered after the marker it
/// found; returns how many.
async fn repair_page<C: Continuation>(
    queue: &C,
    scope: &Scope,
    outcome: &PageOutcome,
    markers: &HashMap<String, Marker>,
) -> Result<u64, String> {
    let repairs: Vec<Value> = outcome
        .drift
        .iter()
        .map(|d| {
            let sequencer = markers.get(&d.key).map_or("", |m| m.sequencer.as_str());
            repair(scope, d, sequencer)
        })
        .collect();
    let n = repairs.len() as u64;
    queue.hand_over_all(repairs).await?;
    Ok(n)
}

/// An Elasticsearch client for walks over the whole index: the probe's configuration bounds
/// each request by `PROBE_TIMEOUT_SECS`, too short for an aggregation over millions of chunks.
pub fn walking_client(deps: &ProbeDeps, env: &Env) -> Result<EsClient, String> {
    let mut settings = deps.config.es.clone();
    settings.timeout = Duration::from_secs(
        env.get("ES_TIMEOUT_SECS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(60)
            .max(settings.timeout.as_secs()),
    );
    EsClient::new(&settings).map_err(|e| e.to_string())
}

/// The intake queue repairs and backfills go to.
pub fn intake(deps: &ProbeDeps) -> Result<QueueContinuation<SqsQueue>, String> {
    let url =
        deps.config.intake_queue_url.as_ref().ok_or(
            "INGEST_QUEUE_URL is not set: repairs and backfills go through the intake queue",
        )?;
    Ok(QueueContinuation::new(
        SqsQueue::new(deps.aws.sqs.clone(), url.clone()),
        BatchLimits {
            max_payload_bytes: 256 * 1024,
            max_attempts: 5,
            delay_seconds: 0,
        },
    ))
}

/// A run as the scheduled Lambda makes it (`{"reconcile": {"fix": true}}`): the scope from
/// the event or the variables, stopping 20 s before `deadline`, the drift as metrics.
pub async fn scheduled(
    deps: &ProbeDeps,
    env: &Env,
    request: &Value,
    deadline: Instant,
) -> Result<Report, String> {
    // The event may name another bucket (all of it) or prefix than the variables.
    let target = request["bucket"].as_str().map(|b| format!("s3://{b}/"));
    let mut scope = Scope::from_env(env, target.as_deref())?;
    if let Some(prefix) = request["prefix"].as_str() {
        scope.prefix = prefix.to_owned();
    }
    let fix = request["fix"].as_bool().unwrap_or(false);
    let es = walking_client(deps, env)?;
    let queue = if fix { Some(intake(deps)?) } else { None };
    let store = crate::store::S3Store::new(deps.aws.s3.clone());
    let reconciler = Reconciler {
        store: &store,
        es: &es,
        fix: queue.as_ref(),
        stop_at: Some(
            deadline
                .checked_sub(Duration::from_secs(20))
                .unwrap_or(deadline),
        ),
    };
    let report = reconciler.run(&scope, &mut |_, _| {}).await?;
    report.metrics().emit();
    Ok(report)
}

/// The objects the index holds chunks of in `(after, upto]` (unbounded when `None`), with their
/// eTags: a terms aggregation ordered by key (exact, whatever the shards), paged by key.
async fn held_objects(
    es: &EsClient,
    scope: &Scope,
    after: Option<&str>,
    upto: Option<&str>,
) -> Result<Held, EsError> {
    let mut held = Held::new();
    let mut lower = after.map(str::to_owned);
    loop {
        let answer = es.search(&held_query(scope, lower.as_deref(), upto)).await;
        let answer = match answer {
            Ok(a) => a,
            // Nothing was ever indexed: the index holds nothing of any object.
            Err(EsError::Status { status: 404, .. }) => return Ok(held),
            Err(e) => return Err(e),
        };
        let objects = &answer["aggregations"]["objects"];
        let buckets = objects["buckets"].as_array().cloned().unwrap_or_default();
        for b in &buckets {
            let Some(key) = b["key"].as_str() else {
                continue;
            };
            held.insert(key.to_owned(), held_etags(b));
        }
        let more = objects["sum_other_doc_count"].as_u64().unwrap_or(0) > 0;
        match buckets.last().and_then(|b| b["key"].as_str()) {
            Some(last) if more => lower = Some(last.to_owned()),
            _ => return Ok(held),
        }
    }
}

/// The search for one page of the objects under the scope in `(lower, upto]`: their keys in
/// order, each with its chunks per eTag.
fn held_query(scope: &Scope, lower: Option<&str>, upto: Option<&str>) -> Value {
    let mut range = serde_json::Map::new();
    if let Some(l) = lower {
        range.insert("gt".into(), json!(l));
    }
    if let Some(u) = upto {
        range.insert("lte".into(), json!(u));
    }
    let mut filter = crate::search::under(&scope.bucket, &scope.prefix);
    if !range.is_empty() {
        filter.push(json!({"range": {"source.key": range}}));
    }
    json!({
        "size": 0,
        "track_total_hits": false,
        "query": {"bool": {"filter": filter}},
        "aggs": {"objects": {
            "terms": {"field": "source.key", "size": INDEX_PAGE, "order": {"_key": "asc"}},
            "aggs": {"etags": {"terms": {"field": "source.etag", "size": 10}}},
        }},
    })
}

/// One object's chunks per eTag, from its terms bucket of the aggregation; chunks the eTag terms do
/// not count (without an eTag) are counted under `""`.
fn held_etags(object: &Value) -> Vec<(String, u64)> {
    let total = object["doc_count"].as_u64().unwrap_or(0);
    let mut etags: Vec<(String, u64)> = object["etags"]["buckets"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|e| Some((e["key"].as_str()?.to_owned(), e["doc_count"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    let counted: u64 = etags.iter().map(|(_, n)| n).sum();
    if counted < total {
        etags.push((String::new(), total - counted));
    }
    etags
}

/// The markers of `keys`: their sequencer, and the eTag they recorded (`None` when the newest
/// event deleted the object). Read with `_mget`, which sees writes not yet refreshed; an index
/// with no marker index yet holds none.
async fn markers(
    es: &EsClient,
    bucket: &str,
    keys: &[&str],
) -> Result<HashMap<String, Marker>, EsError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<String> = keys.iter().map(|k| source_marker_id(bucket, k)).collect();
    let stored = match es.lookup(&[], &ids).await {
        Ok(stored) => stored,
        Err(e) if e.to_string().contains("index_not_found") => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    };
    Ok(stored
        .markers
        .into_values()
        .map(|m| {
            let m = m.marker;
            let marker = Marker {
                etag: m.etag.filter(|_| !m.deleted),
                sequencer: m.sequencer,
            };
            (m.key, marker)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(key: &str, etag: &str) -> Listed {
        Listed {
            key: key.into(),
            etag: Some(etag.into()),
            size: 10,
        }
    }

    fn held(entries: &[(&str, &[(&str, u64)])]) -> Held {
        entries
            .iter()
            .map(|(k, e)| {
                (
                    k.to_string(),
                    e.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn each_kind_of_drift_is_found() {
        let page = [
            listed("a.jsonl", "e1"),
            listed("b.jsonl", "e2"),
            listed("c.jsonl", "e3"),
            listed("d.jsonl", "e4"),
            listed("e.jsonl", "e5"),
            listed("f.jsonl", "e6"),
            listed("rejects/x.jsonl", "r"),
            listed("folder/", "f"),
        ];
        let index = held(&[
            ("a.jsonl", &[("e1", 3)]),
            ("b.jsonl", &[("old", 2)]),
            ("c.jsonl", &[("e3", 1), ("old", 1)]),
            ("gone.jsonl", &[("e9", 4)]),
            ("rejects/x.jsonl", &[("r", 1)]),
        ]);
        let marker = |etag: Option<&str>| Marker {
            sequencer: "0A".into(),
            etag: etag.map(str::to_owned),
        };
        let markers = HashMap::from([
            ("d.jsonl".to_owned(), marker(Some("e4"))),
            ("e.jsonl".to_owned(), marker(Some("other"))),
            ("f.jsonl".to_owned(), marker(None)),
        ]);
        let out = compare(&page, &index, &markers, "rejects/");
        assert_eq!(out.in_sync, 1, "a");
        assert_eq!(out.empty, 1, "d: its marker says this version held nothing");
        let kinds: Vec<(&str, Kind)> = out.drift.iter().map(|d| (d.key.as_str(), d.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("b.jsonl", Kind::Changed),
                ("c.jsonl", Kind::Changed),
                ("e.jsonl", Kind::Missing),
                ("f.jsonl", Kind::Missing),
                ("gone.jsonl", Kind::Orphaned),
                ("rejects/x.jsonl", Kind::Orphaned),
            ]
        );
    }

    #[test]
    fn repairs_are_ordered_after_the_marker_and_orphans_go_through_a_removal() {
        let scope = Scope {
            bucket: "b".into(),
            prefix: "p/".into(),
            rejects_prefix: "rejects/".into(),
        };
        let changed = Drift {
            kind: Kind::Changed,
            key: "p/x y.jsonl".into(),
            etag: Some("e2".into()),
            size: 10,
            indexed: vec![("e1".into(), 2)],
        };
        let seq = crate::ids::normalize_sequencer("0A");
        let body = repair(&scope, &changed, &seq);
        let unit = &body["work"][0];
        assert_eq!(unit["kind"], "object");
        assert_eq!(unit["source"]["key"], "p/x y.jsonl");
        assert_eq!(unit["source"]["etag"], "e2");
        assert_eq!(unit["source"]["sequencer"], format!("{seq}+"));
        assert_eq!(body["hops"], 0);
        // What ingest reads back is the same unit.
        let back: Work = serde_json::from_value(unit.clone()).unwrap();
        assert!(matches!(back, Work::Object { .. }));
        let orphan = Drift {
            kind: Kind::Orphaned,
            key: "p/gone".into(),
            etag: None,
            size: 0,
            indexed: vec![("e1".into(), 1)],
        };
        let body = repair(&scope, &orphan, &seq);
        assert_eq!(body["work"][0]["kind"], "removed");
        assert_eq!(body["work"][0]["source"]["sequencer"], format!("{seq}+"));
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_s3_url("s3://b/in/coming/"),
            Ok(("b".into(), "in/coming/".into()))
        );
        assert_eq!(parse_s3_url("s3://b"), Ok(("b".into(), String::new())));
        assert!(parse_s3_url("b/x").is_err());
        assert!(parse_s3_url("s3:///x").is_err());
    }

    #[test]
    fn the_report_names_examples_and_what_to_do() {
        let mut report = Report {
            scope: "s3://b/".into(),
            index: "documents".into(),
            complete: true,
            ..Default::default()
        };
        report.add(&PageOutcome {
            objects: 3,
            bytes: 3 * 1024 * 1024,
            in_sync: 1,
            empty: 0,
            drift: vec![
                Drift {
                    kind: Kind::Missing,
                    key: "new.jsonl".into(),
                    etag: Some("e1".into()),
                    size: 10,
                    indexed: vec![],
                },
                Drift {
                    kind: Kind::Orphaned,
                    key: "gone.jsonl".into(),
                    etag: None,
                    size: 0,
                    indexed: vec![("e0".into(), 2)],
                },
            ],
        });
        let text = report.render();
        assert!(text.contains("3 objects (3.0 MiB), 1 in sync"), "{text}");
        assert!(text.contains("missing          1"), "{text}");
        assert!(
            text.contains("gone.jsonl — index: 2 chunk(s) of e0"),
            "{text}"
        );
        assert!(text.contains("sakuin reconcile s3://b/ --fix"), "{text}");
        assert_eq!(report.drifted(), 2);
        assert_eq!(report.bytes_to_ingest, 10, "the missing object's size");
    }
}
