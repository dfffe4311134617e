//! The whole pipeline against a model of the bucket, with generated operation sequences.
//!
//! Each case is a sequence of S3 operations (puts of JSON Lines, JSON arrays and gzip at a few
//! keys, overwrites, deletes, and in a versioned bucket version removals, delete markers and
//! undeletes), chunk-setting changes followed by a backfill, `sakuin reconcile --fix` repairs,
//! Bedrock throttles (a tokens quota) and refusals at any rate, and deliveries: several
//! `ingest` and `embed-index` invocations at once, the real handlers,
//! interleaved by a seeded scheduler over in-memory S3, SQS, Bedrock and Elasticsearch. SQS
//! hands messages out in random order and sometimes twice, S3 notifications wait until
//! released, and invocations crash at named points (their messages come back). At the end every
//! queue is drained and the whole index is compared with a plain model of the bucket: each
//! current record is exactly one document under its object — the chunks the current settings
//! cut, its fields as metadata and nothing older — and nothing else is indexed. proptest
//! shrinks a failing sequence to a short one.
//!
//! `cargo test -p sakuin --features test-util --test model -- --nocapture` runs the fast
//! profile; `SAKUIN_MODEL_CASES` (cases), `SAKUIN_MODEL_OPS` (most operations per case) and
//! `SAKUIN_MODEL_SEED` (the run's seed, printed by every run) choose another; `make model-long`
//! runs 2,000 cases.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use sakuin::aws_lambda_events::event::sqs::SqsEvent;
use sakuin::chunker::{ChunkSettings, chunk_text};
use sakuin::config::{EmbedIndexConfig, Env, IngestConfig};
use sakuin::embed::{EmbedError, Embedder, EmbeddingModel, InputPurpose, ModelOutput};
use sakuin::embed_index::{EmbedIndexDeps, SearchIndex};
use sakuin::es::{BulkOutcome, EsError, Stored, VectorSettings};
use sakuin::ingest::{IngestDeps, QueueContinuation};
use sakuin::message::SourceRef;
use sakuin::queue::{ChunkQueue, EntryFailure, QueueEntry, QueueError};
use sakuin::retry::Deadline;
use sakuin::store::{ObjectHead, ObjectRef, ObjectStore, OpenedObject, StoreError};
use sakuin::test_util::{CHUNKS, MARKERS, MemoryEmbedder, MemoryIndex, S3Event, VersionedStore};
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------------
// Knobs: what the generator makes, and how often.
// ---------------------------------------------------------------------------------------------

/// Relative weights of the operations.
mod weight {
    pub const PUT: u32 = 8;
    pub const DELETE: u32 = 2;
    pub const DELETE_VERSION: u32 = 2;
    pub const UNDELETE: u32 = 1;
    pub const RECHUNK_AND_BACKFILL: u32 = 1;
    pub const RECONCILE: u32 = 1;
    pub const RELEASE_NOTIFICATIONS: u32 = 4;
    pub const DELIVER: u32 = 6;
    pub const CRASH: u32 = 2;
    pub const THROTTLE: u32 = 1;
    pub const REFUSE: u32 = 1;
}

/// The keys objects are written at.
const KEYS: &[&str] = &[
    "docs/a.jsonl",
    "docs/b.json",
    "docs/c.jsonl.gz",
    "docs/d.jsonl",
];
/// Record ids come from this small pool, so objects share them.
const ID_POOL: u8 = 5;
/// Records per object.
const RECORDS: std::ops::Range<usize> = 0..5;
/// Sentences per record text (0: a record without text, which ingest rejects).
const SENTENCES: std::ops::Range<usize> = 0..9;
/// Chunk settings (`CHUNK_MAX_CHARS`, `CHUNK_OVERLAP_CHARS`) a case starts with or changes to.
const CHUNKINGS: &[(usize, usize)] = &[(60, 10), (80, 0), (50, 20), (120, 30), (1000, 100)];
/// Most concurrent invocations a delivery starts of each function, and most messages a batch.
const MAX_INGEST_WORKERS: u8 = 2;
const MAX_EMBED_WORKERS: u8 = 3;
const MAX_BATCH: u8 = 10;
/// Scheduler steps a delivery runs before the next operation (workers left over keep running
/// during the next ones).
const MAX_STEPS: u16 = 300;
/// Percent of received messages SQS also hands out again (at-least-once delivery).
const DUPLICATE_PERCENT: u64 = 10;
/// Most yields a fake makes before and after each call, so interleavings vary.
const MAX_YIELDS: u64 = 3;
/// A message failed (named in `batchItemFailures`) this many times goes to its DLQ, as the
/// template's `maxReceiveCount` does.
const MAX_FAILURES: u32 = 5;
/// Invocations the final drain may take before the case counts as not settling.
const SETTLE_INVOCATIONS: usize = 3000;

const BUCKET: &str = "b";

/// The sentences texts are made of: Latin, Japanese and mixed punctuation, 12 to 40 chars.
const SENTENCE_TEXTS: &[&str] = &[
    "The quick brown fox jumps.",
    "Alpha beta gamma delta epsilon!",
    "東京は日本の首都です。",
    "Is this the last question?",
    "Rain falls softly on the old tin roof.",
    "短い文。",
    "Numbers like 3.14 stay whole here.",
    "Zebra crossings save lives every day.",
    "一行目\n二行目の文章です。",
    "Paragraph end.\n\nNext paragraph starts.",
];

// ---------------------------------------------------------------------------------------------
// Operations.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    Jsonl,
    Array,
    GzipJsonl,
}

