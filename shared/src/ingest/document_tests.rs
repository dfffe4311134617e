//! Documents through ingest: each sample format into chunks with their text and citation, the
//! metadata file, hostile documents skipped once, and a document read in parts.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::config::{Env, IngestConfig};
use crate::message::{ChunkMessage, ChunkPayload, Operation};
use crate::retry::Deadline;
use crate::test_util::{MemoryQueue, MemoryStore};

#[derive(Default)]
struct Handover {
    events: Mutex<Vec<Value>>,
}

impl Continuation for Handover {
    async fn hand_over(&self, event: Value) -> Result<(), String> {
        self.events.lock().unwrap().push(event);
        Ok(())
    }
}

type Deps = IngestDeps<MemoryStore, MemoryQueue, Handover>;

fn sample(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev/samples/documents");
    std::fs::read(path.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn deps(objects: &[(&str, Vec<u8>)], vars: &[(&str, &str)]) -> Deps {
    let store = MemoryStore::default();
    for (key, body) in objects {
        let id = ("b".to_string(), key.to_string());
        store.objects.lock().unwrap().insert(id, body.clone());
    }
    let vars = [("CHUNK_QUEUE_URL", "q")]
        .iter()
        .chain(vars)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    IngestDeps {
        store,
        queue: MemoryQueue::default(),
        continuation: Handover::default(),
        config: IngestConfig::from_env(&mut Env::from_map(vars)).unwrap(),
    }
}

fn created(key: &str, sequencer: Option<&str>) -> Value {
    json!({"Records": [{"eventName": "ObjectCreated:Put", "eventTime": "2026-12-07T00:00:00.000Z",
        "s3": {"bucket": {"name": "b"}, "object": {"key": key, "sequencer": sequencer}}}]})
}

fn later() -> Deadline {
    Deadline::after(Duration::from_secs(600))
}

fn messages(d: &Deps) -> Vec<ChunkMessage> {
    let bodies = d.queue.bodies();
    bodies
        .iter()
        .map(|b| ChunkMessage::parse(b).unwrap())
        .collect()
}

fn chunks(d: &Deps) -> Vec<ChunkPayload> {
    let messages = messages(d);
    let index = messages.iter().filter(|m| m.op == Operation::Index);
    index.flat_map(|m| m.chunks.clone()).collect()
}

/// Each chunk as (citation label, text).
fn cited(d: &Deps) -> Vec<(String, String)> {
    chunks(d)
        .into_iter()
        .map(|c| {
            let citation = c.citation.expect("a document's chunk carries its citation");
            (citation["label"].as_str().unwrap().to_owned(), c.text)
        })
        .collect()
}

async fn ingest(d: &Deps, key: &str) -> IngestSummary {
    handle_event(d, created(key, Some("0A")), later())
        .await
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

#[tokio::test]
async fn a_pdf_is_cited_by_page() {
    let d = deps(&[("docs/manual.pdf", sample("manual.pdf"))], &[]);
    let summary = ingest(&d, "docs/manual.pdf").await;
    assert_eq!((summary.objects, summary.documents_skipped), (1, 0));
    let got = cited(&d);
    assert_eq!(got.len(), 3, "{got:#?}");
    assert_eq!(got[0].0, "page 1");
    assert_eq!(
        got[0].1,
        "Sakuin User Manual\nChapter 1. Overview\nDocuments in S3 become searchable."
    );
    assert_eq!(
        got[2],
        (
            "page 3".into(),
            "第3章 ネットワーク\nポート9200を開けます。".into()
        )
    );
    let chunk = &chunks(&d)[1];
    assert_eq!(chunk.citation.as_ref().unwrap()["page"], 2);
    assert_eq!(chunk.citation.as_ref().unwrap()["format"], "PDF");
    assert_eq!(chunk.record, 2);
    assert!(
        chunk.doc_id.starts_with("s3://b/docs/manual.pdf#"),
        "{}",
        chunk.doc_id
    );
}

#[tokio::test]
async fn markdown_is_cited_by_its_heading_path() {
    let d = deps(&[("manual-ja.md", sample("manual-ja.md"))], &[]);
    ingest(&d, "manual-ja.md").await;
    let got = cited(&d);
    let labels: Vec<&str> = got.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        labels,
        [
            "導入ガイド",
            "導入ガイド > 1. 準備",
            "導入ガイド > 1. 準備 > 1.1 権限",
            "導入ガイド > 2. Installation",
            "導入ガイド > 2. Installation > 2.1 Network",
            "付録"
        ]
    );
    assert!(got[2].1.contains("s3:GetObject"), "{:?}", got[2]);
    let headings = &chunks(&d)[4].citation.clone().unwrap()["headings"];
    assert_eq!(
        headings,
        &json!(["導入ガイド", "2. Installation", "2.1 Network"])
    );
}

#[tokio::test]
async fn word_html_excel_and_csv_carry_their_citations() {
    let objects = [
        ("report.docx", sample("report.docx")),
        ("page.html", sample("page.html")),
        ("workbook.xlsx", sample("workbook.xlsx")),
        ("prices.csv", sample("prices.csv")),
    ];
    for (key, _) in &objects {
        let d = deps(&objects, &[]);
        ingest(&d, key).await;
        let got = cited(&d);
        assert!(!got.is_empty(), "{key}");
        let formats: Vec<Value> = chunks(&d)
            .iter()
            .map(|c| c.citation.as_ref().unwrap()["format"].clone())
            .collect();
        assert!(formats.windows(2).all(|w| w[0] == w[1]), "{key}");
        match *key {
            "report.docx" | "page.html" => {
                assert!(
                    got.iter().any(|(l, _)| l.contains(" > ")),
                    "{key}: {got:#?}"
                )
            }
            "workbook.xlsx" => {
                let first = chunks(&d)[0].citation.clone().unwrap();
                assert!(
                    first["sheet"].is_string() && first["row"].is_u64(),
                    "{first}"
                );
            }
            _ => {
                // The quoted line break stays inside its row; the row is cited by its line.
                let row = got.iter().find(|(_, t)| t.contains("付箋")).unwrap();
                assert_eq!(row.0, "line 4");
                assert!(row.1.contains("75mm角\n4色パック"), "{row:?}");
            }
        }
    }
}

#[tokio::test]
async fn paragraphs_of_plain_text_share_a_chunk_while_they_fit() {
    let d = deps(&[("notes.txt", sample("notes.txt"))], &[]);
    ingest(&d, "notes.txt").await;
    let got = cited(&d);
    assert_eq!(got.len(), 1, "four short paragraphs, one chunk: {got:#?}");
    assert_eq!(got[0].0, "lines 1-11");
    assert!(got[0].1.starts_with("社内メモ") && got[0].1.ends_with("blank lines."));
    let small = deps(
        &[("notes.txt", sample("notes.txt"))],
        &[("CHUNK_MAX_CHARS", "60"), ("CHUNK_OVERLAP_CHARS", "0")],
    );
    ingest(&small, "notes.txt").await;
    let labels: Vec<String> = cited(&small).into_iter().map(|(l, _)| l).collect();
    assert_eq!(labels, ["lines 1-4", "lines 6-7", "line 11"]);
}

#[tokio::test]
async fn table_rows_map_like_records() {
    let vars = [
        ("TABLE_TEXT_COLUMNS", "品名,説明"),
        ("TABLE_ID_COLUMN", "品番"),
    ];
    let d = deps(&[("prices.csv", sample("prices.csv"))], &vars);
    let summary = ingest(&d, "prices.csv").await;
    let by_id: Vec<(String, String, Value)> = chunks(&d)
        .into_iter()
        .map(|c| (c.doc_id, c.text, Value::Object(c.metadata)))
        .collect();
    assert_eq!(by_id[0].0, "A-001");
    assert_eq!(by_id[0].1, "品名: ボールペン\n説明: 黒インク");
    assert_eq!(by_id[0].2, json!({"価格": "120"}));
    // A-004 has a name but no description: still text; nothing rejected.
    assert_eq!((by_id.len(), summary.rejected), (4, 0));
}

#[tokio::test]
async fn the_metadata_file_lands_on_every_chunk() {
    let metadata = json!({"metadataAttributes": {
        "department": "情報システム部",
        "year": {"value": {"type": "NUMBER", "numberValue": 2026}, "includeForEmbedding": false}
    }});
    let d = deps(
        &[
            ("manual.pdf", sample("manual.pdf")),
            (
                "manual.pdf.metadata.json",
                metadata.to_string().into_bytes(),
            ),
        ],
        &[],
    );
    ingest(&d, "manual.pdf").await;
    for chunk in chunks(&d) {
        assert_eq!(
            Value::Object(chunk.metadata),
            json!({"department": "情報システム部", "year": 2026})
        );
    }
    // Without the file, no fields.
    let bare = deps(&[("manual.pdf", sample("manual.pdf"))], &[]);
    ingest(&bare, "manual.pdf").await;
    assert!(chunks(&bare).iter().all(|c| c.metadata.is_empty()));
}

#[tokio::test]
async fn a_metadata_file_event_reads_its_document_again_and_is_never_indexed() {
    let metadata = json!({"metadataAttributes": {"team": "a"}}).to_string();
    let d = deps(
        &[
            ("manual-ja.md", sample("manual-ja.md")),
            ("manual-ja.md.metadata.json", metadata.into_bytes()),
        ],
        &[],
    );
    ingest(&d, "manual-ja.md.metadata.json").await;
    let messages = messages(&d);
    assert!(messages.iter().all(|m| m.source.key == "manual-ja.md"));
    // Read like a backfill: ordered by the content it finds, not by the metadata file's event.
    assert!(messages.iter().all(|m| m.source.sequencer.is_none()));
    assert_eq!(chunks(&d).len(), 6);
    assert!(chunks(&d).iter().all(|c| c.metadata["team"] == "a"));
    // The same text as a read by the document's own event: the same ids, nothing to embed.
    let own = deps(
        &[
            ("manual-ja.md", sample("manual-ja.md")),
            ("manual-ja.md.metadata.json", b"{}".to_vec()),
        ],
        &[],
    );
    ingest(&own, "manual-ja.md").await;
    let ids = |d: &Deps| -> Vec<String> { chunks(d).into_iter().map(|c| c.doc_id).collect() };
    assert_eq!(ids(&d), ids(&own));
    // A metadata file that cannot be used is reported with the rejects; the document is read.
    let rejects = own.store.objects.lock().unwrap().clone();
    let (_, lines) = rejects
        .iter()
        .find(|((_, k), _)| k.starts_with("rejects/manual-ja.md/"))
        .expect("the bad metadata file is reported");
    assert!(String::from_utf8_lossy(lines).contains("metadataAttributes"));
    assert!(chunks(&own).iter().all(|c| c.metadata.is_empty()));
}

#[tokio::test]
async fn hostile_documents_are_skipped_once_with_their_reason() {
    let cases = [
        ("encrypted.pdf", "encrypted"),
        ("image-only.pdf", "no_text"),
        ("bomb.docx", "inflation"),
        ("truncated.docx", "corrupt"),
        ("bad-xml.docx", "corrupt"),
        ("zip-named.pdf", "unsupported"),
        ("shift_jis.csv", "not_utf8"),
        ("bomb-lying.xlsx", "corrupt"),
        ("many-entries.docx", "no_text"),
    ];
    for (name, kind) in cases {
        let key = format!("in/{name}");
        let d = deps(&[(&key, sample(&format!("hostile/{name}")))], &[]);
        let summary = handle_event(&d, created(&key, Some("0B")), later())
            .await
            .unwrap_or_else(|e| panic!("{name} must not fail the invocation: {e}"));
        assert_eq!(
            (summary.documents_skipped, summary.failed, summary.chunks),
            (1, 0, 0),
            "{name}: {summary:?}"
        );
        let record =
            d.store.objects.lock().unwrap()[&("b".into(), skipped_key("rejects/", &key))].clone();
        let record: Value = serde_json::from_slice(&record).unwrap();
        assert_eq!(record["kind"], kind, "{name}: {record}");
        assert_eq!(record["key"], key.as_str());
        assert!(!record["reason"].as_str().unwrap().is_empty());
        // The version before it (if any) leaves the index: its sweep says no chunks stand.
        let sweep = messages(&d).into_iter().find(|m| m.op == Operation::Sweep);
        assert!(
            sweep.is_some(),
            "{name}: the older version's chunks are swept"
        );
    }
}

#[tokio::test]
async fn a_document_read_in_parts_queues_what_one_read_does() {
    let text: String = (1..=40)
        .map(|i| format!("段落 {i}: {}\n\n", "検索の仕組みを説明します。".repeat(6)))
        .collect();
    let objects = [("long.txt", text.into_bytes())];
    let vars = [("CHUNK_MAX_CHARS", "200"), ("CHUNK_OVERLAP_CHARS", "0")];
    let whole = deps(&objects, &vars);
    ingest(&whole, "long.txt").await;

    let parts = deps(&objects, &vars);
    let mut event = created("long.txt", Some("0A"));
    let mut hops = 0;
    loop {
        // No time at all: every part reads one section and hands over.
        let deadline = Deadline::after(Duration::ZERO);
        let summary = handle_event(&parts, event, deadline).await.unwrap();
        let Some(next) = parts.continuation.events.lock().unwrap().pop() else {
            assert!(summary.continued.is_none());
            break;
        };
        event = next;
        hops += 1;
        assert!(hops < 100, "a part must move forward");
    }
    assert!(hops > 5, "{hops}");
    let got = |d: &Deps| -> Vec<(String, u32, String)> {
        chunks(d)
            .into_iter()
            .map(|c| (c.doc_id, c.chunk_index, c.text))
            .collect()
    };
    assert_eq!(got(&parts), got(&whole));
    let sweeps = messages(&parts)
        .into_iter()
        .filter(|m| m.op == Operation::Sweep);
    assert_eq!(sweeps.count(), 1, "one sweep, after the last part");
}

#[tokio::test]
async fn every_format_takes_its_metadata_file() {
    let metadata = json!({"metadataAttributes": {"owner": "山田", "tags": ["a", "b"]}}).to_string();
    for name in [
        "manual.pdf",
        "report.docx",
        "workbook.xlsx",
        "manual-ja.md",
        "page.html",
        "prices.csv",
        "notes.txt",
    ] {
        let meta_key = format!("{name}.metadata.json");
        let d = deps(
            &[
                (name, sample(name)),
                (&meta_key, metadata.clone().into_bytes()),
            ],
            &[],
        );
        ingest(&d, name).await;
        let chunks = chunks(&d);
        assert!(!chunks.is_empty(), "{name}");
        for chunk in chunks {
            assert_eq!(chunk.metadata["owner"], "山田", "{name}");
            assert_eq!(chunk.metadata["tags"], json!(["a", "b"]), "{name}");
        }
    }
}