#[derive(Clone, PartialEq, Eq)]
struct RecordSpec {
    /// An id from the pool; `None`: the record has no id field.
    id: Option<u8>,
    sentences: Vec<u8>,
    tags: Option<Vec<u8>>,
    /// A nested attribute, with an optional inner field (removed between versions too).
    attr: Option<(u8, Option<u8>)>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
struct ObjectSpec {
    format: Format,
    records: Vec<RecordSpec>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum CrashPoint {
    /// embed-index: a `_bulk` with chunk writes landed; the invocation dies before returning.
    AfterBulk,
    /// embed-index: right before it reads the markers again (after writing).
    BeforeRecheck,
    /// embed-index: a removal (`_delete_by_query`) landed.
    AfterRemoval,
    /// ingest: chunk messages of an object were queued, the object not finished.
    AfterChunkSend,
    /// ingest: a continuation or backfill page was handed over to the intake queue.
    AfterHandOver,
}

/// Every crash point, in declaration order.
const CRASH_POINTS: [CrashPoint; 5] = [
    CrashPoint::AfterBulk,
    CrashPoint::BeforeRecheck,
    CrashPoint::AfterRemoval,
    CrashPoint::AfterChunkSend,
    CrashPoint::AfterHandOver,
];

#[derive(Clone, PartialEq, Eq)]
enum Op {
    Put {
        key: usize,
        object: ObjectSpec,
    },
    /// Unversioned: the key is gone; versioned: a delete marker on top.
    Delete {
        key: usize,
    },
    /// Versioned only: one version (any, delete markers included) removed by id.
    DeleteVersion {
        key: usize,
        pick: usize,
    },
    /// Versioned only: the delete marker on top removed.
    Undelete {
        key: usize,
    },
    /// New `CHUNK_MAX_CHARS`/`CHUNK_OVERLAP_CHARS` (a redeploy), then `sakuin backfill`.
    RechunkAndBackfill {
        chunking: usize,
    },
    /// `sakuin reconcile --fix` against the bucket and index as they are now.
    Reconcile,
    /// S3 delivers some of the notifications it held back (in random order).
    Release {
        count: u8,
    },
    /// Starts invocations on batches of the queues and runs the scheduler for a while.
    Deliver {
        ingest: u8,
        embed: u8,
        batch: u8,
        steps: u16,
        /// ingest's deadline is already past: it reads one record and hands over the rest.
        short_deadline: bool,
    },
    /// The next invocation to reach this point crashes there.
    Crash(CrashPoint),
    /// Bedrock throttles the next `calls` calls, as a tokens quota does: the texts go back to
    /// the work, the calls after are sized to the pace, and what the deadline leaves waits on
    /// the queue as long as the pace says.
    Throttle {
        calls: u8,
    },
    /// Bedrock refuses every `every`-th of its next `calls` calls whatever the rate ("Too many
    /// requests", as a service short of capacity does): the pace may take it for noise and
    /// retry at once, or for a quota and wait; either way nothing may be lost or doubled.
    Refuse {
        every: u8,
        calls: u8,
    },
}

#[derive(Clone)]
struct Case {
    versioned: bool,
    /// `ID_SCOPE=bucket`: record ids declared unique across the bucket (the generator shares
    /// them anyway, so every shared id is a collision).
    bucket_ids: bool,
    chunking: usize,
    /// `BEDROCK_TPM` at the pace's floor (20 tokens a second for the one container): every
    /// invocation is paced from its first call, so batches beyond what the pace embeds in the
    /// time a container holds work are handed back at the start, or held and handed back with
    /// their vectors part way through.
    paced: bool,
    /// The scheduler's and the fakes' seed: which worker runs next, yields, duplicates.
    sim_seed: u64,
    ops: Vec<Op>,
}

impl fmt::Debug for RecordSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Some(id) => write!(f, "id=r{id}")?,
            None => write!(f, "no-id")?,
        }
        write!(f, " text={:?}", self.sentences)?;
        if let Some(tags) = &self.tags {
            write!(f, " tags={tags:?}")?;
        }
        if let Some((a, inner)) = &self.attr {
            write!(f, " attr={a}")?;
            if let Some(i) = inner {
                write!(f, "/{i}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put { key, object } => {
                let format = match object.format {
                    Format::Jsonl => "jsonl",
                    Format::Array => "array",
                    Format::GzipJsonl => "gzip",
                };
                write!(f, "put {} {format} {:?}", KEYS[*key], object.records)
            }
            Op::Delete { key } => write!(f, "delete {}", KEYS[*key]),
            Op::DeleteVersion { key, pick } => {
                write!(f, "delete version #{pick} of {}", KEYS[*key])
            }
            Op::Undelete { key } => write!(f, "undelete {}", KEYS[*key]),
            Op::RechunkAndBackfill { chunking } => {
                let (max, overlap) = CHUNKINGS[*chunking];
                write!(f, "chunk settings {max}/{overlap}, then backfill")
            }
            Op::Reconcile => write!(f, "reconcile --fix"),
            Op::Throttle { calls } => write!(f, "Bedrock throttles the next {calls} call(s)"),
            Op::Refuse { every, calls } => write!(
                f,
                "Bedrock refuses every {every}th of the next {calls} call(s) whatever the rate"
            ),
            Op::Release { count } => write!(f, "release {count} notification(s)"),
            Op::Deliver {
                ingest,
                embed,
                batch,
                steps,
                short_deadline,
            } => write!(
                f,
                "deliver: {ingest} ingest + {embed} embed-index, batches of {batch}, {steps} steps{}",
                if *short_deadline {
                    ", ingest out of time"
                } else {
                    ""
                }
            ),
            Op::Crash(point) => write!(f, "crash at {point:?}"),
        }
    }
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (max, overlap) = CHUNKINGS[self.chunking];
        writeln!(
            f,
            "{} bucket, ids unique per {}, chunks {max}/{overlap}{}, sim seed {}:",
            if self.versioned {
                "versioned"
            } else {
                "unversioned"
            },
            if self.bucket_ids { "bucket" } else { "object" },
            if self.paced {
                ", BEDROCK_TPM at the floor"
            } else {
                ""
            },
            self.sim_seed
        )?;
        for (i, op) in self.ops.iter().enumerate() {
            writeln!(f, "  {i:>2}. {op:?}")?;
        }
        Ok(())
    }
}

fn record_strategy() -> impl Strategy<Value = RecordSpec> {
    (
        proptest::option::weighted(0.75, 0..ID_POOL),
        proptest::collection::vec(0..SENTENCE_TEXTS.len() as u8, SENTENCES),
        proptest::option::of(proptest::collection::vec(0u8..4, 0..3)),
        proptest::option::of((0u8..3, proptest::option::of(0u8..3))),
    )
        .prop_map(|(id, sentences, tags, attr)| RecordSpec {
            id,
            sentences,
            tags,
            attr,
        })
}

fn object_strategy() -> impl Strategy<Value = ObjectSpec> {
    let format = prop_oneof![
        2 => Just(Format::Jsonl),
        1 => Just(Format::Array),
        1 => Just(Format::GzipJsonl),
    ];
    (
        format,
        proptest::collection::vec(record_strategy(), RECORDS),
    )
        .prop_map(|(format, records)| ObjectSpec { format, records })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    use weight::*;
    let key = 0..KEYS.len();
    let crash = prop_oneof![
        Just(CrashPoint::AfterBulk),
        Just(CrashPoint::BeforeRecheck),
        Just(CrashPoint::AfterRemoval),
        Just(CrashPoint::AfterChunkSend),
        Just(CrashPoint::AfterHandOver),
    ];
    prop_oneof![
        PUT => (key.clone(), object_strategy()).prop_map(|(key, object)| Op::Put { key, object }),
        DELETE => key.clone().prop_map(|key| Op::Delete { key }),
        DELETE_VERSION => (key.clone(), 0usize..4).prop_map(|(key, pick)| Op::DeleteVersion { key, pick }),
        UNDELETE => key.prop_map(|key| Op::Undelete { key }),
        RECHUNK_AND_BACKFILL => (0..CHUNKINGS.len()).prop_map(|chunking| Op::RechunkAndBackfill { chunking }),
        RECONCILE => Just(Op::Reconcile),
        RELEASE_NOTIFICATIONS => (1u8..6).prop_map(|count| Op::Release { count }),
        DELIVER => (0..=MAX_INGEST_WORKERS, 0..=MAX_EMBED_WORKERS, 1..=MAX_BATCH, 1..=MAX_STEPS, proptest::bool::weighted(0.25))
            .prop_map(|(ingest, embed, batch, steps, short_deadline)| Op::Deliver { ingest, embed, batch, steps, short_deadline }),
        CRASH => crash.prop_map(Op::Crash),
        THROTTLE => (1u8..12).prop_map(|calls| Op::Throttle { calls }),
        REFUSE => (2u8..=4, 4u8..48).prop_map(|(every, calls)| Op::Refuse { every, calls }),
    ]
}

fn case_strategy(max_ops: usize) -> impl Strategy<Value = Case> {
    (
        proptest::bool::ANY,
        proptest::bool::weighted(0.3),
        0..CHUNKINGS.len(),
        proptest::bool::weighted(0.2),
        any::<u64>(),
        proptest::collection::vec(op_strategy(), 1..=max_ops),
    )
        .prop_map(
            |(versioned, bucket_ids, chunking, paced, sim_seed, ops)| Case {
                versioned,
                bucket_ids,
                chunking,
                paced,
                sim_seed,
                ops,
            },
        )
}

// ---------------------------------------------------------------------------------------------
// Object bodies, and what each record should become.
// ---------------------------------------------------------------------------------------------

fn record_text(sentences: &[u8]) -> String {
    sentences
        .iter()
        .map(|&s| SENTENCE_TEXTS[s as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

/// The records as JSON; an id another record of the object already has is left out (one
/// object never holds one id twice).
fn record_values(object: &ObjectSpec) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    object
        .records
        .iter()
        .map(|r| {
            let mut v = Map::new();
            if let Some(id) = r.id
                && seen.insert(id)
            {
                v.insert("id".into(), json!(format!("r{id}")));
            }
            if !r.sentences.is_empty() {
                v.insert("text".into(), json!(record_text(&r.sentences)));
            }
            if let Some(tags) = &r.tags {
                let tags: Vec<String> = tags.iter().map(|t| format!("t{t}")).collect();
                v.insert("tags".into(), json!(tags));
            }
            if let Some((a, inner)) = r.attr {
                let mut attr = json!({"color": format!("c{a}")});
                if let Some(i) = inner {
                    attr["shade"] = json!(i);
                }
                v.insert("attr".into(), attr);
            }
            Value::Object(v)
        })
        .collect()
}

fn body_of(object: &ObjectSpec) -> Vec<u8> {
    let records = record_values(object);
    let lines = || {
        records
            .iter()
            .map(|r| r.to_string() + "\n")
            .collect::<String>()
            .into_bytes()
    };
    match object.format {
        Format::Jsonl => lines(),
        Format::Array => Value::Array(records.clone()).to_string().into_bytes(),
        Format::GzipJsonl => gzip_stored(&lines()),
    }
}

/// gzip with stored (uncompressed) deflate blocks: a valid stream without a compressor.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let blocks: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(65_535).collect()
    };
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

// ---------------------------------------------------------------------------------------------
// Determinism: one seeded generator, the worker being polled, yields.
// ---------------------------------------------------------------------------------------------

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

thread_local! {
    /// The worker the scheduler is polling: a crash point reached now crashes it.
    static CURRENT_WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// What the fakes share: the seeded generator and the armed crash points.
struct Chaos {
    rng: Mutex<Rng>,
    armed: Mutex<Vec<CrashPoint>>,
    /// Workers that crashed, and where.
    crashed: Mutex<Vec<(usize, CrashPoint)>>,
}

impl Chaos {
    fn below(&self, n: u64) -> u64 {
        self.rng.lock().unwrap().below(n)
    }

    async fn yields(&self) {
        for _ in 0..self.below(MAX_YIELDS + 1) {
            YieldOnce(false).await;
        }
    }

    /// At `point`: if it is armed, the current worker dies here (never returns).
    async fn crash_point(&self, point: CrashPoint) {
        let hit = {
            let mut armed = self.armed.lock().unwrap();
            match armed.iter().position(|p| *p == point) {
                Some(i) => {
                    armed.remove(i);
                    true
                }
                None => false,
            }
        };
        if hit {
            let worker = CURRENT_WORKER.with(|w| w.get());
            self.crashed.lock().unwrap().push((worker, point));
            std::future::pending::<()>().await;
        }
    }
}

struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SQS: visibility, redelivery, duplicates, DLQ.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Message {
    id: String,
    body: String,
    receives: u32,
    failures: u32,
}

#[derive(Default)]
struct QueueState {
    visible: Vec<Message>,
    dead: Vec<Message>,
    next_id: u64,
}

/// One SQS queue: a received message is invisible until its invocation ends; then it is deleted,
/// or (failed, crashed) visible again, or after `MAX_FAILURES` failures in the DLQ.
struct SimQueue {
    name: &'static str,
    state: Mutex<QueueState>,
}

impl SimQueue {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            state: Mutex::default(),
        }
    }

    fn send(&self, body: String) {
        let mut s = self.state.lock().unwrap();
        s.next_id += 1;
        let id = format!("{}-{}", self.name, s.next_id);
        s.visible.push(Message {
            id,
            body,
            receives: 0,
            failures: 0,
        });
    }

    /// Up to `n` visible messages, picked at random; some also stay visible as a duplicate.
    fn receive(&self, n: usize, chaos: &Chaos) -> Vec<Message> {
        let mut s = self.state.lock().unwrap();
        let mut batch = Vec::new();
        while batch.len() < n && !s.visible.is_empty() {
            let i = chaos.below(s.visible.len() as u64) as usize;
            let mut m = s.visible.swap_remove(i);
            m.receives += 1;
            if chaos.below(100) < DUPLICATE_PERCENT {
                s.next_id += 1;
                let dup = Message {
                    id: format!("{}-{}-dup", self.name, s.next_id),
                    receives: 0,
                    failures: 0,
                    ..m.clone()
                };
                s.visible.push(dup);
            }
            batch.push(m);
        }
        batch
    }

    /// An invocation ended: `failed` (named in its response) come back, or go to the DLQ.
    fn finish(&self, batch: Vec<Message>, failed: &[String]) {
        let mut s = self.state.lock().unwrap();
        for mut m in batch {
            if failed.contains(&m.id) {
                m.failures += 1;
                if m.failures >= MAX_FAILURES {
                    s.dead.push(m);
                } else {
                    s.visible.push(m);
                }
            }
        }
    }

    /// A crashed invocation's messages are visible again once their visibility timeout ends.
    fn release(&self, batch: Vec<Message>) {
        self.state.lock().unwrap().visible.extend(batch);
    }

    fn is_empty(&self) -> bool {
        self.state.lock().unwrap().visible.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// The seams the handlers see: the shared fakes, with yields and crash points.
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Queue {
    queue: Arc<SimQueue>,
    chaos: Arc<Chaos>,
    crash_after: Option<CrashPoint>,
}

impl ChunkQueue for Queue {
    async fn send_batch(&self, entries: &[QueueEntry]) -> Result<Vec<EntryFailure>, QueueError> {
        self.chaos.yields().await;
        for e in entries {
            tracing::info!(target: "model", "send to {}: {}", self.queue.name, summary(&e.body));
            self.queue.send(e.body.clone());
        }
        if let Some(point) = self.crash_after {
            self.chaos.crash_point(point).await;
        }
        self.chaos.yields().await;
        Ok(Vec::new())
    }
}

/// A message body as a trace line: the op, key and sequencer and the chunks' texts (a chunk
/// message), or the work (an intake message).
fn summary(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_default();
    if let Some(op) = v.get("op") {
        let texts: Vec<String> = v["chunks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "{}/{} {}",
                    c["chunk_index"],
                    c["chunk_count"],
                    truncate(c["text"].as_str().unwrap_or(""), 16)
                )
            })
            .collect();
        format!(
            "{op} {} seq={} etag={} expected={} requeues={} {texts:?}",
            v["source"]["key"],
            v["source"]["sequencer"],
            v["source"]["etag"],
            v["chunks_expected"],
            v["requeues"]
        )
    } else {
        truncate(body, 300)
    }
}

struct Store {
    store: Arc<VersionedStore>,
    chaos: Arc<Chaos>,
}

impl ObjectStore for Store {
    async fn open(&self, object: &ObjectRef) -> Result<OpenedObject, StoreError> {
        self.chaos.yields().await;
        self.store.open(object).await
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.chaos.yields().await;
        self.store.put(bucket, key, body).await
    }

    async fn put_if_absent(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.chaos.yields().await;
        self.store.put_if_absent(bucket, key, body).await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectHead>, StoreError> {
        self.chaos.yields().await;
        self.store.head(bucket, key).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        self.chaos.yields().await;
        self.store.delete(bucket, key).await
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<sakuin::store::ListPage, StoreError> {
        self.chaos.yields().await;
        self.store.list(bucket, prefix, start_after).await
    }
}

struct Index {
    index: Arc<MemoryIndex>,
    chaos: Arc<Chaos>,
}

impl SearchIndex for Index {
    fn index_name(&self) -> &str {
        self.index.index_name()
    }

    fn marker_index(&self) -> String {
        self.index.marker_index()
    }

    async fn ensure_index(&self, m: &EmbeddingModel, v: &VectorSettings) -> Result<(), EsError> {
        self.index.ensure_index(m, v).await
    }

    async fn lookup(&self, chunk_ids: &[String], marker_ids: &[String]) -> Result<Stored, EsError> {
        if chunk_ids.is_empty() {
            self.chaos.crash_point(CrashPoint::BeforeRecheck).await;
        }
        self.chaos.yields().await;
        let stored = self.index.lookup(chunk_ids, marker_ids).await;
        self.chaos.yields().await;
        stored
    }

    async fn vectors_by_content(
        &self,
        shas: &[String],
        model_id: &str,
    ) -> Result<HashMap<String, Vec<f32>>, EsError> {
        self.chaos.yields().await;
        self.index.vectors_by_content(shas, model_id).await
    }

    async fn bulk(&self, body: Vec<u8>, actions: usize) -> Result<BulkOutcome, EsError> {
        let writes_chunks = String::from_utf8_lossy(&body)
            .lines()
            .any(|l| l.contains(&format!("\"_index\":\"{CHUNKS}\"")) && !l.contains("\"delete\""));
        self.chaos.yields().await;
        let traced = trace_bulk(&body);
        let outcome = self.index.bulk(body, actions).await;
        if let Ok(o) = &outcome {
            for (line, (_, item)) in traced.iter().zip(&o.items) {
                tracing::info!(target: "model", "bulk {line} -> {item:?}");
            }
        }
        if writes_chunks {
            self.chaos.crash_point(CrashPoint::AfterBulk).await;
        }
        self.chaos.yields().await;
        outcome
    }

    async fn refresh(&self) -> Result<(), EsError> {
        self.chaos.yields().await;
        self.index.refresh().await
    }

    async fn count_chunks(&self, source: &SourceRef, sequencer: &str) -> Result<u64, EsError> {
        self.chaos.yields().await;
        self.index.count_chunks(source, sequencer).await
    }

    async fn delete_chunks(
        &self,
        source: &SourceRef,
        sequencer: &str,
        inclusive: bool,
    ) -> Result<u64, EsError> {
        self.chaos.yields().await;
        let n = self.index.delete_chunks(source, sequencer, inclusive).await;
        tracing::info!(target: "model", "delete_chunks {} below {sequencer:?} inclusive={inclusive} -> {n:?}", source.key);
        self.chaos.crash_point(CrashPoint::AfterRemoval).await;
        self.chaos.yields().await;
        n
    }
}

/// One line per action of a `_bulk` body: the action, index, id and, for a write, the chunk's
/// key, sequencer, text and count (or the marker's sequencer), for a failing case's trace.
fn trace_bulk(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let mut lines = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_default());
    let mut out = Vec::new();
    while let Some(action) = lines.next() {
        let Some((kind, meta)) = action.as_object().and_then(|o| o.iter().next()) else {
            break;
        };
        let head = format!(
            "{kind} {}/{}",
            meta["_index"].as_str().unwrap_or(""),
            meta["_id"].as_str().unwrap_or("")
        );
        if kind == "delete" {
            out.push(head);
            continue;
        }
        let doc = lines.next().unwrap_or_default();
        out.push(if doc.get("doc_id").is_some() {
            format!(
                "{head} {} seq={} {:?} {}/{}",
                doc["source"]["key"],
                doc["source"]["sequencer"],
                truncate(doc["text"].as_str().unwrap_or(""), 24),
                doc["chunk_index"],
                doc["chunk_count"]
            )
        } else {
            format!(
                "{head} marker seq={} deleted={} etag={} swept={}",
                doc["sequencer"], doc["deleted"], doc["etag"], doc["swept"]
            )
        });
    }
    out
}

/// Bedrock calls throttled over the whole run, for the figures.
static THROTTLED_CALLS: AtomicUsize = AtomicUsize::new(0);
/// Messages embed-index handed back for another container (beyond the pace at the start, or
/// held), and chunks it held back, over the whole run, for the figures.
static HANDED_BACK: AtomicUsize = AtomicUsize::new(0);
static HELD_BACK: AtomicUsize = AtomicUsize::new(0);

/// Calls Bedrock still refuses one in `every` of ([`Op::Refuse`]).
#[derive(Debug, Default)]
struct Refusals {
    left: usize,
    every: usize,
    seen: usize,
}

impl Refusals {
    /// Whether this call is refused.
    fn refuse(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        self.seen += 1;
        self.seen.is_multiple_of(self.every.max(1))
    }
}

/// The model's Bedrock: the fake embedder, throttling while `throttles` lasts and refusing
/// while the refusals last.
struct Bedrock(Arc<MemoryEmbedder>, Arc<AtomicUsize>, Arc<Mutex<Refusals>>);

impl Embedder for Bedrock {
    fn model(&self) -> &EmbeddingModel {
        self.0.model()
    }

    async fn invoke(
        &self,
        texts: &[&str],
        purpose: InputPurpose,
    ) -> Result<ModelOutput, EmbedError> {
        let throttled = self
            .1
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if throttled {
            THROTTLED_CALLS.fetch_add(1, Ordering::SeqCst);
            return Err(EmbedError::Throttled(
                "Too many tokens, please wait before trying again.".into(),
            ));
        }
        if self.2.lock().unwrap().refuse() {
            THROTTLED_CALLS.fetch_add(1, Ordering::SeqCst);
            return Err(EmbedError::Throttled(
                "Too many requests, please wait before trying again.".into(),
            ));
        }
        self.0.invoke(texts, purpose).await
    }
}

// ---------------------------------------------------------------------------------------------
// The scheduler: handler futures polled one at a time, the next picked at random among those
// that can go on.
// ---------------------------------------------------------------------------------------------

type Handler = Pin<Box<dyn Future<Output = Vec<String>>>>;

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct Worker {
    id: usize,
    queue: Arc<SimQueue>,
    batch: Vec<Message>,
    future: Handler,
    woken: Arc<Flag>,
}

// ---------------------------------------------------------------------------------------------
// The model: per key its versions, nothing else.
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Model {
    /// Per key, its versions oldest first: `(version id, object or None for a delete marker)`.
    keys: BTreeMap<String, Vec<(String, Option<ObjectSpec>)>>,
}

impl Model {
    fn current(&self) -> BTreeMap<String, ObjectSpec> {
        self.keys
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.last()?.1.clone()?)))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The simulation.
// ---------------------------------------------------------------------------------------------

#[derive(Default, Clone, Copy)]
struct Figures {
    cases: u64,
    operations: u64,
    invocations: u64,
    crashes: u64,
    /// Crashes by point, in `CrashPoint` order.
    crashes_at: [u64; CRASH_POINTS.len()],
    failing_cases: u64,
    texts_embedded: u64,
    chunks_indexed: u64,
}

struct Sim {
    versioned: bool,
    chaos: Arc<Chaos>,
    store: Arc<VersionedStore>,
    index: Arc<MemoryIndex>,
    embedder: Arc<MemoryEmbedder>,
    /// Bedrock calls still to throttle ([`Op::Throttle`]).
    throttles: Arc<AtomicUsize>,
    refusals: Arc<Mutex<Refusals>>,
    intake: Arc<SimQueue>,
    chunks: Arc<SimQueue>,
    /// Notifications S3 holds back.
    delayed: VecDeque<S3Event>,
    chunking: usize,
    ingest_config: IngestConfig,
    embed_config: EmbedIndexConfig,
    workers: Vec<Worker>,
    next_worker: usize,
    model: Model,
    figures: Figures,
}

fn env(vars: &[(&str, String)]) -> Env {
    let base = [
        ("CHUNK_QUEUE_URL", "chunks".to_string()),
        ("INGEST_QUEUE_URL", "intake".into()),
        ("EMBEDDING_MODEL_ID", "amazon.titan-embed-text-v2:0".into()),
        ("EMBEDDING_DIMENSIONS", "256".into()),
        ("MESSAGE_MAX_BYTES", "4096".into()),
        ("SQS_MAX_PAYLOAD_BYTES", "8192".into()),
        ("ES_HOST", "localhost".into()),
        ("ES_INDEX", CHUNKS.into()),
        ("ES_TIMEOUT_SECS", "5".into()),
    ];
    // `SAKUIN_MODEL_ENV="ID_SCOPE=bucket CHUNK_..."`: the pipeline under other settings.
    let extra: Vec<(String, String)> = std::env::var("SAKUIN_MODEL_ENV")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let map = base
        .into_iter()
        .chain(vars.iter().cloned())
        .map(|(k, v)| (k.to_string(), v))
        .chain(extra)
        .collect();
    Env::from_map(map)
}

fn ingest_config(chunking: usize, bucket_ids: bool) -> IngestConfig {
    let (max, overlap) = CHUNKINGS[chunking];
    let scope = if bucket_ids { "bucket" } else { "object" };
    IngestConfig::from_env(&mut env(&[
        ("CHUNK_MAX_CHARS", max.to_string()),
        ("CHUNK_OVERLAP_CHARS", overlap.to_string()),
        ("ID_SCOPE", scope.to_string()),
    ]))
    .expect("the ingest settings are valid")
}

impl Sim {
    fn new(case: &Case) -> Self {
        let budget = [("BEDROCK_TPM", "1200".to_string())];
        let embed_config =
            EmbedIndexConfig::from_env(&mut env(if case.paced { &budget } else { &[] }))
                .expect("the embed-index settings are valid");
        Self {
            versioned: case.versioned,
            chaos: Arc::new(Chaos {
                rng: Mutex::new(Rng(case.sim_seed)),
                armed: Mutex::default(),
                crashed: Mutex::default(),
            }),
            store: Arc::new(VersionedStore::new(BUCKET, case.versioned)),
            index: Arc::new(MemoryIndex::default()),
            embedder: Arc::new(MemoryEmbedder::new(embed_config.model.clone())),
            throttles: Arc::default(),
            refusals: Arc::default(),
            intake: Arc::new(SimQueue::new("intake")),
            chunks: Arc::new(SimQueue::new("chunks")),
            delayed: VecDeque::new(),
            chunking: case.chunking,
            ingest_config: ingest_config(case.chunking, case.bucket_ids),
            embed_config,
            workers: Vec::new(),
            next_worker: 0,
            model: Model::default(),
            figures: Figures::default(),
        }
    }

    fn notify(&mut self, event: S3Event) {
        self.delayed.push_back(event);
    }

    fn apply(&mut self, op: &Op) {
        self.figures.operations += 1;
        match op {
            Op::Put { key, object } => {
                let key = KEYS[*key];
                let event = self.store.put_object(key, body_of(object));
                let id = event.version_id.clone().unwrap_or_else(|| "null".into());
                let versions = self.model.keys.entry(key.into()).or_default();
                if !self.versioned {
                    versions.clear();
                }
                versions.push((id, Some(object.clone())));
                self.notify(event);
            }
            Op::Delete { key } => {
                let key = KEYS[*key];
                let event = self.store.delete_object(key);
                if self.versioned {
                    let id = event.version_id.clone().expect("a marker has a version id");
                    self.model
                        .keys
                        .entry(key.into())
                        .or_default()
                        .push((id, None));
                } else {
                    self.model.keys.remove(key);
                }
                self.notify(event);
            }
            Op::DeleteVersion { key, pick } => {
                let key = KEYS[*key];
                let Some(versions) = self.model.keys.get_mut(key).filter(|_| self.versioned) else {
                    return;
                };
                let (id, _) = versions.remove(pick % versions.len());
                if versions.is_empty() {
                    self.model.keys.remove(key);
                }
                let event = self
                    .store
                    .delete_version(key, &id)
                    .expect("the version exists");
                self.notify(event);
            }
            Op::Undelete { key } => {
                let key = KEYS[*key];
                let Some(versions) = self.model.keys.get_mut(key).filter(|_| self.versioned) else {
                    return;
                };
                if versions.last().is_some_and(|(_, o)| o.is_none()) {
                    let (id, _) = versions.pop().unwrap();
                    if versions.is_empty() {
                        self.model.keys.remove(key);
                    }
                    let event = self
                        .store
                        .delete_version(key, &id)
                        .expect("the marker exists");
                    self.notify(event);
                }
            }
            Op::RechunkAndBackfill { chunking } => {
                self.chunking = *chunking;
                self.ingest_config = ingest_config(
                    *chunking,
                    self.ingest_config.fields.id_scope == sakuin::ids::IdScope::Bucket,
                );
                // As `sakuin backfill` sends it.
                self.intake
                    .send(json!({"backfill": {"bucket": BUCKET, "prefix": ""}}).to_string());
            }
            Op::Reconcile => {
                for body in reconcile_fix(&self.store, &self.index) {
                    self.intake.send(body);
                }
            }
            Op::Release { count } => self.release(*count as usize),
            Op::Deliver {
                ingest,
                embed,
                batch,
                short_deadline,
                ..
            } => {
                for _ in 0..*ingest {
                    self.start_ingest(*batch as usize, *short_deadline);
                }
                for _ in 0..*embed {
                    self.start_embed(*batch as usize);
                }
            }
            Op::Crash(point) => self.chaos.armed.lock().unwrap().push(*point),
            Op::Throttle { calls } => {
                self.throttles
                    .fetch_add(usize::from(*calls), Ordering::SeqCst);
            }
            Op::Refuse { every, calls } => {
                let mut refusals = self.refusals.lock().unwrap();
                refusals.left += usize::from(*calls);
                refusals.every = usize::from(*every);
            }
        }
    }

    /// S3 delivers `count` of the notifications it held, picked at random.
    fn release(&mut self, count: usize) {
        for _ in 0..count.min(self.delayed.len()) {
            let i = self.chaos.below(self.delayed.len() as u64) as usize;
            let event = self.delayed.remove(i).expect("in range");
            self.intake.send(event.body());
        }
    }

    fn sqs_records(queue: &str, batch: &[Message]) -> Value {
        let records: Vec<Value> = batch
            .iter()
            .map(|m| json!({"messageId": m.id, "receiptHandle": format!("rh-{}", m.id), "body": m.body,
                "attributes": {"ApproximateReceiveCount": m.receives.to_string(), "SentTimestamp": "1", "SenderId": "s", "ApproximateFirstReceiveTimestamp": "1"},
                "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:ap-northeast-1:123456789012:{queue}"), "awsRegion": "ap-northeast-1"}))
            .collect();
        json!({ "Records": records })
    }

    fn spawn(&mut self, queue: Arc<SimQueue>, batch: Vec<Message>, future: Handler) {
        self.next_worker += 1;
        self.figures.invocations += 1;
        self.workers.push(Worker {
            id: self.next_worker,
            queue,
            batch,
            future,
            woken: Arc::new(Flag(AtomicBool::new(true))),
        });
    }

    fn start_ingest(&mut self, n: usize, short_deadline: bool) {
        let batch = self.intake.receive(n, &self.chaos);
        if batch.is_empty() {
            return;
        }
        let queue = |q: &Arc<SimQueue>, crash_after| Queue {
            queue: q.clone(),
            chaos: self.chaos.clone(),
            crash_after,
        };
        let config = self.ingest_config.clone();
        let limits = config.batch_limits();
        let deps = IngestDeps {
            store: Store {
                store: self.store.clone(),
                chaos: self.chaos.clone(),
            },
            queue: queue(&self.chunks, Some(CrashPoint::AfterChunkSend)),
            continuation: QueueContinuation::new(
                queue(&self.intake, Some(CrashPoint::AfterHandOver)),
                limits,
            ),
            config,
        };
        let event = Self::sqs_records("intake", &batch);
        let ids: Vec<String> = batch.iter().map(|m| m.id.clone()).collect();
        let time = if short_deadline {
            Duration::ZERO
        } else {
            Duration::from_secs(600)
        };
        let future = Box::pin(async move {
            let deadline = Deadline::after(time);
            match sakuin::ingest::handle_event(&deps, event, deadline).await {
                Ok(summary) => summary
                    .batch_item_failures
                    .unwrap_or_default()
                    .into_iter()
                    .map(|f| f.item_identifier)
                    .collect(),
                Err(_) => ids,
            }
        });
        self.spawn(self.intake.clone(), batch, future);
    }

    fn start_embed(&mut self, n: usize) {
        let batch = self.chunks.receive(n, &self.chaos);
        if batch.is_empty() {
            return;
        }
        let deps = EmbedIndexDeps::new(
            Bedrock(
                self.embedder.clone(),
                self.throttles.clone(),
                self.refusals.clone(),
            ),
            Index {
                index: self.index.clone(),
                chaos: self.chaos.clone(),
            },
            Some(Queue {
                queue: self.chunks.clone(),
                chaos: self.chaos.clone(),
                crash_after: None,
            }),
            self.embed_config.clone(),
        );
        let event: SqsEvent =
            serde_json::from_value(Self::sqs_records("chunks", &batch)).expect("an SQS event");
        let ids: Vec<String> = batch.iter().map(|m| m.id.clone()).collect();
        let future = Box::pin(async move {
            let deadline = Deadline::after(Duration::from_secs(900));
            match sakuin::embed_index::handle_batch(&deps, event, deadline).await {
                Ok((response, stats)) => {
                    HANDED_BACK.fetch_add(stats.handed_back as usize, Ordering::SeqCst);
                    HELD_BACK.fetch_add(stats.held_back as usize, Ordering::SeqCst);
                    response
                        .batch_item_failures
                        .into_iter()
                        .map(|f| f.item_identifier)
                        .collect()
                }
                Err(_) => ids,
            }
        });
        self.spawn(self.chunks.clone(), batch, future);
    }

    /// Polls the workers, one picked at random among those that can go on, `steps` times (or
    /// until none is left). When every worker waits on Tokio's clock, the clock moves on.
    async fn run(&mut self, steps: usize) {
        let mut done = 0;
        while done < steps && !self.workers.is_empty() {
            let ready: Vec<usize> = (0..self.workers.len())
                .filter(|&i| self.workers[i].woken.0.load(Ordering::SeqCst))
                .collect();
            if ready.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            done += 1;
            let i = ready[self.chaos.below(ready.len() as u64) as usize];
            let worker = &mut self.workers[i];
            worker.woken.0.store(false, Ordering::SeqCst);
            let waker = Waker::from(worker.woken.clone());
            let mut cx = Context::from_waker(&waker);
            CURRENT_WORKER.with(|w| w.set(worker.id));
            let polled = worker.future.as_mut().poll(&mut cx);
            CURRENT_WORKER.with(|w| w.set(usize::MAX));
            let id = worker.id;
            let crashed = self
                .chaos
                .crashed
                .lock()
                .unwrap()
                .iter()
                .any(|(w, _)| *w == id);
            match polled {
                Poll::Ready(failed) => {
                    let w = self.workers.swap_remove(i);
                    w.queue.finish(w.batch, &failed);
                }
                Poll::Pending if crashed => {
                    self.figures.crashes += 1;
                    let at = self
                        .chaos
                        .crashed
                        .lock()
                        .unwrap()
                        .iter()
                        .rev()
                        .find(|(w, _)| *w == id)
                        .map(|(_, p)| *p);
                    if let Some(at) = at {
                        self.figures.crashes_at[at as usize] += 1;
                    }
                    let w = self.workers.swap_remove(i);
                    w.queue.release(w.batch);
                }
                Poll::Pending => {}
            }
        }
    }

    /// Every notification delivered, every queue drained; `false` if that took too long.
    async fn settle(&mut self) -> bool {
        let count = self.delayed.len();
        self.release(count);
        let mut invocations = 0;
        loop {
            let idle = self.workers.is_empty();
            if idle && self.intake.is_empty() && self.chunks.is_empty() {
                return true;
            }
            if invocations > SETTLE_INVOCATIONS {
                return false;
            }
            let before = self.figures.invocations;
            if self.workers.len() < 4 {
                self.start_ingest(1 + self.chaos.below(MAX_BATCH as u64) as usize, false);
                self.start_embed(1 + self.chaos.below(MAX_BATCH as u64) as usize);
            }
            invocations += (self.figures.invocations - before) as usize;
            self.run(200).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// `sakuin reconcile --fix`, as shared/src/reconcile.rs computes and sends it.
// ---------------------------------------------------------------------------------------------

fn reconcile_fix(store: &VersionedStore, index: &MemoryIndex) -> Vec<String> {
    // What the index holds: chunks per key per eTag ("" for none).
    let mut held: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut markers: HashMap<String, (String, Option<String>)> = HashMap::new();
    for ((ix, _), doc) in index.docs.lock().unwrap().iter() {
        let s = &doc.source;
        if ix == CHUNKS && s["source"]["bucket"] == BUCKET {
            let key = s["source"]["key"].as_str().unwrap_or_default().to_owned();
            let etag = s["source"]["etag"].as_str().unwrap_or_default().to_owned();
            *held.entry(key).or_default().entry(etag).or_default() += 1;
        } else if ix == MARKERS && s["bucket"] == BUCKET {
            let key = s["key"].as_str().unwrap_or_default().to_owned();
            let deleted = s["deleted"].as_bool().unwrap_or(false);
            let etag = s["etag"].as_str().map(str::to_owned).filter(|_| !deleted);
            let seq = s["sequencer"].as_str().unwrap_or_default().to_owned();
            markers.insert(key, (seq, etag));
        }
    }
    let listed: Vec<_> = store
        .current_objects()
        .into_iter()
        .filter(|(k, _)| sakuin::ingest::is_data_key(k, "rejects/"))
        .collect();
    let mut bodies = Vec::new();
    let repair = |key: &str, etag: Option<&String>, object: bool| {
        let seq = markers.get(key).map_or("", |m| m.0.as_str());
        let source = json!({"bucket": BUCKET, "key": key, "version_id": null, "etag": etag,
            "sequencer": sakuin::ids::repair_sequencer(seq)});
        let unit = if object {
            json!({"kind": "object", "source": source, "resume": null, "part": 0})
        } else {
            json!({"kind": "removed", "source": source})
        };
        json!({"work": [unit], "hops": 0}).to_string()
    };
    for (key, version) in &listed {
        let etag = version.etag.as_ref();
        let in_sync = held
            .get(key)
            .is_some_and(|etags| etags.len() == 1 && etags.keys().next() == etag);
        if in_sync {
            continue;
        }
        let empty = !held.contains_key(key)
            && markers
                .get(key)
                .is_some_and(|m| m.1.is_some() && m.1.as_ref() == etag);
        if !empty {
            bodies.push(repair(key, etag, true));
        }
    }
    for key in held.keys() {
        if !listed.iter().any(|(k, _)| k == key) {
            bodies.push(repair(key, None, false));
        }
    }
    bodies
}

// ---------------------------------------------------------------------------------------------
// The checker: the whole index against the model.
// ---------------------------------------------------------------------------------------------

/// One indexed document, from its chunks.
#[derive(Debug, Default)]
struct IndexedDoc {
    chunks: BTreeMap<u64, (u64, String)>,
    duplicates: Vec<u64>,
    metadata: BTreeSet<String>,
    etags: BTreeSet<String>,
}

/// What each current record should be: `(key, id or "text:<text>")` → (chunks, metadata, eTag).
type Expected = BTreeMap<(String, String), (Vec<String>, Value, String)>;

fn expected(model: &Model, store: &VersionedStore, settings: &ChunkSettings) -> Expected {
    let mut out = Expected::new();
    for (key, object) in model.current() {
        let etag = store.current(&key).and_then(|v| v.etag).unwrap_or_default();
        for record in record_values(&object) {
            let Value::Object(mut fields) = record else {
                unreachable!()
            };
            let Some(Value::String(text)) = fields.remove("text") else {
                continue;
            };
            let chunks = chunk_text(&text, settings);
            if chunks.is_empty() {
                continue;
            }
            let id = match fields.remove("id") {
                Some(Value::String(id)) => id,
                _ => format!("text:{}|{}", text, Value::Object(fields.clone())),
            };
            out.insert(
                (key.clone(), id),
                (chunks, Value::Object(fields), etag.clone()),
            );
        }
    }
    out
}

fn indexed(index: &MemoryIndex) -> BTreeMap<(String, String), IndexedDoc> {
    let mut out: BTreeMap<(String, String), IndexedDoc> = BTreeMap::new();
    for ((ix, _), doc) in index.docs.lock().unwrap().iter() {
        if ix != CHUNKS {
            continue;
        }
        let s = &doc.source;
        let key = s["source"]["key"].as_str().unwrap_or_default().to_owned();
        let doc_id = s["doc_id"].as_str().unwrap_or_default().to_owned();
        let text = s["text"].as_str().unwrap_or_default().to_owned();
        let metadata = s["metadata"].clone();
        // Records without an id are matched by their text and fields.
        let id = if doc_id.starts_with("s3://") {
            format!("derived:{doc_id}|{metadata}")
        } else {
            doc_id
        };
        let d = out.entry((key, id)).or_default();
        let index = s["chunk_index"].as_u64().unwrap_or(u64::MAX);
        let count = s["chunk_count"].as_u64().unwrap_or(0);
        if d.chunks.insert(index, (count, text)).is_some() {
            d.duplicates.push(index);
        }
        d.metadata.insert(metadata.to_string());
        d.etags
            .insert(s["source"]["etag"].as_str().unwrap_or("-").to_owned());
    }
    out
}

/// Every difference between the index and the model, one line each.
fn compare(sim: &Sim) -> Vec<String> {
    let settings = sim.ingest_config.chunking;
    let want = expected(&sim.model, &sim.store, &settings);
    let mut have = indexed(&sim.index);
    let mut problems = Vec::new();
    // Id-less records: the derived id is opaque; the document with their chunks stands in.
    let derived: Vec<(String, String)> = have
        .keys()
        .filter(|(_, id)| id.starts_with("derived:"))
        .cloned()
        .collect();
    let mut by_text: HashMap<(String, String), (String, String)> = HashMap::new();
    for (key, id) in derived {
        let d = &have[&(key.clone(), id.clone())];
        let metadata = d.metadata.iter().next().cloned().unwrap_or_default();
        let joined: Vec<&str> = d.chunks.values().map(|(_, t)| t.as_str()).collect();
        by_text.insert(
            (key.clone(), format!("{}|{metadata}", joined.join("\u{1}"))),
            (key, id),
        );
    }
    for ((key, id), (chunks, metadata, etag)) in &want {
        let found = if id.starts_with("text:") {
            let k = (key.clone(), format!("{}|{metadata}", chunks.join("\u{1}")));
            by_text.get(&k).cloned()
        } else {
            Some((key.clone(), id.clone()))
        };
        let shown = if id.starts_with("text:") {
            format!("{key} record without id {:?}", truncate(id, 50))
        } else {
            format!("{key} record {id}")
        };
        let Some(d) = found.and_then(|k| have.remove(&k)) else {
            problems.push(format!("missing: {shown}"));
            continue;
        };
        let indices: Vec<u64> = d.chunks.keys().copied().collect();
        let wanted: Vec<u64> = (0..chunks.len() as u64).collect();
        if indices != wanted {
            problems.push(format!(
                "{shown}: chunks {indices:?} indexed, {wanted:?} expected"
            ));
        }
        for (i, text) in chunks.iter().enumerate() {
            if let Some((count, t)) = d.chunks.get(&(i as u64)) {
                if t != text {
                    problems.push(format!(
                        "{shown}: chunk {i} is {:?}, expected {:?}",
                        truncate(t, 40),
                        truncate(text, 40)
                    ));
                }
                if *count != chunks.len() as u64 {
                    problems.push(format!(
                        "{shown}: chunk {i} says {count} chunks, expected {}",
                        chunks.len()
                    ));
                }
            }
        }
        if !d.duplicates.is_empty() {
            problems.push(format!("{shown}: chunks {:?} twice", d.duplicates));
        }
        let wanted_metadata = metadata.to_string();
        if d.metadata.len() != 1 || !d.metadata.contains(&wanted_metadata) {
            problems.push(format!(
                "{shown}: metadata {:?}, expected {wanted_metadata}",
                d.metadata
            ));
        }
        if d.etags.len() != 1 || !d.etags.contains(etag) {
            problems.push(format!(
                "{shown}: chunks of eTags {:?}, the current is {etag}",
                d.etags
            ));
        }
    }
    for ((key, id), d) in have {
        let texts: Vec<String> = d.chunks.values().map(|(_, t)| truncate(t, 30)).collect();
        problems.push(format!(
            "not in the bucket: {key} document {} ({} chunk(s) {texts:?}, eTag {:?})",
            truncate(&id, 60),
            d.chunks.len(),
            d.etags
        ));
    }
    problems
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// One case, and the runner.
// ---------------------------------------------------------------------------------------------

static FIGURES: Mutex<Figures> = Mutex::new(Figures {
    cases: 0,
    operations: 0,
    invocations: 0,
    crashes: 0,
    crashes_at: [0; CRASH_POINTS.len()],
    failing_cases: 0,
    texts_embedded: 0,
    chunks_indexed: 0,
});

/// Where `SAKUIN_MODEL_TRACE=1` writes the trace of each failing sequence (the last one
/// written is the shrunk one): every operation, the handlers' logs, and each write to the index.
const TRACE_FILE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/model-trace.log");

/// A log writer into a buffer, for one case's trace.
#[derive(Clone, Default)]
struct TraceBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for TraceBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn run_case(case: &Case) -> Result<(), String> {
    let trace = std::env::var("SAKUIN_MODEL_TRACE")
        .is_ok()
        .then(TraceBuffer::default);
    let _logging = trace.clone().map(|buffer| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || buffer.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    });
    let result = run_traced(case);
    if let (Err(e), Some(trace)) = (&result, trace) {
        let mut text = format!("{case:?}\n{e}\n\n").into_bytes();
        text.extend_from_slice(&trace.0.lock().unwrap());
        std::fs::write(TRACE_FILE, text).expect("the trace file is writable");
    }
    result
}

fn run_traced(case: &Case) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let mut sim = Sim::new(case);
    let settled = runtime.block_on(async {
        for op in &case.ops {
            // Each operation draws from a stream of its own (the case's seed and the operation),
            // so removing another operation while shrinking leaves this one's choices as they
            // were: the shrunk sequence fails the same way.
            *sim.chaos.rng.lock().unwrap() =
                Rng(case.sim_seed ^ fnv1a(format!("{op:?}").as_bytes()));
            tracing::info!(target: "model", "=== {op:?}");
            sim.apply(op);
            if let Op::Deliver { steps, .. } = op {
                sim.run(*steps as usize).await;
            }
        }
        *sim.chaos.rng.lock().unwrap() = Rng(case.sim_seed);
        sim.settle().await
    });
    let mut problems = Vec::new();
    if !settled {
        problems.push(format!(
            "did not settle within {SETTLE_INVOCATIONS} invocations"
        ));
    }
    // The model and the bucket agree (the harness's own check).
    let bucket: BTreeMap<String, Vec<u8>> = sim
        .store
        .current_objects()
        .into_iter()
        .filter(|(k, _)| KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k, v.body.unwrap_or_default()))
        .collect();
    let model: BTreeMap<String, Vec<u8>> = sim
        .model
        .current()
        .iter()
        .map(|(k, o)| (k.clone(), body_of(o)))
        .collect();
    assert_eq!(bucket, model, "the model and the bucket disagree");
    for q in [&sim.intake, &sim.chunks] {
        let dead = &q.state.lock().unwrap().dead;
        for m in dead {
            problems.push(format!("{} DLQ holds: {}", q.name, truncate(&m.body, 160)));
        }
    }
    problems.extend(compare(&sim));
    let texts = sim.embedder.texts() as u64;
    let chunks_indexed = sim
        .index
        .docs
        .lock()
        .unwrap()
        .keys()
        .filter(|(i, _)| i == CHUNKS)
        .count() as u64;
    {
        let mut f = FIGURES.lock().unwrap();
        f.cases += 1;
        f.operations += sim.figures.operations;
        f.invocations += sim.figures.invocations;
        f.crashes += sim.figures.crashes;
        for (total, n) in f.crashes_at.iter_mut().zip(sim.figures.crashes_at) {
            *total += n;
        }
        f.texts_embedded += texts;
        f.chunks_indexed += chunks_indexed;
        f.failing_cases += u64::from(!problems.is_empty());
    }
    if problems.is_empty() {
        return Ok(());
    }
    let shown = problems.len().min(12);
    Err(format!(
        "index ≠ bucket ({} difference(s); {texts} texts embedded, {chunks_indexed} chunks indexed):\n  {}{}",
        problems.len(),
        problems[..shown].join("\n  "),
        if problems.len() > shown {
            "\n  …"
        } else {
            ""
        }
    ))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[test]
fn the_index_ends_equal_to_the_bucket() {
    let cases = env_number("SAKUIN_MODEL_CASES").unwrap_or(200) as u32;
    let max_ops = env_number("SAKUIN_MODEL_OPS").unwrap_or(25) as usize;
    let seed = env_number("SAKUIN_MODEL_SEED").unwrap_or_else(|| {
        if std::env::var("SAKUIN_MODEL_CASES").is_ok() {
            // A long run explores: a new seed each time, printed to replay it.
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        } else {
            20_261_207
        }
    });
    eprintln!(
        "model: seed {seed} (replay: SAKUIN_MODEL_SEED={seed} SAKUIN_MODEL_CASES={cases} SAKUIN_MODEL_OPS={max_ops})"
    );
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        max_shrink_iters: 2000,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let began = Instant::now();
    let result = runner.run(&case_strategy(max_ops), |case| {
        run_case(&case).map_err(TestCaseError::fail)
    });
    let f = *FIGURES.lock().unwrap();
    eprintln!(
        "model: {} sequences run (shrinking included), {} operations, {} invocations, {} crash points hit ({}), {} Bedrock calls throttled, {} messages handed back for another container ({} chunks held back part way), {} failing sequences; {} texts embedded for {} chunks indexed at the end; {:.1} s",
        f.cases,
        f.operations,
        f.invocations,
        f.crashes,
        CRASH_POINTS
            .iter()
            .zip(f.crashes_at)
            .map(|(p, n)| format!("{p:?} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        THROTTLED_CALLS.load(Ordering::SeqCst),
        HANDED_BACK.load(Ordering::SeqCst),
        HELD_BACK.load(Ordering::SeqCst),
        f.failing_cases,
        f.texts_embedded,
        f.chunks_indexed,
        began.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("seed {seed}: {e}");
    }
}

/// The fixtures themselves: gzip without a compressor is a stream ingest's decoder reads.
#[test]
fn stored_gzip_is_valid() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    let gz = gzip_stored(b"{\"text\":\"a\"}\n");
    assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
    let object = ObjectSpec {
        format: Format::Array,
        records: vec![RecordSpec {
            id: Some(1),
            sentences: vec![0],
            tags: None,
            attr: Some((1, None)),
        }],
    };
    let body: Value = serde_json::from_slice(&body_of(&object)).unwrap();
    assert_eq!(
        body,
        json!([{"id": "r1", "text": SENTENCE_TEXTS[0], "attr": {"color": "c1"}}])
    );
}
